//! Role-based access control: permissions, roles, grants, what an identity may do in each
//! project ([`Rights`]), and the one decision every request goes through ([`decide`]).
//!
//! Roles (the security specification's): `auditor` views a project; `user` also operates its
//! containers (state, exec, console, files, snapshots); `operator` also creates, reconfigures and
//! deletes containers and manages images; `admin` on a project also reconfigures the project.
//! Granted server-wide, `admin` is the server administrator; other roles granted server-wide act
//! on every project and may also read the server's configuration and trust store.

use crate::identity::{AuthError, Identity};
pub use crate::permission::Permission;
use crate::proof::{AdminProof, ProjectProof};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The four roles, in increasing power: each has every permission of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Auditor,
    User,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Auditor, Role::User, Role::Operator, Role::Admin];

    /// The permissions this role carries on a project it is granted on.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        const OPERATOR: &[Permission] = &[
            View,
            OperateContainers,
            ManageContainers,
            ManageImages,
            ManageProfiles,
            ManageNetworks,
            ManageStorageVolumes,
        ];
        match self {
            Role::Auditor => &[View],
            Role::User => &[View, OperateContainers],
            Role::Operator => OPERATOR,
            Role::Admin => &Permission::ALL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("Unknown role {s:?} (auditor, user, operator or admin)"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One project (and only while it exists under this name).
    Project(String),
    /// Every project, including ones created later.
    AllProjects,
    /// The whole server: every project, and for `admin` the server itself.
    Server,
}

impl Scope {
    /// The wire form: `project`, `all-projects` or `server`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Project(_) => "project",
            Scope::AllProjects => "all-projects",
            Scope::Server => "server",
        }
    }

    /// `kind` and `project` as sent by a client.
    pub fn parse(kind: &str, project: &str) -> Result<Scope, String> {
        match (kind, project) {
            ("project", "") => Err("A project grant needs a project".into()),
            ("project", p) => Ok(Scope::Project(p.into())),
            ("all-projects" | "server", "") => Ok(if kind == "server" {
                Scope::Server
            } else {
                Scope::AllProjects
            }),
            ("all-projects" | "server", _) => {
                Err(format!("A {kind} grant does not name a project"))
            }
            _ => Err(format!(
                "Unknown scope {kind:?} (project, all-projects or server)"
            )),
        }
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A trusted TLS client, by the SHA-256 fingerprint of its certificate.
    Certificate(String),
    /// An externally authenticated (Candid) user, by name.
    CandidUser(String),
    /// Every member of an externally authenticated (Candid) group.
    CandidGroup(String),
}

impl Subject {
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Certificate(_) => "certificate",
            Subject::CandidUser(_) => "candid-user",
            Subject::CandidGroup(_) => "candid-group",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Certificate(n) | Subject::CandidUser(n) | Subject::CandidGroup(n) => n,
        }
    }

    pub fn parse(kind: &str, name: &str) -> Result<Subject, String> {
        let bad = |what: &str| Err(format!("Invalid {kind} identity {name:?}: {what}"));
        match kind {
            "certificate" => {
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Subject::Certificate(name.to_ascii_lowercase()))
                } else {
                    bad("a certificate is named by its full SHA-256 fingerprint")
                }
            }
            "candid-user" | "candid-group" => {
                if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                    return bad("1 to 255 characters, no control characters");
                }
                Ok(if kind == "candid-user" {
                    Subject::CandidUser(name.into())
                } else {
                    Subject::CandidGroup(name.into())
                })
            }
            _ => Err(format!(
                "Unknown identity type {kind:?} (certificate, candid-user or candid-group)"
            )),
        }
    }
}

/// One role granted to one subject on one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: i64,
    pub subject: Subject,
    pub role: Role,
    pub scope: Scope,
}

/// What one identity may do, computed per request from its identity and the current grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// The server administrator: everything, everywhere.
    admin: bool,
    /// May read the server's configuration and the whole trust store (a server-wide grant).
    server_view: bool,
    /// Permissions on every project.
    everywhere: BTreeSet<Permission>,
    /// Permissions on named projects, on top of `everywhere`.
    projects: BTreeMap<String, BTreeSet<Permission>>,
}

/// What an operation, event or trust-store entry is about, for deciding who may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// Something in a project; the empty name is the server itself (such items go with any
    /// project the caller asks about, but only administrators see them).
    Project(&'a str),
    /// About the server's trust store, shown in a project as LXD does (certificate add
    /// tokens): administrators only.
    ServerOnly,
    /// The security log (`logging` events): administrators only.
    SecurityLog,
    /// An entry of the trust store: whoever may view the server's trust store, and the
    /// identity holding it (`own`).
    Certificate { own: bool },
}

