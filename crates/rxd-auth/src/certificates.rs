//! Who may add or change trust-store entries, and how. Every rule of `POST` and `PUT`/`PATCH
//! /1.0/certificates` that depends on the caller lives here, with a table test of each case.

use crate::identity::Identity;
use crate::proof::{AdminProof, CertChangeProof, EnrolProof};
use crate::rbac::Rights;
pub use crate::trust::CertFields;
use thiserror::Error;

/// The texts are LXD's where LXD has one (clients match them), rxd's own otherwise.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertRuleError {
    #[error("Client is already trusted")]
    AlreadyTrusted,
    #[error("not authorized")]
    NotAuthorized,
    #[error("Can't use certificate if token is requested")]
    TokenWithCertificate,
    #[error("Tokens can only be issued for client certificates")]
    TokenNotClient,
    #[error("Only client certificates can be added (type {0:?} is not supported)")]
    BadType(String),
    #[error("Without admin rights only the certificate of this TLS connection can be added; leave out \"certificate\"")]
    ForeignCertificate,
    #[error("A certificate with \"projects\" must be restricted; set \"restricted\": true")]
    ProjectsWithoutRestricted,
    #[error("Only the certificate can be changed")]
    OnlyCertificate,
    #[error("The type of a certificate cannot be changed")]
    TypeImmutable,
}

/// The request's `certificate` field, compared with the certificate of the TLS connection it came
/// on (the daemon compares the DER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateField {
    /// Left out or empty: the connection's own certificate is meant.
    Absent,
    /// The very certificate of this TLS connection, spelled out (pylxd always sends it).
    ThisConnection,
    /// Any other certificate, or text that is no certificate at all.
    Other,
}

/// What an add request asks for, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest<'a> {
    pub kind: &'a str,
    pub token: bool,
    pub certificate: CertificateField,
    pub restricted: bool,
    pub has_projects: bool,
}

/// How an allowed add proceeds, with the proof the write it leads to asks for.
#[derive(Debug)]
pub enum AddPath {
    /// An admin adds the given (or its own) certificate, no secret needed.
    Admin(AdminProof),
    /// An admin asks for a join token.
    IssueToken(AdminProof),
    /// A non-admin enrols its own TLS certificate with the trust password or a token; the secret
    /// is checked next.
    Enrol(EnrolProof),
}

/// `rights`: the caller's, under the current grants (an administrator by identity or by a
/// server-wide grant may add others' certificates).
pub fn decide_add(
    caller: &Identity,
    rights: &Rights,
    req: &AddRequest<'_>,
) -> Result<AddPath, CertRuleError> {
    let admin = rights.is_admin();
    if !matches!(req.kind, "" | "client") {
        return Err(if req.token {
            CertRuleError::TokenNotClient
        } else {
            CertRuleError::BadType(req.kind.into())
        });
    }
    if req.token && req.certificate != CertificateField::Absent {
        return Err(CertRuleError::TokenWithCertificate);
    }
    if req.has_projects && !req.restricted {
        return Err(CertRuleError::ProjectsWithoutRestricted);
    }
    // Naming one's own certificate is the same request as leaving it out, except that an admin
    // naming it asks to add it (and is told it is already there, as LXD tells it).
    let own = match req.certificate {
        CertificateField::Absent => true,
        CertificateField::ThisConnection => !admin,
        CertificateField::Other => false,
    };
    if caller.is_trusted() && own && !req.token {
        return Err(CertRuleError::AlreadyTrusted);
    }
    if admin {
        return Ok(if req.token {
            AddPath::IssueToken(AdminProof::new())
        } else {
            AddPath::Admin(AdminProof::new())
        });
    }
    if req.token {
        return Err(CertRuleError::NotAuthorized);
    }
    if req.certificate == CertificateField::Other {
        return Err(CertRuleError::ForeignCertificate);
    }
    Ok(AddPath::Enrol(EnrolProof::new()))
}

