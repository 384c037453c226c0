//! What the backend receives instead of the file bytes (SPEC §4.1): each stored file's
//! attributes as form fields named by `field_names`, beside the client's own fields,
//! encoded as multipart, urlencoded or JSON.

use crate::config::{FieldNames, Forward};
use crate::sink::hashes::{Algorithm, hex};
use bytes::Bytes;

/// The attributes every file carries, in this order, before its hashes.
pub const BASE_ATTRS: [&str; 9] = [
    "name",
    "content_type",
    "charset",
    "detected_type",
    "path",
    "key",
    "bucket",
    "id",
    "size",
];

/// One stored file, as the backend is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub field: String,
    pub name: String,
    pub content_type: String,
    pub charset: String,
    pub detected_type: String,
    pub path: String,
    pub key: String,
    pub bucket: String,
    pub id: String,
    pub size: u64,
    /// One entry per configured hash, in `Algorithm` order.
    pub hashes: Vec<(Algorithm, String)>,
}

impl FileMeta {
    /// `(attr, value)` pairs in SPEC order.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = BASE_ATTRS
            .iter()
            .zip([
                &self.name,
                &self.content_type,
                &self.charset,
                &self.detected_type,
                &self.path,
                &self.key,
                &self.bucket,
                &self.id,
                &self.size.to_string(),
            ])
            .map(|(a, v)| (*a, v.clone()))
            .collect();
        out.extend(self.hashes.iter().map(|(a, v)| (a.name(), v.clone())));
        out
    }
}

/// A client field or a stored file, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Field { name: String, value: Bytes },
    File(FileMeta),
}

impl FieldNames {
    pub fn name(&self, field: &str, attr: &str) -> String {
        self.0.replace("{field}", field).replace("{attr}", attr)
    }

    /// Whether a client-sent field name could pass for porter's metadata: dropped, so
    /// no client can forge a path, size or hash.
    pub fn is_reserved(&self, name: &str) -> bool {
        let all_attrs = BASE_ATTRS
            .iter()
            .copied()
            .chain(Algorithm::ALL.iter().map(|a| a.name()));
        all_attrs.into_iter().any(|attr| {
            let t = self.0.replace("{attr}", attr);
            let Some((pre, post)) = t.split_once("{field}") else {
                return false;
            };
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        })
    }
}

/// The body of the metadata request: `(content type, bytes)`.
pub fn encode(forward: Forward, names: &FieldNames, items: &[Item]) -> (String, Bytes) {
    let pairs = || {
        items.iter().flat_map(|item| match item {
            Item::Field { name, value } => vec![(name.clone(), value.clone())],
            Item::File(f) => f
                .attrs()
                .into_iter()
                .map(|(attr, v)| (names.name(&f.field, attr), Bytes::from(v)))
                .collect(),
        })
    };
    match forward {
        Forward::Multipart => {
            let mut raw = [0u8; 16];
            let _ = getrandom::fill(&mut raw);
            let boundary = format!("porter{}", hex(&raw));
            let mut out = Vec::new();
            for (name, value) in pairs() {
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                        escape_name(&name)
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            (
                format!("multipart/form-data; boundary={boundary}"),
                out.into(),
            )
        }
        Forward::Urlencoded => {
            let body = pairs()
                .map(|(n, v)| format!("{}={}", form_encode(n.as_bytes()), form_encode(&v)))
                .collect::<Vec<_>>()
                .join("&");
            ("application/x-www-form-urlencoded".into(), body.into())
        }
        Forward::Json => ("application/json".into(), json(items).to_string().into()),
    }
}

fn json(items: &[Item]) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    let mut files = Vec::new();
    for item in items {
        match item {
            Item::Field { name, value } => {
                let list = fields
                    .entry(name.clone())
                    .or_insert_with(|| serde_json::json!([]));
                if let Some(arr) = list.as_array_mut() {
                    arr.push(String::from_utf8_lossy(value).into_owned().into());
                }
            }
            Item::File(f) => {
                let mut obj = serde_json::Map::new();
                obj.insert("field".into(), f.field.clone().into());
                for (attr, v) in f.attrs() {
                    let value = if attr == "size" {
                        f.size.into()
                    } else {
                        v.into()
                    };
                    obj.insert(attr.into(), value);
                }
                files.push(serde_json::Value::Object(obj));
            }
        }
    }
    serde_json::json!({"fields": fields, "files": files})
}

/// Escapes a field name inside a quoted `name="..."` as browsers do (HTML spec).
fn escape_name(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// `application/x-www-form-urlencoded` byte encoding.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta {
        FileMeta {
            field: "file".into(),
            name: "a b.txt".into(),
            content_type: "text/plain".into(),
            charset: String::new(),
            detected_type: String::new(),
            path: "/s/ab/cd/x".into(),
            key: "ab/cd/x".into(),
            bucket: String::new(),
            id: "x".into(),
            size: 3,
            hashes: vec![(Algorithm::Md5, "m".into())],
        }
    }

    #[test]
    fn naming_and_reserved() {
        let n = FieldNames("{field}.{attr}".into());
        assert_eq!(n.name("file", "path"), "file.path");
        assert!(n.is_reserved("file.path"));
        assert!(n.is_reserved("x.y.sha256"));
        assert!(n.is_reserved(".path"), "an empty field name is no escape");
        assert!(!n.is_reserved("file.owner"));
        assert!(!n.is_reserved("title"));
        let p = FieldNames("porter.{field}.{attr}".into());
        assert!(!p.is_reserved("user.name"));
        assert!(p.is_reserved("porter.user.name"));
        let rev = FieldNames("{attr}[{field}]".into());
        assert!(rev.is_reserved("path[file]"));
        assert!(rev.is_reserved("path[]"));
        assert!(!rev.is_reserved("path"));
    }

    #[test]
    fn urlencoded_in_order() {
        let items = vec![
            Item::Field {
                name: "t".into(),
                value: Bytes::from_static(b"x&y"),
            },
            Item::File(meta()),
        ];
        let (ct, body) = encode(
            Forward::Urlencoded,
            &FieldNames("{field}.{attr}".into()),
            &items,
        );
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "t=x%26y&file.name=a+b.txt&file.content_type=text%2Fplain&file.charset=&file.detected_type=&file.path=%2Fs%2Fab%2Fcd%2Fx&file.key=ab%2Fcd%2Fx&file.bucket=&file.id=x&file.size=3&file.md5=m"
        );
    }

    #[test]
    fn json_shape() {
        let items = vec![
            Item::Field {
                name: "t".into(),
                value: Bytes::from_static(b"v"),
            },
            Item::File(meta()),
        ];
        let (_, body) = encode(Forward::Json, &FieldNames("{field}.{attr}".into()), &items);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["fields"]["t"], serde_json::json!(["v"]));
        assert_eq!(v["files"][0]["field"], "file");
        assert_eq!(v["files"][0]["size"], 3);
        assert_eq!(v["files"][0]["md5"], "m");
    }

    #[test]
    fn multipart_round_trip() {
        let items = vec![Item::Field {
            name: "q\"x".into(),
            value: Bytes::from_static(b"v"),
        }];
        let (ct, body) = encode(
            Forward::Multipart,
            &FieldNames("{field}.{attr}".into()),
            &items,
        );
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"q%22x\"\r\n\r\nv\r\n"
        )));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
