//! TLS for the listener: rustls with the `ring` crypto provider, and a certificate that can be
//! replaced while the server runs.
//!
//! Owns [`TlsConfig`] (the validated settings), [`CertStore`] (the certificate chain and key
//! in use, handed to rustls as its certificate resolver, so a reload takes effect on the next
//! handshake without touching connections already open) and [`acceptor`]. A reload happens on
//! SIGHUP ([`crate::reload`]) or when the files' modification time or size changes
//! ([`CertStore::changed`], polled); a reload that fails (unreadable file, key not matching
//! the certificate) keeps the certificate in use and is logged. It does not accept
//! connections (that is [`crate::transport`]).
//!
//! `ring` is the provider because it builds here without a C++ toolchain or CMake (aws-lc-rs,
//! rustls' default, needs them) and is what rustls tests against.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Validated TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for change; `None` = only on SIGHUP.
    pub reload_interval: Option<Duration>,
}

/// What identifies a version of the files: modification time and length of each.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cfg: &TlsConfig) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [one(&cfg.cert_file), one(&cfg.key_file)]
}

/// Reads the chain and key and checks that they belong together.
///
/// # Errors
/// A file cannot be read, holds no certificate or no key, the key type is not supported, or
/// the key does not match the certificate.
pub fn load(cfg: &TlsConfig) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("reading certificates from {}: {e}", cfg.cert_file.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", cfg.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        anyhow!(
            "reading the private key from {}: {e}",
            cfg.key_file.display()
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("unsupported private key in {}", cfg.key_file.display()))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().with_context(|| {
        format!(
            "the key in {} does not match the certificate in {}",
            cfg.key_file.display(),
            cfg.cert_file.display()
        )
    })?;
    Ok(ck)
}

/// The certificate in use; rustls asks it on every handshake.
#[derive(Debug)]
pub struct CertStore {
    cfg: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
    loaded: Mutex<Stamp>,
}

impl CertStore {
    /// Loads the files once.
    ///
    /// # Errors
    /// As [`load`].
    pub fn new(cfg: TlsConfig) -> anyhow::Result<Self> {
        let before = stamp(&cfg);
        let ck = load(&cfg)?;
        Ok(CertStore {
            cfg,
            current: RwLock::new(Arc::new(ck)),
            loaded: Mutex::new(before),
        })
    }

    /// The settings.
    pub fn config(&self) -> &TlsConfig {
        &self.cfg
    }

    /// Re-reads the files; on failure the certificate in use stays.
    ///
    /// # Errors
    /// As [`load`].
    pub fn reload(&self) -> anyhow::Result<()> {
        let before = stamp(&self.cfg);
        let ck = load(&self.cfg)?;
        *self.current.write() = Arc::new(ck);
        *self.loaded.lock() = before;
        Ok(())
    }

    /// True when the files differ from those last loaded (time or size).
    pub fn changed(&self) -> bool {
        stamp(&self.cfg) != *self.loaded.lock()
    }

    /// The certificate chain in use (for logs and tests).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

/// A TLS acceptor serving the store's certificate: TLS 1.2 and 1.3, ring's safe defaults,
/// no client certificates, ALPN `h2` (when `http2`) then `http/1.1`. A client offering no
/// ALPN gets HTTP/1.1.
///
/// # Errors
/// When the provider refuses the protocol versions (not expected with ring's defaults).
pub fn acceptor(store: Arc<CertStore>, http2: bool) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The trusted roots: the certificates in the PEM file `ca` when given (named `flag` in
/// errors), else the system's trust store (`rustls-native-certs`: `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`, else the distribution's bundle).
///
/// # Errors
/// A message naming the file (unreadable, no certificate, a certificate rustls refuses), or
/// saying that the system holds no usable root.
pub fn trust_roots(ca: Option<&Path>, flag: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{flag} {}: {e}", file.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "{flag} {}: no PEM certificate in it",
                    file.display()
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{flag} {}: {e}", file.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted certificate in the system's store; give the CA with {flag} FILE"
                ));
            }
        }
    }
    Ok(roots)
}

/// The TLS client settings a node uses to call its peers: rustls on `ring` (set here, no
/// process-wide provider), TLS 1.2 and 1.3, peers' certificates checked against `roots`
/// (and their names against the peer URL's host), no client certificate (peers prove
/// themselves with the cluster secret). No ALPN list here: the connector sets `http/1.1`
/// (hyper-rustls refuses a configuration that already has one).
///
/// # Errors
/// When the provider refuses the protocol versions (not expected with ring's defaults).
pub fn peer_client_config(roots: RootCertStore) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