/// May `caller` turn `current` into `proposed`? (`proposed.fingerprint` differs when the
/// certificate itself is replaced.) A non-admin may only renew its own certificate, changing
/// nothing else; nobody changes the type.
pub fn decide_update(
    caller: &Identity,
    rights: &Rights,
    current: &CertFields,
    proposed: &CertFields,
) -> Result<CertChangeProof, CertRuleError> {
    let admin = rights.is_admin();
    if proposed.kind != current.kind {
        return Err(CertRuleError::TypeImmutable);
    }
    if !admin {
        // Identity::fingerprint is also set for untrusted callers (for logs): ownership needs trust.
        let own = caller.is_trusted() && caller.fingerprint() == Some(current.fingerprint.as_str());
        if !own {
            return Err(CertRuleError::NotAuthorized);
        }
        let mut others_same = current.clone();
        others_same.fingerprint = proposed.fingerprint.clone();
        let mut proposed_sorted = proposed.clone();
        proposed_sorted.projects.sort();
        others_same.projects.sort();
        if proposed_sorted != others_same {
            return Err(CertRuleError::OnlyCertificate);
        }
    }
    if !proposed.projects.is_empty() && !proposed.restricted {
        return Err(CertRuleError::ProjectsWithoutRestricted);
    }
    Ok(CertChangeProof::new(&current.fingerprint, proposed.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::TrustedCert;
    use std::sync::Arc;

    fn cert(fp: &str, restricted: bool) -> Identity {
        Identity::Certificate(Arc::new(TrustedCert {
            fingerprint: fp.into(),
            name: "n".into(),
            restricted,
            projects: vec![],
            not_before: 0,
            not_after: i64::MAX,
        }))
    }

    #[test]
    fn add_table() {
        /// The path, without its proof, so the table can say which.
        #[derive(Debug, PartialEq, Eq)]
        enum Path {
            Admin,
            IssueToken,
            Enrol,
        }
        use Path::*;
        let path = |p: AddPath| match p {
            AddPath::Admin(_) => Admin,
            AddPath::IssueToken(_) => IssueToken,
            AddPath::Enrol(_) => Enrol,
        };
        use CertRuleError::*;
        let unix = Identity::Unix { uid: 0 };
        let admin = cert("aa", false);
        let restricted = cert("bb", true);
        let stranger = Identity::Untrusted {
            fingerprint: Some("cc".into()),
        };
        use CertificateField::{Absent, Other, ThisConnection};
        let req = |kind, token, certificate, restricted, has_projects| AddRequest {
            kind,
            token,
            certificate,
            restricted,
            has_projects,
        };
        let cases: Vec<(&str, &Identity, AddRequest, Result<Path, CertRuleError>)> = vec![
            (
                "unix adds a certificate",
                &unix,
                req("client", false, Other, false, false),
                Ok(Admin),
            ),
            (
                "unix with no certificate is already trusted",
                &unix,
                req("", false, Absent, false, false),
                Err(AlreadyTrusted),
            ),
            (
                "admin adds a certificate",
                &admin,
                req("", false, Other, false, false),
                Ok(Admin),
            ),
            (
                "admin issues a token",
                &admin,
                req("client", true, Absent, false, false),
                Ok(IssueToken),
            ),
            (
                "admin token with certificate",
                &admin,
                req("client", true, Other, false, false),
                Err(TokenWithCertificate),
            ),
            (
                "admin token for metrics",
                &admin,
                req("metrics", true, Absent, false, false),
                Err(TokenNotClient),
            ),
            (
                "admin adds a server cert",
                &admin,
                req("server", false, Other, false, false),
                Err(BadType("server".into())),
            ),
            (
                "projects without restricted",
                &admin,
                req("client", false, Other, false, true),
                Err(ProjectsWithoutRestricted),
            ),
            (
                "restricted with projects",
                &admin,
                req("client", false, Other, true, true),
                Ok(Admin),
            ),
            (
                "restricted client re-enrols",
                &restricted,
                req("", false, Absent, false, false),
                Err(AlreadyTrusted),
            ),
            (
                "restricted client adds another cert",
                &restricted,
                req("", false, Other, false, false),
                Err(ForeignCertificate),
            ),
            (
                "restricted client asks for a token",
                &restricted,
                req("client", true, Absent, false, false),
                Err(NotAuthorized),
            ),
            (
                "stranger enrols itself",
                &stranger,
                req("client", false, Absent, false, false),
                Ok(Enrol),
            ),
            (
                "stranger enrols with default type",
                &stranger,
                req("", false, Absent, false, false),
                Ok(Enrol),
            ),
            (
                "stranger enrols restricted",
                &stranger,
                req("", false, Absent, true, true),
                Ok(Enrol),
            ),
            (
                "stranger enrols as a server",
                &stranger,
                req("server", false, Absent, false, false),
                Err(BadType("server".into())),
            ),
            (
                "stranger enrols as metrics",
                &stranger,
                req("metrics", false, Absent, false, false),
                Err(BadType("metrics".into())),
            ),
            (
                "stranger adds someone else's cert",
                &stranger,
                req("client", false, Other, false, false),
                Err(ForeignCertificate),
            ),
            (
                "stranger names its own certificate",
                &stranger,
                req("client", false, ThisConnection, false, false),
                Ok(Enrol),
            ),
            (
                "stranger names its own certificate with a token",
                &stranger,
                req("client", true, ThisConnection, false, false),
                Err(TokenWithCertificate),
            ),
            (
                "restricted client names its own certificate",
                &restricted,
                req("", false, ThisConnection, false, false),
                Err(AlreadyTrusted),
            ),
            (
                "admin names its own certificate",
                &admin,
                req("", false, ThisConnection, false, false),
                Ok(Admin),
            ),
            (
                "stranger asks for a token",
                &stranger,
                req("client", true, Absent, false, false),
                Err(NotAuthorized),
            ),
        ];
        for (what, who, request, expected) in cases {
            assert_eq!(
                decide_add(who, &crate::rbac::rights(who, &[]), &request).map(path),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn update_table() {
        use CertRuleError::*;
        let fields =
            |fp: &str, name: &str, kind: &str, restricted: bool, projects: &[&str]| CertFields {
                name: name.into(),
                kind: kind.into(),
                restricted,
                projects: projects.iter().map(|s| s.to_string()).collect(),
                fingerprint: fp.into(),
            };
        let current = fields("bb", "laptop", "client", true, &["p1", "p2"]);
        let admin = cert("aa", false);
        let owner = cert("bb", true);
        let other = cert("cc", true);
        let expired_owner = Identity::Untrusted {
            fingerprint: Some("bb".into()),
        };
        let cases: Vec<(&str, &Identity, CertFields, Result<(), CertRuleError>)> = vec![
            (
                "admin renames",
                &admin,
                fields("bb", "new", "client", true, &["p1"]),
                Ok(()),
            ),
            (
                "admin lifts the restriction",
                &admin,
                fields("bb", "laptop", "client", false, &[]),
                Ok(()),
            ),
            (
                "admin changes the type",
                &admin,
                fields("bb", "laptop", "server", true, &["p1", "p2"]),
                Err(TypeImmutable),
            ),
            (
                "admin: projects without restricted",
                &admin,
                fields("bb", "laptop", "client", false, &["p1"]),
                Err(ProjectsWithoutRestricted),
            ),
            (
                "owner renews its certificate",
                &owner,
                fields("dd", "laptop", "client", true, &["p2", "p1"]),
                Ok(()),
            ),
            (
                "owner writes back unchanged",
                &owner,
                fields("bb", "laptop", "client", true, &["p1", "p2"]),
                Ok(()),
            ),
            (
                "owner renames",
                &owner,
                fields("bb", "mine", "client", true, &["p1", "p2"]),
                Err(OnlyCertificate),
            ),
            (
                "owner lifts its restriction",
                &owner,
                fields("bb", "laptop", "client", false, &[]),
                Err(OnlyCertificate),
            ),
            (
                "owner adds a project",
                &owner,
                fields("bb", "laptop", "client", true, &["p1", "p2", "p3"]),
                Err(OnlyCertificate),
            ),
            (
                "owner changes its type",
                &owner,
                fields("bb", "laptop", "server", true, &["p1", "p2"]),
                Err(TypeImmutable),
            ),
            (
                "another restricted client",
                &other,
                fields("dd", "laptop", "client", true, &["p1", "p2"]),
                Err(NotAuthorized),
            ),
            (
                "untrusted holder of the same cert",
                &expired_owner,
                fields("dd", "laptop", "client", true, &["p1", "p2"]),
                Err(NotAuthorized),
            ),
        ];
        for (what, who, proposed, expected) in cases {
            assert_eq!(
                decide_update(who, &crate::rbac::rights(who, &[]), &current, &proposed)
                    .map(|p| p.fingerprint().to_owned()),
                expected.map(|()| current.fingerprint.clone()),
                "{what}"
            );
        }
    }
}
