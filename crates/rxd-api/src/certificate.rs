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
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "crate::null_as_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub restricted: bool,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub projects: Vec<String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub certificate: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub password: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
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
    /// RFC 3339; `0001-01-01T00:00:00Z` means no expiry. Clients that build the token from the
    /// operation themselves (pylxd) leave it out: the server keeps the expiry anyway.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub expires_at: String,
}

impl CertificateAddToken {
    /// The token string an admin hands out: base64 of this JSON.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Recognise a join token, as LXD does: it decodes and has a client name, a fingerprint, a
    /// secret and at least one address. Anything else (a trust password, say) is not a token.
    pub fn decode(text: &str) -> Option<CertificateAddToken> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        let t: CertificateAddToken = serde_json::from_slice(&raw).ok()?;
        let complete = !t.client_name.is_empty()
            && !t.fingerprint.is_empty()
            && !t.secret.is_empty()
            && !t.addresses.is_empty();
        complete.then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_nulls_are_defaults() {
        let body = r#"{"name":"","type":"client","restricted":false,"projects":null,"certificate":"","password":"x","token":false}"#;
        let p: CertificatesPost = serde_json::from_str(body).unwrap();
        assert!(p.projects.is_empty());
        let p: CertificatesPost =
            serde_json::from_str(r#"{"name":null,"type":null,"projects":null}"#).unwrap();
        assert_eq!((p.name.as_str(), p.kind.as_str()), ("", ""));
        let s: crate::server::ServerPut = serde_json::from_str(r#"{"config":null}"#).unwrap();
        assert!(s.config.is_empty());
    }

    /// pylxd's `certificates.create_token` assembles the token without `expires_at`.
    #[test]
    fn token_without_expiry_is_a_token() {
        use base64::Engine;
        let json =
            r#"{"client_name":"b","fingerprint":"ab","addresses":["127.0.0.1:8443"],"secret":"s"}"#;
        let text = base64::engine::general_purpose::STANDARD.encode(json);
        let t = CertificateAddToken::decode(&text).expect("a token");
        assert_eq!((t.secret.as_str(), t.expires_at.as_str()), ("s", ""));
    }

    #[test]
    fn token_round_trip_and_recognition() {
        let t = CertificateAddToken {
            client_name: "laptop".into(),
            fingerprint: "ab".repeat(32),
            addresses: vec!["127.0.0.1:8443".into()],
            secret: "cd".repeat(32),
            expires_at: "0001-01-01T00:00:00Z".into(),
        };
        let s = t.encode();
        assert_eq!(CertificateAddToken::decode(&s), Some(t.clone()));
        use base64::Engine;
        let json = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&s)
                .unwrap(),
        )
        .unwrap();
        assert!(
            json.starts_with("{\"client_name\":\"laptop\",\"fingerprint\":"),
            "LXD's key order: {json}"
        );
        assert_eq!(
            CertificateAddToken::decode("hunter2"),
            None,
            "a password is not a token"
        );
        assert_eq!(
            CertificateAddToken::decode(&t.secret),
            None,
            "a bare secret is not a token"
        );
        let mut no_addr = t.clone();
        no_addr.addresses.clear();
        assert_eq!(CertificateAddToken::decode(&no_addr.encode()), None);
    }
}
