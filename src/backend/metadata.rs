//! What the backend receives instead of the file bytes (docs/reference/metadata.md): each stored file's
//! attributes as form fields named by `field_names`, beside the client's own fields,
//! encoded as multipart, urlencoded or JSON.

use crate::config::{FieldNames, Forward};
use crate::namespace::{Namespace, Verdict, normalise};
use crate::sink::hashes::{Algorithm, hex};
use bytes::Bytes;

/// The attributes every file carries, in this order, before its hashes: the first
/// of the reserved names (`namespace::RESERVED_ATTRS`).
pub const BASE_ATTRS: &[&str] = crate::namespace::RESERVED_ATTRS.split_at(9).0;

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
    /// `(attr, value)` pairs in the documented order (docs/reference/metadata.md).
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

/// One entry of the metadata request, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A client's own field: passed on only when its name cannot pass for metadata
    /// or for a field porter vouches for (see `namespace`).
    Field {
        name: String,
        value: Bytes,
    },
    /// A field porter itself checked and vouches for (a chunked completion's
    /// `upload_id` and `md5`): client fields that a framework could read as it are
    /// dropped, so the app sees porter's value only.
    Vouched {
        name: String,
        value: Bytes,
    },
    File(FileMeta),
}

impl FieldNames {
    pub fn name(&self, field: &str, attr: &str) -> String {
        self.0.replace("{field}", field).replace("{attr}", attr)
    }
}

/// How a metadata body is written: the route's format and names, and every name a
/// client field may not take.
pub struct Encoding<'a> {
    pub forward: Forward,
    pub names: &'a FieldNames,
    pub namespace: &'a Namespace,
}

/// The body of the metadata request: `(content type, bytes)`.
pub fn encode(how: &Encoding<'_>, items: &[Item]) -> (String, Bytes) {
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // A guessable boundary would let a field value forge a part: never fixed.
        raw = *uuid::Uuid::new_v4().as_bytes();
    }
    encode_with_boundary(how, items, &format!("porter{}", hex(&raw)))
}

/// [`encode`] with a given multipart boundary (the shared test vectors fix it).
pub fn encode_with_boundary(how: &Encoding<'_>, items: &[Item], boundary: &str) -> (String, Bytes) {
    let items = passed(how.namespace, items);
    encode_unscreened(how.forward, how.names, &items, boundary)
}

