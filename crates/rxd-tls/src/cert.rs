//! Certificate facts and the checks a certificate must pass before it enters the trust store.

use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::*;

/// Lowercase hex SHA-256 of the DER: how LXD and rxd name certificates.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// SHA-256 of the DER as bytes, for the trust cache's O(1) lookups.
pub fn fingerprint_bytes(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub fingerprint: String,
    pub common_name: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a certificate was refused. The texts of the first three are LXD's, which clients match.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertCheckError {
    #[error("The provided certificate isn't valid yet")]
    NotYetValid,
    #[error("The provided certificate is expired")]
    Expired,
    #[error("RSA key is too weak (minimum of 2048bit)")]
    WeakRsa,
    #[error(
        "The provided certificate is signed with {0}, which is not trusted; use a SHA-2 signature"
    )]
    WeakSignature(&'static str),
    #[error("Invalid certificate material: {0}")]
    Invalid(String),
}

/// Parse a DER certificate and check that it may be trusted at `now` (Unix seconds): within its
/// validity, a SHA-2 (or Ed25519) signature, and no RSA key under 2048 bits.
pub fn check(der: &[u8], now: i64) -> Result<CertInfo, CertCheckError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertCheckError::Invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertCheckError::Invalid(
            "trailing data after the certificate".into(),
        ));
    }
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(CertCheckError::NotYetValid);
    }
    if now > validity.not_after.timestamp() {
        return Err(CertCheckError::Expired);
    }
    if let Some(name) = weak_signature(&cert.signature_algorithm.algorithm.to_id_string()) {
        return Err(CertCheckError::WeakSignature(name));
    }
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed() {
        if rsa.key_size() < 2048 {
            return Err(CertCheckError::WeakRsa);
        }
    }
    Ok(facts(der, &cert))
}

/// The facts of a certificate without judging it (for listings).
pub fn describe(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(facts(der, &cert))
}

fn facts(der: &[u8], cert: &X509Certificate<'_>) -> CertInfo {
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    CertInfo {
        fingerprint: fingerprint(der),
        common_name,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    }
}

/// Signature algorithms that are never trusted, by OID.
fn weak_signature(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.1.4" => "MD5",
        "1.2.840.113549.1.1.2" => "MD2",
        "1.2.840.113549.1.1.5" => "SHA-1",
        "1.2.840.10045.4.1" => "SHA-1",
        "1.2.840.10040.4.3" => "SHA-1",
        "1.3.14.3.2.29" => "SHA-1",
        _ => return None,
    })
}

/// PEM text of a DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM armour with 64-column lines, as OpenSSL and Go write it.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first certificate in a PEM text, as DER.
pub fn from_pem(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}
