//! A streaming `multipart/form-data` parser (RFC 7578), sans I/O.
//!
//! The caller hands received bytes to `push` and calls `feed` until it returns `None`
//! (more input needed). Every state has a bound: the preamble, the boundary line and a
//! part's header block cannot grow past `Limits`, so a hostile body cannot make porter
//! buffer without end. Part data is handed out as it arrives, holding back only the few
//! bytes that might be the start of the next delimiter; in the middle of a part, the
//! received buffers themselves are handed out (no copy), only those few bytes are.

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest header block of one part.
    pub max_header_bytes: usize,
    /// Largest preamble (bytes before the first boundary).
    pub max_preamble: usize,
}

/// The headers of one part that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHead {
    /// The `name` parameter of `Content-Disposition`.
    pub name: Option<String>,
    /// The `filename` (or `filename*`) parameter: present means a file input.
    pub filename: Option<String>,
    /// `Content-Type` as sent, parameters included.
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Part(PartHead),
    Data(Bytes),
    PartEnd,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("a part's headers are larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("the multipart body ended early")]
    UnexpectedEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterBoundary,
    Headers,
    Body,
    End,
}

pub struct Parser {
    /// `--boundary`, as it may open the body.
    dash_boundary: Vec<u8>,
    /// Finds `\r\n--boundary`, the delimiter before every later boundary.
    delim: Finder<'static>,
    delim_len: usize,
    state: State,
    limits: Limits,
    /// The body did not open with `--boundary`: look for `\r\n--boundary` instead.
    past_start: bool,
    preamble_seen: usize,
    /// Part data taken whole from pushed input, handed out before anything in the buffer.
    ready: [Option<Bytes>; 2],
    /// How much of a part's head has been searched for its end already, so a head that
    /// arrives a byte at a time is scanned once, not once per byte.
    head_scanned: usize,
}

const MAX_PADDING: usize = 256;

impl Parser {
    pub fn new(boundary: &str, limits: Limits) -> Parser {
        let dash_boundary = format!("--{boundary}").into_bytes();
        let delim = format!("\r\n--{boundary}").into_bytes();
        Parser {
            delim_len: delim.len(),
            delim: Finder::new(&delim).into_owned(),
            dash_boundary,
            state: State::Preamble,
            limits,
            past_start: false,
            preamble_seen: 0,
            ready: [None, None],
            head_scanned: 0,
        }
    }

    /// Whether the closing boundary has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Adds received bytes. In the middle of a part, what is surely part data is kept as
    /// it came (a slice of `data`, handed out by the next `feed`) and only the rest is
    /// copied into `buf`: the bytes held back, and whatever follows a delimiter.
    ///
    /// Surely part data: no delimiter starts in it. The held-back bytes in `buf` (fewer
    /// than a delimiter) are checked together with the start of `data`; a delimiter that
    /// straddles the two, or input shorter than a delimiter, takes the copying path.
    pub fn push(&mut self, buf: &mut BytesMut, mut data: Bytes) {
        let carry = buf.len();
        if self.state != State::Body
            || self.ready.iter().any(Option::is_some)
            || carry >= self.delim_len
            || data.len() < self.delim_len
        {
            buf.extend_from_slice(&data);
            return;
        }
        if carry > 0 && self.straddles(buf, &data) {
            buf.extend_from_slice(&data);
            return;
        }
        let sure = match self.delim.find(&data) {
            Some(i) => i,
            None => data.len() + 1 - self.delim_len,
        };
        self.ready = [Some(buf.split().freeze()), Some(data.split_to(sure))];
        buf.extend_from_slice(&data);
    }

    /// Whether a delimiter starts in the held-back `buf` and runs on into `data`. (With
    /// nothing held back, the common case, there is no seam to check and no copy.)
    fn straddles(&self, buf: &[u8], data: &[u8]) -> bool {
        let mut seam = Vec::with_capacity(buf.len() + self.delim_len);
        seam.extend_from_slice(buf);
        seam.extend_from_slice(&data[..self.delim_len]);
        self.delim.find(&seam).is_some_and(|i| i < buf.len())
    }

