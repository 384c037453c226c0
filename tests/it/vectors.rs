//! The shared trust vectors, `tests/vectors/trust.json`: signed metadata requests with
//! the verdict every verifier must reach (docs/reference/signature.md). porter produces
//! them here with its own encoder, namespace and signer; `porter_django`'s tests verify
//! them, and so will every later verifier (Rack, PHP, Node).
//!
//! Two kinds of request are in the file: what porter sends (forged client fields already
//! dropped, so verifiers accept it and see no forged name), and what porter would never
//! send, signed all the same (as an older porter, or a route with another template,
//! might have): verifiers must refuse those by their own reading.
//!
//! This test rebuilds the file and fails when the committed one differs, so a change to
//! the signature or the encoding breaks every verifier's test at once. After a
//! deliberate change: `PORTER_WRITE_VECTORS=1 cargo test --test it vectors`.

use crate::support::{md5_hex, sha256_hex};
use bytes::Bytes;
use porter::backend::metadata::{
    Encoding, FileMeta, Item, encode_unscreened, encode_with_boundary,
};
use porter::backend::sign::{Secret, Signed, sign_with};
use porter::config::{FieldNames, Forward};
use porter::namespace::{Namespace, RESERVED_ATTRS, Verdict, normalise};
use serde_json::{Value, json};
use std::path::Path;

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const BOUNDARY: &str = "porter0123456789abcdef0123456789abcdef";
const HOST: &str = "app.example";
const TEMPLATE: &str = "{field}.{attr}";
const KEYS: [(&str, &str); 3] = [
    (
        "current",
        "9f1c4e2b7a6d5038c1e2f4a6b8d0e2f4a6c8e0f2b4d6f8a0c2e4f6a8b0d2e4f6",
    ),
    (
        "previous",
        "0d7c7c5f6a118d0f2f442b674b8c9a7e0d7c7c5f6a118d0f2f442b674b8c9a7e",
    ),
    (
        "other",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
];
const ROOT: &str = "/tmp/porter-vectors/root";
const OUTSIDE: &str = "/tmp/porter-vectors/outside/secret.txt";
const CONTENT: &str = "hello porter\n";
const FILE_ID: &str = "0b5e8f3c-6a1d-4e2f-9b7c-3d4e5f6a7b8c";

/// Client field names that differ from `file.path` only in some framework's reading.
const FORGED_SHAPES: [&str; 19] = [
    "file.path ",
    " file.path",
    "file.path\u{a0}",
    "\u{feff}file.path",
    "file_path",
    "file path",
    "file[path",
    "file[path]",
    "FILE.PATH",
    "File.Path",
    "file.\u{212a}ey",
    "file.\u{17f}ize",
    "file.\u{131}d",
    "\u{ff46}\u{ff49}\u{ff4c}\u{ff45}\u{ff0e}\u{ff50}\u{ff41}\u{ff54}\u{ff48}",
    "file.\u{1d429}ath",
    "file.pa\u{200b}th",
    "file.p\u{e1}th",
    "file.pat\\h",
    "\u{fb01}le.path",
];

/// The same, with a control character: refused by porter (400), and by verifiers.
const CONTROL_SHAPES: [&str; 8] = [
    "file.path\n",
    "file.path\t",
    "file.path\x0b",
    "file.path\x0c",
    "\rfile.path",
    "file.path\u{85}",
    "file.path%0A",
    "file.path%0d",
];

fn key(name: &str) -> Secret {
    let (_, text) = KEYS.iter().find(|(n, _)| *n == name).expect("a vector key");
    Secret::from_bytes(text.as_bytes().to_vec()).expect("key")
}

fn stored(field: &str, path: &str) -> FileMeta {
    FileMeta {
        field: field.into(),
        name: "report.txt".into(),
        content_type: "text/plain".into(),
        charset: String::new(),
        detected_type: String::new(),
        path: path.into(),
        key: format!("ab/cd/{FILE_ID}"),
        bucket: String::new(),
        id: FILE_ID.into(),
        size: CONTENT.len() as u64,
        hashes: vec![
            (
                porter::sink::hashes::Algorithm::Md5,
                md5_hex(CONTENT.as_bytes()),
            ),
            (
                porter::sink::hashes::Algorithm::Sha256,
                sha256_hex(CONTENT.as_bytes()),
            ),
        ],
    }
}

fn inside() -> String {
    format!("{ROOT}/ab/cd/{FILE_ID}")
}

fn field(name: &str, value: &str) -> Item {
    Item::Field {
        name: name.into(),
        value: Bytes::from(value.to_string()),
    }
}

fn forward_name(f: Forward) -> &'static str {
    match f {
        Forward::Multipart => "multipart",
        Forward::Urlencoded => "urlencoded",
        Forward::Json => "json",
    }
}

