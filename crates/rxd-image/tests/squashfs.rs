//! Squashfs root filesystems (as image servers ship them) against the unpacker: a good one made
//! with `mksquashfs` (squashfs-tools), and hostile ones made from it by patching bytes where
//! `mksquashfs` would refuse to write something hostile. Metadata is stored uncompressed
//! (`-noI -noD …`) so that names can be patched in place.

use rxd_image::{unpack_split, IdShift, ImageError, Limits};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// A metadata tarball with a valid `metadata.yaml`.
fn meta_tarball(dir: &Path) -> PathBuf {
    let yaml = "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: test\n";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(yaml.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "metadata.yaml", yaml.as_bytes())
        .unwrap();
    let path = dir.join("meta.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    path
}

/// `mksquashfs tree out` with uncompressed metadata and data (patchable), plus `extra` args.
fn mksquashfs(tree: &Path, out: &Path, extra: &[&str]) {
    let status = Command::new("mksquashfs")
        .arg(tree)
        .arg(out)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-noI",
            "-noId",
            "-noD",
            "-noF",
            "-noX",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mksquashfs (package squashfs-tools) runs");
    assert!(status.success(), "mksquashfs failed");
}

/// Replace the only occurrence of `from` in the file by `to` (same length).
fn patch(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "{from:?} occurs once");
    bytes[at[0]..at[0] + to.len()].copy_from_slice(to);
    std::fs::write(path, bytes).unwrap();
}

fn limits() -> Limits {
    Limits {
        max_entries: 1000,
        max_total_bytes: 1 << 20,
        max_metadata_bytes: 4096,
    }
}

