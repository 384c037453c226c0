//! MD5 (RFC 1321), ordered for its critical path.
//!
//! Each of MD5's 64 steps adds four terms to a register: the register, a message word,
//! a constant and a function of the three other registers, one of which was only just
//! computed. The first three are known early; only the function waits. RustCrypto's
//! `md-5` adds them in an order LLVM rearranges (it sorts constants last, or, with
//! fat LTO, the function first), so that every step waits for one or two more
//! additions after the function. Here the early terms' sum goes through `opaque`, an
//! empty `asm!` block LLVM cannot look into, so it stays whole and is computed while
//! the function is. Measured on the machines porter is tested on (2-core AMD EPYC, 1
//! GiB in 1 MiB updates): 550–610 MB/s (with and without fat LTO) against `md-5`'s
//! 480–520 and OpenSSL's 570–620. md5 is the slowest of the hashes a route usually asks
//! for, so a hashed upload goes at its speed.
//!
//! The saved state has `md-5` 0.11's serialised layout (its `SerializableState`), so
//! resumable uploads saved by earlier porters resume here, and the other way round.

/// The sine-derived constants, one per step.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// Per round, the message word each of its 16 steps takes, and the shifts of its
/// steps in turn (RFC 1321).
const WORDS: [[usize; 16]; 4] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [1, 6, 11, 0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12],
    [5, 8, 11, 14, 1, 4, 7, 10, 13, 0, 3, 6, 9, 12, 15, 2],
    [0, 7, 14, 5, 12, 3, 10, 1, 8, 15, 6, 13, 4, 11, 2, 9],
];
const SHIFTS: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The length of a saved state: registers, blocks, then the pending bytes' count and
/// the bytes themselves, zero-padded to 63.
const SAVED_LEN: usize = 16 + 8 + 64;

/// A running MD5.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Whole blocks compressed so far.
    blocks: u64,
    /// Bytes waiting for a whole block; always fewer than 64 (a full block is
    /// compressed at once, as `md-5` does, so saved states agree).
    pending: [u8; 64],
    len: usize,
}

impl Default for Md5 {
    fn default() -> Md5 {
        Md5 {
            state: INIT,
            blocks: 0,
            pending: [0; 64],
            len: 0,
        }
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.len > 0 {
            let take = data.len().min(64 - self.len);
            self.pending[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len < 64 {
                return;
            }
            let block = self.pending;
            self.compress(&block);
            self.len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        for block in blocks {
            self.compress(block);
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
    }

    pub fn finalize(mut self) -> [u8; 16] {
        // Wrapping, as RFC 1321 takes the length modulo 2^64 (and a loaded state may
        // claim any count of blocks).
        let bits = (self.blocks.wrapping_mul(64))
            .wrapping_add(self.len as u64)
            .wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.len].copy_from_slice(&self.pending[..self.len]);
        tail[self.len] = 0x80;
        let end = if self.len < 56 { 64 } else { 128 };
        tail[end - 8..end].copy_from_slice(&bits.to_le_bytes());
        let (blocks, _) = tail[..end].as_chunks::<64>();
        for block in blocks {
            self.compress(block);
        }
        let mut out = [0u8; 16];
        for (o, s) in out.as_chunks_mut::<4>().0.iter_mut().zip(self.state) {
            *o = s.to_le_bytes();
        }
        out
    }

    /// The state to persist (`md-5` 0.11's layout).
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAVED_LEN);
        for s in self.state {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.blocks.to_le_bytes());
        out.push(self.len as u8);
        out.extend_from_slice(&self.pending[..self.len]);
        out.resize(SAVED_LEN, 0);
        out
    }

    /// A state `save` made (or `md-5` serialised); `None` if it is damaged.
    pub fn load(bytes: &[u8]) -> Option<Md5> {
        if bytes.len() != SAVED_LEN {
            return None;
        }
        let (words, rest) = bytes.split_at(16);
        let (blocks, rest) = rest.split_at(8);
        let (len, rest) = rest.split_first()?;
        let len = usize::from(*len);
        if len >= 64 || rest[len..].iter().any(|b| *b != 0) {
            return None;
        }
        let mut md5 = Md5::new();
        for (s, w) in md5.state.iter_mut().zip(words.as_chunks::<4>().0) {
            *s = u32::from_le_bytes(*w);
        }
        md5.blocks = u64::from_le_bytes(blocks.try_into().ok()?);
        md5.pending[..len].copy_from_slice(&rest[..len]);
        md5.len = len;
        Some(md5)
    }