const FORWARDS: [Forward; 3] = [Forward::Multipart, Forward::Urlencoded, Forward::Json];

/// How a vector's request is signed.
struct Signing {
    /// The key that makes the MAC.
    key: &'static str,
    /// The key whose id goes in `X-Porter-Key-Id` (`None`: no header).
    key_id_of: Option<&'static str>,
    timestamp: u64,
}

const GOOD: Signing = Signing {
    key: "current",
    key_id_of: Some("current"),
    timestamp: NOW,
};

/// A request as a verifier receives it.
struct Req {
    target: String,
    content_type: String,
    body: Bytes,
}

fn produced(forward: Forward, items: &[Item], target: &str) -> Req {
    let names = FieldNames(TEMPLATE.into());
    let namespace = Namespace::new([TEMPLATE]);
    let how = Encoding {
        forward,
        names: &names,
        namespace: &namespace,
    };
    let (content_type, body) = encode_with_boundary(&how, items, BOUNDARY);
    Req {
        target: target.into(),
        content_type,
        body,
    }
}

fn unscreened(forward: Forward, items: &[Item]) -> Req {
    let (content_type, body) =
        encode_unscreened(forward, &FieldNames(TEMPLATE.into()), items, BOUNDARY);
    Req {
        target: "/upload".into(),
        content_type,
        body,
    }
}

fn nonce(name: &str) -> String {
    sha256_hex(name.as_bytes())[..32].to_string()
}

fn request_json(name: &str, req: &Req, signing: Option<&Signing>) -> Value {
    let mut headers = serde_json::Map::new();
    headers.insert("Host".into(), HOST.into());
    headers.insert("Content-Type".into(), req.content_type.clone().into());
    if let Some(s) = signing {
        let sig = sign_with(
            &key(s.key),
            s.timestamp.to_string(),
            nonce(name),
            &Signed {
                method: "POST",
                host: HOST,
                target: &req.target,
                content_type: &req.content_type,
                body: &req.body,
            },
        );
        if let Some(of) = s.key_id_of {
            headers.insert("X-Porter-Key-Id".into(), key(of).key_id().into());
        }
        headers.insert("X-Porter-Timestamp".into(), sig.timestamp.into());
        headers.insert("X-Porter-Nonce".into(), sig.nonce.into());
        headers.insert("X-Porter-Signature".into(), sig.signature.into());
    }
    json!({
        "method": "POST",
        "target": req.target,
        "headers": headers,
        "body": String::from_utf8(req.body.to_vec()).expect("vector bodies are UTF-8"),
    })
}

fn accept(fields: &[(&str, &str)], files: &[&FileMeta]) -> Value {
    let mut by_name = serde_json::Map::new();
    for (n, v) in fields {
        let list = by_name.entry(n.to_string()).or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut() {
            a.push((*v).into());
        }
    }
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            let mut o = serde_json::Map::new();
            o.insert("field".into(), f.field.clone().into());
            for (attr, v) in f.attrs() {
                o.insert(attr.into(), v.into());
            }
            Value::Object(o)
        })
        .collect();
    json!({"verdict": "accept", "fields": by_name, "files": files})
}