/// The items that may reach the app: every client field whose name could be read as
/// metadata, or as a field porter vouches for, is left out.
fn passed(namespace: &Namespace, items: &[Item]) -> Vec<Item> {
    let vouched: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Item::Vouched { name, .. } => Some(normalise(name)),
            _ => None,
        })
        .collect();
    items
        .iter()
        .filter(|item| match item {
            Item::Field { name, .. } => {
                let keep = namespace.screen(name) == Verdict::Keep
                    && !vouched.contains(&normalise(name));
                if !keep {
                    tracing::warn!(field = %name.escape_debug(), "dropped a client field that could pass for porter's metadata");
                }
                keep
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// The metadata body exactly as given, no field dropped. Only [`encode`] and the test
/// vectors (which must show verifiers a body porter would never send) call it.
pub fn encode_unscreened(
    forward: Forward,
    names: &FieldNames,
    items: &[Item],
    boundary: &str,
) -> (String, Bytes) {
    let pairs = || {
        items.iter().flat_map(|item| match item {
            Item::Field { name, value } | Item::Vouched { name, value } => {
                vec![(name.clone(), value.clone())]
            }
            Item::File(f) => f
                .attrs()
                .into_iter()
                .map(|(attr, v)| (names.name(&f.field, attr), Bytes::from(v)))
                .collect(),
        })
    };
    match forward {
        Forward::Multipart => {
            // Appended piece by piece: one buffer, no `format!` per field.
            let mut out = Vec::with_capacity(1024);
            for (name, value) in pairs() {
                for piece in [b"--", boundary.as_bytes(), b"\r\n"] {
                    out.extend_from_slice(piece);
                }
                out.extend_from_slice(b"Content-Disposition: form-data; name=\"");
                out.extend_from_slice(escape_name(&name).as_bytes());
                out.extend_from_slice(b"\"\r\n\r\n");
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
            }
            for piece in [b"--", boundary.as_bytes(), b"--\r\n"] {
                out.extend_from_slice(piece);
            }
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
            Item::Field { name, value } | Item::Vouched { name, value } => {
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
            b => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
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

    fn how<'a>(forward: Forward, names: &'a FieldNames, ns: &'a Namespace) -> Encoding<'a> {
        Encoding {
            forward,
            names,
            namespace: ns,
        }
    }

    #[test]
    fn naming() {
        let n = FieldNames("{field}.{attr}".into());
        assert_eq!(n.name("file", "path"), "file.path");
        assert_eq!(
            FieldNames("{attr}[{field}]".into()).name("f", "id"),
            "id[f]"
        );
    }

    /// Every attribute porter sends is reserved, in the order it sends them.
    #[test]
    fn sent_attributes_are_reserved() {
        let sent: Vec<&str> = BASE_ATTRS
            .iter()
            .copied()
            .chain(Algorithm::ALL.iter().map(|a| a.name()))
            .collect();
        assert_eq!(sent[..], crate::namespace::RESERVED_ATTRS[..sent.len()]);
    }

    /// The last line of defence: whatever a front-end let through, no forged name and
    /// no rival of a vouched field reaches the body, in any format.
    #[test]
    fn forged_and_rival_fields_never_reach_the_body() {
        let names = FieldNames("{field}.{attr}".into());
        let ns = Namespace::new(["{field}.{attr}"]);
        let items = vec![
            Item::Field {
                name: "file.path ".into(),
                value: Bytes::from_static(b"/etc/passwd"),
            },
            Item::Field {
                name: "Upload_ID".into(),
                value: Bytes::from_static(b"forged"),
            },
            Item::Vouched {
                name: "upload_id".into(),
                value: Bytes::from_static(b"real"),
            },
            Item::Field {
                name: "title".into(),
                value: Bytes::from_static(b"t"),
            },
            Item::File(meta()),
        ];
        for forward in [Forward::Multipart, Forward::Urlencoded, Forward::Json] {
            let (_, body) = encode(&how(forward, &names, &ns), &items);
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("passwd"), "{forward:?}: {text}");
            assert!(!text.contains("forged"), "{forward:?}: {text}");
            assert!(text.contains("real") && text.contains("title"), "{text}");
        }
    }

    /// A field `t` with `value`, then the file of `meta()`.
    fn field_and_file(value: &'static [u8]) -> Vec<Item> {
        vec![
            Item::Field {
                name: "t".into(),
                value: Bytes::from_static(value),
            },
            Item::File(meta()),
        ]
    }

    #[test]
    fn urlencoded_in_order() {
        let items = field_and_file(b"x&y");
        let names = FieldNames("{field}.{attr}".into());
        let ns = Namespace::default();
        let (ct, body) = encode(&how(Forward::Urlencoded, &names, &ns), &items);
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "t=x%26y&file.name=a+b.txt&file.content_type=text%2Fplain&file.charset=&file.detected_type=&file.path=%2Fs%2Fab%2Fcd%2Fx&file.key=ab%2Fcd%2Fx&file.bucket=&file.id=x&file.size=3&file.md5=m"
        );
    }

    #[test]
    fn json_shape() {
        let items = field_and_file(b"v");
        let names = FieldNames("{field}.{attr}".into());
        let ns = Namespace::default();
        let (_, body) = encode(&how(Forward::Json, &names, &ns), &items);
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
        let names = FieldNames("{field}.{attr}".into());
        let ns = Namespace::default();
        let (ct, body) = encode(&how(Forward::Multipart, &names, &ns), &items);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"q%22x\"\r\n\r\nv\r\n"
        )));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
