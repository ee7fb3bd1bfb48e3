//! Authentication and authorization, with no IO. A request's transport facts become an
//! [`Identity`] in exactly one function ([`authenticate`]); what an identity may do is decided here
//! and nowhere else.
#![forbid(unsafe_code)]

pub mod candid;
pub mod certificates;
pub mod confinement;
pub mod endpoints;
pub mod identity;
pub mod password;
pub mod permission;
pub mod proof;
pub mod rbac;
pub mod throttle;
pub mod trust;

pub use identity::{authenticate, Access, AuthError, CaCheck, Identity, Transport, TrustPolicy};
pub use proof::{AdminProof, CertChangeProof, EnrolProof, ProjectProof};
pub use trust::{TrustStore, TrustedCert};
