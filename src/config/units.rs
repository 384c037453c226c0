//! Human-friendly sizes and durations (`"512KiB"`, `"30s"`), as docs/reference/config.md defines them.
//!
//! Config values arrive either as TOML integers or strings; both parse through the
//! functions here so the rules live in one place (and one fuzz target later).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A size or duration exactly as written in the file: a bare integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Human {
    Int(u64),
    Text(String),
}

impl Human {
    pub fn size(&self) -> Result<u64, String> {
        match self {
            Human::Int(n) => Ok(*n),
            Human::Text(s) => parse_size(s),
        }
    }

    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            Human::Int(n) => Ok(Duration::from_secs(*n)),
            Human::Text(s) => parse_duration(s),
        }
    }
}

impl From<&str> for Human {
    fn from(s: &str) -> Self {
        Human::Text(s.to_string())
    }
}

fn split_number(s: &str) -> Result<(u64, &str), String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("{s:?} does not start with a number"));
    }
    let n = s[..digits]
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is too large"))?;
    Ok((n, s[digits..].trim()))
}

/// Parses `1048576`, `"512KiB"`, `"10GiB"`; units are binary (KiB = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `"30s"`, `"250ms"`, `"1d"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(s)?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        other => Err(format!(
            "unknown duration unit {other:?} (use ms, s, m, h or d)"
        )),
    }
}

/// Formats a byte count the way it would be written in the config.
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Formats a duration the way it would be written in the config.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, mult) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(mult) {
            return format!("{}{unit}", s / mult);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("10GB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("99999999999999999999999").is_err());
        assert_eq!(Human::Int(5).size(), Ok(5));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["1GiB", "256KiB", "1000", "1MiB"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        for s in ["30s", "250ms", "15m", "1d", "2h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
