//! Joining a running container's cgroups, for `exec`.
//!
//! The attach step moves itself into exactly the cgroups the container's init is in, one
//! hierarchy at a time, as the kernel reports them in `/proc/<init>/cgroup` (what `lxc-attach`
//! does too). Hierarchies where it already shares the init's cgroup are left alone.
//!
//! On a cgroup v1 hierarchy it writes `0` to `tasks`, which moves the calling thread only.
//! Since the step is single-threaded, that is the whole process, and it is the one migration the
//! kernel makes without write-locking every thread group on the machine
//! (`cgroup_threadgroup_rwsem`). Taking that lock waits for RCU grace periods: 5 to 18 ms per
//! write to `cgroup.procs` on the bench machine, against 0.25 ms for `tasks`. The unified (v2)
//! hierarchy has no `tasks` file, so there it is `cgroup.procs`.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// One line of `/proc/<pid>/cgroup`: the hierarchy's controllers (`cpu,cpuacct`,
/// `name=systemd`; empty for the unified hierarchy) and the cgroup's path in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Membership {
    pub controllers: String,
    pub path: String,
}

impl Membership {
    fn unified(&self) -> bool {
        self.controllers.is_empty()
    }
}

/// Parse `/proc/<pid>/cgroup` (`ID:CONTROLLERS:PATH`; a path may itself hold `:`).
pub fn parse_memberships(text: &str) -> Result<Vec<Membership>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(controllers), Some(path)) if path.starts_with('/') => {
                    Ok(Membership {
                        controllers: controllers.to_owned(),
                        path: path.to_owned(),
                    })
                }
                _ => bail!("unreadable cgroup membership line {line:?}"),
            }
        })
        .collect()
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    /// The super-block options: for v1, they name the hierarchy's controllers.
    pub options: Vec<String>,
    /// The cgroup shown at the mount point (`/` unless a sub-tree is bind-mounted).
    pub root: String,
    pub mount_point: PathBuf,
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts in `/proc/self/mountinfo`.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                fstype: fstype.to_owned(),
                options: options.split(',').map(str::to_owned).collect(),
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
            })
        })
        .collect()
}

