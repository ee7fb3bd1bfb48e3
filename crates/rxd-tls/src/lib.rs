//! Everything rxd does with certificates and TLS: generating and loading keypairs, fingerprints,
//! certificate checks for the trust store, and the rustls configurations of both sides. No other
//! crate configures rustls.
#![forbid(unsafe_code)]

pub mod cert;
pub mod client;
pub mod keypair;
pub mod pki;
pub mod server;

pub use cert::{fingerprint, CertCheckError, CertInfo};
pub use keypair::{KeyPairError, KeyPairFiles, Role};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
}

/// The crypto provider with rxd's policy: AEAD suites with ECDHE only, and EC groups only.
/// rustls has no CBC, RSA key exchange, SHA-1 signatures, renegotiation or compression, so the
/// policy holds by construction; the lists are filtered anyway so a rustls upgrade cannot widen them.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider, kx_group};
    std::sync::Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    })
}

pub(crate) const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