/// Unpack; on failure, check that nothing was left next to the destination.
fn unpack(work: &Path, rootfs: &Path, limits: &Limits) -> Result<PathBuf, ImageError> {
    let meta = meta_tarball(work);
    let parent = work.join("images");
    std::fs::create_dir_all(&parent).unwrap();
    let dest = parent.join("img");
    let shift = IdShift {
        uid_base: 100_000,
        gid_base: 100_000,
        size: 65536,
    };
    let result = unpack_split(&meta, rootfs, &dest, Some(&shift), limits);
    if result.is_err() {
        let left: Vec<_> = std::fs::read_dir(&parent).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    result.map(|_| dest)
}

fn tree(work: &Path) -> PathBuf {
    let t = work.join("tree");
    std::fs::create_dir_all(t.join("etc")).unwrap();
    std::fs::create_dir_all(t.join("bin")).unwrap();
    std::fs::write(t.join("etc/hostname"), "box\n").unwrap();
    std::fs::write(t.join("bin/su"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(t.join("bin/su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", t.join("etc/link")).unwrap();
    std::fs::hard_link(t.join("etc/hostname"), t.join("etc/hostname2")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("etc/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(t.join("etc/hostname"), Some(1000), Some(1001)).unwrap();
    }
    t
}

#[test]
fn a_squashfs_root_unpacks_like_a_tarball() {
    let work = tempfile::tempdir().unwrap();
    let t = tree(work.path());
    let sq = work.path().join("root.squashfs");
    // A device node, as images have in /dev: skipped like a tarball's.
    mksquashfs(
        &t,
        &sq,
        &["-p", "/dev d 755 0 0", "-p", "/dev/null c 666 0 0 1 3"],
    );
    let meta = meta_tarball(work.path());
    let dest = work.path().join("img");
    let shift = IdShift {
        uid_base: 100_000,
        gid_base: 100_000,
        size: 65536,
    };
    let got = unpack_split(&meta, &sq, &dest, Some(&shift), &limits()).unwrap();
    assert_eq!(got.metadata.architecture, "x86_64");
    assert_eq!(got.skipped_special, 2, "the FIFO and the device node");
    let r = dest.join("rootfs");
    assert_eq!(std::fs::read(r.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(std::fs::read(r.join("etc/hostname2")).unwrap(), b"box\n");
    assert_eq!(
        std::fs::read_link(r.join("etc/link")).unwrap(),
        Path::new("/etc/shadow")
    );
    let su = std::fs::metadata(r.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives the chown");
    assert!(!r.join("etc/fifo").exists() && !r.join("dev/null").exists());
    assert_eq!(
        std::fs::metadata(&r).unwrap().mode() & 0o7777,
        0o755,
        "the root directory's own mode"
    );
    let host = std::fs::metadata(r.join("etc/hostname")).unwrap();
    if is_root() {
        assert_eq!(
            (host.uid(), host.gid()),
            (101_000, 101_001),
            "shifted owner"
        );
        assert_eq!(su.uid(), 100_000);
    }
}

#[test]
fn hostile_squashfs_is_refused_and_leaves_nothing() {
    // A name "..": refused (backhand refuses names that are not one component).
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("zz"), "escape\n").unwrap();
    let sq = work.path().join("dotdot.squashfs");
    mksquashfs(&t, &sq, &[]);
    patch(&sq, b"zz", b"..");
    let err = unpack(work.path(), &sq, &limits()).unwrap_err();
    assert!(matches!(err, ImageError::Squashfs(_)), "{err}");
    assert!(!work.path().join("escape").exists());

    // A symlink, then a directory of the same name with a file in it: the file would be
    // written through the link. The link is made; the directory and its file are refused.
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    std::fs::create_dir_all(t.join("qq2")).unwrap();
    std::fs::write(t.join("qq2/inner"), "through\n").unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("qq1")).unwrap();
    let sq = work.path().join("through.squashfs");
    mksquashfs(&t, &sq, &[]);
    patch(&sq, b"qq2", b"qq1");
    let err = unpack(work.path(), &sq, &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Conflict { .. }
                | ImageError::Squashfs(_)
                | ImageError::ThroughNonDirectory { .. }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // More entries than allowed: refused from the superblock, before the tables are read.
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    std::fs::create_dir_all(&t).unwrap();
    for i in 0..20 {
        std::fs::write(t.join(format!("f{i}")), "x").unwrap();
    }
    let sq = work.path().join("many.squashfs");
    mksquashfs(&t, &sq, &[]);
    let few = Limits {
        max_entries: 10,
        ..limits()
    };
    let err = unpack(work.path(), &sq, &few).unwrap_err();
    assert!(matches!(err, ImageError::TooManyEntries(10)), "{err}");

    // A sparse file larger than the byte budget: refused, not written out.
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    std::fs::create_dir_all(&t).unwrap();
    let big = std::fs::File::create(t.join("sparse")).unwrap();
    big.set_len(8 << 20).unwrap();
    let sq = work.path().join("sparse.squashfs");
    mksquashfs(&t, &sq, &[]);
    let err = unpack(work.path(), &sq, &limits()).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge(_)), "{err}");

    // Nested deeper than a container's tree may be.
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    let deep: PathBuf = std::iter::repeat_n("d", 1100).collect();
    std::fs::create_dir_all(t.join(&deep)).unwrap();
    let sq = work.path().join("deep.squashfs");
    mksquashfs(&t, &sq, &[]);
    let roomy = Limits {
        max_entries: 5000,
        ..limits()
    };
    let err = unpack(work.path(), &sq, &roomy).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");

    // Truncated, and garbage after the magic.
    let work = tempfile::tempdir().unwrap();
    let t = tree(work.path());
    let sq = work.path().join("cut.squashfs");
    mksquashfs(&t, &sq, &[]);
    let bytes = std::fs::read(&sq).unwrap();
    // The superblock's `bytes_used` (mksquashfs pads the file past it).
    let used = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    std::fs::write(&sq, &bytes[..used - 16]).unwrap();
    let err = unpack(work.path(), &sq, &limits()).unwrap_err();
    assert!(matches!(err, ImageError::Squashfs(_)), "{err}");
    let junk = work.path().join("junk.squashfs");
    std::fs::write(&junk, [b"hsqs".as_slice(), &[0xff; 200]].concat()).unwrap();
    let err = unpack(work.path(), &junk, &limits()).unwrap_err();
    assert!(matches!(err, ImageError::Squashfs(_)), "{err}");
}
