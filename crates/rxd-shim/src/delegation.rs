//! What a container's own init needs of its cgroups to boot systemd, which libcontainer 0.7 does
//! not do (images-storage.md §5): placing the init in the named `systemd` hierarchy, which
//! libcgroups does not manage; handing the container's subtree to the container's root, as LXC
//! does, so its systemd can make sub-cgroups; and removing the sub-cgroups it made, depth first,
//! when the container ends (libcontainer only removes its leaf).
//!
//! The container owns everything below its cgroup once delegated, so every pass over that
//! subtree goes by descriptor, each directory opened relative to its parent with `O_NOFOLLOW`,
//! never by a path the container could have shaped.

use crate::cgroups::{parse_memberships, parse_mounts, Mount};
use anyhow::{Context, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The super-block option that names the systemd hierarchy on cgroup v1 hosts.
const SYSTEMD: &str = "name=systemd";
/// libcgroups (and the daemon's `usage`) only know hierarchies under here.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Files a delegated cgroup's owner must be able to write to move processes and make children
/// (LXC's list; v1's `tasks`, v2's `subtree_control` and `threads`). Limit files stay host
/// root's: unmapped inside the container, they read as read-only there.
const DELEGATED_FILES: &[&str] = &[
    "tasks",
    "cgroup.procs",
    "cgroup.clone_children",
    "cgroup.subtree_control",
    "cgroup.threads",
];

/// The hierarchies mounted whole under `/sys/fs/cgroup`, the ones libcgroups creates a
/// container's cgroups in (and the named systemd one, which it does not).
fn hierarchies(mountinfo: &str) -> Vec<Mount> {
    parse_mounts(mountinfo)
        .into_iter()
        .filter(|m| m.root == "/" && m.mount_point.starts_with(CGROUP_ROOT))
        .collect()
}

fn is_systemd(m: &Mount) -> bool {
    m.fstype == "cgroup" && m.options.iter().any(|o| o == SYSTEMD)
}

/// Hierarchies the runtime makes no cgroup in, which the shim may place the container in
/// itself: the named systemd one, and on a hybrid host (v1 controllers beside a cgroup2 mount)
/// the unified one. Without its own cgroup there, a container's view of that hierarchy is the
/// host's root: harmless to an unprivileged container (host root owns it), but a privileged
/// container's systemd would make its units there, so privileged containers get one (an exec
/// then pays for moving into it, about 0.7 ms here; unprivileged ones are spared that).
fn placed_by_shim(m: &Mount) -> bool {
    is_systemd(m) || is_hybrid_unified(m)
}

/// The cgroup2 mount of a hybrid host: below `/sys/fs/cgroup` (`/sys/fs/cgroup/unified`), not
/// on it. On a pure v2 host cgroup2 is `/sys/fs/cgroup` itself, which the runtime manages, even
/// where a v1 `name=systemd` hierarchy is mounted beside it for old images.
fn is_hybrid_unified(m: &Mount) -> bool {
    m.fstype == "cgroup2" && m.mount_point != Path::new(CGROUP_ROOT)
}

fn host_hierarchies() -> Result<Vec<Mount>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(hierarchies(&text))
}

/// `cgroup` (as `/rxd/tag/name`) under a hierarchy's mount point.
fn under(mount: &Path, cgroup: &str) -> PathBuf {
    let mut p = mount.to_path_buf();
    p.extend(cgroup.split('/').filter(|c| !c.is_empty() && *c != ".."));
    p
}

fn write_pid(procs: &Path, pid: u32) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(procs)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
        .with_context(|| format!("writing to {}", procs.display()))
}

/// This process, moved into the container's cgroup of the hierarchies the runtime does not
/// manage ([`placed_by_shim`]) until [`Placement::restore`]: the runtime's processes, and so the
/// init, are created inside it and inherit it (libcontainer unshares the cgroup namespace after
/// its own cgroups are joined, so this cgroup becomes the root of the container's view of that
/// hierarchy).
pub struct Placement {
    /// Where this process was, per hierarchy: `<mount>/<its cgroup>/cgroup.procs`.
    back: Vec<PathBuf>,
}

