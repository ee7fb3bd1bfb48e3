//! Network namespace threads. `setns(CLONE_NEWNET)` changes only the calling thread, so work in
//! another namespace runs on a fresh OS thread made for it (never a tokio worker, which would
//! carry the namespace into unrelated tasks), and the thread ends with the work.

use crate::error::{NetworkError, Result};
use nix::sched::CloneFlags;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

fn netns_err(what: &str) -> impl FnOnce(nix::Error) -> NetworkError + '_ {
    move |errno| NetworkError::Netns {
        what: what.to_owned(),
        source: io::Error::from(errno),
    }
}

/// Runs `f` on a new thread inside the network namespace `netns` and returns its result.
/// Netlink sockets and `/proc/sys/net` files opened by `f` belong to that namespace, as do
/// processes it spawns. A panic in `f` resumes in the caller.
pub fn in_netns<T, F>(netns: BorrowedFd<'_>, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("rxd-netns".into())
            .spawn_scoped(scope, move || {
                nix::sched::setns(netns, CloneFlags::CLONE_NEWNET)
                    .map_err(netns_err("enter a network namespace"))?;
                Ok(f())
            })
            .map_err(|source| NetworkError::Netns {
                what: "start a network namespace thread".into(),
                source,
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Makes a new, empty network namespace (only a `lo`, down) and returns a descriptor for it.
/// It has no name under `/run/netns` and lives as long as something holds it: this descriptor,
/// a socket opened in it, a process in it. Dropping the last one destroys it with every link
/// in it (and a veth's other end, wherever that is).
pub fn new_netns() -> Result<OwnedFd> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("rxd-netns-new".into())
            .spawn_scoped(scope, || -> Result<OwnedFd> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(netns_err("create a network namespace"))?;
                let file = std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| {
                    NetworkError::Netns {
                        what: "open the new network namespace".into(),
                        source,
                    }
                })?;
                Ok(OwnedFd::from(file))
            })
            .map_err(|source| NetworkError::Netns {
                what: "start a network namespace thread".into(),
                source,
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