/// The file that moves the writer into `m`'s cgroup, in the first mount that shows it.
/// `single_thread`: whether the writer is its process's only thread (see the module's notes).
pub fn join_file(m: &Membership, mounts: &[Mount], single_thread: bool) -> Result<PathBuf> {
    let wanted: Vec<&str> = m.controllers.split(',').collect();
    for mount in mounts {
        let fits = if m.unified() {
            mount.fstype == "cgroup2"
        } else {
            mount.fstype == "cgroup" && wanted.iter().all(|c| mount.options.iter().any(|o| o == c))
        };
        if !fits {
            continue;
        }
        let inside = if mount.root == "/" {
            Some(m.path.as_str())
        } else {
            m.path
                .strip_prefix(mount.root.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let Some(inside) = inside else { continue };
        let file = if single_thread && !m.unified() {
            "tasks"
        } else {
            "cgroup.procs"
        };
        let mut path = mount.mount_point.clone();
        path.extend(inside.split('/').filter(|c| !c.is_empty()));
        path.push(file);
        return Ok(path);
    }
    bail!(
        "the container's {} cgroup {} is not mounted here",
        if m.unified() {
            "unified"
        } else {
            &m.controllers
        },
        m.path
    )
}

/// Move this process into every cgroup of `pid` that it is not in already.
pub fn join(pid: i32) -> Result<()> {
    let read = |p: String| std::fs::read_to_string(&p).with_context(|| format!("reading {p}"));
    let theirs = parse_memberships(&read(format!("/proc/{pid}/cgroup"))?)?;
    let ours = parse_memberships(&read("/proc/self/cgroup".into())?)?;
    let mounts = parse_mounts(&read("/proc/self/mountinfo".into())?);
    let single_thread = std::fs::read_dir("/proc/self/task")
        .context("reading /proc/self/task")?
        .count()
        == 1;
    for m in theirs.iter().filter(|m| !ours.contains(m)) {
        let path = join_file(m, &mounts, single_thread)?;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| f.write_all(b"0"))
            .with_context(|| format!("joining the container's cgroup ({})", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
29 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
32 29 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
33 29 0:30 / /sys/fs/cgroup/pids rw,nosuid shared:13 - cgroup cgroup rw,pids
34 29 0:31 /rxd /srv/cg\\040pids rw shared:14 - cgroup cgroup rw,pids
35 24 0:32 / /proc rw - proc proc rw
";

    #[test]
    fn memberships_parse_with_colons_in_paths() {
        let got = parse_memberships("12:cpu,cpuacct:/rxd/a:b\n1:name=systemd:/\n0::/init.scope\n")
            .unwrap();
        assert_eq!(got[0].controllers, "cpu,cpuacct");
        assert_eq!(got[0].path, "/rxd/a:b");
        assert_eq!(got[1].controllers, "name=systemd");
        assert!(got[2].unified());
        assert_eq!(got[2].path, "/init.scope");
        assert!(parse_memberships("12:cpu\n").is_err());
        assert!(parse_memberships("12:cpu:relative\n").is_err());
    }

    #[test]
    fn mounts_keep_cgroup_hierarchies_only_and_unescape() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].fstype, "cgroup2");
        assert_eq!(mounts[2].options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[4].root, "/rxd");
        assert_eq!(mounts[4].mount_point, PathBuf::from("/srv/cg pids"));
    }

    #[test]
    fn every_case_finds_its_file() {
        let mounts = parse_mounts(HYBRID);
        let m = |c: &str, p: &str| Membership {
            controllers: c.into(),
            path: p.into(),
        };
        let cases: &[(Membership, bool, Option<&str>)] = &[
            // v1, single-threaded: the thread-only file.
            (
                m("cpu,cpuacct", "/rxd/c1"),
                true,
                Some("/sys/fs/cgroup/cpu,cpuacct/rxd/c1/tasks"),
            ),
            // v1 with more threads: the whole process.
            (
                m("cpu,cpuacct", "/rxd/c1"),
                false,
                Some("/sys/fs/cgroup/cpu,cpuacct/rxd/c1/cgroup.procs"),
            ),
            // Controllers are matched as a set, in any order.
            (
                m("cpuacct,cpu", "/x"),
                true,
                Some("/sys/fs/cgroup/cpu,cpuacct/x/tasks"),
            ),
            (
                m("name=systemd", "/"),
                true,
                Some("/sys/fs/cgroup/systemd/tasks"),
            ),
            // The unified hierarchy has no tasks file.
            (
                m("", "/c1"),
                true,
                Some("/sys/fs/cgroup/unified/c1/cgroup.procs"),
            ),
            // The first mount that shows the path wins.
            (
                m("pids", "/rxd/c1"),
                true,
                Some("/sys/fs/cgroup/pids/rxd/c1/tasks"),
            ),
            // A hierarchy that is not mounted, or a controller no mount has.
            (m("memory", "/rxd/c1"), true, None),
            (m("cpu,memory", "/rxd/c1"), true, None),
        ];
        for (membership, single, want) in cases {
            let got = join_file(membership, &mounts, *single).ok();
            assert_eq!(
                got.as_deref(),
                want.map(std::path::Path::new),
                "{membership:?}"
            );
        }
    }

    #[test]
    fn bind_mounted_subtrees_show_only_what_is_under_them() {
        let mounts = parse_mounts(
            "34 29 0:31 /rxd /srv/pids rw - cgroup cgroup rw,pids\n\
             35 29 0:31 /rxdx /srv/other rw - cgroup cgroup rw,pids\n",
        );
        let m = |p: &str| Membership {
            controllers: "pids".into(),
            path: p.into(),
        };
        assert_eq!(
            join_file(&m("/rxd/c1"), &mounts, true).unwrap(),
            PathBuf::from("/srv/pids/c1/tasks")
        );
        assert_eq!(
            join_file(&m("/rxd"), &mounts, true).unwrap(),
            PathBuf::from("/srv/pids/tasks")
        );
        // "/rxdx" must not be read as "/rxd" followed by "x".
        assert_eq!(
            join_file(&m("/rxdx/c2"), &mounts, true).unwrap(),
            PathBuf::from("/srv/other/c2/tasks")
        );
        assert!(join_file(&m("/elsewhere"), &mounts, true).is_err());
    }

    #[test]
    fn joining_our_own_cgroups_changes_nothing() {
        let me = std::process::id() as i32;
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        join(me).unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
