//! The trust store on the wire: `/1.0/certificates` objects, the POST body, and add tokens.

use serde::{Deserialize, Serialize};

/// A trust-store entry as GET returns it; the certificate is PEM here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub restricted: bool,
    #[serde(default)]
    pub projects: Vec<String>,
    pub certificate: String,
    pub fingerprint: String,
}

/// `PUT /1.0/certificates/<fp>`; PATCH takes the same fields, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificatePut {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub restricted: Option<bool>,
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    /// PEM.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// `POST /1.0/certificates`. Unlike GET and PUT, `certificate` is base64 (standard) of the DER.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificatesPost {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub restricted: bool,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub certificate: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub token: bool,
}

/// The join token an admin hands to a new client: base64 (standard, padded) of this JSON, with
/// LXD's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateAddToken {
    pub client_name: String,
    pub fingerprint: String,
    pub addresses: Vec<String>,
    pub secret: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` means no expiry.
    pub expires_at: String,
}
