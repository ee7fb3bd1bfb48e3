//! The HTTPS listener's rustls configuration.
//!
//! A client certificate is requested but never required, and the handshake checks only that the
//! client holds the key of the certificate it sent (CertificateVerify). Whether that certificate is
//! trusted is decided per request against the live trust store, because trust can change while a
//! connection is open and resumed sessions keep their original certificate.

use crate::{provider, KeyPairFiles, TlsError, PROTOCOL_VERSIONS};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;

pub use rustls::ServerConfig;

/// Build the listener configuration. `ca_names` are the subject DNs advertised in the
/// CertificateRequest (empty unless PKI mode is on).
pub fn server_config(
    pair: &KeyPairFiles,
    ca_names: Vec<DistinguishedName>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = RequestClientCert {
        ca_names,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(pair.cert_chain(), pair.private_key()?)?;
    // HTTP/1.1 only: one protocol to harden, and websocket upgrades (exec, events) need it anyway.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct RequestClientCert {
    ca_names: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.ca_names
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately no chain or validity check here: the per-request trust decision does it
        // against the current trust store (see the module comment). Proof of possession is still
        // required through the signature checks below.
        Ok(ClientCertVerified::assertion())
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

/// The client certificate of an established connection, if it sent one: the end-entity DER.
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}
