//! Who is asking, once the authorization layer (`authorize`) has identified and admitted them:
//! the [`Caller`] handlers take, and the [`Trusted`] and [`Admin`] forms that check again (and,
//! for `Admin`, hand over the proof that state-changing functions ask for).

use crate::listener::ConnInfo;
use rxd_auth::rbac::Rights;
use rxd_auth::{AdminProof, Identity};
use std::sync::Arc;

#[derive(Clone)]
pub struct Caller {
    pub identity: Identity,
    pub conn: ConnInfo,
    /// What the identity may do, under the grants current when the request arrived.
    pub rights: Arc<Rights>,
    /// The request's project: `?project=`, `default` when absent. On project endpoints the
    /// authorization layer has checked it exists and the caller may view it.
    pub project: String,
}

impl Caller {
    /// The daemon acting on its own, for its scheduled work (keeping pulled images up to date):
    /// root, as the unix socket's users are, in `project`. Only background tasks make one; no
    /// request ever becomes it. `rights` gives an identity's rights (the daemon's rule, passed
    /// in: this module knows nothing of the daemon).
    pub fn daemon(rights: impl FnOnce(&Identity) -> Rights, project: &str) -> Caller {
        let identity = rxd_auth::Identity::Unix { uid: 0 };
        Caller {
            rights: std::sync::Arc::new(rights(&identity)),
            identity,
            conn: crate::listener::ConnInfo {
                transport: rxd_auth::Transport::Unix { uid: 0 },
                remote: None,
                peer_cert: None,
                listener: None,
            },
            project: project.to_owned(),
        }
    }

    /// May the caller view `project`? (Listings and event streams filter with this.)
    pub fn can_view(&self, project: &str) -> bool {
        self.rights.can_view(project)
    }
}

/// Any trusted identity.
pub struct Trusted(pub Caller);

/// A server administrator, with the proof functions that change server state ask for.
pub struct Admin(pub Caller, pub AdminProof);
