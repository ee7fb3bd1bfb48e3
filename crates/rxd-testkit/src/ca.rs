//! A throwaway certificate authority for PKI-mode tests: server and client certificates it
//! issues, and CRLs it signs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A certificate and its key, PEM (the key as PKCS#8, as CAs usually hand them out).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

impl Issued {
    /// Write as `client.crt`/`client.key` (or any names) into `dir`.
    pub fn write(&self, dir: &Path, cert: &str, key: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(cert), &self.cert_pem).unwrap();
        std::fs::write(dir.join(key), &self.key_pem).unwrap();
    }

    pub fn fingerprint(&self) -> String {
        rxd_tls::fingerprint(&rxd_tls::cert::from_pem(&self.cert_pem).unwrap())
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    fn issue(&self, cn: &str, serial: u64, server: bool) -> Issued {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let sans = if server {
            vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from(serial));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(30);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1.
    pub fn server(&self, serial: u64) -> Issued {
        self.issue("rxd-server", serial, true)
    }

    pub fn client(&self, cn: &str, serial: u64) -> Issued {
        self.issue(cn, serial, false)
    }

    /// A CRL revoking `serials`, valid until `next_update` from now (negative: already expired).
    pub fn crl(&self, serials: &[u64], next_update: Duration) -> String {
        let now = OffsetDateTime::now_utc();
        let this_update = if next_update.is_negative() {
            now + next_update - Duration::hours(1)
        } else {
            now - Duration::minutes(1)
        };
        let params = CertificateRevocationListParams {
            this_update,
            next_update: now + next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&issuer).unwrap().pem().unwrap()
    }
}