    /// Takes what it can from `buf`. `None`: needs more input (an error if `eof`).
    pub fn feed(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Event>, MultipartError> {
        for slot in &mut self.ready {
            if let Some(data) = slot.take().filter(|d| !d.is_empty()) {
                return Ok(Some(Event::Data(data)));
            }
        }
        loop {
            let progress = match self.state {
                State::Preamble => self.preamble(buf)?,
                State::AfterBoundary => self.after_boundary(buf)?,
                State::Headers => return self.headers(buf, eof),
                State::Body => return self.body(buf, eof),
                State::End => return Ok(None),
            };
            match progress {
                Step::Event(e) => return Ok(Some(e)),
                Step::Continue => continue,
                Step::NeedMore if eof => return Err(MultipartError::UnexpectedEnd),
                Step::NeedMore => return Ok(None),
            }
        }
    }

    fn preamble(&mut self, buf: &mut BytesMut) -> Result<Step, MultipartError> {
        if !self.past_start {
            let n = buf.len().min(self.dash_boundary.len());
            if buf[..n] != self.dash_boundary[..n] {
                self.past_start = true;
            } else if n < self.dash_boundary.len() {
                return Ok(Step::NeedMore);
            } else {
                let _ = buf.split_to(n);
                self.state = State::AfterBoundary;
                return Ok(Step::Continue);
            }
        }
        if let Some(i) = self.delim.find(buf) {
            let _ = buf.split_to(i + self.delim_len);
            self.state = State::AfterBoundary;
            return Ok(Step::Continue);
        }
        let keep = self.delim_len - 1;
        let drop = buf.len().saturating_sub(keep);
        let _ = buf.split_to(drop);
        self.preamble_seen += drop;
        if self.preamble_seen > self.limits.max_preamble {
            return Err(MultipartError::Malformed("no boundary found"));
        }
        Ok(Step::NeedMore)
    }

    fn after_boundary(&mut self, buf: &mut BytesMut) -> Result<Step, MultipartError> {
        if buf.len() < 2 {
            return Ok(Step::NeedMore);
        }
        if &buf[..2] == b"--" {
            self.state = State::End;
            return Ok(Step::Event(Event::End));
        }
        let pad = buf.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        if pad > MAX_PADDING {
            return Err(MultipartError::Malformed("bad boundary line"));
        }
        if buf.len() < pad + 2 {
            return Ok(Step::NeedMore);
        }
        if &buf[pad..pad + 2] != b"\r\n" {
            return Err(MultipartError::Malformed("bad boundary line"));
        }
        let _ = buf.split_to(pad + 2);
        self.state = State::Headers;
        Ok(Step::Continue)
    }

    fn headers(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Event>, MultipartError> {
        let end = if buf.starts_with(b"\r\n") {
            Some((0, 2))
        } else {
            // The end may straddle what was searched and what came since.
            let from = self.head_scanned.saturating_sub(3).min(buf.len());
            memchr::memmem::find(&buf[from..], b"\r\n\r\n").map(|i| (from + i, from + i + 4))
        };
        let Some((head_len, consumed)) = end else {
            self.head_scanned = buf.len();
            if buf.len() > self.limits.max_header_bytes {
                return Err(MultipartError::HeaderTooLarge(self.limits.max_header_bytes));
            }
            return if eof {
                Err(MultipartError::UnexpectedEnd)
            } else {
                Ok(None)
            };
        };
        if head_len > self.limits.max_header_bytes {
            return Err(MultipartError::HeaderTooLarge(self.limits.max_header_bytes));
        }
        self.head_scanned = 0;
        let head = parse_head(&buf[..head_len])?;
        let _ = buf.split_to(consumed);
        self.state = State::Body;
        Ok(Some(Event::Part(head)))
    }

    fn body(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Event>, MultipartError> {
        match self.delim.find(buf) {
            Some(0) => {
                let _ = buf.split_to(self.delim_len);
                self.state = State::AfterBoundary;
                Ok(Some(Event::PartEnd))
            }
            Some(i) => Ok(Some(Event::Data(buf.split_to(i).freeze()))),
            None => {
                let safe = buf.len().saturating_sub(self.delim_len - 1);
                if safe > 0 {
                    Ok(Some(Event::Data(buf.split_to(safe).freeze())))
                } else if eof {
                    Err(MultipartError::UnexpectedEnd)
                } else {
                    Ok(None)
                }
            }
        }
    }
}

enum Step {
    Event(Event),
    Continue,
    NeedMore,
}

/// The file name in a `Content-Disposition` value (`filename*` preferred).
pub fn disposition_filename(value: &str) -> Option<String> {
    let (_, params) = parse_params(value);
    let star = params
        .iter()
        .find(|(k, _)| k == "filename*")
        .and_then(|(_, v)| decode_ext_value(v));
    star.or_else(|| {
        params
            .into_iter()
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v)
    })
}

fn parse_head(raw: &[u8]) -> Result<PartHead, MultipartError> {
    let text = String::from_utf8_lossy(raw);
    let mut lines: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            // obs-fold: a continuation of the previous header.
            match lines.last_mut() {
                Some(prev) => prev.push_str(line),
                None => return Err(MultipartError::Malformed("bad part header")),
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let mut head = PartHead::default();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(MultipartError::Malformed("bad part header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            let (_, params) = parse_params(value);
            head.name = params
                .into_iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v);
            head.filename = disposition_filename(value);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_string());
        }
    }
    if head.name.is_none() {
        return Err(MultipartError::Malformed("a part has no name"));
    }
    Ok(head)
}

/// Splits `type; k=v; k="quoted"` into the type and lowercase-keyed parameters.
/// Quoted values are unescaped as Django does (`\\` and `\"`); browsers
/// percent-encode quotes instead, and Windows paths keep their backslashes.
pub fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_unquoted(value, ';').into_iter();
    let ty = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\\", "\\").replace("\\\"", "\""),
                None => v.to_string(),
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect();
    (ty, params)
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// RFC 8187 `charset'lang'percent-encoded`; UTF-8 and ISO-8859-1 are understood.
fn decode_ext_value(v: &str) -> Option<String> {
    let mut it = v.splitn(3, '\'');
    let charset = it.next()?.to_ascii_lowercase();
    let _lang = it.next()?;
    let bytes = crate::route::percent_decode(it.next()?.as_bytes());
    match charset.as_str() {
        "utf-8" => Some(String::from_utf8_lossy(&bytes).into_owned()),
        "iso-8859-1" => Some(bytes.iter().map(|&b| b as char).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 1024,
        max_preamble: 1024,
    };

    /// Feeds `input` in chunks of `step` bytes and collects events, merging data.
    fn run(input: &[u8], step: usize) -> Result<Vec<Event>, MultipartError> {
        let mut p = Parser::new("XyZ", LIMITS);
        let mut buf = BytesMut::new();
        let mut events: Vec<Event> = Vec::new();
        let mut chunks = input.chunks(step.max(1));
        let mut eof = false;
        loop {
            match p.feed(&mut buf, eof)? {
                Some(Event::Data(d)) => match events.last_mut() {
                    Some(Event::Data(prev)) => *prev = [prev.as_ref(), d.as_ref()].concat().into(),
                    _ => events.push(Event::Data(d)),
                },
                Some(Event::End) => {
                    events.push(Event::End);
                    return Ok(events);
                }
                Some(e) => events.push(e),
                None => match chunks.next() {
                    Some(c) => p.push(&mut buf, Bytes::copy_from_slice(c)),
                    None if eof => return Err(MultipartError::UnexpectedEnd),
                    None => eof = true,
                },
            }
        }
    }

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\n--XyNot\r\n--X\r\n--XyZ--\r\nepilogue";

    /// In the middle of a part, pushed buffers come out as slices of themselves; only
    /// the bytes that might start a delimiter are copied, and data that merely looks
    /// like one (`\r\n--XyNot`, or a delimiter cut between two pushes) stays data.
    #[test]
    fn part_data_is_handed_out_without_a_copy() {
        let mut p = Parser::new("XyZ", LIMITS);
        let mut buf = BytesMut::new();
        p.push(
            &mut buf,
            Bytes::from_static(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n",
            ),
        );
        assert!(matches!(p.feed(&mut buf, false), Ok(Some(Event::Part(_)))));
        assert_eq!(p.feed(&mut buf, false), Ok(None));
        let chunks: [&'static [u8]; 4] = [
            b"0123456789\r\n--XyNot, still data\r\n-",
            b"-X",
            b"yQ still data: this was no delimiter\r\n--X",
            b"yZ--\r\n",
        ];
        let mut data = Vec::new();
        let mut sliced = 0;
        for c in chunks {
            let c = Bytes::from_static(c);
            let range = c.as_ptr_range();
            p.push(&mut buf, c);
            loop {
                match p.feed(&mut buf, false) {
                    Ok(Some(Event::Data(d))) => {
                        if range.contains(&d.as_ptr()) {
                            sliced += d.len();
                        }
                        data.extend_from_slice(&d);
                    }
                    Ok(Some(Event::PartEnd)) => {}
                    Ok(Some(Event::End)) | Ok(None) => break,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(
            data,
            b"0123456789\r\n--XyNot, still data\r\n--XyQ still data: this was no delimiter"
        );
        assert!(p.is_done());
        // The first chunk less the 6 bytes held back, and the third past the seam.
        assert!(sliced >= 30, "only {sliced} bytes were slices");
    }

    #[test]
    fn parses_at_every_chunking() {
        for step in [1, 2, 3, 5, 6, 7, 8, 9, 11, 13, 16, 23, 1000] {
            let ev = run(BODY, step).unwrap();
            assert_eq!(
                ev,
                vec![
                    Event::Part(PartHead {
                        name: Some("title".into()),
                        filename: None,
                        content_type: None
                    }),
                    Event::Data(Bytes::from_static(b"hello")),
                    Event::PartEnd,
                    Event::Part(PartHead {
                        name: Some("file".into()),
                        filename: Some("a.txt".into()),
                        content_type: Some("text/plain".into())
                    }),
                    Event::Data(Bytes::from_static(b"line1\r\n--XyNot\r\n--X")),
                    Event::PartEnd,
                    Event::End,
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn body_may_open_with_the_boundary_and_have_empty_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"\"\r\n\r\n\r\n--XyZ--";
        let ev = run(body, 4).unwrap();
        assert_eq!(ev.len(), 3);
        assert!(matches!(&ev[0], Event::Part(h) if h.filename.as_deref() == Some("")));
    }

    #[test]
    fn leading_crlf_is_preamble() {
        let body = b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XyZ--";
        for step in [1, 3, 100] {
            assert_eq!(run(body, step).unwrap().len(), 4);
        }
    }

    #[test]
    fn truncated_bodies_fail() {
        for cut in [3, 20, 60, 120, BODY.len() - 12] {
            assert_eq!(
                run(&BODY[..cut], 7),
                Err(MultipartError::UnexpectedEnd),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn limits_hold() {
        let mut big = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(run(&big, 100), Err(MultipartError::HeaderTooLarge(1024)));
        let never = vec![b'z'; 5000];
        assert_eq!(
            run(&never, 100),
            Err(MultipartError::Malformed("no boundary found"))
        );
        let no_name = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--";
        assert!(run(no_name, 10).is_err());
        let bad_line = b"--XyZjunk\r\n";
        assert_eq!(
            run(bad_line, 10),
            Err(MultipartError::Malformed("bad boundary line"))
        );
    }

    #[test]
    fn params() {
        let (ty, p) = parse_params(r#"form-data; name="a;b"; filename="C:\\x\\y.txt""#);
        assert_eq!(ty, "form-data");
        assert_eq!(p[0], ("name".into(), "a;b".into()));
        assert_eq!(p[1], ("filename".into(), "C:\\x\\y.txt".into()));
        let head = parse_head(b"Content-Disposition: form-data; name=f; filename=\"x\"; filename*=UTF-8''%E2%82%AC.txt").unwrap();
        assert_eq!(head.filename.as_deref(), Some("\u{20ac}.txt"));
    }
}