impl Rights {
    pub(crate) fn full() -> Rights {
        Rights {
            admin: true,
            server_view: true,
            ..Rights::default()
        }
    }

    /// The server administrator.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// May read the server's configuration and the whole trust store.
    pub fn may_view_server(&self) -> bool {
        self.server_view
    }

    /// The one rule for what a caller may see of the operations, events and trust-store
    /// entries it lists or streams.
    pub fn may_see(&self, item: Item<'_>) -> bool {
        match item {
            Item::Project(p) => self.admin || (!p.is_empty() && self.can_view(p)),
            Item::ServerOnly | Item::SecurityLog => self.admin,
            Item::Certificate { own } => self.server_view || own,
        }
    }

    /// No permission anywhere.
    pub fn is_empty(&self) -> bool {
        !self.admin
            && !self.server_view
            && self.everywhere.is_empty()
            && self.projects.values().all(BTreeSet::is_empty)
    }

    pub fn has(&self, project: &str, perm: Permission) -> bool {
        self.admin
            || self.everywhere.contains(&perm)
            || self
                .projects
                .get(project)
                .is_some_and(|p| p.contains(&perm))
    }

    pub fn can_view(&self, project: &str) -> bool {
        self.has(project, Permission::View)
    }

    /// The proof functions that change server state ask for, for the server administrator.
    pub fn require_admin(&self) -> Result<AdminProof, AuthError> {
        if self.admin {
            Ok(AdminProof::new())
        } else {
            Err(AuthError::NotAuthorized)
        }
    }

    /// The proof project-scoped writes ask for: `perm` on `project`.
    pub fn require(&self, project: &str, perm: Permission) -> Result<ProjectProof, AuthError> {
        if self.has(project, perm) {
            Ok(ProjectProof::new(project, perm))
        } else {
            Err(AuthError::NotAuthorized)
        }
    }

    fn add(&mut self, role: Role, scope: &Scope) {
        let perms = role.permissions().iter().copied();
        match scope {
            Scope::Server if role == Role::Admin => {
                self.admin = true;
                self.server_view = true;
            }
            Scope::Server => {
                self.server_view = true;
                self.everywhere.extend(perms);
            }
            Scope::AllProjects => self.everywhere.extend(perms),
            Scope::Project(p) => self.projects.entry(p.clone()).or_default().extend(perms),
        }
    }
}

/// The rights of `identity` under `grants`.
///
/// The unix socket and unrestricted certificates are server administrators (as in LXD); a
/// restricted certificate is an operator on each project it lists (as in LXD) plus whatever is
/// granted to its fingerprint; external users get what is granted to them and to their groups.
/// Untrusted callers have no rights.
pub fn rights(identity: &Identity, grants: &[Grant]) -> Rights {
    let mut r = Rights::default();
    match identity {
        Identity::Unix { .. } => return Rights::full(),
        Identity::Certificate(c) if !c.restricted => return Rights::full(),
        Identity::Certificate(c) => {
            for p in &c.projects {
                r.add(Role::Operator, &Scope::Project(p.clone()));
            }
            let me = Subject::Certificate(c.fingerprint.clone());
            for g in grants.iter().filter(|g| g.subject == me) {
                r.add(g.role, &g.scope);
            }
        }
        Identity::Candid { username, groups } => return external_rights(username, groups, grants),
        Identity::Untrusted { .. } => {}
    }
    r
}

/// The rights of an externally authenticated user who belongs to `groups`.
pub fn external_rights(user: &str, groups: &[String], grants: &[Grant]) -> Rights {
    let mut r = Rights::default();
    for g in grants {
        let applies = match &g.subject {
            Subject::CandidUser(u) => u == user,
            Subject::CandidGroup(name) => groups.iter().any(|x| x == name),
            Subject::Certificate(_) => false,
        };
        if applies {
            r.add(g.role, &g.scope);
        }
    }
    r
}

/// What an endpoint requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, trusted or not.
    Anyone,
    /// Any trusted identity (the handler may narrow what it shows).
    Trusted,
    /// The server administrator.
    Admin,
    /// This permission on the request's project (`?project=`, default `default`).
    Project(Permission),
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403 `not authorized`.
    Forbidden,
    /// The project does not exist or the caller may not view it: answered as a missing project,
    /// so the two cannot be told apart.
    Hidden,
}

