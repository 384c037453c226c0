//! `accept`: "trust but verify" (docs/reference/errors.md). The extension must be allowed, and when
//! the first bytes betray a type, that type must be allowed too and agree with the
//! extension: a PNG named `x.csv` is refused even if `image/*` and `.csv` are listed.

use crate::config::AcceptRule;
use crate::http::names::extension;

/// How many leading bytes the sniffer looks at.
pub const SNIFF_BYTES: usize = 512;

/// A type recognised from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub mime: &'static str,
    pub ext: &'static str,
}

pub fn sniff(prefix: &[u8]) -> Option<Sniffed> {
    infer::get(prefix).map(|t| Sniffed {
        mime: t.mime_type(),
        ext: t.extension(),
    })
}

fn mime_allowed(rules: &[AcceptRule], mime: &str) -> bool {
    let (ty, sub) = mime.split_once('/').unwrap_or((mime, ""));
    rules.iter().any(|r| match r {
        AcceptRule::Mime { ty: None, .. } => true,
        AcceptRule::Mime {
            ty: Some(t),
            subtype,
        } => {
            t.eq_ignore_ascii_case(ty)
                && subtype
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(sub))
        }
        AcceptRule::Extension(_) => false,
    })
}

fn ext_listed(rules: &[AcceptRule], ext: &str) -> bool {
    rules
        .iter()
        .any(|r| matches!(r, AcceptRule::Extension(e) if e == ext))
}

fn ext_types(ext: &str) -> Vec<String> {
    mime_guess::from_ext(ext)
        .iter()
        .map(|m| m.essence_str().to_string())
        .collect()
}

/// Checks a file's name before any byte: its extension must be allowed.
pub fn check_name(rules: &[AcceptRule], name: &str) -> Result<(), String> {
    if rules.is_empty() {
        return Ok(());
    }
    let allowed = match extension(name) {
        Some(ext) => {
            ext_listed(rules, &ext) || ext_types(&ext).iter().any(|m| mime_allowed(rules, m))
        }
        // No extension implies no type: a declared type alone is the client's word.
        None => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!("{name:?} is not an accepted file type"))
    }
}

/// Checks the sniffed type once the first bytes are in.
pub fn check_sniffed(
    rules: &[AcceptRule],
    name: &str,
    sniffed: Option<Sniffed>,
) -> Result<(), String> {
    let Some(s) = sniffed else { return Ok(()) };
    if rules.is_empty() {
        return Ok(());
    }
    if !(mime_allowed(rules, s.mime) || ext_listed(rules, s.ext)) {
        return Err(format!(
            "{name:?} contains {}, which is not accepted",
            s.mime
        ));
    }
    if let Some(ext) = extension(name) {
        let implied = ext_types(&ext);
        if ext != s.ext && !implied.is_empty() && !implied.iter().any(|m| m == s.mime) {
            return Err(format!(
                "{name:?} contains {}, which its extension .{ext} contradicts",
                s.mime
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<AcceptRule> {
        list.iter()
            .map(|s| match s.strip_prefix('.') {
                Some(e) => AcceptRule::Extension(e.into()),
                None => {
                    let (t, st) = s.split_once('/').unwrap();
                    AcceptRule::Mime {
                        ty: (t != "*").then(|| t.into()),
                        subtype: (st != "*").then(|| st.into()),
                    }
                }
            })
            .collect()
    }

    const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

    #[test]
    fn names() {
        let r = rules(&["image/*", "application/pdf", ".csv"]);
        assert!(check_name(&r, "a.png").is_ok());
        assert!(check_name(&r, "a.JPG").is_ok());
        assert!(check_name(&r, "a.pdf").is_ok());
        assert!(check_name(&r, "a.csv").is_ok());
        assert!(check_name(&r, "a.exe").is_err());
        assert!(check_name(&r, "noext").is_err());
        assert!(check_name(&r, "noext").is_err());
        assert!(check_name(&[], "a.exe").is_ok());
    }

    #[test]
    fn sniffing_verifies() {
        let r = rules(&["image/*", ".csv"]);
        let png = sniff(PNG);
        assert_eq!(png.map(|s| s.mime), Some("image/png"));
        assert!(check_sniffed(&r, "a.png", png).is_ok());
        assert!(check_sniffed(&r, "x.csv", png).is_err(), "PNG named .csv");
        assert!(check_sniffed(&r, "x.jpg", png).is_err(), "PNG named .jpg");
        assert!(check_sniffed(&rules(&[".csv"]), "a.csv", sniff(b"a,b\n1,2\n")).is_ok());
        let zip = sniff(b"PK\x03\x04\x14\0\0\0\x08\0");
        assert!(check_sniffed(&r, "a.csv", zip).is_err(), "zip not accepted");
    }

    /// What infer 0.22 changed (0.19 sniffed differently): `%PDF` counts anywhere in
    /// the first KiB, as PDF readers accept it, so a file that mentions it before any
    /// other signature is sniffed as a PDF; and an EBML header is WebM only with its
    /// DocType in the first 256 bytes.
    #[test]
    fn sniffing_as_infer_0_22_does() {
        let pdf = sniff(b"junk before the header\n%PDF-1.7\n");
        assert_eq!(pdf.map(|s| s.mime), Some("application/pdf"));
        let csv = sniff(b"name,header\nreport,%PDF-1.4\n");
        assert_eq!(csv.map(|s| s.mime), Some("application/pdf"));
        assert!(check_sniffed(&rules(&[".csv"]), "a.csv", csv).is_err());
        let ebml = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01";
        assert_eq!(sniff(ebml), None);
        let mut webm = ebml.to_vec();
        webm.extend_from_slice(b"\x42\x82\x84webm");
        webm.resize(300, 0);
        assert_eq!(sniff(&webm).map(|s| s.mime), Some("video/webm"));
    }
}
