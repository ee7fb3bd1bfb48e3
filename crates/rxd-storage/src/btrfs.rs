//! btrfs subvolumes, flags and quotas. Each single operation is btrfs's own ioctl, through
//! `btrfs-uapi`'s safe wrappers, on descriptors: the directory that holds a subvolume is opened
//! (its last component never followed as a link) and the subvolume named in it, so no tool is
//! spawned on the paths that create and snapshot instances. `btrfs send`/`receive` and the
//! listing of subvolumes a container made inside its volume still go through `/usr/bin/btrfs`,
//! as LXD 5.0 drives them. Every path handed to the tool is absolute (built by the pool from
//! checked names), so none can be taken for an option. What the tool prints about a volume's
//! contents (names of subvolumes a container made) is checked against the filesystem before
//! anything is done with it.

use crate::mounts::is_subvolume;
use crate::tool::run;
use crate::{Result, StorageError};
use btrfs_uapi::quota::{self, QgroupLimitFlags, QgroupStatusFlags};
use btrfs_uapi::subvolume::{self as subvol, SubvolumeFlags};
use rustix::fs::{Mode, OFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A failed btrfs ioctl as an error naming what was done to `path`.
fn failed<E: Into<std::io::Error>>(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(E) -> StorageError {
    let path = path.to_path_buf();
    move |e| StorageError::Io {
        action,
        path,
        source: e.into(),
    }
}

/// The directory (or subvolume root) at `path`, its last component not followed as a link.
fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(StorageError::errno("opening", path))
}

/// The directory holding `path`, opened, and `path`'s last name in it.
fn parent_and_name(path: &Path) -> Result<(OwnedFd, CString)> {
    let invalid = || StorageError::Io {
        action: "naming a subvolume at",
        path: path.to_path_buf(),
        source: std::io::ErrorKind::InvalidInput.into(),
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid());
    };
    let name = CString::new(name.as_bytes()).map_err(|_| invalid())?;
    Ok((open_dir(parent)?, name))
}

/// A new, empty subvolume at `path` (`BTRFS_IOC_SUBVOL_CREATE_V2`).
pub(crate) fn create_subvolume(path: &Path) -> Result<()> {
    let (parent, name) = parent_and_name(path)?;
    subvol::subvolume_create(parent.as_fd(), &name, &[]).map_err(failed("creating subvolume", path))
}

/// A snapshot of the subvolume `src` at `dst` (`BTRFS_IOC_SNAP_CREATE_V2`): instant, shares
/// every extent with `src`. The kernel commits a transaction to make it, so the snapshot (and
/// everything written to the filesystem before it) is on disk when this returns.
pub(crate) fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    let source = open_dir(src)?;
    let (parent, name) = parent_and_name(dst)?;
    subvol::snapshot_create(parent.as_fd(), source.as_fd(), &name, readonly, &[])
        .map_err(failed("snapshotting into", dst))
}

/// Sets or clears the subvolume's read-only flag. Making a received subvolume (`btrfs
/// receive`) writable also clears its received UUID, as `btrfs property set -f -ts <path> ro
/// false` does (LXD forces it with btrfs-progs after 5.14.2): a writable subvolume that still
/// claimed to be an unchanged copy would mislead a later incremental receive.
pub(crate) fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    let fd = open_dir(path)?;
    let flags =
        subvol::subvolume_flags_get(fd.as_fd()).map_err(failed("reading the flags of", path))?;
    if flags.contains(SubvolumeFlags::RDONLY) == readonly {
        return Ok(());
    }
    let mut flags = flags;
    flags.set(SubvolumeFlags::RDONLY, readonly);
    subvol::subvolume_flags_set(fd.as_fd(), flags).map_err(failed("setting the flags of", path))?;
    // After the flag, as the tool does: the kernel sets no received UUID on a read-only one.
    if !readonly {
        let info =
            subvol::subvolume_info(fd.as_fd()).map_err(failed("inspecting subvolume", path))?;
        if !info.received_uuid.is_nil() {
            btrfs_uapi::send_receive::received_subvol_set(fd.as_fd(), &uuid::Uuid::nil(), 0)
                .map_err(failed("clearing the received UUID of", path))?;
        }
    }
    Ok(())
}

/// `btrfs send [-p <parent>] <path>` into `out`: the read-only subvolume at `path` as a stream,
/// as the difference from `parent` when given.
pub(crate) fn send(path: &Path, parent: Option<&Path>, out: std::fs::File) -> Result<()> {
    let mut args = vec![OsStr::new("send"), OsStr::new("-q")];
    if let Some(parent) = parent {
        args.extend([OsStr::new("-p"), parent.as_os_str()]);
    }
    args.push(path.as_os_str());
    crate::tool::run_streams("btrfs", &args, None, Some(out))
}

