//! Locked mounts for unprivileged containers: the masks over `/proc` and `/sys`, read-only
//! `/proc/sys` and every other mount libcontainer makes become `MNT_LOCKED`, so the container's
//! root can neither unmount them, nor clear their read-only flag, nor mount a fresh procfs or
//! sysfs beside them (the kernel's `mount_too_revealing` check refuses while locked mounts
//! cover parts of the visible one).
//!
//! libcontainer creates the user namespace first and the mount namespace inside it, so the
//! container's root owns the namespace its masks live in, and the kernel locks nothing. The
//! kernel locks every mount of a mount namespace when it is *copied* into a namespace owned by
//! another user namespace. So, once libcontainer has set up every mount and while the init
//! waits for the start signal:
//!
//! 1. the supervisor runs [`make_locked`] as a fresh process of this binary: it joins the
//!    init's user namespace (as its root, so the namespace it creates next is owned by the
//!    same host uid as the init) and mount namespace, creates a child user namespace (never
//!    mapped: nothing runs in it, it only owns the copy) and, inside it, a copy of the mount
//!    namespace, in which every mount is locked; it sends that namespace to the supervisor
//!    over a socket and exits; the supervisor mounts the container's devices into it (see
//!    `inject.rs`: mounts made there by the host's root are not locked to their parent) and
//!    sends it on to the init over the init's socket;
//! 2. the init, as the last step before it execs `/sbin/init` ([`Executor`], libcontainer's
//!    extension point for that), receives the namespace and joins it. It stays in the
//!    container's user namespace, whose root has every capability in the child one, so it
//!    still mounts what it likes there; its other namespaces are untouched, pid 1 stays pid 1,
//!    and `exec` joins the new mount namespace through `/proc/<init>/ns/mnt` as before. The old
//!    mount namespace, with the unlocked mounts, ends with the last process in it.

use anyhow::{Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{ExecutorError, ExecutorValidationError};
use nix::sched::CloneFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// The init's last step: join the locked mount namespace received on `socket`, then exec the
/// spec's command as libcontainer's default executor does. The socket is inherited by the
/// init when libcontainer clones it (it is close-on-exec, so `/sbin/init` never sees it);
/// `Arc` because libcontainer clones executors.
#[derive(Clone)]
pub struct Executor {
    /// The socket the locked mount namespace comes on; none for a privileged container, whose
    /// mounts are not locked.
    socket: Option<Arc<OwnedFd>>,
    /// Routes for the NICs (a routed NIC's default routes), set inside before the exec.
    routes: Arc<Vec<rxd_core::launch::NicRoute>>,
    /// NICs the helper made inside (bridged NICs' veth ends), brought up with the loopback.
    up: Arc<Vec<rxd_core::network::config::IfName>>,
}

impl Executor {
    pub fn new(
        socket: Option<Arc<OwnedFd>>,
        routes: Vec<rxd_core::launch::NicRoute>,
        up: Vec<rxd_core::network::config::IfName>,
    ) -> Self {
        Executor {
            socket,
            routes: Arc::new(routes),
            up: Arc::new(up),
        }
    }
}

impl libcontainer::workload::Executor for Executor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        loopback_up(&self.up).map_err(|e| {
            ExecutorError::Other(format!("bringing up the loopback interface and NICs: {e}"))
        })?;
        add_routes(&self.routes)
            .map_err(|e| ExecutorError::Other(format!("adding the NICs' routes: {e}")))?;
        if let Some(socket) = &self.socket {
            enter_locked(socket, spec).map_err(|e| {
                ExecutorError::Other(format!("locking the container's mounts: {e:#}"))
            })?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// `lo` up in the container's network namespace (the init is in it, with its capabilities in
/// its user namespace), as LXC does: a service may bind 127.0.0.1 before any network is set up.
/// Then the NICs `up` names.
fn loopback_up(up: &[rxd_core::network::config::IfName]) -> rxd_network::Result<()> {
    let lo = rxd_core::network::config::IfName::parse("lo").expect("a valid interface name");
    let mut nl = rxd_network::Netlink::open()?;
    nl.set_up(&lo)?;
    for link in up {
        nl.set_up(link)?;
    }
    Ok(())
}

/// Each NIC's default route, its gateway reached on the link first.
fn add_routes(routes: &[rxd_core::launch::NicRoute]) -> rxd_network::Result<()> {
    if routes.is_empty() {
        return Ok(());
    }
    let mut nl = rxd_network::Netlink::open()?;
    for r in routes {
        let link = rxd_core::network::config::IfName::parse(&r.link).map_err(|e| {
            rxd_network::NetworkError::Tool {
                tool: "route",
                detail: e.to_string(),
            }
        })?;
        nl.add_default_route(&link, r.gateway)?;
    }
    Ok(())
}

fn enter_locked(socket: &OwnedFd, spec: &Spec) -> Result<()> {
    let namespace = receive_fd(socket).context("receiving the locked mount namespace")?;
    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNS)
        .context("joining the locked mount namespace")?;
    // Joining a mount namespace moves the root and working directory to its root; the root is
    // the container's (the namespace is a copy of the one libcontainer pivoted into).
    let cwd = spec
        .process()
        .as_ref()
        .map_or_else(|| "/".into(), |p| p.cwd().clone());
    nix::unistd::chdir(&cwd).with_context(|| format!("cannot enter {}", cwd.display()))?;
    Ok(())
}

/// Step 1, in a fresh process started by the supervisor with one end of a socket of its own as
/// stdin. `init` comes from the supervisor, which reaps nothing until this step has ended, so
/// the pid cannot name another process.
pub fn make_locked(init: i32) -> Result<()> {
    // The host's root, about to enter the container's user namespace: no ptrace from inside.
    nix::sys::prctl::set_dumpable(false).context("making the helper undumpable")?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    // Our own /proc directory on the host's procfs: once in the container's mounts, `/proc`
    // is the container's, where this process has no pid.
    let own = File::open("/proc/self").context("opening /proc/self")?;
    let user = File::open(format!("/proc/{init}/ns/user")).context("opening the user namespace")?;
    let mnt = File::open(format!("/proc/{init}/ns/mnt")).context("opening the mount namespace")?;
    nix::sched::setns(&user, CloneFlags::CLONE_NEWUSER).context("joining the user namespace")?;
    // The container's root: the owner of the namespace created below is then the init's own
    // uid, like every namespace the container creates itself.
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    nix::unistd::setresgid(root.1, root.1, root.1).context("taking the container's root gid")?;
    nix::unistd::setresuid(root.0, root.0, root.0).context("taking the container's root uid")?;
    // Cleared by the uid change: set again, so this step never outlives the supervisor.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    nix::sched::setns(&mnt, CloneFlags::CLONE_NEWNS).context("joining the mount namespace")?;
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .context("creating the namespace that owns the locked mounts")?;
    // Copied into a namespace owned by another user namespace: every mount is locked.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).context("copying the mount namespace")?;
    let locked = rustix::fs::openat(
        &own,
        "ns/mnt",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("opening the locked mount namespace")?;
    send_fd(std::io::stdin(), locked.as_fd())
        .context("sending the locked mount namespace to the supervisor")?;
    Ok(())
}

/// Send one descriptor over a unix socket.
pub fn send_fd(socket: impl AsFd, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"m")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receive one descriptor sent by [`send_fd`] (close-on-exec).
pub fn receive_fd(socket: impl AsFd) -> Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    control
        .drain()
        .find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .context("no descriptor was sent")
}