impl Placement {
    /// `None` on hosts without the named hierarchy (cgroup v2 hosts, or v1 hosts not run by
    /// systemd); `log` is told why a systemd init will then not boot on a v1 host.
    pub fn enter(
        cgroup: &str,
        privileged: bool,
        log: &mut impl Write,
    ) -> Result<Option<Placement>> {
        let mounts = host_hierarchies()?;
        if !mounts.iter().any(is_systemd) && mounts.iter().any(|m| m.fstype == "cgroup") {
            let _ = writeln!(
                log,
                "rxd-shim: this host has no name=systemd cgroup hierarchy: a systemd init cannot boot in this container"
            );
        }
        let ours = parse_memberships(
            &std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?,
        )?;
        let mut placed = Placement { back: Vec::new() };
        let ours_to_make = |m: &&Mount| is_systemd(m) || (privileged && is_hybrid_unified(m));
        for mount in mounts.iter().filter(ours_to_make) {
            let dir = under(&mount.mount_point, cgroup);
            let current = ours
                .iter()
                .find(|m| {
                    if is_systemd(mount) {
                        m.controllers == SYSTEMD
                    } else {
                        m.controllers.is_empty()
                    }
                })
                .map_or("/", |m| m.path.as_str());
            let entered = std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))
                .and_then(|()| write_pid(&dir.join("cgroup.procs"), std::process::id()));
            if let Err(e) = entered {
                if is_hybrid_unified(mount) {
                    // Not fatal: a container's systemd then sees the unified hierarchy as the
                    // runtime left it (a read-only mount, rxd nested in another manager).
                    let _ = writeln!(
                        log,
                        "rxd-shim: no cgroup of its own in {}: {e:#}",
                        mount.mount_point.display()
                    );
                    let _ = std::fs::remove_dir(&dir);
                    continue;
                }
                // Back out of those already entered, and remove what was made, before failing.
                if let Err(back) = placed.restore() {
                    let _ = writeln!(log, "rxd-shim: {back:#}");
                }
                let _ = remove_subtree(cgroup);
                return Err(e);
            }
            placed
                .back
                .push(under(&mount.mount_point, current).join("cgroup.procs"));
        }
        Ok((!placed.back.is_empty()).then_some(placed))
    }

    /// Move this process back where it was, out of the container's cgroups: every one tried,
    /// the failures reported together.
    pub fn restore(self) -> Result<()> {
        let failed: Vec<String> = self
            .back
            .iter()
            .filter_map(|back| write_pid(back, std::process::id()).err())
            .map(|e| format!("{e:#}"))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("leaving the container's cgroups: {}", failed.join("; "))
        }
    }
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

fn open_child(dir: impl AsFd, name: &CStr) -> std::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// Give the container's cgroup, in every hierarchy it has one, to the container's root
/// (`uid`/`gid` on the host): the directory (0775) and the files that move processes. Called
/// after the runtime made the cgroups and before the init runs, so nothing inside is the
/// container's yet.
pub fn delegate(cgroup: &str, uid: u32, gid: u32) -> Result<()> {
    let uid = rustix::fs::Uid::from_raw(uid);
    let gid = rustix::fs::Gid::from_raw(gid);
    for mount in host_hierarchies()? {
        let path = under(&mount.mount_point, cgroup);
        let dir = match open_dir(&path) {
            Ok(d) => d,
            // A hierarchy the runtime made no cgroup in (the hybrid unified one, say).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        rustix::fs::fchown(&dir, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the container", path.display()))?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o775))
            .with_context(|| format!("chmod {}", path.display()))?;
        for file in DELEGATED_FILES {
            match rustix::fs::chownat(&dir, *file, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("handing {}/{file} over", path.display()))
                }
            }
        }
    }
    Ok(())
}

