//! What every endpoint requires: one row per (route, method). The daemon's authorization layer
//! looks each request up here before any handler runs; a route missing from the table is
//! admin-only (and a test fails). The test suite walks this same table against the daemon.

use crate::rbac::{Need, Permission};

/// Where a project endpoint takes its project from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectFrom {
    /// `?project=`, `default` when absent.
    Query,
    /// The `{name}` path parameter (`/1.0/projects/{name}`).
    PathName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The route as the router spells it, `{param}` for parameters.
    pub path: &'static str,
    pub method: &'static str,
    pub need: Need,
    pub project_from: ProjectFrom,
    /// A listing that honours `all-projects=true`: then it needs only a trusted caller, and the
    /// handler shows what the caller may view in every project.
    pub all_projects: bool,
}

const fn e(path: &'static str, method: &'static str, need: Need) -> Endpoint {
    Endpoint {
        path,
        method,
        need,
        project_from: ProjectFrom::Query,
        all_projects: false,
    }
}

const fn listing(path: &'static str) -> Endpoint {
    Endpoint {
        all_projects: true,
        ..e(path, "GET", VIEW)
    }
}

const fn named(path: &'static str, method: &'static str, perm: Permission) -> Endpoint {
    Endpoint {
        path,
        method,
        need: Need::Project(perm),
        project_from: ProjectFrom::PathName,
        all_projects: false,
    }
}

use Need::{Admin, Anyone, Trusted};
const VIEW: Need = Need::Project(Permission::View);
const OPERATE: Need = Need::Project(Permission::OperateContainers);
const MANAGE: Need = Need::Project(Permission::ManageContainers);
const IMAGES: Need = Need::Project(Permission::ManageImages);
const PROFILES: Need = Need::Project(Permission::ManageProfiles);
const VOLUMES: Need = Need::Project(Permission::ManageStorageVolumes);

/// Instance endpoints, the same under `/1.0/instances` and `/1.0/containers`.
macro_rules! instance_endpoints {
    ($base:literal) => {
        [
            listing($base),
            e($base, "POST", MANAGE),
            e(concat!($base, "/{name}"), "GET", VIEW),
            e(concat!($base, "/{name}"), "PUT", MANAGE),
            e(concat!($base, "/{name}"), "PATCH", MANAGE),
            e(concat!($base, "/{name}"), "POST", MANAGE),
            e(concat!($base, "/{name}"), "DELETE", MANAGE),
            e(concat!($base, "/{name}/state"), "GET", VIEW),
            e(concat!($base, "/{name}/state"), "PUT", OPERATE),
            e(concat!($base, "/{name}/snapshots"), "GET", VIEW),
            e(concat!($base, "/{name}/snapshots"), "POST", OPERATE),
            e(concat!($base, "/{name}/snapshots/{snap}"), "GET", VIEW),
            e(concat!($base, "/{name}/snapshots/{snap}"), "POST", OPERATE),
            e(
                concat!($base, "/{name}/snapshots/{snap}"),
                "DELETE",
                OPERATE,
            ),
            // A backup holds the whole root filesystem: made, renamed, deleted and
            // exported by those who may manage the instance (LXD's rule).
            e(concat!($base, "/{name}/backups"), "GET", VIEW),
            e(concat!($base, "/{name}/backups"), "POST", MANAGE),
            e(concat!($base, "/{name}/backups/{backup}"), "GET", VIEW),
            e(concat!($base, "/{name}/backups/{backup}"), "POST", MANAGE),
            e(concat!($base, "/{name}/backups/{backup}"), "DELETE", MANAGE),
            e(
                concat!($base, "/{name}/backups/{backup}/export"),
                "GET",
                MANAGE,
            ),
            e(concat!($base, "/{name}/exec"), "POST", OPERATE),
            e(concat!($base, "/{name}/console"), "GET", VIEW),
            e(concat!($base, "/{name}/console"), "POST", OPERATE),
            e(concat!($base, "/{name}/console"), "DELETE", OPERATE),
            e(concat!($base, "/{name}/files"), "GET", OPERATE),
            e(concat!($base, "/{name}/files"), "POST", OPERATE),
            e(concat!($base, "/{name}/files"), "DELETE", OPERATE),
        ]
    };
}

const INSTANCES: [Endpoint; 27] = instance_endpoints!("/1.0/instances");
const CONTAINERS: [Endpoint; 27] = instance_endpoints!("/1.0/containers");

