//! TLS termination: PEM certificates and keys, one chosen per connection by SNI, ALPN
//! `h2` / `http/1.1`, TLS 1.2 and 1.3 only.
//!
//! Everything is loaded and checked up front (the key must match its certificate), so a
//! bad file is a config problem named by its key: `porter check`, start-up and SIGHUP
//! reload all go through [`load`] and refuse the same mistakes.

use crate::config::{Problem, TlsFiles};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::sync::Arc;

/// The one crypto provider (ring). Installed once at start so any rustls user in the
/// process agrees; a second call is harmless.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Builds the server's TLS settings, or `None` when no certificate is configured.
pub fn load(files: &[TlsFiles], http2: bool) -> Result<Option<Arc<ServerConfig>>, Vec<Problem>> {
    if files.is_empty() {
        return Ok(None);
    }
    let provider = provider();
    let mut problems = Vec::new();
    let mut resolver = BySni::default();
    for f in files {
        match certified_key(f, &provider) {
            Ok(key) => resolver.add(f.name.as_deref(), Arc::new(key)),
            Err(reason) => problems.push(Problem {
                key: f.origin.clone(),
                reason,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            vec![Problem {
                key: "server.tls".into(),
                reason: e.to_string(),
            }]
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Some(Arc::new(config)))
}

/// Reads one certificate chain and its key, and checks that they belong together.
fn certified_key(f: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(&f.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read a certificate from {}: {e}", f.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", f.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| {
        format!(
            "cannot read a private key (PKCS#8, RSA or EC PEM) from {}: {e}",
            f.key.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", f.key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "the key in {} does not belong to the certificate in {}: {e}",
            f.key.display(),
            f.cert.display()
        )
    })?;
    Ok(certified)
}

/// Picks a certificate by the client's SNI name: an exact name, then a `*.` wildcard
/// entry for its parent domain, then the `server.tls` default.
#[derive(Debug, Default)]
struct BySni {
    names: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl BySni {
    fn add(&mut self, name: Option<&str>, key: Arc<CertifiedKey>) {
        match name {
            Some(n) => {
                self.names.insert(n.to_ascii_lowercase(), key);
            }
            None => self.default = Some(key),
        }
    }

    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.names.get(&name) {
            return Some(k.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| format!("*.{rest}"))?;
        self.names.get(&parent).cloned()
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.find(n))
            .or_else(|| self.default.clone())
    }
}
