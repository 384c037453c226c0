//! `Range: bytes=...` (RFC 9110 §14.2), checked against the file's length.

/// How many ranges one request may ask for; more are ignored (the whole file is
/// served), as nginx's `max_ranges` does.
pub const MAX_RANGES: usize = 32;

/// What to do with a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Absent, malformed, not bytes, or too many: serve the whole file (200).
    Ignore,
    /// Well-formed, but nothing overlaps the file: 416.
    Unsatisfiable,
    /// Inclusive `(first, last)` byte positions, in request order.
    Satisfiable(Vec<(u64, u64)>),
}

pub fn parse(header: &str, len: u64) -> Ranges {
    let Some((unit, specs)) = header.split_once('=') else {
        return Ranges::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Ignore;
    }
    let mut out = Vec::new();
    let mut count = 0;
    for spec in specs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Ignore;
        }
        match parse_one(spec, len) {
            Spec::Bad => return Ranges::Ignore,
            Spec::Outside => {}
            Spec::Range(a, b) => out.push((a, b)),
        }
    }
    let total = out
        .iter()
        .fold(0u64, |sum, (a, b)| sum.saturating_add(b - a + 1));
    if count == 0 {
        Ranges::Ignore
    } else if out.is_empty() {
        Ranges::Unsatisfiable
    } else if out.len() > 1 && total > len {
        // Overlapping ranges could ask for the file many times over (32 × `0-`): the
        // whole file once is cheaper, as nginx answers.
        Ranges::Ignore
    } else {
        Ranges::Satisfiable(out)
    }
}

enum Spec {
    Bad,
    Outside,
    Range(u64, u64),
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_one(spec: &str, len: u64) -> Spec {
    let Some((first, last)) = spec.split_once('-') else {
        return Spec::Bad;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last N bytes.
        return match number(last) {
            None => Spec::Bad,
            Some(0) => Spec::Outside,
            Some(_) if len == 0 => Spec::Outside,
            Some(n) => Spec::Range(len.saturating_sub(n), len - 1),
        };
    }
    let Some(a) = number(first) else {
        return Spec::Bad;
    };
    let b = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(b) if b >= a => Some(b),
            _ => return Spec::Bad,
        }
    };
    if a >= len {
        return Spec::Outside;
    }
    Spec::Range(a, b.map_or(len - 1, |b| b.min(len - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat(v: &[(u64, u64)]) -> Ranges {
        Ranges::Satisfiable(v.to_vec())
    }

    #[test]
    fn table() {
        let cases: &[(&str, u64, Ranges)] = &[
            ("bytes=0-9", 100, sat(&[(0, 9)])),
            ("bytes=90-", 100, sat(&[(90, 99)])),
            ("bytes=-10", 100, sat(&[(90, 99)])),
            ("bytes=-1000", 100, sat(&[(0, 99)])),
            ("bytes=95-1000", 100, sat(&[(95, 99)])),
            ("bytes=0-0,-1", 100, sat(&[(0, 0), (99, 99)])),
            ("Bytes = 1-2 , 4-5", 100, sat(&[(1, 2), (4, 5)])),
            ("bytes=100-", 100, Ranges::Unsatisfiable),
            ("bytes=200-300", 100, Ranges::Unsatisfiable),
            ("bytes=-0", 100, Ranges::Unsatisfiable),
            ("bytes=0-", 0, Ranges::Unsatisfiable),
            ("bytes=-5", 0, Ranges::Unsatisfiable),
            ("bytes=200-300,0-1", 100, sat(&[(0, 1)])),
            ("bytes=5-1", 100, Ranges::Ignore),
            ("bytes=a-b", 100, Ranges::Ignore),
            ("bytes=1", 100, Ranges::Ignore),
            ("bytes=", 100, Ranges::Ignore),
            ("items=0-1", 100, Ranges::Ignore),
            ("bytes=--1", 100, Ranges::Ignore),
            ("bytes=+1-2", 100, Ranges::Ignore),
            ("bytes=0-99999999999999999999999", 100, Ranges::Ignore),
            ("bytes=18446744073709551615-", 100, Ranges::Unsatisfiable),
            // More than the file in all: the whole file, once.
            ("bytes=0-,0-", 100, Ranges::Ignore),
            ("bytes=0-60,40-99", 100, Ranges::Ignore),
            ("bytes=-60,-60", 100, Ranges::Ignore),
            ("bytes=0-49,50-99", 100, sat(&[(0, 49), (50, 99)])),
            ("bytes=0-10,5-15", 100, sat(&[(0, 10), (5, 15)])),
        ];
        for (h, len, want) in cases {
            assert_eq!(&parse(h, *len), want, "{h} of {len}");
        }
    }

    #[test]
    fn too_many_ranges_are_ignored() {
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse(&format!("bytes={many}"), 1000), Ranges::Ignore);
    }
}