const OTHERS: &[Endpoint] = &[
    e("/", "GET", Anyone),
    e("/1.0", "GET", Anyone),
    e("/1.0", "PUT", Admin),
    e("/1.0", "PATCH", Admin),
    // The host's hardware, as in LXD; the handler keeps identifiers for administrators.
    e("/1.0/resources", "GET", Trusted),
    e("/1.0/warnings", "GET", Admin),
    e("/1.0/warnings/{uuid}", "GET", Admin),
    e("/1.0/warnings/{uuid}", "PUT", Admin),
    e("/1.0/warnings/{uuid}", "PATCH", Admin),
    e("/1.0/warnings/{uuid}", "DELETE", Admin),
    // Listing shows admins everything, others their own entry; adding is decided by the
    // certificate rules (password, token or admin).
    e("/1.0/certificates", "GET", Trusted),
    e("/1.0/certificates", "POST", Anyone),
    // Non-admins may read and renew only their own certificate (the certificate rules).
    e("/1.0/certificates/{fingerprint}", "GET", Trusted),
    e("/1.0/certificates/{fingerprint}", "PUT", Trusted),
    e("/1.0/certificates/{fingerprint}", "PATCH", Trusted),
    e("/1.0/certificates/{fingerprint}", "DELETE", Admin),
    // Open to untrusted callers as in LXD: the handlers show them public images, and a private
    // one only with its one-time secret; trusted callers get what `view` gives.
    e("/1.0/images", "GET", Anyone),
    e("/1.0/images", "POST", IMAGES),
    e("/1.0/images/aliases", "GET", VIEW),
    e("/1.0/images/aliases", "POST", IMAGES),
    e("/1.0/images/aliases/{name}", "GET", Anyone),
    e("/1.0/images/aliases/{name}", "PUT", IMAGES),
    e("/1.0/images/aliases/{name}", "PATCH", IMAGES),
    e("/1.0/images/aliases/{name}", "POST", IMAGES),
    e("/1.0/images/aliases/{name}", "DELETE", IMAGES),
    e("/1.0/images/{fingerprint}", "GET", Anyone),
    e("/1.0/images/{fingerprint}", "PUT", IMAGES),
    e("/1.0/images/{fingerprint}", "PATCH", IMAGES),
    e("/1.0/images/{fingerprint}/export", "GET", Anyone),
    e("/1.0/images/{fingerprint}/secret", "POST", IMAGES),
    e("/1.0/images/{fingerprint}/refresh", "POST", IMAGES),
    e("/1.0/images/{fingerprint}", "DELETE", IMAGES),
    // Managed networks live in `default` and every project's NICs may use them (as
    // `restricted.networks.access` allows): anyone with view sees them; creating, changing and
    // deleting bridges, NAT and host sysctls is the server administrator's.
    // Storage pools are global (as in LXD 5.0): anyone trusted sees them and the volumes of
    // the projects they may view; creating, changing and deleting them is the server
    // administrator's.
    e("/1.0/storage-pools", "GET", VIEW),
    e("/1.0/storage-pools", "POST", Admin),
    e("/1.0/storage-pools/{name}", "GET", VIEW),
    e("/1.0/storage-pools/{name}", "PUT", Admin),
    e("/1.0/storage-pools/{name}", "PATCH", Admin),
    e("/1.0/storage-pools/{name}", "DELETE", Admin),
    e("/1.0/storage-pools/{name}/resources", "GET", VIEW),
    // Custom volumes belong to a project (LXD's `manage-storage-volumes`); instance and image
    // volumes are only read here.
    e("/1.0/storage-pools/{name}/volumes", "GET", VIEW),
    e("/1.0/storage-pools/{name}/volumes", "POST", VOLUMES),
    e("/1.0/storage-pools/{name}/volumes/{type}", "GET", VIEW),
    e("/1.0/storage-pools/{name}/volumes/{type}", "POST", VOLUMES),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
        "GET",
        VIEW,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
        "PUT",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
        "PATCH",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
        "POST",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
        "DELETE",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/state",
        "GET",
        VIEW,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots",
        "GET",
        VIEW,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots",
        "POST",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
        "GET",
        VIEW,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
        "PUT",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
        "PATCH",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
        "POST",
        VOLUMES,
    ),
    e(
        "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
        "DELETE",
        VOLUMES,
    ),
    e("/1.0/networks", "GET", VIEW),
    e("/1.0/networks", "POST", Admin),
    e("/1.0/networks/{name}", "GET", VIEW),
    e("/1.0/networks/{name}", "PUT", Admin),
    e("/1.0/networks/{name}", "PATCH", Admin),
    e("/1.0/networks/{name}", "POST", Admin),
    e("/1.0/networks/{name}", "DELETE", Admin),
    e("/1.0/networks/{name}/state", "GET", VIEW),
    e("/1.0/networks/{name}/leases", "GET", VIEW),
    e("/1.0/profiles", "GET", VIEW),
    e("/1.0/profiles", "POST", PROFILES),
    e("/1.0/profiles/{name}", "GET", VIEW),
    e("/1.0/profiles/{name}", "PUT", PROFILES),
    e("/1.0/profiles/{name}", "PATCH", PROFILES),
    e("/1.0/profiles/{name}", "POST", PROFILES),
    e("/1.0/profiles/{name}", "DELETE", PROFILES),
    e("/1.0/instances/{name}/logs", "GET", VIEW),
    e("/1.0/instances/{name}/logs/{file}", "GET", VIEW),
    e("/1.0/instances/{name}/logs/{file}", "DELETE", OPERATE),
    // Filtered to the projects the caller may view.
    e("/1.0/events", "GET", Trusted),
    e("/1.0/operations", "GET", Trusted),
    e("/1.0/operations/{id}", "GET", Trusted),
    // Cancelling needs operate-containers on the operation's project (checked with the
    // operation in hand).
    e("/1.0/operations/{id}", "DELETE", Trusted),
    e("/1.0/operations/{id}/wait", "GET", Trusted),
    // Authenticated by the channel's single-use secret, as in LXD.
    e("/1.0/operations/{id}/websocket", "GET", Anyone),
    // Listing is filtered to the projects the caller may view.
    e("/1.0/projects", "GET", Trusted),
    e("/1.0/projects", "POST", Admin),
    named("/1.0/projects/{name}", "GET", Permission::View),
    named("/1.0/projects/{name}/state", "GET", Permission::View),
    named("/1.0/projects/{name}", "PUT", Permission::ManageProjects),
    named("/1.0/projects/{name}", "PATCH", Permission::ManageProjects),
    e("/1.0/projects/{name}", "POST", Admin),
    e("/1.0/projects/{name}", "DELETE", Admin),
    e("/1.0/auth/grants", "GET", Admin),
    e("/1.0/auth/grants", "POST", Admin),
    e("/1.0/auth/grants/{id}", "GET", Admin),
    e("/1.0/auth/grants/{id}", "DELETE", Admin),
];

