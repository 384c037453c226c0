//! multipart/form-data both ways: the client's `Form`, and the app's reading of the
//! metadata request porter sends (`parse_form`, `one`, `get`), signature included.

use super::backend::Recorded;
use super::{Porter, md5_hex, sha256_hex};
use porter::backend::sign;

/// A multipart body under construction.
pub struct Form {
    pub boundary: String,
    body: Vec<u8>,
}

impl Form {
    pub fn new() -> Form {
        Form {
            boundary: "----testBoundary7MA4YWxkTrZu0gW".into(),
            body: Vec::new(),
        }
    }

    pub fn field(mut self, name: &str, value: &str) -> Form {
        self.body.extend(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .bytes(),
        );
        self
    }

    pub fn file(mut self, name: &str, filename: &str, ct: &str, data: &[u8]) -> Form {
        self.body.extend(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n",
                self.boundary
            )
            .bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend(b"\r\n");
        self
    }

    /// One file `filename` of type application/octet-stream in field `file`.
    pub fn one_file(filename: &str, data: &[u8]) -> Form {
        Form::new().file("file", filename, "application/octet-stream", data)
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend(format!("--{}--\r\n", self.boundary).bytes());
        (self.content_type(), self.body)
    }
}

/// Parses a multipart body the backend received into `(name, value)` pairs.
pub fn parse_form(r: &Recorded) -> Vec<(String, String)> {
    let ct = r.header("content-type").expect("content-type");
    let boundary = ct.split("boundary=").nth(1).expect("boundary");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let mut out = Vec::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("name");
        out.push((
            name.to_string(),
            value.strip_suffix("\r\n").unwrap_or(value).to_string(),
        ));
    }
    out
}

pub fn get<'a>(form: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

pub fn one<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    let v = get(form, name);
    assert_eq!(v.len(), 1, "expected one {name:?} in {form:?}");
    v[0]
}

/// The file in `field` is `content`: its size, md5 and sha256, and the bytes at its path.
pub fn assert_file(form: &[(String, String)], field: &str, content: &[u8]) {
    assert_eq!(
        one(form, &format!("{field}.size")),
        content.len().to_string()
    );
    assert_eq!(one(form, &format!("{field}.md5")), md5_hex(content));
    assert_eq!(one(form, &format!("{field}.sha256")), sha256_hex(content));
    let path = one(form, &format!("{field}.path"));
    assert!(
        std::fs::read(path).expect("the stored file") == content,
        "{path}: the bytes"
    );
}

/// Recomputes docs/reference/signature.md's signature over what the backend received, with `porter`'s
/// secret; the key id it names is that secret's.
pub fn assert_signed(porter: &Porter, r: &Recorded) {
    let secret = porter.secret();
    assert_eq!(r.header("x-porter-key-id"), Some(secret.key_id().as_str()));
    let sig = sign::sign_with(
        &secret,
        r.header("x-porter-timestamp").expect("timestamp").into(),
        r.header("x-porter-nonce").expect("nonce").into(),
        &sign::Signed {
            method: r.method.as_str(),
            host: r.header("host").unwrap_or(""),
            target: &r.target,
            content_type: r.header("content-type").unwrap_or(""),
            body: &r.body,
        },
    );
    assert_eq!(r.header("x-porter-signature"), Some(sig.signature.as_str()));
    assert_eq!(sig.nonce.len(), 32);
}
