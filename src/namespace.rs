//! The metadata namespace: which form-field names a client may not send, because some
//! framework could read them as porter's signed metadata (`file.path`, `file.size`, …).
//!
//! porter signs the whole metadata request, client fields included, so a client field
//! that an app *reads* as one of porter's own fields carries porter's authority. Apps
//! do not all read a name the way porter wrote it:
//!
//! * Django's multipart parser strips whitespace around a field name, so `"file.path "`
//!   arrives as `file.path`; Python's `re` `$` matches before a trailing newline;
//! * PHP's `$_POST` turns `.`, spaces and an unmatched `[` into `_`, so a client's
//!   `file_path` and porter's `file.path` are the same key there;
//! * other stacks fold case or parse brackets.
//!
//! So porter compares names after the union of those readings ([`normalise`]): surrounding
//! whitespace, control and invisible format characters removed, `.`, space and `[`
//! mapped to `_`, brackets and backslashes dropped, case and fullwidth forms folded, in
//! ASCII. A client field whose normalised name equals the
//! normalised name of any metadata field porter could send, under any `field_names`
//! template configured on any route, is dropped ([`Verdict::Drop`]); a name with a
//! control character anywhere is refused outright ([`Verdict::Refuse`], 400), since no
//! honest form sends one. The attributes reserved include ones porter does not send yet
//! (`scan`), so adding them later cannot turn an app's own field into a forgery.
//!
//! The cost of the union: with the default template `{field}.{attr}`, PHP's reading
//! makes every `<anything>_<attr>` name (`user_id`, `first_name`) ambiguous, so such
//! client fields are dropped too. Apps that need them set a namespaced template
//! (`porter.{field}.{attr}`) on both sides; `docs/` says so.

use icu_normalizer::DecomposingNormalizerBorrowed;

/// Every attribute name porter sends or has reserved, in the order it sends them
/// (`scan` is reserved for malware scanning and not sent yet).
pub const RESERVED_ATTRS: [&str; 15] = [
    "name",
    "content_type",
    "charset",
    "detected_type",
    "path",
    "key",
    "bucket",
    "id",
    "size",
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "crc32",
    "scan",
];

/// What becomes of a client field, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ordinary field: passed on.
    Keep,
    /// It could pass for porter's metadata: dropped (and logged).
    Drop,
    /// The name holds a control character: the request is refused (400).
    Refuse,
}

/// The names porter's metadata may take under every configured template, normalised:
/// one `(prefix, suffix)` pair per template and attribute, the field name between them
/// being anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    affixes: Vec<(String, String)>,
}

impl Namespace {
    /// The namespace of these `field_names` templates (each holds `{field}` and
    /// `{attr}` once; config validation sees to it).
    pub fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Namespace {
        let mut affixes = Vec::new();
        for template in templates {
            for attr in RESERVED_ATTRS {
                let name = template.replace("{attr}", attr);
                let Some((pre, post)) = name.split_once("{field}") else {
                    continue;
                };
                let pair = (fold(pre), fold(post));
                if !affixes.contains(&pair) {
                    affixes.push(pair);
                }
            }
        }
        Namespace { affixes }
    }

    /// The verdict on a client field called `name`.
    pub fn screen(&self, name: &str) -> Verdict {
        if has_control(name) {
            Verdict::Refuse
        } else if self.collides(name) {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    }

    /// Whether some framework could read `name` as one of porter's metadata names.
    pub fn collides(&self, name: &str) -> bool {
        let n = normalise(name);
        self.affixes.iter().any(|(pre, post)| {
            n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
        })
    }
}

/// The refusal of a field name with a control character: no honest form sends one, and
/// some framework would strip it and read another name.
pub fn control_in_name() -> crate::error::Error {
    crate::error::Error::bad_request("a field name contains a control character")
}

/// Whether `name` holds a control character (C0, DEL or C1) anywhere, raw or as the
/// `%0A` / `%0D` escape that WHATWG multipart parsers decode in names.
pub fn has_control(name: &str) -> bool {
    name.chars().any(char::is_control) || {
        let lower = name.to_ascii_lowercase();
        lower.contains("%0a") || lower.contains("%0d")
    }
}

/// `name` as the most lenient framework reads it, in ASCII: compatibility-decomposed
/// (NFKD: fullwidth `ｐ`, `𝐩` and `ﬁ` are `p`, `p` and `fi`, `á` is `a` and an accent),
/// edge whitespace, control and zero-width characters trimmed, then character by
/// character: `.`, space and `[` as `_`, `]` and `\` dropped, case folded as
/// `lower(upper(c))` (`ſ` is `s`, `ı` is `i`), and whatever is still not ASCII dropped
/// (accents, interior zero-width and control characters). Two names with the same
/// normalised form are the same name to someone.
pub fn normalise(name: &str) -> String {
    let decomposed = DecomposingNormalizerBorrowed::new_nfkd().normalize(name);
    fold(decomposed.trim_matches(ignorable))
}

/// Characters no reader treats as part of a name at its edges: Unicode whitespace (what
/// Python's `str.strip` removes, and more), controls, and zero-width format characters.
fn ignorable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{ad}')
}

