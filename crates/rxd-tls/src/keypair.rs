//! The keypairs both sides create on first need: EC P-384, ecdsa-with-SHA384, self-signed, 10 years,
//! written as PEM (certificate 0644, SEC1 key 0600), the same shape LXD writes so files are
//! interchangeable. Loading accepts SEC1, PKCS#8 and PKCS#1 keys, as administrators may place
//! CA-issued ones.

use crate::cert::{fingerprint, from_pem, pem_encode};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// serverAuth, with SANs for the host name and both loopback addresses.
    Server,
    /// clientAuth, no SANs.
    Client,
}

#[derive(Debug, Error)]
pub enum KeyPairError {
    #[error("{present} exists but {missing} is missing; restore {missing}, or remove {present} too to generate a new pair (this changes the fingerprint every client pinned)")]
    HalfPair { present: PathBuf, missing: PathBuf },
    #[error("{key} does not match the public key of {cert}; put back the matching pair, or remove both to generate a new one")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating a keypair: {0}")]
    Generate(String),
}

/// A loaded (or freshly generated) certificate and key.
#[derive(Clone)]
pub struct KeyPairFiles {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub fingerprint: String,
    /// True when this call created the pair.
    pub generated: bool,
}

impl std::fmt::Debug for KeyPairFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("KeyPairFiles")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl KeyPairFiles {
    /// Load the pair at `cert_path`/`key_path`, generating it when both are absent. One without the
    /// other, or a key that does not match the certificate, is an error: never a silent overwrite.
    pub fn load_or_generate(
        cert_path: &Path,
        key_path: &Path,
        role: Role,
        common_name: &str,
        dns_name: &str,
    ) -> Result<KeyPairFiles, KeyPairError> {
        match (exists(cert_path)?, exists(key_path)?) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) => {
                let (cert_pem, key_pem) = generate(role, common_name, dns_name)?;
                write_new(key_path, key_pem.as_bytes(), 0o600)?;
                if let Err(e) = write_new(cert_path, cert_pem.as_bytes(), 0o644) {
                    let _ = std::fs::remove_file(key_path);
                    return Err(e);
                }
                let mut pair = Self::from_pem(&cert_pem, &key_pem, cert_path, key_path)?;
                pair.generated = true;
                Ok(pair)
            }
            (true, false) => Err(KeyPairError::HalfPair {
                present: cert_path.into(),
                missing: key_path.into(),
            }),
            (false, true) => Err(KeyPairError::HalfPair {
                present: key_path.into(),
                missing: cert_path.into(),
            }),
        }
    }

    pub fn load(cert_path: &Path, key_path: &Path) -> Result<KeyPairFiles, KeyPairError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| KeyPairError::Io {
                path: p.into(),
                source,
            })
        };
        Self::from_pem(&read(cert_path)?, &read(key_path)?, cert_path, key_path)
    }

    fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<KeyPairFiles, KeyPairError> {
        let parse = |p: &Path, reason: &str| KeyPairError::Parse {
            path: p.into(),
            reason: reason.into(),
        };
        let cert_der =
            from_pem(cert_pem).ok_or_else(|| parse(cert_path, "no PEM certificate found"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
            parse(
                key_path,
                "no PEM private key (SEC1, PKCS#8 or PKCS#1) found",
            )
        })?;
        let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|e| parse(key_path, &format!("unsupported private key: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| parse(cert_path, &format!("invalid certificate: {e}")))?;
        let matches = signer
            .public_key()
            .is_some_and(|spki| spki.as_ref() == cert.public_key().raw);
        if !matches {
            return Err(KeyPairError::Mismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            });
        }
        Ok(KeyPairFiles {
            fingerprint: fingerprint(&cert_der),
            cert_der,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            generated: false,
        })
    }

    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, crate::TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| crate::TlsError::Pem {
            what: "private key",
            reason: e.to_string(),
        })
    }
}

fn exists(p: &Path) -> Result<bool, KeyPairError> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(KeyPairError::Io {
            path: p.into(),
            source,
        }),
    }
}

/// Create a file that must not exist yet, with its final mode from the start (no chmod race) and
/// without following a symlink planted at the path.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyPairError> {
    let io = |source| KeyPairError::Io {
        path: path.into(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Generate a pair in memory: certificate PEM and SEC1 key PEM.
pub fn generate(
    role: Role,
    common_name: &str,
    dns_name: &str,
) -> Result<(String, String), KeyPairError> {
    use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
    let gen_err = |e: &dyn std::fmt::Display| KeyPairError::Generate(e.to_string());

    let ec = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).map_err(|e| gen_err(&e))?;
    let pkcs8 = ec.to_pkcs8v1().map_err(|e| gen_err(&e))?;
    let sec1: EcPrivateKeyRfc5915Der = ec.private_key().as_der().map_err(|e| gen_err(&e))?;
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
        &rcgen::PKCS_ECDSA_P384_SHA384,
    )
    .map_err(|e| gen_err(&e))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rxd");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(3650);
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut serial[..]);
    serial[0] &= 0x7f; // A positive INTEGER.
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    match role {
        Role::Server => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let dns = if dns_name.is_empty() {
                "unspecified"
            } else {
                dns_name
            };
            params.subject_alt_names = vec![
                SanType::DnsName(dns.try_into().map_err(|e| gen_err(&e))?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ];
        }
        Role::Client => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    let cert = params.self_signed(&key).map_err(|e| gen_err(&e))?;
    Ok((cert.pem(), pem_encode("EC PRIVATE KEY", sec1.as_ref())))
}
