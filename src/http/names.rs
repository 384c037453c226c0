//! Client-supplied names and types, reduced to something safe to pass on.

/// Reduces a client file name to a safe base name, as Django's `sanitize_file_name`:
/// the last `/`- or `\`-separated component, control characters removed; `.`, `..` and
/// empty names become `unnamed`.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim().to_string();
    if clean.is_empty() || clean == "." || clean == ".." {
        "unnamed".to_string()
    } else {
        clean
    }
}

/// Splits a declared `Content-Type` into the bare lowercase type and its charset.
pub fn split_content_type(ct: Option<&str>) -> (String, String) {
    let Some(ct) = ct else {
        return (String::new(), String::new());
    };
    let (ty, params) = crate::http::multipart::parse_params(ct);
    let charset = params
        .into_iter()
        .find(|(k, _)| k == "charset")
        .map(|(_, v)| v)
        .unwrap_or_default();
    (ty, charset)
}

/// The lowercase extension of a file name, without the dot.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(safe_file_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(safe_file_name(".."), "unnamed");
        assert_eq!(safe_file_name("dir/"), "unnamed");
        assert_eq!(safe_file_name(""), "unnamed");
        assert_eq!(safe_file_name("résumé.doc"), "résumé.doc");
    }

    #[test]
    fn content_types() {
        assert_eq!(
            split_content_type(Some("Text/Plain; charset=\"utf-8\"")),
            ("text/plain".into(), "utf-8".into())
        );
        assert_eq!(split_content_type(None), (String::new(), String::new()));
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("a.tar.GZ"), Some("gz".into()));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("noext"), None);
    }
}
