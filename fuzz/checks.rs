//! The property each fuzz target checks, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz`) and the corpus replay that
//! `cargo test` runs (`tests/it/fuzz_corpus.rs`): every input in `fuzz/corpus/<target>/`
//! must pass its check on stable Rust too, so a crash once found stays fixed.
//!
//! Every check takes arbitrary bytes and panics only when porter misbehaves.

#![allow(dead_code)] // each fuzz target uses one check

use bytes::{Bytes, BytesMut};
use porter::config::units::{format_duration, format_size, parse_duration, parse_size};
use porter::download::range::{self, Ranges};
use porter::download::resolve;
use porter::http::content_range;
use porter::http::multipart::{Event, Limits, MultipartError, Parser};
use porter::listen::proxy_protocol::{parse_v1, parse_v2};
use porter::namespace::{Namespace, RESERVED_ATTRS, Verdict, has_control, normalise};
use porter::protocol::tus::headers;
use std::path::{Component, PathBuf};

/// A property over arbitrary bytes: panics when porter misbehaves.
pub type Check = fn(&[u8]);

/// The checks by corpus folder name.
pub const TARGETS: &[(&str, Check)] = &[
    ("multipart", multipart),
    ("content_range", content_range),
    ("tus_headers", tus_headers),
    ("range", range),
    ("resolve", resolve),
    ("units", units),
    ("namespace", namespace),
    ("proxy", proxy),
];

const BOUNDARY: &str = "XyZ";

/// The multipart parser over `data[1..]`, fed in chunks whose sizes the first byte
/// seeds: it never panics, its buffer stays within its limits, the closing boundary is
/// reported once, and a body that closes gives the same parts and data as when it is
/// handed over whole (`push` keeps slices of the input: they must not move a byte).
pub fn multipart(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_header_bytes: 256,
        max_preamble: 512,
    };
    let mut parser = Parser::new(BOUNDARY, limits);
    let mut buf = BytesMut::new();
    let (mut at, mut step, mut ends) = (0usize, usize::from(seed % 17) + 1, 0);
    let mut events = Vec::new();
    loop {
        let next = (at + step).min(body.len());
        parser.push(&mut buf, Bytes::copy_from_slice(&body[at..next]));
        at = next;
        let eof = at == body.len();
        loop {
            match parser.feed(&mut buf, eof) {
                Ok(Some(Event::End)) => {
                    ends += 1;
                    events.push(Event::End);
                }
                Ok(Some(Event::Data(d))) => {
                    assert!(!d.is_empty(), "an empty Data event");
                    merge(&mut events, d);
                }
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(MultipartError::Malformed(_) | MultipartError::HeaderTooLarge(_)) => return,
                Err(MultipartError::UnexpectedEnd) => {
                    assert!(eof, "UnexpectedEnd before the input ended");
                    return;
                }
            }
        }
        // What the parser holds back: at most a header block, a delimiter and its padding.
        let bound = limits.max_header_bytes + BOUNDARY.len() + 6 + 256 + step;
        assert!(
            buf.len() <= bound,
            "parser holds {} bytes (bound {bound})",
            buf.len()
        );
        if eof {
            break;
        }
        step = (step * 7 + usize::from(seed)) % 61 + 1;
    }
    assert!(ends <= 1, "End reported {ends} times");
    assert_eq!(
        ends == 1,
        parser.is_done(),
        "End event and is_done disagree"
    );
    if ends == 1 {
        assert_eq!(
            events,
            whole(body, limits),
            "chunked and whole parses disagree"
        );
    }
}

/// Appends part data to the events, merged with the data just before it.
fn merge(events: &mut Vec<Event>, d: Bytes) {
    match events.last_mut() {
        Some(Event::Data(prev)) => *prev = [prev.as_ref(), d.as_ref()].concat().into(),
        _ => events.push(Event::Data(d)),
    }
}

/// The events of `body` handed to the parser in one piece, up to the closing boundary.
fn whole(body: &[u8], limits: Limits) -> Vec<Event> {
    let mut parser = Parser::new(BOUNDARY, limits);
    let mut buf = BytesMut::from(body);
    let mut events = Vec::new();
    while let Ok(Some(e)) = parser.feed(&mut buf, true) {
        match e {
            Event::Data(d) => merge(&mut events, d),
            Event::End => {
                events.push(Event::End);
                break;
            }
            e => events.push(e),
        }
    }
    events
}

/// `Content-Range`: what parses is a well-ordered range that prints and parses back
/// to itself.
pub fn content_range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((start, end, total)) = content_range::parse(text) {
        assert!(
            start <= end && end < total,
            "{text:?} -> {start}-{end}/{total}"
        );
        let again = content_range::parse(&format!("bytes {start}-{end}/{total}"));
        assert_eq!(again, Some((start, end, total)));
    }
}

/// tus `Upload-Metadata` and `Upload-Checksum`: never panic; keys are non-empty and
/// free of separators and control characters; base64 decodes what it encodes.
pub fn tus_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pairs) = headers::parse_metadata(text) {
        for (key, _) in pairs {
            assert!(!key.is_empty(), "an empty key from {text:?}");
            assert!(!key.contains([' ', ',']), "key {key:?} from {text:?}");
            assert!(!key.contains(|c: char| c.is_control()), "key {key:?}");
        }
    }
    let _ = headers::parse_checksum(text);
    if let Some(decoded) = headers::base64_decode(text) {
        assert!(decoded.len() <= text.len(), "base64 grew");
    }
    let encoded = encode_base64(data);
    assert_eq!(headers::base64_decode(&encoded).as_deref(), Some(data));
}

