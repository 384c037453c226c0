//! The digests porter computes while bytes stream past: md5, sha1, sha256, sha512, crc32.
//!
//! One `Hashes` value per file, fed every byte exactly once, in order. The set is chosen
//! per route (`hashes = [...]`), so an unused algorithm costs nothing. md5 is porter's own
//! (`md5`); the others are RustCrypto's and crc32fast's.

pub mod md5;

use self::md5::Md5;
use sha1::Sha1;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
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
    /// Bytes hashed so far (crc32's saved state needs it).
    len: u64,
}

/// Serialises a hasher's internal state (RustCrypto's `SerializableState`).
fn save_state<T: SerializableState>(h: &T) -> Vec<u8> {
    h.serialize().as_slice().to_vec()
}

fn load_state<T: SerializableState>(bytes: &[u8]) -> Option<T> {
    let arr = SerializedState::<T>::try_from(bytes).ok()?;
    T::deserialize(&arr).ok()
}

impl State {
    fn save(&self, len: u64) -> Vec<u8> {
        match self {
            State::Md5(h) => h.save(),
            State::Sha1(h) => save_state(h),
            State::Sha256(h) => save_state(h),
            State::Sha512(h) => save_state(h),
            State::Crc32(h) => {
                let mut out = h.clone().finalize().to_le_bytes().to_vec();
                out.extend_from_slice(&len.to_le_bytes());
                out
            }
        }
    }

    fn load(algo: Algorithm, b: &[u8]) -> Option<State> {
        Some(match algo {
            Algorithm::Md5 => State::Md5(Md5::load(b)?),
            Algorithm::Sha1 => State::Sha1(load_state(b)?),
            Algorithm::Sha256 => State::Sha256(load_state(b)?),
            Algorithm::Sha512 => State::Sha512(load_state(b)?),
            Algorithm::Crc32 => {
                let crc = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
                let len = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
                State::Crc32(crc32fast::Hasher::new_with_initial_len(crc, len))
            }
        })
    }
}

/// A `Hashes` at rest: what a resumable upload persists between requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedHashes {
    pub len: u64,
    /// `(algorithm name, hex of the serialised state)`.
    pub states: Vec<(String, String)>,
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
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for (_, s) in &mut self.states {
            s.update(data);
        }
    }

    /// The state to persist, so hashing can resume after a restart or elsewhere.
    pub fn save(&self) -> SavedHashes {
        SavedHashes {
            len: self.len,
            states: self
                .states
                .iter()
                .map(|(a, s)| (a.name().to_string(), hex(&s.save(self.len))))
                .collect(),
        }
    }

    /// Resumes from a saved state; `None` if it is damaged.
    pub fn restore(saved: &SavedHashes) -> Option<Hashes> {
        let states = saved
            .states
            .iter()
            .map(|(name, h)| {
                let algo: Algorithm = name.parse().ok()?;
                Some((algo, State::load(algo, &unhex(h)?)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Hashes {
            states,
            len: saved.len,
        })
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

/// One algorithm's running state, out of its `Hashes` so that it can run on a worker of
/// its own: the algorithms of a file are independent, and each is bound to one core.
pub struct Lane {
    algo: Algorithm,
    state: State,
}

impl Lane {
    pub fn update(&mut self, data: &[u8]) {
        self.state.update(data);
    }
}

impl Hashes {
    /// How many algorithms this set runs, so how many lanes `split` would make.
    pub fn width(&self) -> usize {
        self.states.len()
    }

    /// Takes every algorithm's state out, in order; `rejoin` puts them back. Until then
    /// this set is a shell that must not be fed.
    pub fn split(&mut self) -> Vec<Lane> {
        std::mem::take(&mut self.states)
            .into_iter()
            .map(|(algo, state)| Lane { algo, state })
            .collect()
    }

    /// Puts back the lanes `split` took, in the order it gave them, once each has hashed
    /// the same `hashed` bytes.
    pub fn rejoin(&mut self, lanes: impl IntoIterator<Item = Lane>, hashed: u64) {
        self.states
            .extend(lanes.into_iter().map(|l| (l.algo, l.state)));
        self.len += hashed;
    }
}

/// Bytes from lowercase or uppercase hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
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
    fn saved_state_resumes_exactly() {
        let mut whole = Hashes::new(&Algorithm::ALL);
        whole.update(b"hello, resumable world");
        let mut first = Hashes::new(&Algorithm::ALL);
        first.update(b"hello, ");
        let saved = first.save();
        let json = serde_json::to_string(&saved).unwrap();
        let mut resumed = Hashes::restore(&serde_json::from_str(&json).unwrap()).unwrap();
        resumed.update(b"resumable world");
        assert_eq!(resumed.finish(), whole.finish());
        assert!(
            Hashes::restore(&SavedHashes {
                len: 0,
                states: vec![("md5".into(), "00".into())]
            })
            .is_none()
        );
    }

    #[test]
    fn order_and_dedup() {
        let h = Hashes::new(&[Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha256]);
        let names: Vec<_> = h.finish().0.into_iter().map(|(a, _)| a).collect();
        assert_eq!(names, vec![Algorithm::Md5, Algorithm::Sha256]);
    }
}
