//! Host-path disks and unix device nodes, mounted into a container's mount namespace
//! (`rxd-shim devices ID`, a [`DeviceChange`] on stdin): before its init runs (from `start`,
//! into the locked copy of its mounts that `lock.rs` made and the init will enter, so they are
//! not locked to their parent and can be taken out while it runs) and into a running container
//! (hot-plug and unplug).
//!
//! Everything on the host side is done by descriptor, in this fresh single-threaded process
//! (`setns` into a mount namespace refuses a multithreaded caller):
//!
//! 1. each disk's source is opened by `rxd-hostpath`'s walk (root's symlinks only, beneath a
//!    `restricted.devices.disk.paths` prefix when there is one, never inside the state dir);
//!    each unix node is made with `mknodat` in the container's staging directory, owned by the
//!    container's mapped ids;
//! 2. `open_tree(OPEN_TREE_CLONE)` makes a detached copy of it, and `mount_setattr` gives the
//!    copy its flags: read-only, `nosuid,nodev` (rxd's default for disks), propagation, and,
//!    for `shift=true`, an idmapping with the container's own user namespace, so container
//!    ids are host ids on that tree (kernel ≥ 5.12, and a filesystem that supports it);
//! 3. for an unprivileged container, the copy is made again inside a throwaway user and mount
//!    namespace ([`lock_flags`]): the kernel then locks its flags (read-only, nosuid, nodev), as
//!    it locks those of the mounts a container starts with (see `lock.rs`), so the container's
//!    root cannot remount it writable or setuid (`propagation=unbindable` is set after that
//!    clone, which an unbindable mount would refuse);
//! 4. the process joins the init's mount namespace (after checking the init is still the one
//!    it looked up), creates the mount point inside the container's root (resolved with
//!    `RESOLVE_IN_ROOT`, made by the container's root ids when missing) and `move_mount`s the
//!    copy onto it (never under a procfs or sysfs, whatever links lead there). Unplugging
//!    unmounts everything stacked at the device's path first, and fails without changing
//!    anything else if the kernel keeps one there (a device of a container started by an rxd
//!    that mounted them before locking its mounts stays until it stops); the node's device-cgroup rule is added (v1: `devices.allow`)
//!    before it appears and removed (`devices.deny`, for the numbers the staged node has) once
//!    it is gone.

use anyhow::{bail, Context, Result};
use libcontainer::syscall::linux::MountAttr;
use libcontainer::syscall::Syscall;
use nix::libc;
use nix::sched::CloneFlags;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rxd_core::devices::{encoded_name, DiskMount, Propagation, UnixNode};
use rxd_core::launch::DeviceChange;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path};

/// The container's id maps as its init's `/proc/<pid>/uid_map` and `gid_map` show them: host
/// ids of container root (0 and 0 for a privileged container).
fn root_ids(pid: i32) -> Result<(u32, u32)> {
    let first = |file: &str| -> Result<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .with_context(|| format!("reading the init's {file}"))?;
        let fields: Vec<u32> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        match fields[..] {
            [0, host, _] => Ok(host),
            _ => bail!("unexpected {file} {text:?}"),
        }
    };
    Ok((first("uid_map")?, first("gid_map")?))
}

fn privileged(pid: i32) -> Result<bool> {
    let ours = std::fs::read_link("/proc/self/ns/user")?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/user"))?;
    Ok(ours == theirs)
}

/// The node's type and device number: `major`/`minor` when given, the host node's otherwise
/// (opened by descriptor: root's symlinks only, nothing inside `refuse`). `None` for a missing
/// source of a device that is not required.
pub fn node_numbers(node: &UnixNode, refuse: &[&Path]) -> Result<Option<(u32, u32)>> {
    let (mut major, mut minor) = (node.major, node.minor);
    if let Some(source) = &node.source {
        let mut walk = rxd_hostpath::Walk::new(source);
        for dir in refuse {
            walk = walk.refuse(dir);
        }
        let opened = match walk.open() {
            Ok(o) => o,
            Err(e) if e.is_not_found() && !node.required => return Ok(None),
            Err(e) if e.is_not_found() => bail!(
                "Missing source path {:?} for device {:?}",
                source,
                node.device
            ),
            Err(e) => return Err(e.into()),
        };
        let want = if node.block {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        if opened.file_type != want {
            bail!(
                "{} is not a {} device",
                source.display(),
                if node.block { "block" } else { "character" }
            );
        }
        major.get_or_insert(rustix::fs::major(opened.rdev));
        minor.get_or_insert(rustix::fs::minor(opened.rdev));
    }
    match (major, minor) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        _ => bail!("device {:?} has no device numbers", node.device),
    }
}