fn encode_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Range` against a file length taken from the first 8 bytes: every satisfiable range
/// lies inside the file, first ≤ last, and there are at most `MAX_RANGES`.
pub fn range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (len, header) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default()) >> (len[7] % 64);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let Ranges::Satisfiable(ranges) = range::parse(header, len) {
        assert!(!ranges.is_empty() && ranges.len() <= range::MAX_RANGES);
        for (first, last) in ranges {
            assert!(
                first <= last && last < len,
                "{header:?} len {len}: {first}-{last}"
            );
        }
    }
}

/// X-Accel-Redirect and X-Sendfile targets: whatever the value, a resolved path lies
/// beneath its entry's root and has no `.` or `..` component.
pub fn resolve(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let entries = vec![
        ("/protected".to_string(), PathBuf::from("/srv/files")),
        (
            "/protected/deep".to_string(),
            PathBuf::from("/srv/other/deep"),
        ),
        ("/media".to_string(), PathBuf::from("/var/media")),
    ];
    for found in [
        resolve::by_prefix(&entries, value),
        resolve::by_path(&entries, value),
    ] {
        let Ok(candidate) = found else {
            continue;
        };
        let root = &entries[candidate.entry].1;
        assert!(
            candidate.path.starts_with(root),
            "{value:?} -> {candidate:?}"
        );
        let dots = candidate
            .path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        assert!(!dots, "{value:?} -> {candidate:?}");
    }
}

/// Config sizes and durations: never panic, and what parses prints back to the same value.
pub fn units(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = parse_size(text) {
        assert_eq!(parse_size(&format_size(n)), Ok(n), "{text:?}");
    }
    if let Ok(d) = parse_duration(text) {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text:?}");
    }
}

/// Templates the namespace check tries; the first byte picks one.
const TEMPLATES: [&str; 4] = [
    "{field}.{attr}",
    "porter.{field}.{attr}",
    "{attr}[{field}]",
    "x-{field}-{attr}",
];

/// The metadata namespace (`porter::namespace`) over arbitrary names: screening never
/// panics, normalising is idempotent, a control character anywhere is refused, and a
/// metadata name dressed up the way frameworks read names (edge whitespace, invisible
/// characters, `.` as `_`, space or `[`, other case) never passes as a client field.
pub fn namespace(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let template = TEMPLATES[usize::from(pick) % TEMPLATES.len()];
    let ns = Namespace::new([template]);
    let text = String::from_utf8_lossy(rest);
    let once = normalise(&text);
    assert_eq!(
        normalise(&once),
        once,
        "normalise is idempotent on {text:?}"
    );
    let verdict = ns.screen(&text);
    assert_eq!(verdict == Verdict::Refuse, has_control(&text), "{text:?}");
    // Dress a real metadata name: the field is the input, the rest seeded by it.
    let attr = RESERVED_ATTRS[usize::from(pick / 4) % RESERVED_ATTRS.len()];
    let field: String = text.chars().take(16).collect();
    let exact = template.replace("{field}", &field).replace("{attr}", attr);
    let dressed = dress(&exact, pick);
    assert_ne!(
        ns.screen(&exact),
        Verdict::Keep,
        "{exact:?} under {template}"
    );
    assert_ne!(
        ns.screen(&dressed),
        Verdict::Keep,
        "{dressed:?} under {template}"
    );
}

/// `name` as a lenient reader would still take for it.
fn dress(name: &str, seed: u8) -> String {
    let dots = ['.', '_', ' ', '['][usize::from(seed) % 4];
    let body: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            '.' | '_' | ' ' | '[' => dots,
            c if (i + usize::from(seed)) % 3 == 0 => c.to_ascii_uppercase(),
            c => c,
        })
        .collect();
    let edges = ["", " ", "\u{a0}", "\u{200b}", "\u{feff}", "\u{3000}"];
    let lead = edges[usize::from(seed) % edges.len()];
    let trail = edges[usize::from(seed / 7) % edges.len()];
    format!("{lead}{body}{trail}")
}

/// The PROXY protocol parsers over arbitrary bytes: the first byte picks v1 (the rest
/// is a header line) or v2 (version/command, family, address block). They never panic,
/// and an address they return is the one the header states.
pub fn proxy(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let line = &rest[..rest.len().min(105)];
        if let Ok(Some(addr)) = parse_v1(line) {
            let text = String::from_utf8_lossy(line);
            let fields: Vec<&str> = text.split(' ').collect();
            assert_eq!(fields.len(), 6, "{text:?}");
            assert_eq!(fields[2].parse::<std::net::IpAddr>().ok(), Some(addr.ip()));
            assert_eq!(fields[4].parse::<u16>().ok(), Some(addr.port()));
        }
        return;
    }
    let [ver_cmd, family, block @ ..] = rest else {
        return;
    };
    if let Ok(Some(addr)) = parse_v2(*ver_cmd, *family, block) {
        assert_eq!(ver_cmd >> 4, 2);
        let port_at = if addr.is_ipv4() { 8 } else { 32 };
        assert!(block.len() >= port_at + 4);
        assert_eq!(
            u16::from_be_bytes([block[port_at], block[port_at + 1]]),
            addr.port()
        );
    }
}
