//! btrfs subvolumes, properties and quotas through `/usr/bin/btrfs`, as LXD 5.0 drives it. Every
//! path handed to the tool is absolute (built by the pool from checked names), so none can be
//! taken for an option. What the tool prints about a volume's contents (names of subvolumes a
//! container made) is checked against the filesystem before anything is done with it.

use crate::mounts::is_subvolume;
use crate::tool::run;
use crate::{Result, StorageError};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

pub(crate) fn create_subvolume(path: &Path) -> Result<()> {
    run(
        "btrfs",
        &[
            OsStr::new("subvolume"),
            OsStr::new("create"),
            path.as_os_str(),
        ],
    )
    .map(drop)
}

/// `btrfs subvolume snapshot [-r] src dst`: instant, shares every extent with `src`.
pub(crate) fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    let mut args = vec![OsStr::new("subvolume"), OsStr::new("snapshot")];
    if readonly {
        args.push(OsStr::new("-r"));
    }
    args.extend([src.as_os_str(), dst.as_os_str()]);
    run("btrfs", &args).map(drop)
}

/// `btrfs property set -ts <path> ro true|false`. Making a subvolume writable is forced (`-f`,
/// as LXD does with btrfs-progs after 5.14.2): without it the tool refuses for a subvolume
/// that was received (`btrfs receive`), and the force only clears that received mark.
pub(crate) fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    let mut args = vec![OsStr::new("property"), OsStr::new("set")];
    if !readonly {
        args.push(OsStr::new("-f"));
    }
    args.extend([
        OsStr::new("-ts"),
        path.as_os_str(),
        OsStr::new("ro"),
        OsStr::new(if readonly { "true" } else { "false" }),
    ]);
    run("btrfs", &args).map(drop)
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

/// Whether the subvolume at `path` is read-only (`btrfs property get -ts <path> ro`).
pub(crate) fn is_readonly(path: &Path) -> Result<bool> {
    let out = run(
        "btrfs",
        &[
            OsStr::new("property"),
            OsStr::new("get"),
            OsStr::new("-ts"),
            path.as_os_str(),
            OsStr::new("ro"),
        ],
    )?;
    match out.trim() {
        "ro=true" => Ok(true),
        "ro=false" => Ok(false),
        other => Err(StorageError::ToolOutput {
            command: format!("btrfs property get -ts {} ro", path.display()),
            detail: format!("expected ro=true or ro=false, got {other:?}"),
        }),
    }
}

fn delete_one(path: &Path) -> Result<()> {
    run(
        "btrfs",
        &[
            OsStr::new("subvolume"),
            OsStr::new("delete"),
            path.as_os_str(),
        ],
    )
    .map(drop)
}

/// The id of the subvolume holding `path` (`btrfs inspect-internal rootid`).
pub(crate) fn subvolume_id(path: &Path) -> Result<u64> {
    let out = run(
        "btrfs",
        &[
            OsStr::new("inspect-internal"),
            OsStr::new("rootid"),
            path.as_os_str(),
        ],
    )?;
    out.trim().parse().map_err(|_| StorageError::ToolOutput {
        command: format!("btrfs inspect-internal rootid {}", path.display()),
        detail: format!("expected a subvolume id, got {:?}", out.trim()),
    })
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
    let out = match run(
        "btrfs",
        &[
            OsStr::new("qgroup"),
            OsStr::new("show"),
            OsStr::new("--raw"),
            path.as_os_str(),
        ],
    ) {
        Ok(out) => out,
        Err(StorageError::Tool { stderr, .. }) if stderr.contains("quotas not enabled") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut groups = BTreeMap::new();
    for line in out.lines() {
        let mut fields = line.split_whitespace();
        let (Some(group), Some(referenced)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(id) = group.strip_prefix("0/").and_then(|id| id.parse().ok()) else {
            continue;
        };
        if let Ok(bytes) = referenced.parse() {
            groups.insert(id, bytes);
        }
    }
    Ok(Some(groups))
}

/// Turns quotas on for the filesystem at `mount_point` and waits for the first accounting scan,
/// so limits set next count what is already there.
pub(crate) fn enable_quota(mount_point: &Path) -> Result<()> {
    tracing::info!(path = %mount_point.display(), "enabling btrfs quotas");
    run(
        "btrfs",
        &[
            OsStr::new("quota"),
            OsStr::new("enable"),
            mount_point.as_os_str(),
        ],
    )?;
    run(
        "btrfs",
        &[
            OsStr::new("quota"),
            OsStr::new("rescan"),
            OsStr::new("-w"),
            mount_point.as_os_str(),
        ],
    )
    .map(drop)
}

pub(crate) fn qgroup_create(id: u64, path: &Path) -> Result<()> {
    let group = format!("0/{id}");
    run(
        "btrfs",
        &[
            OsStr::new("qgroup"),
            OsStr::new("create"),
            OsStr::new(&group),
            path.as_os_str(),
        ],
    )
    .map(drop)
}

/// Limits the referenced bytes of qgroup `0/<id>` (`none`: no limit).
pub(crate) fn qgroup_limit(id: u64, limit: Option<u64>, path: &Path) -> Result<()> {
    let group = format!("0/{id}");
    let size = limit.map_or_else(|| "none".to_owned(), |n| n.to_string());
    run(
        "btrfs",
        &[
            OsStr::new("qgroup"),
            OsStr::new("limit"),
            OsStr::new(&size),
            OsStr::new(&group),
            path.as_os_str(),
        ],
    )
    .map(drop)
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
