//! TLS for the client side (the client subcommands and `bench`): which certificates are
//! trusted, and the connector that wraps a TCP stream.
//!
//! Owns [`connector`]. With `--ca-cert FILE` (or `HOARDHAVEN_CA_CERT`) only the certificates in
//! that PEM file are trusted: the usual set-up for a private CA or a self-signed test
//! certificate. Without it the system's trust store is used (`rustls-native-certs`: the
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` variables, else the distribution's bundle). rustls with
//! the `ring` provider, like the server ([`crate::tls`]), set on the configuration itself so no
//! process-wide default provider is needed. ALPN offers `http/1.1` only. With `--client-cert`
//! and `--client-key` the client presents that certificate when the server (or a proxy in front
//! of it: hoardhaven itself authenticates clients by token) asks for one.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// The trusted roots: those in `ca` when given, else the system's ([`crate::tls::trust_roots`]).
///
/// # Errors
/// A message naming the file (unreadable, no certificate, a certificate rustls refuses), or
/// saying that the system holds no usable root.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    crate::tls::trust_roots(ca, "--ca-cert")
}

/// A client certificate and its key (PEM files), presented when the server asks for one.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// The certificate chain, leaf first.
    pub cert: &'a Path,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
}

fn load_identity(
    id: Identity<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = CertificateDer::pem_file_iter(id.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--client-cert {}: {e}", id.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--client-cert {}: no PEM certificate in it",
            id.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(id.key)
        .map_err(|e| format!("--client-key {}: {e}", id.key.display()))?;
    Ok((certs, key))
}

/// A TLS connector trusting [`roots`]`(ca)`, presenting `identity` when asked for a client
/// certificate and offering the ALPN protocols `alpn`.
///
/// # Errors
/// As [`roots`]; an unreadable certificate or key, or a key that does not match the
/// certificate, named by its flag.
pub fn connector(
    ca: Option<&Path>,
    identity: Option<Identity<'_>>,
    alpn: Vec<Vec<u8>>,
) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots(ca)?);
    let mut cfg = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (certs, key) = load_identity(id)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "--client-cert {} with --client-key {}: {e}",
                    id.cert.display(),
                    id.key.display()
                )
            })?
        }
    };
    cfg.alpn_protocols = alpn;
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// The name the server's certificate must carry: a DNS name or an IP address (`[::1]` without
/// its brackets).
///
/// # Errors
/// When `host` is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("`{host}` as a TLS name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = std::env::temp_dir();
        let missing = dir.join("hoardhaven-no-such-ca.pem");
        let e = roots(Some(&missing)).err().unwrap_or_default();
        assert!(e.contains("hoardhaven-no-such-ca.pem"), "{e}");
        let empty = dir.join(format!("hoardhaven-empty-ca-{}.pem", std::process::id()));
        assert!(std::fs::write(&empty, b"not pem\n").is_ok());
        let e = roots(Some(&empty)).err().unwrap_or_default();
        let _ = std::fs::remove_file(&empty);
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn names_are_dns_or_ip() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
    }
}
