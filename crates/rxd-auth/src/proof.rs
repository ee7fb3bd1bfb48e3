//! Proofs that an authorization decision was made. Each has private fields and a crate-private
//! constructor, so only rxd-auth's rules can make one; every function elsewhere that writes the
//! trust store, grants, projects or the server config takes the matching proof, so a handler
//! that forgets the check does not compile.

use crate::permission::Permission;
use crate::trust::CertFields;

/// The caller is a server administrator (`Rights::require_admin`).
#[derive(Debug)]
pub struct AdminProof(());

impl AdminProof {
    pub(crate) fn new() -> AdminProof {
        AdminProof(())
    }
}

/// The caller holds `permission` on `project` (`Rights::require`): a write scoped to that
/// project, and to no other.
#[derive(Debug)]
pub struct ProjectProof {
    project: String,
    permission: Permission,
}

impl ProjectProof {
    pub(crate) fn new(project: &str, permission: Permission) -> ProjectProof {
        ProjectProof {
            project: project.to_owned(),
            permission,
        }
    }

    /// The one project this proof covers.
    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn permission(&self) -> Permission {
        self.permission
    }

    /// Does it cover a write of `permission` to `project`?
    pub fn covers(&self, project: &str, permission: Permission) -> bool {
        self.project == project && self.permission == permission
    }
}

/// The trust-store rules let this caller enrol the certificate of its own TLS connection
/// (`certificates::decide_add`), once it proves the trust password or a token.
#[derive(Debug)]
pub struct EnrolProof(());

impl EnrolProof {
    pub(crate) fn new() -> EnrolProof {
        EnrolProof(())
    }
}

/// The trust-store rules let this caller make this entry into exactly these fields
/// (`certificates::decide_update`).
#[derive(Debug)]
pub struct CertChangeProof {
    fingerprint: String,
    decided: CertFields,
}

impl CertChangeProof {
    pub(crate) fn new(fingerprint: &str, decided: CertFields) -> CertChangeProof {
        CertChangeProof {
            fingerprint: fingerprint.to_owned(),
            decided,
        }
    }

    /// The entry (by its current fingerprint) the change was decided for.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Does it cover replacing the entry with one of these fields? Nothing the rule did not
    /// see (a wider project list, `restricted` dropped) passes.
    pub fn covers(&self, proposed: &CertFields) -> bool {
        let sorted = |f: &CertFields| {
            let mut f = f.clone();
            f.projects.sort();
            f
        };
        sorted(&self.decided) == sorted(proposed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(restricted: bool, projects: &[&str]) -> CertFields {
        CertFields {
            name: "c".into(),
            kind: "client".into(),
            restricted,
            projects: projects.iter().map(|p| p.to_string()).collect(),
            fingerprint: "aa".into(),
        }
    }

    /// A change proof covers the fields its rule decided (project order aside) and nothing else.
    #[test]
    fn change_proofs_cover_only_what_was_decided() {
        let proof = CertChangeProof::new("aa", fields(true, &["p1", "p2"]));
        assert!(proof.covers(&fields(true, &["p2", "p1"])));
        for other in [
            fields(false, &["p1", "p2"]),
            fields(true, &["p1", "p2", "p3"]),
            fields(true, &["p1"]),
            CertFields {
                fingerprint: "bb".into(),
                ..fields(true, &["p1", "p2"])
            },
        ] {
            assert!(!proof.covers(&other), "{other:?}");
        }
        let project = ProjectProof::new("p1", Permission::ManageProjects);
        assert!(project.covers("p1", Permission::ManageProjects));
        assert!(!project.covers("p2", Permission::ManageProjects));
        assert!(!project.covers("p1", Permission::View));
    }
}