fn reject(status: u16, reason: &str) -> Value {
    json!({"verdict": "reject", "status": status, "reason": reason})
}

/// One vector: `expect` is one verdict, or a list when the request is sent that many
/// times in a row (a replay).
fn vector(name: &str, about: &str, req: &Req, signing: Option<&Signing>, expect: Value) -> Value {
    json!({
        "name": name,
        "about": about,
        "request": request_json(name, req, signing),
        "expect": expect,
    })
}

fn with_verifier(mut v: Value, verifier: Value) -> Value {
    v["verifier"] = verifier;
    v
}

fn signature_vectors(out: &mut Vec<Value>) {
    let file = stored("file", &inside());
    let items = [field("title", "quarterly"), Item::File(file.clone())];
    let ok = accept(&[("title", "quarterly")], &[&file]);
    for f in FORWARDS {
        let n = forward_name(f);
        let req = produced(f, &items, "/upload");
        out.push(vector(
            &format!("valid {n}"),
            "porter's own request, signed with the current key",
            &req,
            Some(&GOOD),
            ok.clone(),
        ));
    }
    let req = produced(Forward::Multipart, &items, "/upload");
    let cases: [(&str, &str, Signing, Value); 7] = [
        (
            "previous key still accepted",
            "signed with the key being rotated out, which verifiers still hold",
            Signing {
                key: "previous",
                key_id_of: Some("previous"),
                ..GOOD
            },
            ok.clone(),
        ),
        (
            "unknown key",
            "signed with a key no verifier holds, named by its own id",
            Signing {
                key: "other",
                key_id_of: Some("other"),
                ..GOOD
            },
            reject(403, "unknown-key"),
        ),
        (
            "wrong key",
            "named as the current key, but signed with another",
            Signing {
                key: "other",
                ..GOOD
            },
            reject(403, "bad-signature"),
        ),
        (
            "no key id",
            "every signature names its key",
            Signing {
                key_id_of: None,
                ..GOOD
            },
            reject(403, "missing-signature"),
        ),
        (
            "stale",
            "the timestamp is 301 s old: outside the 300 s window",
            Signing {
                timestamp: NOW - 301,
                ..GOOD
            },
            reject(403, "stale"),
        ),
        (
            "from the future",
            "the timestamp is 301 s ahead",
            Signing {
                timestamp: NOW + 301,
                ..GOOD
            },
            reject(403, "stale"),
        ),
        (
            "edge of the window",
            "the timestamp is exactly 300 s old: still accepted",
            Signing {
                timestamp: NOW - 300,
                ..GOOD
            },
            ok.clone(),
        ),
    ];
    for (name, about, signing, expect) in cases {
        out.push(vector(name, about, &req, Some(&signing), expect));
    }
    out.push(vector(
        "replayed",
        "the same signed request twice: the second is a replay",
        &req,
        Some(&GOOD),
        json!([ok.clone(), reject(403, "replayed")]),
    ));
    let mut tampered = vector(
        "tampered body",
        "signed for one body, sent with another",
        &req,
        Some(&GOOD),
        reject(403, "bad-signature"),
    );
    tampered["request"]["body"] = String::from_utf8_lossy(&req.body)
        .replace("quarterly", "quarterlY")
        .into();
    out.push(tampered);
    out.push(vector(
        "unsigned with metadata",
        "metadata fields sent straight to the app, without porter's signature",
        &req,
        None,
        reject(403, "unsigned-metadata"),
    ));
    let plain = produced(Forward::Multipart, &[field("title", "t")], "/upload");
    out.push(vector(
        "unsigned without metadata",
        "an ordinary form: passes untouched",
        &plain,
        None,
        json!({"verdict": "pass"}),
    ));
    // The client's raw query was `q=a|b{"é&x=1`: porter canonicalises it, and a
    // verifier rebuilds the same target whether or not it sees the raw one.
    let query = porter::route::canonical_query("q=a|b{\"\u{e9}&x=1");
    let req = produced(Forward::Multipart, &items, &format!("/upload?{query}"));
    out.push(vector(
        "query canonicalised",
        "a query with | { \" and UTF-8, in the canonical form porter sends and signs",
        &req,
        Some(&GOOD),
        ok,
    ));
}

