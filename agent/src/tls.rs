//! TLS to the broker (`mqtts://`) and to the enrollment endpoint: one rustls `ClientConfig`,
//! built once from `tls.ca_file` (or the system store) and the optional certificate pin, shared
//! by rumqttc and reqwest so both trust exactly the same servers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// Why no usable TLS client could be built. Configuration validation turns these into errors
/// naming `tls.ca_file` or `tls.pin_sha256`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no PEM certificate.
    #[error("{path}: {reason}")]
    CaFile { path: String, reason: String },
    /// No trust anchor is available: no CA file and an empty (or unreadable) system store.
    #[error("no CA certificates: the system store is empty or unreadable ({0}); set tls.ca_file")]
    NoRoots(String),
    /// rustls refused the configuration (a CA certificate it cannot use, no protocol versions).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// A built client configuration, shared by the MQTT and enrollment connections.
#[derive(Clone)]
pub struct TlsClient(pub Arc<ClientConfig>);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient(…)")
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The crypto provider of every TLS connection the agent makes (ring, as in the workspace).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; an empty result is an error.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The operating system's trusted CA certificates.
pub fn system_roots() -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "none found".into());
        return Err(TlsError::NoRoots(why));
    }
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping part of the system CA store");
    }
    Ok(found.certs)
}

/// Builds the client configuration around [`verifier`].
pub fn client_config(
    roots: &[CertificateDer<'static>],
    pin: Option<[u8; 32]>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        // "dangerous" only in name: the verifier runs the full webpki check (see `verifier`).
        .dangerous()
        .with_custom_certificate_verifier(verifier(roots, pin)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Server certificate verification: the chain to `roots` (webpki), plus, when `pin` is set,
/// equality of the end-entity certificate's SHA-256 with it.
pub fn verifier(
    roots: &[CertificateDer<'static>],
    pin: Option<[u8; 32]>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err(TlsError::NoRoots(format!(
            "{ignored} certificate(s) unusable as trust anchors"
        )));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok(match pin {
        Some(pin) => Arc::new(PinnedVerifier {
            inner: webpki,
            pin,
            warned: Mutex::new(None),
        }),
        None => webpki,
    })
}

/// Parses a `tls.pin_sha256` value: 64 hex digits, colons allowed (as `openssl x509
/// -fingerprint -sha256` prints them).
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let hexed: String = s.trim().chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(&hexed, &mut pin).ok()?;
    Some(pin)
}

/// SHA-256 of a certificate's DER, the value `tls.pin_sha256` holds.
pub fn cert_sha256(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// The usual webpki verification (chain to a trusted root, validity, host name) AND the
/// server's end-entity certificate hashing to the pinned value. A pin alone never makes an
/// untrusted chain acceptable: the pin narrows trust, it does not replace it.
#[derive(Debug)]
pub struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pin: [u8; 32],
    /// The last mismatching certificate logged at warn (reconnects would repeat it).
    warned: Mutex<Option<[u8; 32]>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let presented = cert_sha256(end_entity);
        if presented != self.pin {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            if *warned != Some(presented) {
                *warned = Some(presented);
                tracing::warn!(
                    presented = %hex::encode(presented),
                    "server certificate does not match tls.pin_sha256"
                );
            }
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for `name` (its own trust anchor).
    fn self_signed(name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn verify(
        v: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'static>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).expect("name");
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn pin_accepts_the_pinned_cert_and_rejects_another_trusted_one() {
        let a = self_signed("mqtt.miac.local");
        let b = self_signed("mqtt.miac.local");
        let roots = [a.clone(), b.clone()];
        let pinned = verifier(&roots, Some(cert_sha256(&a))).expect("config");
        verify(&pinned, &a, "mqtt.miac.local").expect("the pinned cert passes");
        assert_eq!(
            verify(&pinned, &b, "mqtt.miac.local"),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            )),
            "a trusted but unpinned cert fails"
        );
        // Without a pin both are fine: the chain check alone.
        assert!(client_config(&roots, Some(cert_sha256(&a))).is_ok());
        let plain = verifier(&roots, None).expect("config");
        verify(&plain, &b, "mqtt.miac.local").expect("trusted");
    }

    #[test]
    fn pin_never_replaces_the_chain_check() {
        let trusted = self_signed("mqtt.miac.local");
        let stranger = self_signed("mqtt.miac.local");
        // Pinned to a certificate no root vouches for: still refused.
        let cfg =
            verifier(std::slice::from_ref(&trusted), Some(cert_sha256(&stranger))).expect("cfg");
        assert!(verify(&cfg, &stranger, "mqtt.miac.local").is_err());
        // The right cert under the wrong name is refused by webpki before the pin is looked at.
        let cfg =
            verifier(std::slice::from_ref(&trusted), Some(cert_sha256(&trusted))).expect("cfg");
        assert!(verify(&cfg, &trusted, "other.miac.local").is_err());
    }

    #[test]
    fn pins_parse_with_or_without_colons() {
        let pin = [0xabu8; 32];
        let plain = hex::encode(pin);
        let colons = pin.map(|b| format!("{b:02X}")).join(":");
        assert_eq!(parse_pin(&plain), Some(pin));
        assert_eq!(parse_pin(&colons), Some(pin));
        assert_eq!(parse_pin("abcd"), None);
        assert_eq!(parse_pin(&"zz".repeat(32)), None);
    }

    #[test]
    fn ca_file_errors_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        assert!(matches!(read_ca_file(&empty), Err(TlsError::CaFile { .. })));
        assert!(matches!(
            read_ca_file(&dir.path().join("missing.pem")),
            Err(TlsError::CaFile { .. })
        ));
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["ca".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.pem()).expect("write");
        assert_eq!(read_ca_file(&good).expect("reads").len(), 1);
    }
}
