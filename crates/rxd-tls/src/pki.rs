//! PKI mode: a CA (`server.ca`) and an optional CRL (`ca.crl`) that judge client certificates.
//! The verdict is computed per request by rustls's WebPKI verifier, so a reloaded CA or CRL applies
//! to the next request. An expired CRL fails closed: no CA-signed certificate is trusted until a
//! current one is in place.

use crate::{provider, TlsError};
pub use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DistinguishedName, RootCertStore};
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("no PEM CA certificate found")]
    NoCa,
    #[error("invalid CA certificate: {0}")]
    BadCa(String),
    #[error("invalid CRL (expected PEM or DER X.509 CRL): {0}")]
    BadCrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What the CA says about a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaVerdict {
    /// Issued by the CA, within its validity, for client authentication, and not revoked.
    Signed,
    /// Not issued by the CA (or not valid for client authentication, or outside its validity).
    NotSigned,
    /// Listed in the CRL.
    Revoked,
    /// The CRL is expired or unusable: no verdict can be given, so the certificate is not trusted.
    Unverifiable,
}

pub struct Pki {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The CA's subject, advertised in the TLS CertificateRequest.
    pub ca_names: Vec<DistinguishedName>,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    pub has_crl: bool,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("has_crl", &self.has_crl)
            .finish()
    }
}

impl Pki {
    /// Build from the CA file's PEM and, if present, the CRL file (PEM or DER).
    pub fn load(ca_pem: &[u8], crl: Option<&[u8]>) -> Result<Pki, PkiError> {
        let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|_| PkiError::NoCa)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| PkiError::BadCa(e.to_string()))?;
        let ca_names = roots.subjects();
        let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let has_crl = crl.is_some();
        if let Some(bytes) = crl {
            let der = match CertificateRevocationListDer::from_pem_slice(bytes) {
                Ok(der) => der,
                Err(_) => CertificateRevocationListDer::from(bytes.to_vec()),
            };
            webpki_check_crl(&der)?;
            builder = builder.with_crls([der]).enforce_revocation_expiration();
        }
        let verifier = builder
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::BadCrl(e.to_string()))?;
        Ok(Pki {
            verifier,
            ca_names,
            ca_der: ca.to_vec(),
            has_crl,
        })
    }

    pub fn verdict(&self, end_entity: &[u8], now: UnixTime) -> CaVerdict {
        let cert = CertificateDer::from(end_entity);
        match self.verifier.verify_client_cert(&cert, &[], now) {
            Ok(_) => CaVerdict::Signed,
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => CaVerdict::Revoked,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. },
            ))
            | Err(rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus))
            | Err(rustls::Error::InvalidCertRevocationList(_)) => CaVerdict::Unverifiable,
            Err(_) => CaVerdict::NotSigned,
        }
    }
}

/// Parse the CRL now, so a malformed file is refused at load time with its reason.
fn webpki_check_crl(der: &CertificateRevocationListDer<'_>) -> Result<(), PkiError> {
    use x509_parser::prelude::FromDer;
    match x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref()) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(PkiError::BadCrl("trailing data after the CRL".into())),
        Err(e) => Err(PkiError::BadCrl(e.to_string())),
    }
}
