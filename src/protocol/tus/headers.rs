//! The request headers tus 1.0 and the IETF draft share: the two are one family on
//! one engine, and a header both read is parsed here once, so the two cannot disagree
//! about it (`Upload-Metadata`, `Upload-Checksum`).

use crate::error::Error;
use crate::sink::hashes::Algorithm;
use http::HeaderMap;

/// The `Upload-Metadata` header's text: `None` when absent; 400 when it is not visible
/// ASCII or given twice, rather than ignored (a key with a control character must be
/// refused, not silently lost).
pub fn upload_metadata(h: &HeaderMap) -> Result<Option<&str>, Error> {
    let mut all = h.get_all("upload-metadata").iter();
    let (Some(first), None) = (all.next(), all.next()) else {
        return match h.contains_key("upload-metadata") {
            true => Err(Error::bad_request("Upload-Metadata is given twice")),
            false => Ok(None),
        };
    };
    first
        .to_str()
        .map(|s| Some(s.trim()))
        .map_err(|_| Error::bad_request("Upload-Metadata must be visible ASCII"))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (value optional).
pub fn parse_metadata(s: &str) -> Result<Vec<(String, String)>, Error> {
    let bad = || Error::bad_request("malformed Upload-Metadata");
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.split(' ').filter(|x| !x.is_empty());
        let key = it.next().ok_or_else(bad)?;
        let value = match it.next() {
            Some(v) => String::from_utf8_lossy(&base64_decode(v).ok_or_else(bad)?).into_owned(),
            None => String::new(),
        };
        if it.next().is_some() || key.contains(|c: char| c.is_control()) {
            return Err(bad());
        }
        // Keys are unique (tus 1.0): two would let porter and the app each read another.
        if out.iter().any(|(k, _)| k == key) {
            return Err(Error::bad_request("Upload-Metadata names a key twice"));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Standard base64 (tus uses RFC 4648 §4), decoded as porter always has: the
/// standard alphabet only, with any number of trailing `=` (none, the canonical
/// ones, or more), and the unused low bits of a last partial group ignored. A
/// character outside the alphabet, `=` anywhere but at the end, or a length that
/// leaves one lone symbol is refused.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    ENGINE.decode(s.trim_end_matches('=')).ok()
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(v: &str) -> Result<(Algorithm, Vec<u8>), Error> {
    let (algo, b64) = v
        .split_once(' ')
        .ok_or_else(|| Error::bad_request("bad Upload-Checksum"))?;
    let algo = match algo {
        "md5" => Algorithm::Md5,
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        other => {
            return Err(Error::bad_request(format!(
                "unsupported checksum algorithm {other:?}"
            )));
        }
    };
    let want =
        base64_decode(b64.trim()).ok_or_else(|| Error::bad_request("bad Upload-Checksum"))?;
    Ok((algo, want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype YXBwbGljYXRpb24vcGRm").unwrap();
        assert_eq!(
            m[0],
            ("filename".into(), "world_domination_plan.pdf".into())
        );
        assert_eq!(m[1], ("is_confidential".into(), String::new()));
        assert_eq!(m[2], ("filetype".into(), "application/pdf".into()));
        assert!(parse_metadata("a b c").is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("filename YQ==,filename Yg==").is_err());
        assert!(parse_metadata("a,a").is_err());
    }

    #[test]
    fn base64() {
        // Standard base64, and what porter has always let through beside it: padding is
        // optional and may be partial or too long, and a last group's unused bits are
        // ignored.
        let decoded = [
            ("aGVsbG8=", "hello"),
            ("aGVsbG8", "hello"),
            ("", ""),
            ("YQ==", "a"),
            ("YQ=", "a"),
            ("YQ=====", "a"),
            ("YR==", "a"),
            ("====", ""),
        ];
        for (text, want) in decoded {
            assert_eq!(
                base64_decode(text).as_deref(),
                Some(want.as_bytes()),
                "{text:?}"
            );
        }
        // And what it has always refused, the URL-safe alphabet included.
        let refused = [
            "a",
            "a$==",
            "Y===",
            "YQ==YQ==",
            "aGVs bG8=",
            "aGVsbG8=\n",
            "aGVsbG8_",
            "aGVsbG8-",
        ];
        for text in refused {
            assert!(base64_decode(text).is_none(), "{text:?}");
        }
    }
}
