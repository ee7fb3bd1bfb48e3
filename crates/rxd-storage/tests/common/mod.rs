//! What the storage tests share: a sandbox directory that, whatever happens in the test, leaves
//! nothing mounted and no loop device attached when dropped; and the test's own view of mounts,
//! loop devices and btrfs (read independently of the crate under test).

#![allow(dead_code)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// These tests mount filesystems and attach loop devices, so they run as root; they fail rather
/// than skip otherwise (rxd is a root daemon and its developers and CI run them as root).
pub fn require_root(test: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "{test}: needs root (it mounts btrfs loop files); run `cargo test -p rxd-storage` as root"
    );
    for tool in ["/usr/bin/btrfs", "/usr/sbin/losetup"] {
        assert!(
            Path::new(tool).exists() || Path::new(&tool.replace("/usr", "")).exists(),
            "{test}: needs {tool} (apt-get install btrfs-progs util-linux)"
        );
    }
    assert!(
        Path::new("/dev/loop-control").exists(),
        "{test}: needs /dev/loop-control (the loop module)"
    );
}

/// A temporary directory for one test. Dropping it lazily unmounts everything below it
/// (deepest first) and detaches every loop device backed by a file below it, then removes it.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Sandbox {
    pub fn new(test: &str) -> Sandbox {
        require_root(test);
        let dir = tempfile::Builder::new()
            .prefix(&format!("rxd-storage-{test}-"))
            .tempdir()
            .unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        Sandbox {
            dir: Some(dir),
            root,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A state directory inside the sandbox (made).
    pub fn state(&self) -> PathBuf {
        let s = self.root.join("state");
        std::fs::create_dir_all(&s).unwrap();
        s
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut mounted = mounted_under(&self.root);
        mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mp in &mounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(mp)
                .stderr(Stdio::null())
                .status();
        }
        for (device, _) in loops_under(&self.root) {
            let _ = Command::new("losetup")
                .arg("--detach")
                .arg(&device)
                .stderr(Stdio::null())
                .status();
        }
        // The kernel frees autoclear loop devices asynchronously.
        for _ in 0..250 {
            if loops_under(&self.root).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// `(mount point, fstype, source)` of every mount in this process's namespace.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((
                unescape(f[4]),
                f.get(sep + 1)?.to_string(),
                f.get(sep + 2)?.to_string(),
            ))
        })
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|(mp, _, _)| mp)
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

/// `(device, backing file)` of every attached loop device whose file is below `dir`.
pub fn loops_under(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(b"loop") {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let backing = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
        if backing.starts_with(dir) {
            found.push((Path::new("/dev").join(name), backing));
        }
    }
    found
}

/// Waits (up to 5 s: the kernel frees an autoclear loop device asynchronously) until no loop
/// device is backed by `file`, and fails the test otherwise.
pub fn assert_no_loop_for(file: &Path) {
    for _ in 0..250 {
        if loops_under(file).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "loop devices still attached to {}: {:?}",
        file.display(),
        loops_under(file)
    );
}

/// Runs a tool for the test's own checks and setup; panics with its stderr on failure.
pub fn tool(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {:?}: {}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`tool`], but returns whether it succeeded and its stderr.
pub fn tool_status(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String) {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A field of `btrfs subvolume show` (`UUID`, `Parent UUID`, `Flags`, ...).
pub fn subvolume_field(path: &Path, field: &str) -> String {
    let out = tool("btrfs", &[&"subvolume", &"show", &path]);
    out.lines()
        .find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.trim() == field).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {field:?} in btrfs subvolume show {}:\n{out}",
                path.display()
            )
        })
}

/// Writes `mib` MiB to `path` in 1 MiB chunks and syncs it; returns how much was written and
/// the error that stopped it.
pub fn write_mib(path: &Path, mib: usize) -> (usize, Option<std::io::Error>) {
    use std::io::Write;
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return (0, Some(e)),
    };
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0;
    for _ in 0..mib {
        match f.write_all(&chunk) {
            Ok(()) => written += 1,
            Err(e) => return (written, Some(e)),
        }
    }
    match f.sync_all() {
        Ok(()) => (written, None),
        Err(e) => (written, Some(e)),
    }
}

/// Commits the btrfs transaction of the filesystem holding `path`, so qgroup numbers are
/// current.
pub fn btrfs_sync(path: &Path) {
    tool("btrfs", &[&"filesystem", &"sync", &path]);
}