/// Every row of the table.
pub fn all() -> impl Iterator<Item = &'static Endpoint> {
    INSTANCES.iter().chain(CONTAINERS.iter()).chain(OTHERS)
}

impl Endpoint {
    /// What this request needs: with `all-projects=true` a listing needs only trust.
    pub fn need_for(&self, all_projects: bool) -> Need {
        if all_projects && self.all_projects {
            Need::Trusted
        } else {
            self.need
        }
    }
}

/// The row for a matched route and method (`HEAD` is `GET`'s), if the route is in the table.
pub fn lookup(path: &str, method: &str) -> Option<&'static Endpoint> {
    let method = if method == "HEAD" { "GET" } else { method };
    all().find(|e| e.path == path && e.method == method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_duplicate_rows_and_head_is_get() {
        let mut seen = HashSet::new();
        for e in all() {
            assert!(
                seen.insert((e.path, e.method)),
                "duplicate {} {}",
                e.method,
                e.path
            );
            assert!(matches!(
                e.method,
                "GET" | "PUT" | "PATCH" | "POST" | "DELETE"
            ));
        }
        assert_eq!(
            lookup("/1.0/instances/{name}/files", "HEAD").map(|e| e.need),
            Some(OPERATE)
        );
        assert!(lookup("/1.0/nothing", "GET").is_none());
        let list = lookup("/1.0/instances", "GET").unwrap();
        assert_eq!(list.need_for(true), Need::Trusted);
        assert_eq!(list.need_for(false), VIEW);
        let one = lookup("/1.0/instances/{name}", "GET").unwrap();
        assert_eq!(one.need_for(true), VIEW, "only listings widen");
    }
}