/// What porter sends when a client forges names: the forged fields are gone.
fn produced_forgery_vectors(out: &mut Vec<Value>) {
    let file = stored("file", &inside());
    let ok = accept(&[("title", "t")], &[&file]);
    for f in FORWARDS {
        let mut items: Vec<Item> = FORGED_SHAPES.iter().map(|n| field(n, OUTSIDE)).collect();
        items.insert(0, field("title", "t"));
        items.push(Item::File(file.clone()));
        items.push(field("file.path ", OUTSIDE));
        let req = produced(f, &items, "/upload");
        out.push(vector(
            &format!("forged names dropped by porter, {}", forward_name(f)),
            "a client sent file.path under every framework's reading; porter dropped them all",
            &req,
            Some(&GOOD),
            ok.clone(),
        ));
    }
    // A chunked completion: porter vouches for upload_id and md5 and drops their rivals.
    let items = [
        Item::Vouched {
            name: "upload_id".into(),
            value: Bytes::from_static(b"5f0c2b1a9e8d7c6b5a4f3e2d1c0b9a88"),
        },
        Item::Vouched {
            name: "md5".into(),
            value: Bytes::from(md5_hex(CONTENT.as_bytes())),
        },
        field("Upload_ID", "../../etc"),
        field("upload_id ", "../../etc"),
        field("md5", "forged"),
        Item::File(file.clone()),
    ];
    let req = produced(Forward::Multipart, &items, "/api/chunked_upload_complete/");
    out.push(vector(
        "chunked completion",
        "porter's upload_id and md5; the client's rivals of them dropped",
        &req,
        Some(&GOOD),
        accept(
            &[
                ("upload_id", "5f0c2b1a9e8d7c6b5a4f3e2d1c0b9a88"),
                ("md5", &md5_hex(CONTENT.as_bytes())),
            ],
            &[&file],
        ),
    ));
}

/// Bodies porter would never send, signed anyway: verifiers refuse them by their own
/// exact reading.
fn hostile_vectors(out: &mut Vec<Value>) {
    let file = stored("file", &inside());
    for f in FORWARDS {
        let n = forward_name(f);
        for shape in FORGED_SHAPES {
            let items = [field(shape, OUTSIDE), Item::File(file.clone())];
            out.push(vector(
                &format!("forged {shape:?} signed, {n}"),
                "a field a framework would read as the file's path, beside the real one",
                &unscreened(f, &items),
                Some(&GOOD),
                reject(400, "forged-name"),
            ));
        }
        for shape in CONTROL_SHAPES {
            // porter's multipart writes CR and LF in a name as %0D and %0A (as browsers
            // do): still control characters to a verifier.
            let items = [Item::File(file.clone()), field(shape, OUTSIDE)];
            out.push(vector(
                &format!("control character {shape:?} signed, {n}"),
                "a field name with a control character",
                &unscreened(f, &items),
                Some(&GOOD),
                reject(400, "control-in-name"),
            ));
        }
    }
    for f in [Forward::Multipart, Forward::Urlencoded] {
        let items = [field("title", "t"), field("file.path", OUTSIDE)];
        out.push(vector(
            &format!("lone metadata field, {}", forward_name(f)),
            "file.path without the rest of a file's attributes",
            &unscreened(f, &items),
            Some(&GOOD),
            reject(400, "bad-metadata"),
        ));
    }
    let items = [field("file.path", OUTSIDE), Item::File(file.clone())];
    out.push(vector(
        "metadata name among json fields",
        "in the json format metadata lives in files[]; a field by that name is forged",
        &unscreened(Forward::Json, &items),
        Some(&GOOD),
        reject(400, "forged-name"),
    ));
}

