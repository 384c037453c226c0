//! The `Content-Range` request header of the resumable protocols (django-chunked-upload's
//! `Content-Range`, nginx-upload-module's `X-Content-Range`): which bytes of which total a
//! request carries. One parser for both, so both refuse the same malformed values.

/// `bytes START-END/TOTAL`, inclusive; nginx-upload-module clients also send
/// `bytes=START-END/TOTAL`. Numbers are plain ASCII digits (no sign, no spaces inside).
/// `None` when malformed, when `END < START` or when `END >= TOTAL`.
pub fn parse(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?;
    let rest = rest.trim_start_matches([' ', '=']);
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (number(start)?, number(end)?, number(total)?);
    (start <= end && end < total).then_some((start, end, total))
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse("bytes=0-0/1"), Some((0, 0, 1)));
        assert_eq!(parse(" bytes 5-9/10 "), Some((5, 9, 10)));
        for bad in [
            "",
            "bytes",
            "bytes 0-99",
            "bytes 99-0/100",
            "bytes 0-100/100",
            "bytes +1-2/3",
            "bytes -1-2/3",
            "bytes 0-1/*",
            "items 0-1/2",
            "bytes 0-18446744073709551616/1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