    #[inline(never)]
    fn compress(&mut self, block: &[u8; 64]) {
        self.blocks = self.blocks.wrapping_add(1);
        let mut m = [0u32; 16];
        for (w, b) in m.iter_mut().zip(block.as_chunks::<4>().0) {
            *w = u32::from_le_bytes(*b);
        }
        let [mut a, mut b, mut c, mut d] = self.state;
        macro_rules! step {
            ($f:expr, $a:ident, $b:ident, $i:expr, $m:expr, $s:expr) => {
                // The early terms' sum, kept whole: the function is added last.
                $a = opaque($a.wrapping_add(m[$m]).wrapping_add(K[$i]));
                $a = $a.wrapping_add($f);
                $a = $a.rotate_left($s).wrapping_add($b);
            };
        }
        // Each round: 16 steps over (a, b, c, d) rotating.
        macro_rules! round {
            ($f:ident, $r:expr) => {{
                let (words, shifts) = (WORDS[$r], SHIFTS[$r]);
                for q in 0..4 {
                    let at = 16 * $r + 4 * q;
                    step!($f(b, c, d), a, b, at, words[4 * q], shifts[0]);
                    step!($f(a, b, c), d, a, at + 1, words[4 * q + 1], shifts[1]);
                    step!($f(d, a, b), c, d, at + 2, words[4 * q + 2], shifts[2]);
                    step!($f(c, d, a), b, c, at + 3, words[4 * q + 3], shifts[3]);
                }
            }};
        }
        round!(ff, 0);
        round!(gg, 1);
        round!(hh, 2);
        round!(ii, 3);
        for (s, v) in self.state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// `t` unchanged, but opaque to LLVM, which therefore cannot move other additions
/// into or ahead of the sum that made it (see the module's doc). `std::hint::black_box`
/// would do it through memory, a store and a load per step, which measured slower.
#[inline(always)]
fn opaque(mut t: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the template is an assembler comment naming the register that holds `t`;
    // it emits no instruction, so the register keeps its value and nothing else is
    // read or written: no memory, no stack, no flags, as the options declare.
    unsafe {
        core::arch::asm!("/* {0:e} */", inout(reg) t, options(pure, nomem, nostack, preserves_flags));
    }
    t
}

#[inline(always)]
fn ff(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}

/// `(x & z) | (y & !z)`, as a sum of its disjoint halves: `y & !z` does not wait for
/// `x`, the newest register, and is added early.
#[inline(always)]
fn gg(x: u32, y: u32, z: u32) -> u32 {
    (y & !z).wrapping_add(x & z)
}

#[inline(always)]
fn hh(x: u32, y: u32, z: u32) -> u32 {
    x ^ (y ^ z)
}

#[inline(always)]
fn ii(x: u32, y: u32, z: u32) -> u32 {
    y ^ (x | !z)
}

/// The MD5 of `data`.
pub fn digest(data: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(data);
    md5.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::hashes::hex;
    use md5::Digest;
    use sha2::digest::common::hazmat::SerializableState;

    /// RFC 1321's test suite.
    #[test]
    fn rfc_1321_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(&digest(input)), want, "{:?}", input);
        }
    }

    /// Any length, fed in any pieces, agrees with RustCrypto's `md-5`; so do the saved
    /// states, byte for byte, and each side resumes the other's.
    #[test]
    fn agrees_with_md_5_in_digests_and_saved_states() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in (0..200).chain([447, 448, 511, 512, 513, 4095, 4096, 5000]) {
            for cut in [0, 1, 55, 56, 63, 64, 65, len / 2, len] {
                let cut = cut.min(len);
                let (head, tail) = data[..len].split_at(cut);
                let mut ours = Md5::new();
                ours.update(head);
                let mut theirs = md5::Md5::new();
                theirs.update(head);
                let saved = ours.save();
                assert_eq!(saved, theirs.serialize().as_slice(), "len {len} cut {cut}");
                let mut resumed = Md5::load(theirs.serialize().as_slice()).unwrap();
                resumed.update(tail);
                let arr = saved.as_slice().try_into().unwrap();
                let mut theirs_resumed = md5::Md5::deserialize(arr).unwrap();
                theirs_resumed.update(tail);
                ours.update(tail);
                let want = md5::Md5::digest(&data[..len]);
                assert_eq!(ours.finalize()[..], want[..], "len {len} cut {cut}");
                assert_eq!(resumed.finalize()[..], want[..]);
                assert_eq!(theirs_resumed.finalize()[..], want[..]);
            }
        }
    }

    /// A loaded state may claim any count of blocks: it wraps, as in `md-5`, and never
    /// panics.
    #[test]
    fn any_block_count_is_taken() {
        for blocks in [u64::MAX, 1 << 60] {
            let mut saved = Md5::new().save();
            saved[16..24].copy_from_slice(&blocks.to_le_bytes());
            let mut ours = Md5::load(&saved).unwrap();
            let arr = saved.as_slice().try_into().unwrap();
            let mut theirs = md5::Md5::deserialize(arr).unwrap();
            ours.update(&[1u8; 100]);
            theirs.update([1u8; 100]);
            assert_eq!(ours.finalize()[..], theirs.finalize()[..]);
        }
    }

    #[test]
    fn damaged_states_are_refused() {
        let mut saved = Md5::new().save();
        assert!(Md5::load(&saved).is_some());
        assert!(Md5::load(&saved[1..]).is_none(), "short");
        saved[24] = 64;
        assert!(Md5::load(&saved).is_none(), "pending count out of range");
        saved[24] = 1;
        saved[30] = 1;
        assert!(Md5::load(&saved).is_none(), "bytes past the pending count");
    }
}