fn roots_vectors(out: &mut Vec<Value>) {
    let cases = [
        ("outside the roots", OUTSIDE.to_string()),
        (
            "dot-dot out of the roots",
            format!("{ROOT}/../outside/secret.txt"),
        ),
        ("symlink out of the roots", format!("{ROOT}/ab/cd/link")),
        ("a directory", format!("{ROOT}/ab/cd")),
        ("a relative path", "ab/cd/x".to_string()),
        ("missing", format!("{ROOT}/ab/cd/missing")),
    ];
    for (name, path) in cases {
        let file = stored("file", &path);
        let items = [Item::File(file)];
        out.push(vector(
            &format!("path {name}"),
            "validly signed, but file.path is not a regular file under the roots",
            &produced(Forward::Multipart, &items, "/upload"),
            Some(&GOOD),
            reject(403, "outside-roots"),
        ));
    }
    let file = stored("file", OUTSIDE);
    let items = [Item::File(file.clone())];
    out.push(with_verifier(
        vector(
            "no roots configured",
            "without roots a verifier cannot tell (a system check warns): accepted",
            &produced(Forward::Multipart, &items, "/upload"),
            Some(&GOOD),
            accept(&[], &[&file]),
        ),
        json!({"roots": null}),
    ));
}

/// porter's normaliser and verdicts, for verifiers to compare theirs with.
fn names() -> Vec<Value> {
    let ns = Namespace::new([TEMPLATE]);
    let samples = FORGED_SHAPES
        .iter()
        .chain(CONTROL_SHAPES.iter())
        .chain(&[
            "file.path",
            "title",
            "user_id",
            "first_name",
            "pathname",
            "porter.file.path",
        ])
        .copied();
    samples
        .map(|n| {
            let verdict = match ns.screen(n) {
                Verdict::Keep => "keep",
                Verdict::Drop => "drop",
                Verdict::Refuse => "refuse",
            };
            json!({"name": n, "normalised": normalise(n), "verdict": verdict})
        })
        .collect()
}

fn build() -> Value {
    let mut vectors = Vec::new();
    signature_vectors(&mut vectors);
    produced_forgery_vectors(&mut vectors);
    hostile_vectors(&mut vectors);
    roots_vectors(&mut vectors);
    let keys: serde_json::Map<String, Value> = KEYS
        .iter()
        .map(|(n, k)| {
            let id = key(n).key_id();
            (n.to_string(), json!({"secret": k, "key_id": id}))
        })
        .collect();
    json!({
        "about": "porter's shared trust vectors: see tests/it/vectors.rs and docs/reference/signature.md",
        "now": NOW,
        "max_skew": 300,
        "keys": keys,
        "verifier": {
            "keys": ["current", "previous"],
            "field_names": TEMPLATE,
            "roots": [ROOT],
        },
        "disk": {
            "files": {inside(): CONTENT, OUTSIDE: "not for the app\n"},
            "symlinks": {format!("{ROOT}/ab/cd/link"): OUTSIDE},
        },
        "reserved_attrs": RESERVED_ATTRS,
        "names": names(),
        "vectors": vectors,
    })
}

#[test]
fn the_committed_vectors_are_what_porter_produces() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/trust.json");
    let text = serde_json::to_string_pretty(&build()).expect("json") + "\n";
    if std::env::var_os("PORTER_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &text).expect("write the vectors");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "tests/vectors/trust.json is not what porter produces: if the change is deliberate, \
         rewrite it with PORTER_WRITE_VECTORS=1 and say why in the commit"
    );
}

/// The vectors' verdicts on names are porter's own, shape by shape.
#[test]
fn porter_drops_every_forged_shape_and_refuses_control_characters() {
    let ns = Namespace::new([TEMPLATE]);
    for shape in FORGED_SHAPES {
        assert_eq!(ns.screen(shape), Verdict::Drop, "{shape:?}");
    }
    for shape in CONTROL_SHAPES {
        assert_eq!(ns.screen(shape), Verdict::Refuse, "{shape:?}");
    }
}
