//! The access log: one line per request, written when its response is finished.
//!
//! Why not a `tracing::info!` event, as every other log line is: porter writes one of
//! these for every request it fronts, and tracing's formatter (a timestamp formatted
//! from scratch, a visitor and a `fmt::write` per field, a `String` per event) cost
//! about a tenth of a passed-through request (docs/performance.md). Here a line is
//! formatted by hand into a buffer each thread reuses, with the date part of the
//! timestamp formatted once a second, and goes to stderr in one `write`, as nginx
//! writes its access log: no line is held back, none is lost if porter dies.
//!
//! The lines look exactly as tracing's text and JSON formats print them (operators'
//! parsers keep working), and `RUST_LOG` filters them by their target,
//! `porter::access`, as before.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The target `RUST_LOG` names to filter access lines.
pub const TARGET: &str = "porter::access";

static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format (`[log] format`); called once, where logging is set up.
pub fn use_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// One finished request.
pub struct Line<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub ms: u64,
    pub client: SocketAddr,
    /// The stored file's or the resumable upload's id, `-` for none.
    pub upload: &'a str,
}

/// Writes `line` if the log filter lets `porter::access` through at INFO.
pub fn write(line: &Line) {
    if !tracing::enabled!(target: "porter::access", tracing::Level::INFO) {
        return;
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        format_line(buf, line, SystemTime::now(), JSON.load(Ordering::Relaxed));
        // A failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(buf);
    });
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The second the cached date-and-time prefix is for, and that prefix.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn format_line(buf: &mut Vec<u8>, l: &Line, now: SystemTime, json: bool) {
    let mut n = itoa::Buffer::new();
    if json {
        buf.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(buf, now);
        buf.extend_from_slice(
            b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":\"",
        );
        json_escaped(buf, l.method);
        buf.extend_from_slice(b"\",\"target\":\"");
        json_escaped(buf, l.target);
        buf.push(b'"');
        for (name, v) in numbers(l) {
            let _ = write!(buf, ",\"{name}\":");
            buf.extend_from_slice(n.format(v).as_bytes());
        }
        buf.extend_from_slice(b",\"client\":\"");
        let _ = write!(buf, "{}", l.client);
        buf.extend_from_slice(b"\",\"upload\":\"");
        json_escaped(buf, l.upload);
        buf.extend_from_slice(b"\"},\"target\":\"porter::access\"}\n");
    } else {
        timestamp(buf, now);
        buf.extend_from_slice(b"  INFO porter::access: request method=");
        plain(buf, l.method);
        buf.extend_from_slice(b" target=");
        plain(buf, l.target);
        for (name, v) in numbers(l) {
            let _ = write!(buf, " {name}=");
            buf.extend_from_slice(n.format(v).as_bytes());
        }
        buf.extend_from_slice(b" client=");
        let _ = write!(buf, "{}", l.client);
        // Quoted and escaped as tracing printed a string field (`{:?}`): the id of a
        // resumable upload can come from the client before it is checked.
        let _ = writeln!(buf, " upload={:?}", l.upload);
    }
}

/// A line's numeric fields, named and in the order both formats print them.
fn numbers(l: &Line) -> [(&'static str, u64); 4] {
    [
        ("status", u64::from(l.status)),
        ("bytes_in", l.bytes_in),
        ("bytes_out", l.bytes_out),
        ("ms", l.ms),
    ]
}

/// RFC 3339 in UTC with microseconds, as tracing prints it: `2026-12-07T15:01:13.123456Z`.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            *cached = secs;
            *prefix = crate::http::date::date_time(secs);
        }
        buf.extend_from_slice(prefix.as_bytes());
    });
    let _ = write!(buf, ".{:06}Z", since.subsec_micros());
}

/// Text as is, but control characters escaped: a line is one line, whatever a client
/// managed to put in a field.
fn plain(buf: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b < 0x20 || b == 0x7f {
            let _ = write!(buf, "\\x{b:02x}");
        } else {
            buf.push(b);
        }
    }
}

/// A JSON string's contents: `"`, `\` and control characters escaped.
fn json_escaped(buf: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b if b < 0x20 || b == 0x7f => {
                let _ = write!(buf, "\\u{:04x}", b);
            }
            b => buf.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line<'a>(target: &'a str, upload: &'a str) -> Line<'a> {
        Line {
            method: "POST",
            target,
            status: 200,
            bytes_in: 10,
            bytes_out: 11,
            ms: 84,
            client: "203.0.113.9:52114".parse().expect("addr"),
            upload,
        }
    }

    fn formatted(l: &Line, json: bool) -> String {
        let mut buf = Vec::new();
        // 2025-11-25T00:50:01.200000Z
        let at = UNIX_EPOCH + Duration::from_micros(1_764_031_801_200_000);
        format_line(&mut buf, l, at, json);
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn text_line_reads_as_tracing_printed_it() {
        assert_eq!(
            formatted(&line("/upload?x=1", "-"), false),
            "2025-11-25T00:50:01.200000Z  INFO porter::access: request method=POST \
             target=/upload?x=1 status=200 bytes_in=10 bytes_out=11 ms=84 \
             client=203.0.113.9:52114 upload=\"-\"\n"
        );
    }

    #[test]
    fn json_line_parses_with_tracings_field_names() {
        let text = formatted(&line("/a\"b\\c\u{1}", "id"), true);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["timestamp"], "2025-11-25T00:50:01.200000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "porter::access");
        let f = &v["fields"];
        assert_eq!(f["message"], "request");
        assert_eq!(f["target"], "/a\"b\\c\u{1}");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes_in"], 10);
        assert_eq!(f["client"], "203.0.113.9:52114");
        assert_eq!(f["upload"], "id");
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
    }

    #[test]
    fn control_characters_never_break_a_text_line() {
        let text = formatted(&line("/x\r\ny=1\u{7f}", "-"), false);
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.contains("target=/x\\x0d\\x0ay=1\\x7f "), "{text:?}");
    }

    #[test]
    fn a_client_chosen_upload_id_cannot_forge_fields() {
        let text = formatted(&line("/c", "x\" status=200 client=10.0.0.1\nfake"), false);
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(
            text.ends_with(" upload=\"x\\\" status=200 client=10.0.0.1\\nfake\"\n"),
            "{text:?}"
        );
    }
}