/// The one authorization decision. `project_exists` is only consulted for project endpoints.
pub fn decide(
    need: Need,
    trusted: bool,
    rights: &Rights,
    project: &str,
    project_exists: bool,
) -> Decision {
    match need {
        Need::Anyone => Decision::Allow,
        Need::Trusted if trusted => Decision::Allow,
        Need::Admin if trusted && rights.admin => Decision::Allow,
        Need::Trusted | Need::Admin => Decision::Forbidden,
        Need::Project(_) if !trusted => Decision::Forbidden,
        // Rights nowhere (a Candid user with no grant): there is nothing to hide, the answer is
        // the same whether the project exists or not.
        Need::Project(_) if rights.is_empty() => Decision::Forbidden,
        Need::Project(_) if !project_exists || !rights.can_view(project) => Decision::Hidden,
        Need::Project(p) if rights.has(project, p) => Decision::Allow,
        Need::Project(_) => Decision::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who sees what: every kind of item for an admin, a server-wide viewer, a project
    /// operator and a caller with no rights.
    #[test]
    fn visibility_table() {
        let mut viewer = Rights::default();
        viewer.add(Role::Auditor, &Scope::Server);
        let mut operator = Rights::default();
        operator.add(Role::Operator, &Scope::Project("p1".into()));
        let none = Rights::default();
        let admin = Rights::full();
        // (item, admin, server viewer, operator on p1, nobody)
        let cases = [
            (Item::Project("p1"), true, true, true, false),
            (Item::Project("p2"), true, true, false, false),
            (Item::Project(""), true, false, false, false),
            (Item::ServerOnly, true, false, false, false),
            (Item::SecurityLog, true, false, false, false),
            (Item::Certificate { own: false }, true, true, false, false),
            (Item::Certificate { own: true }, true, true, true, true),
        ];
        for (item, a, v, o, n) in cases {
            assert_eq!(
                [
                    admin.may_see(item),
                    viewer.may_see(item),
                    operator.may_see(item),
                    none.may_see(item)
                ],
                [a, v, o, n],
                "{item:?}"
            );
        }
    }
    use crate::trust::TrustedCert;
    use std::sync::Arc;
    use Permission::*;

    const FP: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn cert(restricted: bool, projects: &[&str]) -> Identity {
        Identity::Certificate(Arc::new(TrustedCert {
            fingerprint: FP.into(),
            name: "c".into(),
            restricted,
            projects: projects.iter().map(|p| p.to_string()).collect(),
            not_before: 0,
            not_after: i64::MAX,
        }))
    }

    fn grant(role: Role, scope: Scope) -> Grant {
        Grant {
            id: 1,
            subject: Subject::Certificate(FP.into()),
            role,
            scope,
        }
    }

    /// Every role on every scope: which permissions it gives on project p1 and on p2, and whether
    /// it is admin or may view server settings.
    #[test]
    fn role_scope_table() {
        let p1 = || Scope::Project("p1".into());
        // (role, scope, perms on p1, perms on p2, admin, server_view)
        let op = &[
            View,
            OperateContainers,
            ManageContainers,
            ManageImages,
            ManageProfiles,
            ManageNetworks,
            ManageStorageVolumes,
        ][..];
        type Case<'a> = (Role, Scope, &'a [Permission], &'a [Permission], bool, bool);
        let cases: Vec<Case> = vec![
            (Role::Auditor, p1(), &[View], &[], false, false),
            (
                Role::User,
                p1(),
                &[View, OperateContainers],
                &[],
                false,
                false,
            ),
            (Role::Operator, p1(), op, &[], false, false),
            (Role::Admin, p1(), &Permission::ALL, &[], false, false),
            (
                Role::Auditor,
                Scope::AllProjects,
                &[View],
                &[View],
                false,
                false,
            ),
            (
                Role::User,
                Scope::AllProjects,
                &[View, OperateContainers],
                &[View, OperateContainers],
                false,
                false,
            ),
            (Role::Operator, Scope::AllProjects, op, op, false, false),
            (
                Role::Admin,
                Scope::AllProjects,
                &Permission::ALL,
                &Permission::ALL,
                false,
                false,
            ),
            (Role::Auditor, Scope::Server, &[View], &[View], false, true),
            (Role::Operator, Scope::Server, op, op, false, true),
            (
                Role::Admin,
                Scope::Server,
                &Permission::ALL,
                &Permission::ALL,
                true,
                true,
            ),
        ];
        for (role, scope, on_p1, on_p2, admin, server_view) in cases {
            let r = rights(&cert(true, &[]), &[grant(role, scope.clone())]);
            for perm in Permission::ALL {
                assert_eq!(
                    r.has("p1", perm),
                    on_p1.contains(&perm),
                    "{role} {scope:?} p1 {perm:?}"
                );
                assert_eq!(
                    r.has("p2", perm),
                    on_p2.contains(&perm),
                    "{role} {scope:?} p2 {perm:?}"
                );
            }
            assert_eq!(
                (r.admin, r.server_view),
                (admin, server_view),
                "{role} {scope:?}"
            );
        }
    }

    #[test]
    fn identities() {
        let admin_grant = [grant(Role::Admin, Scope::Server)];
        assert!(rights(&Identity::Unix { uid: 1000 }, &[]).admin);
        assert!(
            rights(&cert(false, &[]), &[]).admin,
            "unrestricted = admin, as LXD"
        );
        assert!(!rights(&cert(true, &[]), &[]).admin);
        assert!(rights(&cert(true, &[]), &admin_grant).admin);
        // A restricted certificate is an operator on its projects, without manage-projects.
        let r = rights(&cert(true, &["p1"]), &[]);
        assert!(r.has("p1", ManageContainers) && !r.has("p1", ManageProjects));
        assert!(!r.can_view("p2") && !r.can_view("default"));
        // Grants for someone else do not apply.
        let other = Grant {
            subject: Subject::Certificate("b".repeat(64)),
            ..grant(Role::Admin, Scope::Server)
        };
        assert_eq!(rights(&cert(true, &[]), &[other]), Rights::default());
        let untrusted = Identity::Untrusted {
            fingerprint: Some(FP.into()),
        };
        assert_eq!(
            rights(&untrusted, &admin_grant),
            Rights::default(),
            "untrusted ignores grants"
        );
        // External users: by name and by group, never by a certificate grant.
        let grants = [
            Grant {
                id: 1,
                subject: Subject::CandidUser("ana".into()),
                role: Role::User,
                scope: Scope::Project("p1".into()),
            },
            Grant {
                id: 2,
                subject: Subject::CandidGroup("ops".into()),
                role: Role::Operator,
                scope: Scope::Project("p2".into()),
            },
            grant(Role::Admin, Scope::Server),
        ];
        let ana = external_rights("ana", &[], &grants);
        assert!(ana.has("p1", OperateContainers) && !ana.can_view("p2") && !ana.admin);
        let bob = external_rights("bob", &["ops".into()], &grants);
        assert!(bob.has("p2", ManageContainers) && !bob.can_view("p1"));
        assert_eq!(external_rights("eve", &[], &grants), Rights::default());
    }

    /// (need, trusted, rights, project exists) -> decision, on project p1.
    #[test]
    fn decision_table() {
        let none = Rights::default();
        let auditor = rights(
            &cert(true, &[]),
            &[grant(Role::Auditor, Scope::Project("p1".into()))],
        );
        let operator = rights(&cert(true, &["p1"]), &[]);
        let admin = Rights::full();
        use Decision::*;
        let cases: &[(Need, bool, &Rights, bool, Decision)] = &[
            (Need::Anyone, false, &none, true, Allow),
            (Need::Trusted, false, &none, true, Forbidden),
            (Need::Trusted, true, &none, true, Allow),
            (Need::Admin, true, &operator, true, Forbidden),
            (Need::Admin, true, &admin, true, Allow),
            (Need::Admin, false, &admin, true, Forbidden),
            (Need::Project(View), false, &none, true, Forbidden),
            (Need::Project(View), true, &none, true, Forbidden),
            (Need::Project(View), true, &none, false, Forbidden),
            (Need::Project(View), true, &auditor, true, Allow),
            (Need::Project(View), true, &auditor, false, Hidden),
            (
                Need::Project(OperateContainers),
                true,
                &auditor,
                true,
                Forbidden,
            ),
            (
                Need::Project(ManageContainers),
                true,
                &operator,
                true,
                Allow,
            ),
            (
                Need::Project(ManageProjects),
                true,
                &operator,
                true,
                Forbidden,
            ),
            (Need::Project(ManageProjects), true, &admin, true, Allow),
            (Need::Project(View), true, &admin, false, Hidden),
        ];
        for (i, (need, trusted, r, exists, want)) in cases.iter().enumerate() {
            assert_eq!(
                decide(*need, *trusted, r, "p1", *exists),
                *want,
                "case {i}: {need:?}"
            );
        }
    }

    #[test]
    fn parsing() {
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
        assert_eq!(
            Scope::parse("project", "p1"),
            Ok(Scope::Project("p1".into()))
        );
        assert!(Scope::parse("project", "").is_err());
        assert!(Scope::parse("server", "p1").is_err());
        assert_eq!(Scope::parse("all-projects", ""), Ok(Scope::AllProjects));
        assert!(Scope::parse("cluster", "").is_err());
        assert!(Subject::parse("certificate", "abc").is_err());
        assert_eq!(
            Subject::parse("certificate", &"A".repeat(64)),
            Ok(Subject::Certificate("a".repeat(64)))
        );
        assert!(Subject::parse("candid-user", "").is_err());
        assert!(Subject::parse("candid-user", "a\nb").is_err());
        assert!(Subject::parse("unix", "0").is_err());
    }
}