/// The character-wise part of [`normalise`].
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '.' | ' ' | '[' => out.push('_'),
            ']' | '\\' => {}
            c if c.is_control() => {}
            c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
            c => out.extend(
                c.to_uppercase()
                    .flat_map(char::to_lowercase)
                    .filter(char::is_ascii),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Namespace {
        Namespace::new(["{field}.{attr}"])
    }

    #[test]
    fn exact_names_collide_as_before() {
        let ns = default();
        for name in [
            "file.path",
            "x.y.sha256",
            ".path",
            "avatar.size",
            "file.scan",
        ] {
            assert_eq!(ns.screen(name), Verdict::Drop, "{name:?}");
        }
        for name in ["title", "file.owner", "pathname", "csrfmiddlewaretoken"] {
            assert_eq!(ns.screen(name), Verdict::Keep, "{name:?}");
        }
    }

    /// Every reading the module doc lists, on the default template.
    #[test]
    fn every_framework_reading_collides() {
        let ns = default();
        let shapes = [
            "file.path ",
            " file.path",
            "\u{a0}file.path\u{3000}",
            "file.path\u{200b}",
            "\u{feff}file.path",
            "file_path",
            "file path",
            "file[path",
            "FILE.PATH",
            "File.Path",
            "file.\u{212a}ey", // KELVIN SIGN folds to k
            "file.\u{17f}ize", // LONG S folds to s
            "file.\u{131}d",   // DOTLESS I folds to i
            "\u{ff46}\u{ff49}\u{ff4c}\u{ff45}\u{ff0e}\u{ff50}\u{ff41}\u{ff54}\u{ff48}",
            "file[path]",
            "file.pat\\h",
            "file.pa\u{200b}th",
            "file.p\u{e1}th",    // an accent a reader strips
            "file.\u{1d429}ath", // MATHEMATICAL BOLD SMALL P
            "\u{fb01}le.path",   // the fi ligature
            "user_id",
            "first_name",
        ];
        for name in shapes {
            assert_eq!(ns.screen(name), Verdict::Drop, "{name:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_wherever_they_are() {
        let ns = default();
        for name in [
            "file.path\n",
            "file.path\t",
            "\x0bfile.path",
            "file.path\x0c",
            "fi\rle",
            "title\u{85}",
            "a\u{7f}",
            "\0",
            "file.path%0A",
            "file.path%0d",
        ] {
            assert_eq!(ns.screen(name), Verdict::Refuse, "{name:?}");
        }
    }

    #[test]
    fn every_template_counts() {
        let ns = Namespace::new(["porter.{field}.{attr}", "{attr}[{field}]"]);
        for name in [
            "porter.file.path",
            "porter_file_path",
            " Porter.File.Path ",
            "path[file]",
            "path_file]",
            "PATH[]",
        ] {
            assert_eq!(ns.screen(name), Verdict::Drop, "{name:?}");
        }
        for name in ["file.path", "user_id", "first_name", "path", "porter.file"] {
            assert_eq!(ns.screen(name), Verdict::Keep, "{name:?}");
        }
        assert_eq!(Namespace::new([]).screen("file.path"), Verdict::Keep);
    }

    #[test]
    fn normalising_is_idempotent() {
        for name in [
            " A.b[C] ",
            "x\u{a0}",
            "İ.path",
            "\u{212a}",
            "a\t\\",
            "\u{fb01}\u{df}",
        ] {
            let once = normalise(name);
            assert_eq!(normalise(&once), once, "{name:?}");
        }
    }
}
