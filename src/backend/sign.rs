//! The signature on every request porter generates, so the app can tell porter's
//! metadata from a client's forgery (docs/reference/signature.md).
//!
//! The signature names its key (`X-Porter-Key-Id`, derived from the key itself, so
//! there is nothing to configure or to get wrong): verifiers hold a list of keys, and an
//! operator rotates by adding the new key to every app first, then switching porter to
//! it with a reload, then removing the old key from the apps. No step needs porter and
//! every app worker to restart at the same moment.

use crate::sink::hashes::hex;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The HMAC key, held keyed (HMAC-SHA256 with the key already absorbed). Never
/// printed: `Debug` hides it.
#[derive(Clone)]
pub struct Secret(Hmac<Sha256>);

/// The domain-separation label of a key id: `key_id = hex(HMAC(key, LABEL))[..16]`.
const KEY_ID_LABEL: &[u8] = b"porter-key-id";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The key from raw bytes, one trailing newline stripped; at least 32 bytes.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<Secret, String> {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < 32 {
            return Err(format!(
                "the secret has {} bytes; at least 32 are needed",
                bytes.len()
            ));
        }
        Secret::keyed(&bytes)
    }

    /// Any key, of any length (RFC 2104 hashes one longer than a block first).
    fn keyed(key: &[u8]) -> Result<Secret, String> {
        Hmac::new_from_slice(key)
            .map(Secret)
            .map_err(|e| format!("the secret cannot key HMAC-SHA256: {e}"))
    }

    /// `PORTER_SECRET` if set, else the file; when neither exists and `create` is set,
    /// writes a new random secret (hex, mode 0600). Returns whether a file was created.
    pub fn load(file: &Path, create: bool) -> Result<(Secret, bool), String> {
        if let Some(v) = std::env::var_os("PORTER_SECRET") {
            let s = Secret::from_bytes(v.into_encoded_bytes())
                .map_err(|e| format!("PORTER_SECRET: {e}"))?;
            return Ok((s, false));
        }
        match std::fs::read(file) {
            Ok(bytes) => Ok((
                Secret::from_bytes(bytes).map_err(|e| format!("{}: {e}", file.display()))?,
                false,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let secret = Self::create(file)
                    .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
                Ok((secret, true))
            }
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        }
    }

    fn create(file: &Path) -> std::io::Result<Secret> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let text = hex(&raw);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)?;
        f.write_all(format!("{text}\n").as_bytes())?;
        f.sync_all()?;
        Secret::keyed(text.as_bytes()).map_err(std::io::Error::other)
    }

    /// The key's public name: the first 16 hex digits of HMAC-SHA256(key,
    /// "porter-key-id"). It reveals nothing of the key, and every verifier can
    /// compute it for each key it holds.
    pub fn key_id(&self) -> String {
        hex(&self.hmac(KEY_ID_LABEL)[..8])
    }

    /// HMAC-SHA256 (RFC 2104) of `msg` under this key.
    pub fn hmac(&self, msg: &[u8]) -> [u8; 32] {
        self.0
            .clone()
            .chain_update(msg)
            .finalize()
            .into_bytes()
            .into()
    }
}

/// The four headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `X-Porter-Key-Id`: which key signed ([`Secret::key_id`]).
    pub key_id: String,
    pub timestamp: String,
    pub nonce: String,
    /// `sha256=<hex>`
    pub signature: String,
}

/// What the signature covers, besides the timestamp and nonce.
pub struct Signed<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub target: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The exact string docs/reference/signature.md signs.
pub fn message(timestamp: &str, nonce: &str, req: &Signed<'_>) -> String {
    let body_hash = hex(&Sha256::digest(req.body));
    [
        timestamp,
        nonce,
        req.method,
        req.host,
        req.target,
        req.content_type,
        &body_hash,
    ]
    .join("\n")
}

/// Signs with the current time and a fresh random nonce.
pub fn sign(secret: &Secret, req: &Signed<'_>) -> Signature {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // No entropy source: a v4 UUID draws from the same one; fall back to its bytes.
        raw = *uuid::Uuid::new_v4().as_bytes();
    }
    let nonce = hex(&raw);
    sign_with(secret, timestamp, nonce, req)
}

pub fn sign_with(secret: &Secret, timestamp: String, nonce: String, req: &Signed<'_>) -> Signature {
    let mac = secret.hmac(message(&timestamp, &nonce, req).as_bytes());
    Signature {
        key_id: secret.key_id(),
        timestamp,
        nonce,
        signature: format!("sha256={}", hex(&mac)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hmac.new(b"k" * 32, b"porter-key-id", hashlib.sha256).hexdigest()[:16]`
    const KEY_ID_K32: &str = "9c7a8998ab9fe115";

    #[test]
    fn hmac_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; build the Secret directly.
        let s = Secret::keyed(b"Jefe").unwrap();
        assert_eq!(
            hex(&s.hmac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_long_key_rfc4231_case_6() {
        let s = Secret::keyed(&[0xaa; 131]).unwrap();
        assert_eq!(
            hex(&s.hmac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// A vector computed independently with Python's `hmac` module, so a mistake in
    /// the signed layout cannot hide behind porter verifying itself.
    #[test]
    fn independent_vector() {
        let secret = Secret::from_bytes(vec![b'k'; 32]).unwrap();
        let req = Signed {
            method: "POST",
            host: "example.com",
            target: "/upload?x=1",
            content_type: "application/x-www-form-urlencoded",
            body: b"a=1",
        };
        let sig = sign_with(
            &secret,
            "1700000000".into(),
            "0123456789abcdef0123456789abcdef".into(),
            &req,
        );
        assert_eq!(
            sig.signature,
            "sha256=5abbbc0b03deed6b25cdf5e618d9d337dc0d5d1abb0d555b09c9d238f9488a9d"
        );
    }

    /// Computed independently with Python's `hmac` module.
    #[test]
    fn key_id_vector() {
        let secret = Secret::from_bytes(vec![b'k'; 32]).unwrap();
        assert_eq!(secret.key_id(), KEY_ID_K32);
        assert_eq!(secret.key_id().len(), 16);
    }

    #[test]
    fn secret_rules() {
        assert!(Secret::from_bytes(vec![b'a'; 31]).is_err());
        assert!(Secret::from_bytes([vec![b'a'; 31], b"\n".to_vec()].concat()).is_err());
        let s = Secret::from_bytes([vec![b'a'; 32], b"\n".to_vec()].concat()).unwrap();
        let without = Secret::from_bytes(vec![b'a'; 32]).unwrap();
        assert_eq!(s.key_id(), without.key_id(), "the newline is not key");
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn signed_message_layout() {
        let req = Signed {
            method: "POST",
            host: "example.com",
            target: "/upload?x=1",
            content_type: "",
            body: b"",
        };
        let m = message("1700000000", "00ff", &req);
        assert_eq!(
            m,
            "1700000000\n00ff\nPOST\nexample.com\n/upload?x=1\n\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let secret = Secret::from_bytes(vec![b'k'; 32]).unwrap();
        let sig = sign(&secret, &req);
        assert_eq!(sig.nonce.len(), 32);
        assert!(sig.signature.starts_with("sha256="));
        let again = sign_with(&secret, sig.timestamp.clone(), sig.nonce.clone(), &req);
        assert_eq!(again, sig);
    }
}