/// Remove every cgroup the container made below its own, deepest first, in every hierarchy;
/// in the named systemd hierarchy, which the runtime does not know, its own cgroup too. The
/// container's processes are gone by now (its init has ended, and with it its PID namespace);
/// a cgroup still busy with an exiting task is retried briefly.
pub fn remove_subtree(cgroup: &str) -> Result<()> {
    let mut failed = Vec::new();
    for mount in &host_hierarchies()? {
        let path = under(&mount.mount_point, cgroup);
        let dir = match open_dir(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        if let Err(e) = remove_children(dir) {
            failed.push(format!("{}: {e}", path.display()));
            continue;
        }
        if placed_by_shim(mount) {
            if let Err(e) = rmdir_retrying(CWD, &path) {
                failed.push(format!("{}: {e}", path.display()));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("cgroups left behind: {}", failed.join("; "))
    }
}

/// `rmdir`, retried for up to a second while the cgroup still holds an exiting task.
fn rmdir_retrying(dir: impl AsFd, name: impl rustix::path::Arg + Copy) -> std::io::Result<()> {
    let mut delay = std::time::Duration::from_millis(5);
    for _ in 0..8 {
        match rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::BUSY) => std::thread::sleep(delay),
            Err(e) => return Err(e.into()),
        }
        delay *= 2;
    }
    rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// The sub-directories of `dir`.
fn subdirs(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if entry.file_type() == rustix::fs::FileType::Directory {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Remove all sub-directories of `top`, deepest first, without recursion and holding two
/// descriptors at most: down through each first child, back up through `..` (a v1 cgroup can
/// only be renamed within its parent, so `..` is where we came from), counting the depth so as
/// never to climb above `top`.
fn remove_children(top: OwnedFd) -> std::io::Result<()> {
    let mut names: Vec<CString> = Vec::new();
    let mut cur = top;
    loop {
        match subdirs(&cur)?.into_iter().next() {
            Some(child) => {
                let next = open_child(&cur, &child)?;
                names.push(child);
                cur = next;
            }
            None => {
                let Some(name) = names.pop() else {
                    return Ok(());
                };
                let parent = open_child(&cur, c"..")?;
                drop(cur);
                rmdir_retrying(&parent, name.as_c_str())?;
                cur = parent;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:29 /rxd /srv/cpu rw - cgroup cgroup rw,cpu
";

    #[test]
    fn hierarchies_are_whole_mounts_under_sys_fs_cgroup() {
        let h = hierarchies(HOST);
        let points: Vec<&Path> = h.iter().map(|m| m.mount_point.as_path()).collect();
        assert_eq!(
            points,
            [
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/sys/fs/cgroup/systemd"),
                Path::new("/sys/fs/cgroup/unified"),
            ]
        );
        assert!(is_systemd(&h[1]));
        assert!(!is_systemd(&h[0]) && !is_systemd(&h[2]));
        // Hybrid: the shim places containers in the named systemd and the unified hierarchy.
        let placed: Vec<bool> = h.iter().map(placed_by_shim).collect();
        assert_eq!(placed, [false, true, true]);
        // Pure v2: the runtime manages the one hierarchy, even beside a v1 name=systemd one.
        let v2 = hierarchies(
            "41 23 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
             42 41 0:39 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
        );
        assert!(!placed_by_shim(&v2[0]));
        assert!(placed_by_shim(&v2[1]));
    }

    #[test]
    fn cgroup_paths_stay_under_their_mount() {
        let m = Path::new("/sys/fs/cgroup/cpu");
        assert_eq!(under(m, "/rxd/ab/c1"), m.join("rxd/ab/c1"));
        assert_eq!(under(m, "/rxd/../../etc"), m.join("rxd/etc"));
        assert_eq!(under(m, "/"), m);
    }

    #[test]
    fn a_deep_tree_goes_deepest_first_and_top_stays() {
        // A plain directory tree stands in for a cgroup subtree: rmdir works the same.
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("c1");
        let mut deep = top.clone();
        for i in 0..300 {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::create_dir_all(top.join("z")).unwrap();
        remove_children(open_dir(&top).unwrap()).unwrap();
        assert!(top.is_dir());
        assert_eq!(std::fs::read_dir(&top).unwrap().count(), 0);
        // The top itself must be a directory reached without following a link.
        std::os::unix::fs::symlink(&top, t.path().join("link")).unwrap();
        assert!(open_dir(&t.path().join("link")).is_err());
    }
}