/// `btrfs receive -e --chroot <dir>` from `input`: one subvolume made in `dir`, the tool
/// confined to `dir` (chroot) and stopped at the stream's end marker.
pub(crate) fn receive(dir: &Path, input: &mut dyn std::io::Read) -> Result<()> {
    crate::tool::run_streams(
        "btrfs",
        &[
            OsStr::new("receive"),
            OsStr::new("-q"),
            OsStr::new("-e"),
            OsStr::new("--chroot"),
            dir.as_os_str(),
        ],
        Some(input),
        None,
    )
}

/// Whether the subvolume at `path` is read-only.
pub(crate) fn is_readonly(path: &Path) -> Result<bool> {
    let fd = open_dir(path)?;
    let flags =
        subvol::subvolume_flags_get(fd.as_fd()).map_err(failed("reading the flags of", path))?;
    Ok(flags.contains(SubvolumeFlags::RDONLY))
}

/// Deletes the subvolume at `path` (`BTRFS_IOC_SNAP_DESTROY_V2` by name in its directory); its
/// space is freed by the kernel's cleaner after the next commit.
fn delete_one(path: &Path) -> Result<()> {
    let (parent, name) = parent_and_name(path)?;
    subvol::subvolume_delete(parent.as_fd(), &name).map_err(failed("deleting subvolume", path))
}

/// The id of the subvolume holding `path`.
pub(crate) fn subvolume_id(path: &Path) -> Result<u64> {
    let fd = open_dir(path)?;
    Ok(subvol::subvolume_info(fd.as_fd())
        .map_err(failed("inspecting subvolume", path))?
        .id)
}

/// One line of `btrfs subvolume list -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: u64,
    parent: u64,
    path: String,
}

