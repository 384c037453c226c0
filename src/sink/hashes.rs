//! The digests porter computes while bytes stream past: md5, sha1, sha256, sha512, crc32.
//!
//! One `Hashes` value per file, fed every byte exactly once, in order. The set is chosen
//! per route (`hashes = [...]`), so an unused algorithm costs nothing.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

/// A hash algorithm a route may ask for. The order here is the order metadata lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
    Crc32,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Crc32,
    ];

    /// The name used in config and as the metadata attribute (`file.md5`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Crc32 => "crc32",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown hash {s:?} (use md5, sha1, sha256, sha512 or crc32)"))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

enum State {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
    Crc32(crc32fast::Hasher),
}

impl State {
    fn new(algo: Algorithm) -> State {
        match algo {
            Algorithm::Md5 => State::Md5(Md5::new()),
            Algorithm::Sha1 => State::Sha1(Sha1::new()),
            Algorithm::Sha256 => State::Sha256(Sha256::new()),
            Algorithm::Sha512 => State::Sha512(Sha512::new()),
            Algorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            State::Md5(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::Crc32(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            State::Md5(h) => hex(&h.finalize()),
            State::Sha1(h) => hex(&h.finalize()),
            State::Sha256(h) => hex(&h.finalize()),
            State::Sha512(h) => hex(&h.finalize()),
            State::Crc32(h) => format!("{:08x}", h.finalize()),
        }
    }
}

/// Running digests for one file.
pub struct Hashes {
    states: Vec<(Algorithm, State)>,
}

/// Finished digests, lowercase hex, in `Algorithm` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests(pub Vec<(Algorithm, String)>);

impl Digests {
    pub fn get(&self, algo: Algorithm) -> Option<&str> {
        self.0
            .iter()
            .find(|(a, _)| *a == algo)
            .map(|(_, v)| v.as_str())
    }
}

impl Hashes {
    pub fn new(algos: &[Algorithm]) -> Hashes {
        let mut algos = algos.to_vec();
        algos.sort();
        algos.dedup();
        Hashes {
            states: algos.into_iter().map(|a| (a, State::new(a))).collect(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, s) in &mut self.states {
            s.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        Digests(
            self.states
                .into_iter()
                .map(|(a, s)| (a, s.finish()))
                .collect(),
        )
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = Hashes::new(&Algorithm::ALL);
        h.update(b"ab");
        h.update(b"c");
        let d = h.finish();
        assert_eq!(
            d.get(Algorithm::Md5),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        assert_eq!(
            d.get(Algorithm::Sha1),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            d.get(Algorithm::Sha256),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(
            d.get(Algorithm::Sha512)
                .unwrap()
                .starts_with("ddaf35a193617aba")
        );
        assert_eq!(d.get(Algorithm::Crc32), Some("352441c2"));
    }

    #[test]
    fn order_and_dedup() {
        let h = Hashes::new(&[Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha256]);
        let names: Vec<_> = h.finish().0.into_iter().map(|(a, _)| a).collect();
        assert_eq!(names, vec![Algorithm::Md5, Algorithm::Sha256]);
    }
}
