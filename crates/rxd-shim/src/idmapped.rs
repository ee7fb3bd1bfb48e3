//! An unprivileged container's root filesystem through an idmapped mount: the files on disk
//! keep the image's ids (container ids), and the mount shows them to the container shifted
//! into its map. No file is chowned to start a container, a new map costs nothing, and one
//! image tree can back containers with different maps.
//!
//! 1. A user namespace with the container's exact map, held by a short-lived process of this
//!    binary (`userns-hold`, [`hold`]): it unshares a user namespace and waits; we write its
//!    `uid_map`/`gid_map` as host root, open `/proc/<pid>/ns/user` and let it go.
//! 2. `open_tree(OPEN_TREE_CLONE)` of the root filesystem, opened by descriptor, gives a
//!    detached mount; `mount_setattr(MOUNT_ATTR_IDMAP)` gives it that namespace's map.
//! 3. The supervisor has made itself a mount namespace of its own (`rslave`: the host's mounts
//!    still reach it, its own never reach the host) and `move_mount`s the tree onto the one
//!    shared mount point; the container's mount namespace is copied from there, and a bind of
//!    an idmapped mount keeps its map. Nothing is mounted on the host, so nothing is left
//!    behind whoever dies.

use anyhow::{bail, Context, Result};
use libcontainer::syscall::linux::MountAttr;
use libcontainer::syscall::syscall::Syscall;
use nix::libc;
use nix::sched::CloneFlags;
use rustix::fs::{Mode, OFlags};
use rxd_core::launch::IdMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

const OPEN_TREE: u32 = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;

/// `userns-hold`: unshare a user namespace, say so, and wait for stdin to close. Run as a fresh
/// process (single-threaded, as `unshare(CLONE_NEWUSER)` needs).
pub fn hold() -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).context("unsharing a user namespace")?;
    let mut out = std::io::stdout();
    out.write_all(b"ready\n")?;
    out.flush()?;
    let mut rest = Vec::new();
    let _ = std::io::stdin().take(1).read_to_end(&mut rest);
    Ok(())
}

/// A user namespace whose root is `map`'s first id (uids and gids), as a descriptor.
pub fn user_namespace(map: IdMap) -> Result<OwnedFd> {
    let mut child = Command::new("/proc/self/exe")
        .args(["--root", "/nonexistent", "userns-hold"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the user namespace holder")?;
    let made = (|| -> Result<OwnedFd> {
        let mut line = String::new();
        let stdout = child.stdout.take().context("the holder's stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        if line != "ready\n" {
            bail!("the user namespace holder failed");
        }
        let pid = child.id();
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("0 {} {}\n", map.uid, map.size),
        )
        .context("writing the namespace's uid map")?;
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("0 {} {}\n", map.gid, map.size),
        )
        .context("writing the namespace's gid map")?;
        Ok(rustix::fs::open(
            format!("/proc/{pid}/ns/user"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    })();
    drop(child.stdin.take());
    let _ = child.wait();
    made
}

/// A detached copy of the mount at `dir` (opened by descriptor, never following a link) with
/// `userns`'s id map.
pub fn idmapped_tree(sys: &dyn Syscall, dir: &Path, userns: &OwnedFd) -> Result<OwnedFd> {
    let opened = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", dir.display()))?;
    let tree = sys
        .open_tree(
            opened.as_raw_fd(),
            Some(""),
            OPEN_TREE | libc::AT_EMPTY_PATH as u32,
        )
        .map_err(|e| anyhow::anyhow!("cloning the mount of {}: {e}", dir.display()))?;
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    sys.mount_setattr(
        tree.as_fd(),
        Path::new(""),
        libc::AT_EMPTY_PATH as u32,
        &attr,
        std::mem::size_of::<MountAttr>(),
    )
    .map_err(|e| {
        let fs = rustix::fs::fstatfs(&opened)
            .map(|s| format!("{:#x}", s.f_type))
            .unwrap_or_default();
        anyhow::anyhow!(
            "the filesystem of {} (type {fs}) cannot be mounted idmapped here: {e}",
            dir.display()
        )
    })?;
    Ok(tree)
}

/// Give this process a mount namespace of its own, a slave of the host's, and mount `rootfs`
/// idmapped to `map` on `target` there.
pub fn mount_root(rootfs: &Path, target: &Path, map: IdMap) -> Result<()> {
    let sys = libcontainer::syscall::syscall::create_syscall();
    let userns = user_namespace(map)?;
    let tree = idmapped_tree(sys.as_ref(), rootfs, &userns)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).context("unsharing a mount namespace")?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .context("making the supervisor's mounts slaves of the host's")?;
    let at = rustix::fs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the mount point {}", target.display()))?;
    sys.move_mount(
        tree.as_fd(),
        None,
        at.as_fd(),
        None,
        libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| anyhow::anyhow!("mounting the root filesystem on {}: {e}", target.display()))
}

/// `probe-idmap`: whether the filesystem of `dir` takes idmapped mounts (exit 0) or not.
pub fn probe(dir: &Path) -> Result<()> {
    let sys = libcontainer::syscall::syscall::create_syscall();
    let userns = user_namespace(IdMap {
        uid: 1_000_000_000,
        gid: 1_000_000_000,
        size: 65536,
    })?;
    idmapped_tree(sys.as_ref(), dir, &userns).map(drop)
}