/// A detached mount and where it goes.
struct Prepared {
    device: String,
    tree: OwnedFd,
    target: std::path::PathBuf,
    dir: bool,
    /// The tree holds the source's submounts (`recursive=true`).
    recursive: bool,
    /// `propagation=unbindable`, set last: the kernel clones no unbindable mount, and
    /// [`lock_flags`] clones the tree.
    unbindable: bool,
}

const SYSFS_MAGIC: rustix::fs::FsWord = 0x6265_6572;

const OPEN_TREE: u32 = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;

fn set_attributes(
    sys: &dyn Syscall,
    tree: &OwnedFd,
    recursive: bool,
    attr: &MountAttr,
) -> Result<()> {
    let flags = libc::AT_EMPTY_PATH as u32
        | if recursive {
            libc::AT_RECURSIVE as u32
        } else {
            0
        };
    sys.mount_setattr(
        tree.as_fd(),
        Path::new(""),
        flags,
        attr,
        std::mem::size_of::<MountAttr>(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn prepare_disk(
    sys: &dyn Syscall,
    disk: &DiskMount,
    refuse: &[&Path],
    userns: Option<&OwnedFd>,
) -> Result<Option<Prepared>> {
    let mut walk = rxd_hostpath::Walk::new(&disk.source).beneath(disk.beneath.as_deref());
    // A custom volume lies in a pool, inside what host-path disks may not reach; it is opened
    // beneath its own directory instead (the daemon made the path from checked names).
    if !disk.volume {
        for dir in refuse {
            walk = walk.refuse(dir);
        }
    }
    let opened = match walk.open() {
        Ok(o) => o,
        Err(e) if e.is_not_found() && !disk.required => return Ok(None),
        Err(e) if e.is_not_found() => bail!(
            "Missing source path {:?} for disk device {:?}",
            disk.source,
            disk.device
        ),
        Err(e) => bail!("disk device {:?}: {e}", disk.device),
    };
    let dir = opened.file_type == FileType::Directory;
    if !dir && opened.file_type != FileType::RegularFile {
        bail!(
            "disk device {:?}: {} is neither a directory nor a file",
            disk.device,
            disk.source.display()
        );
    }
    let recursive = disk.recursive && dir;
    let flags = OPEN_TREE
        | libc::AT_EMPTY_PATH as u32
        | if recursive {
            libc::AT_RECURSIVE as u32
        } else {
            0
        };
    let tree = sys
        .open_tree(opened.fd.as_raw_fd(), Some(""), flags)
        .map_err(|e| anyhow::anyhow!("disk device {:?}: cloning the mount: {e}", disk.device))?;
    let mut attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: match disk.propagation {
            None | Some(Propagation::Private) => libc::MS_PRIVATE,
            Some(Propagation::Shared) => libc::MS_SHARED,
            Some(Propagation::Slave) => libc::MS_SLAVE,
            // Set once the tree's flags are locked (see `Prepared::unbindable`).
            Some(Propagation::Unbindable) => libc::MS_PRIVATE,
        },
        userns_fd: 0,
    };
    if disk.readonly {
        attr.attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    if disk.nosuid {
        attr.attr_set |= libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    } else {
        attr.attr_clr |= libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    }
    set_attributes(sys, &tree, recursive, &attr)
        .with_context(|| format!("disk device {:?}: setting its mount flags", disk.device))?;
    if disk.shift {
        if let Some(userns) = userns {
            let idmap = MountAttr {
                attr_set: libc::MOUNT_ATTR_IDMAP,
                attr_clr: 0,
                propagation: 0,
                userns_fd: userns.as_raw_fd() as u64,
            };
            set_attributes(sys, &tree, recursive, &idmap).map_err(|e| {
                let fs = rustix::fs::fstatfs(&opened.fd)
                    .map(|s| format!("{:#x}", s.f_type))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "disk device {:?}: shift=true needs idmapped mounts, which the filesystem of {} (type {fs}) does not support here: {e}",
                    disk.device,
                    disk.source.display()
                )
            })?;
        }
    }
    Ok(Some(Prepared {
        device: disk.device.clone(),
        tree,
        target: disk.path.clone(),
        dir,
        recursive,
        unbindable: disk.propagation == Some(Propagation::Unbindable),
    }))
}

fn node_name(node: &UnixNode) -> String {
    format!("unix.{}", encoded_name(&node.device))
}

fn prepare_node(
    sys: &dyn Syscall,
    node: &UnixNode,
    refuse: &[&Path],
    staging: &OwnedFd,
    ids: (u32, u32),
) -> Result<Option<Prepared>> {
    let Some((major, minor)) = node_numbers(node, refuse)? else {
        return Ok(None);
    };
    let name = node_name(node);
    let _ = rustix::fs::unlinkat(staging, &name, rustix::fs::AtFlags::empty());
    let kind = if node.block {
        FileType::BlockDevice
    } else {
        FileType::CharacterDevice
    };
    rustix::fs::mknodat(
        staging,
        &name,
        kind,
        Mode::from_raw_mode(node.mode),
        rustix::fs::makedev(major, minor),
    )
    .with_context(|| format!("making the node for device {:?}", node.device))?;
    let fd = rustix::fs::openat(
        staging,
        &name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let owner = ids.0.checked_add(node.uid).context("uid out of range")?;
    let group = ids.1.checked_add(node.gid).context("gid out of range")?;
    // By descriptor: chmod/chown of an O_PATH descriptor go through /proc/self/fd.
    rustix::fs::chownat(
        &fd,
        "",
        Some(rustix::fs::Uid::from_raw(owner)),
        Some(rustix::fs::Gid::from_raw(group)),
        rustix::fs::AtFlags::EMPTY_PATH,
    )?;
    rustix::fs::chmodat(
        staging,
        &name,
        Mode::from_raw_mode(node.mode),
        rustix::fs::AtFlags::empty(),
    )?;
    let tree = sys
        .open_tree(
            fd.as_raw_fd(),
            Some(""),
            OPEN_TREE | libc::AT_EMPTY_PATH as u32,
        )
        .map_err(|e| anyhow::anyhow!("device {:?}: cloning the node's mount: {e}", node.device))?;
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
        attr_clr: libc::MOUNT_ATTR_NODEV,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    set_attributes(sys, &tree, false, &attr)?;
    Ok(Some(Prepared {
        device: node.device.clone(),
        tree,
        target: node.path.clone(),
        dir: false,
        recursive: false,
        unbindable: false,
    }))
}

/// The v1 devices hierarchy's directory of the container's cgroup. v2 hosts take device rules
/// only at start (the filter is an eBPF program fixed when the container is created).
fn devices_dir(cgroup: &str) -> Result<std::path::PathBuf> {
    if crate::spec::CgroupHost::probe().v2 {
        bail!("unix devices can be added to or removed from a running container only on cgroup v1 hosts; stop the container, change its devices and start it again");
    }
    Ok(Path::new("/sys/fs/cgroup/devices").join(cgroup.trim_start_matches('/')))
}

/// Write a device rule into the container's cgroup and every cgroup below it (v1: an allow
/// given to a parent does not reach the children that exist already).
fn device_rule(cgroup: &str, file: &str, rule: &str) -> Result<()> {
    let top = devices_dir(cgroup)?;
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        std::fs::write(dir.join(file), rule)
            .with_context(|| format!("writing {rule:?} to {}", dir.join(file).display()))?;
        // A deny on a parent reaches the children by itself.
        if file == "devices.deny" {
            break;
        }
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

fn rule(node: &UnixNode, (major, minor): (u32, u32)) -> String {
    format!("{} {major}:{minor} rwm", if node.block { 'b' } else { 'c' })
}

/// Open (making what is missing, owned by `ids`) the mount point for `p` inside the mount
/// namespace this process is in: every component resolved in the container's root.
fn mount_point(root: &OwnedFd, p: &Prepared, ids: (u32, u32)) -> Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = p
        .target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let (last, parents) = parts.split_last().context("an empty target path")?;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let chown = |dir: &OwnedFd, name: &std::ffi::OsStr| -> Result<()> {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(ids.0)),
            Some(rustix::fs::Gid::from_raw(ids.1)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    };
    let mut here = rustix::fs::openat2(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?;
    let mut sofar = std::path::PathBuf::new();
    for part in parents {
        sofar.push(part);
        let open = |at: &std::path::Path| {
            rustix::fs::openat2(
                root,
                at,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            )
        };
        here = match open(&sofar) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::mkdirat(&here, *part, Mode::from_raw_mode(0o755))
                    .with_context(|| format!("creating {} in the container", sofar.display()))?;
                chown(&here, part)?;
                open(&sofar)?
            }
            Err(e) => bail!("{} in the container: {e}", sofar.display()),
        };
    }
    // Not under /proc or /sys, through whatever links the container made.
    let fs = rustix::fs::fstatfs(&here)?.f_type;
    if fs == rustix::fs::PROC_SUPER_MAGIC || fs == SYSFS_MAGIC {
        bail!(
            "{} in the container is on a procfs or sysfs: devices are not mounted there",
            p.target.display()
        );
    }
    let open_last = || {
        rustix::fs::openat2(
            &here,
            *last,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
        )
    };
    match open_last() {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOENT) => {
            if p.dir {
                rustix::fs::mkdirat(&here, *last, Mode::from_raw_mode(0o755))?;
            } else {
                drop(rustix::fs::openat(
                    &here,
                    *last,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )?);
            }
            chown(&here, last)?;
            Ok(open_last()?)
        }
        Err(rustix::io::Errno::LOOP) => bail!(
            "{} in the container is a symbolic link; mount points must not be",
            p.target.display()
        ),
        Err(e) => bail!("{} in the container: {e}", p.target.display()),
    }
}

/// Remove the file at `path` inside the container if it is a plain file or a device node (what
/// a unix device's mount point is), resolved in the container's root.
fn remove_mount_point(root: &OwnedFd, path: &Path) -> Result<()> {
    let parent = path.parent().context("no parent")?;
    let name = path.file_name().context("no name")?;
    let dir = rustix::fs::openat2(
        root,
        parent.strip_prefix("/").unwrap_or(parent),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if matches!(
        kind,
        FileType::RegularFile | FileType::CharacterDevice | FileType::BlockDevice
    ) {
        rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty())?;
    }
    Ok(())
}

/// Carry out `change` against the container `id` (created and waiting to start, when `before_start`,
/// else running), in `mount_namespace` when given (the locked copy its init will enter), else
/// in the init's own.
pub fn apply(
    root: &Path,
    id: &str,
    staging: &Path,
    before_start: bool,
    mount_namespace: Option<&Path>,
) -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .take(crate::MAX_PLAN)
        .read_to_string(&mut text)
        .context("reading the device change")?;
    let change: DeviceChange = serde_json::from_str(&text).context("parsing the device change")?;
    let container = crate::load(root, id)?;
    use libcontainer::container::ContainerStatus;
    let status_ok = if before_start {
        matches!(container.status(), ContainerStatus::Created)
    } else {
        matches!(
            container.status(),
            ContainerStatus::Running | ContainerStatus::Paused
        )
    };
    if !status_ok {
        bail!(
            "container {id} is not {}",
            if before_start { "created" } else { "running" }
        );
    }
    let pid = container
        .pid()
        .context("the runtime reports no init pid")?
        .as_raw();
    let cgroup = container
        .spec()
        .context("reading the container's runtime state")?
        .cgroup_path
        .to_string_lossy()
        .into_owned();
    let start = crate::attach::start_time(pid)?;
    let sys = libcontainer::syscall::syscall::create_syscall();
    let privileged = privileged(pid)?;
    let ids = if privileged { (0, 0) } else { root_ids(pid)? };
    let mnt_ns = match mount_namespace {
        Some(path) => rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening the mount namespace {}", path.display()))?,
        None => rustix::fs::open(
            format!("/proc/{pid}/ns/mnt"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?,
    };
    let userns = if privileged {
        None
    } else {
        Some(rustix::fs::open(
            format!("/proc/{pid}/ns/user"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };
    // The descriptors are the init's if it is still the process we looked up.
    if crate::attach::start_time(pid)? != start {
        bail!("the container's init changed under us");
    }
    let refused = change.refused();
    let refuse = refused.as_slice();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(staging)
        .context("creating the devices staging directory")?;
    let staging_fd = rustix::fs::open(
        staging,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;

    // The numbers each removed node was given (its staged node's), before anything changes.
    let removed_rules: Vec<String> = change
        .remove_nodes
        .iter()
        .filter_map(|node| {
            let staged = rustix::fs::statat(
                &staging_fd,
                node_name(node),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .ok()
            .map(|st| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)));
            let numbers = staged.or_else(|| node_numbers(node, refuse).ok().flatten())?;
            // Never a number every container has anyway.
            let default = crate::spec::DEVICES.iter().any(|&(major, minor)| {
                !node.block
                    && i64::from(numbers.0) == major
                    && (minor < 0 || i64::from(numbers.1) == minor)
            });
            (!default).then(|| rule(node, numbers))
        })
        .collect();

    let mut prepared = Vec::new();
    for disk in &change.add_disks {
        prepared.extend(prepare_disk(sys.as_ref(), disk, refuse, userns.as_ref())?);
    }
    let mut rules = Vec::new();
    for node in &change.add_nodes {
        if let Some(p) = prepare_node(sys.as_ref(), node, refuse, &staging_fd, ids)? {
            if let Some(numbers) = node_numbers(node, refuse)? {
                rules.push(rule(node, numbers));
            }
            prepared.push(p);
        }
    }
    let live = !before_start;
    if !privileged {
        // Every flag of a mount into an unprivileged container locked, as those of the mounts
        // copied into its locked namespace are: read-only, nosuid, nodev. The mount itself is
        // not locked to its parent (made by the host's root in the container's namespace), so
        // it can be taken out while the container runs.
        for p in &mut prepared {
            p.tree = lock_flags(&p.tree, p.recursive)?;
        }
    }
    for p in prepared.iter().filter(|p| p.unbindable) {
        let attr = MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: libc::MS_UNBINDABLE,
            userns_fd: 0,
        };
        set_attributes(sys.as_ref(), &p.tree, p.recursive, &attr)
            .with_context(|| format!("disk device {:?}: making its mount unbindable", p.device))?;
    }

    let mountinfo = rustix::fs::open(
        format!("/proc/{pid}/mountinfo"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let host_ns = rustix::fs::open(
        "/proc/self/ns/mnt",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // The mount ids the removed devices got (read as host root: the staging dir is its alone).
    let recorded: std::collections::BTreeMap<&str, u64> = change
        .remove_disks
        .iter()
        .map(|d| &d.device)
        .chain(change.remove_nodes.iter().map(|n| &n.device))
        .filter_map(|device| Some((device.as_str(), recorded_mount(&staging_fd, device)?)))
        .collect();
    // 1. Inside: what goes, goes (or nothing else happens).
    enter(&mnt_ns, ids)?;
    let container_root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (device, path, node) in change
        .remove_disks
        .iter()
        .map(|d| (&d.device, &d.path, false))
        .chain(
            change
                .remove_nodes
                .iter()
                .map(|n| (&n.device, &n.path, true)),
        )
    {
        unmount_all(path)?;
        // The device's own mount is gone, not only what was at its path now: the container's
        // root may have moved it (a link in a parent directory).
        if let Some(id) = recorded.get(device.as_str()) {
            if mount_ids(&mountinfo)?.contains(id) {
                bail!(
                    "the mount of device {device:?} was moved inside the container and stays until the instance stops"
                );
            }
        }
        // A node's mount point goes with it (as in LXD), so nothing is left at its path.
        if node {
            let _ = remove_mount_point(&container_root, path);
        }
    }
    // 2. On the host: the device rules, the staged nodes.
    if live {
        leave(&host_ns)?;
        for r in &removed_rules {
            device_rule(&cgroup, "devices.deny", r)?;
        }
        for node in &change.remove_nodes {
            let _ =
                rustix::fs::unlinkat(&staging_fd, node_name(node), rustix::fs::AtFlags::empty());
        }
        for device in recorded.keys() {
            let _ = rustix::fs::unlinkat(
                &staging_fd,
                mount_record(device),
                rustix::fs::AtFlags::empty(),
            );
        }
        for r in &rules {
            device_rule(&cgroup, "devices.allow", r)?;
        }
        enter(&mnt_ns, ids)?;
    }
    // 3. Inside: what comes.
    let mut plugged = Vec::new();
    for p in &prepared {
        let target = mount_point(&container_root, p, ids)?;
        sys.move_mount(
            p.tree.as_fd(),
            None,
            target.as_fd(),
            None,
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| {
            anyhow::anyhow!("mounting onto {} in the container: {e}", p.target.display())
        })?;
        // Its mount id, to know at unplug whether it is gone.
        let mounted = rustix::fs::statx(
            &container_root,
            p.target.strip_prefix("/").unwrap_or(&p.target),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::MNT_ID,
        );
        if let Ok(st) = mounted {
            plugged.push((&p.device, st.stx_mnt_id));
        }
    }
    // Recorded as host root (the staging dir is its alone).
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
    for (device, id) in plugged {
        record_mount(&staging_fd, device, id);
    }
    Ok(())
}

fn mount_record(device: &str) -> String {
    format!("mount.{}", encoded_name(device))
}

/// Keep the mount id a device got (in the staging directory, host root's alone).
fn record_mount(staging: &OwnedFd, device: &str, id: u64) {
    if let Ok(fd) = rustix::fs::openat(
        staging,
        mount_record(device),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        let _ = rustix::io::write(&fd, id.to_string().as_bytes());
    }
}

fn recorded_mount(staging: &OwnedFd, device: &str) -> Option<u64> {
    let fd = rustix::fs::openat(
        staging,
        mount_record(device),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 32];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The mount ids of the init's mount namespace, from its `mountinfo` (opened on the host's
/// procfs before joining the container, read now).
fn mount_ids(mountinfo: &OwnedFd) -> Result<std::collections::BTreeSet<u64>> {
    let mut text = Vec::new();
    rustix::fs::seek(mountinfo, rustix::fs::SeekFrom::Start(0))?;
    let file = std::fs::File::from(mountinfo.try_clone()?);
    std::io::Read::take(file, 16 << 20).read_to_end(&mut text)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Join the container's mount namespace, acting on files as its root: a filesystem the
/// container mounted itself (its /dev) cannot hold files of host root's, and the container's
/// own permissions apply to the mount points made and removed there.
fn enter(mnt_ns: &OwnedFd, ids: (u32, u32)) -> Result<()> {
    nix::sched::setns(mnt_ns, CloneFlags::CLONE_NEWNS)
        .context("joining the container's mount namespace")?;
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(ids.1));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(ids.0));
    Ok(())
}

/// Back to the host's mount namespace, as host root.
fn leave(host_ns: &OwnedFd) -> Result<()> {
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
    nix::sched::setns(host_ns, CloneFlags::CLONE_NEWNS)
        .context("returning to the host's mount namespace")?;
    Ok(())
}

/// Whether `path` (in this mount namespace, its last component not followed) is a mount point:
/// its mount differs from its parent's.
fn is_mount_point(path: &Path) -> Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let parent = path.parent().unwrap_or(Path::new("/"));
    let id = |p: &Path, flags| -> Result<Option<u64>> {
        match statx(rustix::fs::CWD, p, flags, StatxFlags::MNT_ID) {
            Ok(st) => Ok(Some(st.stx_mnt_id)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => bail!("{} in the container: {e}", p.display()),
        }
    };
    match (
        id(path, AtFlags::SYMLINK_NOFOLLOW)?,
        id(parent, AtFlags::empty())?,
    ) {
        (Some(a), Some(b)) => Ok(a != b),
        _ => Ok(false),
    }
}

/// Unmount everything stacked at `path` (the device's mount, and whatever the container put
/// over it), or fail if the kernel keeps one there: a mount locked to its parent (one a
/// container started with under an rxd that mounted its devices before locking its mounts)
/// goes only with a stop.
fn unmount_all(path: &Path) -> Result<()> {
    use rustix::mount::UnmountFlags;
    for _ in 0..64 {
        if !is_mount_point(path)? {
            return Ok(());
        }
        match rustix::mount::unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => bail!(
                "{} was mounted when the instance started and stays until it stops: stop the instance to remove or change this device",
                path.display()
            ),
            Err(e) => bail!("unmounting {} in the container: {e}", path.display()),
        }
    }
    bail!("{} holds too many stacked mounts", path.display())
}

/// A copy of the detached mount `tree` (with its submounts when `recursive`) whose flags
/// (read-only, nosuid, nodev) the kernel has locked: it is attached in a private mount
/// namespace of a child process, which then copies that namespace into one owned by a new user
/// namespace (the copy locks every flag) and clones the mount from there (clones keep the
/// lock; a tree with submounts, locked to it by the copy, is cloned whole). See `rxd-shim
/// lock-readonly`.
fn lock_flags(tree: &OwnedFd, recursive: bool) -> Result<OwnedFd> {
    let (ours, theirs) = crate::pty::channel()?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("--root").arg("/").arg("lock-readonly");
    if recursive {
        command.arg("--recursive");
    }
    let child = command
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .spawn()
        .context("starting the lock-readonly step")?;
    crate::lock::send_fd(&ours, tree.as_fd())?;
    let locked = crate::lock::receive_fd(&ours);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "locking the flags of a mount: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    locked
}

/// The child of [`lock_flags`]: receive the tree on stdin, attach it in a private mount
/// namespace, copy that namespace under a fresh user namespace, clone the mount (with its
/// submounts when `recursive`) from the copy and send the clone back.
pub fn lock_readonly_step(recursive: bool) -> Result<()> {
    let socket: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let tree = crate::lock::receive_fd(&socket)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).context("a private mount namespace")?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .context("making the mount namespace private")?;
    // A mount point of the tree's kind, on a tmpfs of our own.
    let sys = libcontainer::syscall::syscall::create_syscall();
    let scratch = Path::new("/tmp");
    rustix::mount::mount(
        "tmpfs",
        scratch,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=16k,mode=0755",
    )
    .context("mounting a scratch tmpfs")?;
    let dir = rustix::fs::fstat(&tree)
        .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
        .unwrap_or(true);
    let spot = scratch.join("m");
    if dir {
        std::fs::create_dir(&spot)?;
    } else {
        std::fs::write(&spot, b"")?;
    }
    let spot_fd = rustix::fs::open(&spot, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    sys.move_mount(
        tree.as_fd(),
        None,
        spot_fd.as_fd(),
        None,
        libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| anyhow::anyhow!("attaching the tree: {e}"))?;
    // Copying the mount namespace into one owned by a new user namespace locks the flags.
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .context("a locked copy of the mount namespace")?;
    let copy = sys
        .open_tree(
            libc::AT_FDCWD,
            Some(spot.to_str().context("path")?),
            OPEN_TREE
                | if recursive {
                    libc::AT_RECURSIVE as u32
                } else {
                    0
                },
        )
        .map_err(|e| anyhow::anyhow!("cloning the locked mount: {e}"))?;
    crate::lock::send_fd(&socket, copy.as_fd())?;
    Ok(())
}
