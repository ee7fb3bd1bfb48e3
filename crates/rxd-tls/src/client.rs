//! The client side's rustls configuration, with the three ways `rxc` may accept a server:
//! capture (first contact: record the certificate, abort, send nothing), pinned (exactly the
//! certificate the user confirmed, by SHA-256) and CA (PKI mode, with name checks).

use crate::cert::fingerprint_bytes;
use crate::{provider, KeyPairFiles, TlsError, PROTOCOL_VERSIONS};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
pub use rustls_pki_types::ServerName;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::{Arc, Mutex};

/// How the server's certificate is judged.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Record the certificate and fail the handshake, so nothing is sent to an unconfirmed server.
    Capture,
    /// Accept only the certificate with this SHA-256 of its DER.
    Pinned([u8; 32]),
    /// Accept a certificate that chains to one of these roots and names the host.
    Ca(Arc<RootCertStore>),
}

/// The certificate the server presented during the last handshake made with a config, whatever
/// the verdict, so the caller can show it (first contact) or report a changed one.
#[derive(Debug, Clone, Default)]
pub struct Presented(Arc<Mutex<Option<Vec<u8>>>>);

impl Presented {
    pub fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().map(|mut g| g.take()).unwrap_or(None)
    }

    fn set(&self, der: &[u8]) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(der.to_vec());
        }
    }
}

/// Error text used when a captured certificate aborts the handshake on purpose.
pub const CAPTURED: &str = "server certificate captured for confirmation";
/// Error text used when a pinned certificate does not match.
pub const PIN_MISMATCH: &str = "server certificate does not match the pinned certificate";

pub fn client_config(
    trust: ServerTrust,
    identity: Option<&KeyPairFiles>,
) -> Result<(Arc<ClientConfig>, Presented), TlsError> {
    let provider = provider();
    let presented = Presented::default();
    let inner = match &trust {
        ServerTrust::Ca(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?,
        ),
        _ => None,
    };
    let verifier = Verifier {
        trust,
        inner,
        presented: presented.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(pair) => builder.with_client_auth_cert(pair.cert_chain(), pair.private_key()?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), presented))
}

#[derive(Debug)]
struct Verifier {
    trust: ServerTrust,
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    presented: Presented,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.presented.set(end_entity);
        match (&self.trust, &self.inner) {
            (ServerTrust::Capture, _) => Err(rustls::Error::General(CAPTURED.into())),
            (ServerTrust::Pinned(fp), _) => {
                // Constant time is not needed: the fingerprint is public.
                if fingerprint_bytes(end_entity) == *fp {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(PIN_MISMATCH.into()))
                }
            }
            (ServerTrust::Ca(_), Some(v)) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            (ServerTrust::Ca(_), None) => Err(rustls::Error::General("no CA verifier".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Trust anchored in these CA certificates (DER), for PKI mode.
pub fn ca_trust(cas: &[Vec<u8>]) -> Result<ServerTrust, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in cas {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    Ok(ServerTrust::Ca(Arc::new(roots)))
}

/// A client configuration for ordinary web servers (a Candid discharger, say): the server must
/// present a certificate that chains to the system's root certificates (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured) or to one of `extra_cas` (DER), for the name it was asked for.
/// No client certificate is offered. There is deliberately no way to skip the check.
pub fn web_client_config(extra_cas: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    // Unreadable or unparsable system certificates are skipped, as browsers do; an empty store
    // is reported below rather than turned into a verifier that accepts nothing, silently.
    let _ = roots.add_parsable_certificates(native.certs);
    for der in extra_cas {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Config(rustls::Error::General(
            "no trusted root certificates found (install ca-certificates, or set SSL_CERT_FILE)"
                .into(),
        )));
    }
    let provider = provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