/// Parses `ID <id> gen <gen> parent <parent> top level <top> path <path>`; anything else
/// (including the continuation of a name with a newline in it) is skipped.
fn parse_list(text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|line| {
            let (head, path) = line.strip_prefix("ID ")?.split_once(" path ")?;
            let f: Vec<&str> = head.split(' ').collect();
            if f.len() != 8 || f[1] != "gen" || f[3] != "parent" || f[5] != "top" || f[6] != "level"
            {
                return None;
            }
            Some(Listed {
                id: f[0].parse().ok()?,
                parent: f[4].parse().ok()?,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// A subvolume found inside a volume.
#[derive(Debug)]
struct Nested {
    path: PathBuf,
    /// Subvolumes between it and the volume (0: directly inside the volume's subvolume).
    depth: usize,
    /// Whether other subvolumes of the list are inside it.
    has_children: bool,
}

/// The subvolumes inside the subvolume at `volume` (a container may make its own, systemd's
/// `/var/lib/machines` for one), deepest first. Found by id (`parent` links from the volume's
/// id down); each path the tool printed is then checked to be a real subvolume inside
/// `volume`, reached without a link. Entries that fail the check are left out with a warning:
/// deleting the volume then fails with btrfs's own message rather than touching anything else.
/// Whether the subvolume at `volume` holds others (a snapshot of it would hold empty
/// directories in their place).
pub fn has_nested(volume: &Path) -> Result<bool> {
    Ok(!nested(volume)?.is_empty())
}

fn nested(volume: &Path) -> Result<Vec<Nested>> {
    // The common case, a volume holding no subvolume, is answered by the kernel alone
    // (`BTRFS_IOC_GET_SUBVOL_ROOTREF` lists the subvolumes directly inside this one; deeper
    // ones are inside those).
    let fd = open_dir(volume)?;
    if subvol::subvol_rootrefs(fd.as_fd())
        .map_err(failed("listing the subvolumes in", volume))?
        .is_empty()
    {
        return Ok(Vec::new());
    }
    let volume_id = subvolume_id(volume)?;
    let listed = parse_list(&run(
        "btrfs",
        &[
            OsStr::new("subvolume"),
            OsStr::new("list"),
            OsStr::new("-p"),
            volume.as_os_str(),
        ],
    )?);
    let mut children: BTreeMap<u64, Vec<&Listed>> = BTreeMap::new();
    for l in &listed {
        children.entry(l.parent).or_default().push(l);
    }
    // The tool prints paths below the given subvolume relative to it; older versions print them
    // from the filesystem's top. Both are tried, the volume's own listed path stripped for the
    // second.
    let own_path = listed
        .iter()
        .find(|l| l.id == volume_id)
        .map(|l| l.path.clone());
    let real_volume =
        std::fs::canonicalize(volume).map_err(StorageError::io("resolving", volume))?;
    let resolve = |printed: &str| -> Option<PathBuf> {
        let mut candidates = vec![printed];
        if let Some(own) = &own_path {
            if let Some(rest) = printed
                .strip_prefix(own.as_str())
                .and_then(|r| r.strip_prefix('/'))
            {
                candidates.push(rest);
            }
        }
        candidates.into_iter().find_map(|rel| {
            let rel = Path::new(rel);
            if rel.as_os_str().is_empty()
                || !rel.components().all(|c| matches!(c, Component::Normal(_)))
            {
                return None;
            }
            let path = volume.join(rel);
            let real = std::fs::canonicalize(&path).ok()?;
            (real == real_volume.join(rel) && is_subvolume(&path).ok()?).then_some(path)
        })
    };
    let mut found = Vec::new();
    let mut seen = BTreeSet::from([volume_id]);
    let mut queue = vec![(volume_id, 0usize)];
    while let Some((id, depth)) = queue.pop() {
        for child in children.get(&id).map(Vec::as_slice).unwrap_or_default() {
            if !seen.insert(child.id) {
                continue;
            }
            queue.push((child.id, depth + 1));
            match resolve(&child.path) {
                Some(path) => found.push(Nested {
                    path,
                    depth,
                    has_children: children.contains_key(&child.id),
                }),
                None => tracing::warn!(
                    volume = %volume.display(),
                    subvolume = child.id,
                    printed = %child.path,
                    "a nested subvolume's printed path does not lead to it; not deleting it by path"
                ),
            }
        }
    }
    found.sort_by_key(|n| std::cmp::Reverse(n.depth));
    Ok(found)
}

/// Deletes the subvolume at `volume` and every subvolume inside it, deepest first. A read-only
/// subvolume that holds others is made writable first (their entries live in it).
pub fn delete_tree(volume: &Path) -> Result<()> {
    let nested = nested(volume)?;
    if !nested.is_empty() {
        if is_readonly(volume)? {
            set_readonly(volume, false)?;
        }
        for n in nested.iter().rev().filter(|n| n.has_children) {
            if is_readonly(&n.path)? {
                set_readonly(&n.path, false)?;
            }
        }
        for n in &nested {
            tracing::debug!(path = %n.path.display(), "deleting nested subvolume");
            delete_one(&n.path)?;
        }
    }
    delete_one(volume)
}

/// The referenced bytes of each level-0 qgroup (`0/<subvolume id>`), or `None` when quotas are
/// not enabled on the filesystem holding `path`. Numbers are as of the last transaction commit.
pub(crate) fn qgroups(path: &Path) -> Result<Option<BTreeMap<u64, u64>>> {
    let fd = open_dir(path)?;
    let list = quota::qgroup_list(fd.as_fd()).map_err(failed("listing the qgroups of", path))?;
    if !list.status_flags.contains(QgroupStatusFlags::ON) {
        return Ok(None);
    }
    Ok(Some(
        list.qgroups
            .iter()
            .filter(|g| quota::qgroupid_level(g.qgroupid) == 0)
            .map(|g| (quota::qgroupid_subvolid(g.qgroupid), g.rfer))
            .collect(),
    ))
}

/// Turns quotas on for the filesystem at `mount_point` and waits for the first accounting scan
/// (the kernel starts it), so limits set next count what is already there.
pub(crate) fn enable_quota(mount_point: &Path) -> Result<()> {
    tracing::info!(path = %mount_point.display(), "enabling btrfs quotas");
    let fd = open_dir(mount_point)?;
    quota::quota_enable(fd.as_fd(), false).map_err(failed("enabling quotas on", mount_point))?;
    quota::quota_rescan_wait(fd.as_fd())
        .map_err(failed("waiting for the quota scan of", mount_point))
}

/// Makes qgroup `0/<id>` for the subvolume `id` of the filesystem holding `path`.
pub(crate) fn qgroup_create(id: u64, path: &Path) -> Result<()> {
    let fd = open_dir(path)?;
    quota::qgroup_create(fd.as_fd(), id).map_err(failed("creating the qgroup of", path))
}

/// Limits the referenced bytes of qgroup `0/<id>` (`None`: no limit; the kernel clears a limit
/// given as all ones, as `btrfs qgroup limit none` asks).
pub(crate) fn qgroup_limit(id: u64, limit: Option<u64>, path: &Path) -> Result<()> {
    let fd = open_dir(path)?;
    quota::qgroup_limit(
        fd.as_fd(),
        id,
        QgroupLimitFlags::MAX_RFER,
        limit.unwrap_or(u64::MAX),
        0,
    )
    .map_err(failed("limiting the qgroup of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines() {
        let text = "\
ID 256 gen 7 parent 5 top level 5 path src
ID 257 gen 7 parent 256 top level 256 path src/pool/containers/v
ID 258 gen 9 parent 257 top level 257 path n1 path with spaces
ID x gen 7 parent 257 top level 257 path bad-id
ID 259 gen 7 parent 257 top level 257 path name with a
newline in it
";
        let got = parse_list(text);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[2],
            Listed {
                id: 258,
                parent: 257,
                path: "n1 path with spaces".into()
            }
        );
        assert_eq!(got[3].path, "name with a");
    }
}
