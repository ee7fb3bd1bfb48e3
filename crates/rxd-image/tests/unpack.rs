//! The unpacker against good and hostile archives built here, byte by byte where the `tar`
//! crate's builder would refuse to write something hostile.

use rxd_image::{unpack, unpack_split, IdShift, ImageError, Limits};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test}: needs root; under CI=true a skip is a failure"
        );
        eprintln!("SKIP {test}: needs root (lchown to other ids)");
    }
    root
}

/// One archive entry: kind, path (raw bytes, so hostile names can be written), link target,
/// mode, uid, data.
struct E {
    kind: tar::EntryType,
    path: &'static str,
    link: &'static str,
    mode: u32,
    uid: u64,
    data: Vec<u8>,
}

fn dir(path: &'static str, mode: u32) -> E {
    E {
        kind: tar::EntryType::Directory,
        path,
        link: "",
        mode,
        uid: 0,
        data: vec![],
    }
}
fn file(path: &'static str, data: &str) -> E {
    E {
        kind: tar::EntryType::Regular,
        path,
        link: "",
        mode: 0o644,
        uid: 0,
        data: data.as_bytes().to_vec(),
    }
}
fn symlink(path: &'static str, link: &'static str) -> E {
    E {
        kind: tar::EntryType::Symlink,
        path,
        link,
        mode: 0o777,
        uid: 0,
        data: vec![],
    }
}
fn hardlink(path: &'static str, link: &'static str) -> E {
    E {
        kind: tar::EntryType::Link,
        path,
        link,
        mode: 0o644,
        uid: 0,
        data: vec![],
    }
}

const META: &str = "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: test\n";

fn good() -> Vec<E> {
    vec![
        file("metadata.yaml", META),
        dir("rootfs", 0o755),
        dir("rootfs/bin", 0o755),
    ]
}

/// Build a tar with raw header names (no validation), optionally gzip it.
fn build(entries: &[E], gzip: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        for e in entries {
            let mut h = tar::Header::new_old();
            h.set_entry_type(e.kind);
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.uid);
            h.set_size(e.data.len() as u64);
            h.set_mtime(1_700_000_000);
            let old = h.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
            h.set_cksum();
            b.append(&h, e.data.as_slice()).unwrap();
        }
        b.finish().unwrap();
    }
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&out).unwrap();
        gz.finish().unwrap()
    } else {
        out
    }
}

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("image.tar");
    std::fs::write(&p, bytes).unwrap();
    p
}

const SHIFT: IdShift = IdShift {
    uid_base: 1_000_000,
    gid_base: 2_000_000,
    size: 65536,
};

/// Unpack and expect a refusal; nothing may be left next to the destination.
fn refused(entries: Vec<E>, limits: Limits) -> ImageError {
    let dir = tempfile::tempdir().unwrap();
    let tarball = write(dir.path(), &build(&entries, false));
    let dest = dir.path().join("out");
    let err = unpack(&tarball, &dest, Some(&SHIFT), &limits).expect_err("must be refused");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("image.tar")],
        "nothing left behind after {err}"
    );
    err
}

#[test]
fn good_image_unpacks_with_modes_links_and_shifted_owners() {
    if !require_root("good_image_unpacks_with_modes_links_and_shifted_owners") {
        return;
    }
    let mut entries = good();
    entries.push(dir("rootfs/ro", 0o555));
    entries.push(file("rootfs/ro/inside", "x"));
    entries.push(E {
        mode: 0o4755,
        ..file("rootfs/bin/su", "suid")
    });
    entries.push(E {
        uid: 1000,
        ..file("rootfs/home-file", "user")
    });
    entries.push(symlink("rootfs/bin/sh", "busybox"));
    entries.push(symlink("rootfs/etc-link", "/etc"));
    entries.push(file("rootfs/bin/busybox", "BB"));
    entries.push(hardlink("rootfs/bin/bb2", "rootfs/bin/busybox"));
    entries.push(E {
        kind: tar::EntryType::Char,
        ..file("rootfs/dev-null", "")
    });
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tarball = write(dir.path(), &build(&entries, gzip));
        let dest = dir.path().join("out");
        let got = unpack(&tarball, &dest, Some(&SHIFT), &Limits::default()).unwrap();
        assert_eq!(got.metadata.properties["os"], "busybox");
        assert_eq!(got.skipped_special, 1, "device nodes are skipped");
        let r = dest.join("rootfs");
        let m = |p: &str| std::fs::symlink_metadata(r.join(p)).unwrap();
        assert_eq!(m("ro").permissions().mode() & 0o7777, 0o555);
        assert_eq!(std::fs::read_to_string(r.join("ro/inside")).unwrap(), "x");
        assert_eq!(
            m("bin/su").permissions().mode() & 0o7777,
            0o4755,
            "setuid kept"
        );
        assert_eq!(
            (m("bin/su").uid(), m("bin/su").gid()),
            (1_000_000, 2_000_000)
        );
        assert_eq!(
            (m("home-file").uid(), m("home-file").gid()),
            (1_001_000, 2_001_000)
        );
        assert_eq!(m("ro").uid(), 1_000_000);
        assert_eq!(
            std::fs::read_link(r.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::read_link(r.join("etc-link")).unwrap(),
            Path::new("/etc"),
            "kept, never followed"
        );
        assert_eq!(m("bin/bb2").ino(), m("bin/busybox").ino());
        assert!(std::fs::symlink_metadata(r.join("dev-null")).is_err());
        assert_eq!(
            rxd_image::read_metadata(&tarball, &Limits::default()).unwrap(),
            got.metadata
        );
    }
}

#[test]
fn xz_and_pax_long_names() {
    if !require_root("xz_and_pax_long_names") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let long = format!("rootfs/{}/{}", "d".repeat(120), "f".repeat(120));
    let mut raw = Vec::new();
    {
        let ids = |h: &mut tar::Header| {
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
        };
        let mut b = tar::Builder::new(&mut raw);
        let mut h = tar::Header::new_ustar();
        h.set_size(META.len() as u64);
        h.set_mode(0o644);
        ids(&mut h);
        b.append_data(&mut h, "metadata.yaml", META.as_bytes())
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        ids(&mut h);
        b.append_data(&mut h, "rootfs", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        ids(&mut h);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        b.finish().unwrap();
    }
    let mut xz = liblzma_encode(&raw);
    let tarball = dir.path().join("image.tar.xz");
    std::fs::write(&tarball, &mut xz).unwrap();
    let dest = dir.path().join("out");
    unpack(&tarball, &dest, None, &Limits::default()).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join(&long)).unwrap(), "long");
}

fn liblzma_encode(data: &[u8]) -> Vec<u8> {
    let out = std::process::Command::new("xz")
        .args(["-z", "-c", "-T1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("xz (apt-get install -y xz-utils)");
    out.stdout
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    if !require_root("hostile_archives_are_refused_and_leave_nothing") {
        return;
    }
    let with = |extra: Vec<E>| {
        let mut v = good();
        v.extend(extra);
        v
    };
    let d = Limits::default();
    let cases: Vec<(&str, Vec<E>, Limits, &str)> = vec![
        (
            "dot-dot path",
            with(vec![file("rootfs/../../evil", "x")]),
            d,
            "UnsafePath",
        ),
        (
            "absolute path",
            with(vec![file("/etc/evil", "x")]),
            d,
            "UnsafePath",
        ),
        (
            "unknown top level",
            with(vec![file("other", "x")]),
            d,
            "UnsafePath",
        ),
        (
            "symlink parent escape",
            with(vec![
                symlink("rootfs/esc", "/tmp"),
                file("rootfs/esc/evil", "x"),
            ]),
            d,
            "ThroughNonDirectory",
        ),
        (
            "file as parent",
            with(vec![file("rootfs/f", "x"), file("rootfs/f/g", "x")]),
            d,
            "ThroughNonDirectory",
        ),
        (
            "hardlink with dot-dot",
            with(vec![hardlink("rootfs/pw", "../../../etc/passwd")]),
            d,
            "EscapingLink",
        ),
        (
            "absolute hardlink",
            with(vec![hardlink("rootfs/pw", "/etc/passwd")]),
            d,
            "EscapingLink",
        ),
        (
            "hardlink to a symlink",
            with(vec![
                symlink("rootfs/s", "/etc/passwd"),
                hardlink("rootfs/pw", "rootfs/s"),
            ]),
            d,
            "EscapingLink",
        ),
        (
            "hardlink through a symlink",
            with(vec![
                symlink("rootfs/s", "/etc"),
                hardlink("rootfs/pw", "rootfs/s/passwd"),
            ]),
            d,
            "EscapingLink",
        ),
        (
            "hardlink to a missing file",
            with(vec![hardlink("rootfs/pw", "rootfs/nope")]),
            d,
            "EscapingLink",
        ),
        (
            "directory replaced by a symlink",
            with(vec![symlink("rootfs/bin", "/usr/bin")]),
            d,
            "Conflict",
        ),
        (
            "id outside the map",
            with(vec![E {
                uid: 70_000,
                ..file("rootfs/x", "x")
            }]),
            d,
            "IdOutOfMap",
        ),
        (
            "symlinked rootfs",
            vec![file("metadata.yaml", META), symlink("rootfs", "/")],
            d,
            "LinkedTopLevel",
        ),
        (
            "symlinked metadata.yaml",
            vec![
                symlink("metadata.yaml", "/etc/passwd"),
                dir("rootfs", 0o755),
            ],
            d,
            "LinkedTopLevel",
        ),
        (
            "hardlinked metadata.yaml",
            vec![
                dir("rootfs", 0o755),
                file("rootfs/m", META),
                hardlink("metadata.yaml", "rootfs/m"),
            ],
            d,
            "LinkedTopLevel",
        ),
        (
            "missing metadata",
            vec![dir("rootfs", 0o755)],
            d,
            "MissingMetadata",
        ),
        (
            "missing rootfs",
            vec![file("metadata.yaml", META)],
            d,
            "MissingRootfs",
        ),
        (
            "bad metadata",
            vec![
                file("metadata.yaml", "architecture: [1, 2"),
                dir("rootfs", 0o755),
            ],
            d,
            "BadMetadata",
        ),
        (
            "oversized metadata",
            good(),
            Limits {
                max_metadata_bytes: 10,
                ..d
            },
            "MetadataTooLarge",
        ),
        (
            "too many entries",
            with(vec![file("rootfs/a", "x"), file("rootfs/b", "x")]),
            Limits {
                max_entries: 4,
                ..d
            },
            "TooManyEntries",
        ),
        (
            "too many bytes",
            with(vec![file("rootfs/big", &"x".repeat(5000))]),
            Limits {
                max_total_bytes: 4096,
                ..d
            },
            "TooLarge",
        ),
    ];
    for (what, entries, limits, kind) in cases {
        let err = refused(entries, limits);
        assert!(
            format!("{err:?}").starts_with(kind),
            "{what}: got {err:?}, want {kind}"
        );
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn yaml_alias_bomb_is_refused_quickly() {
    if !require_root("yaml_alias_bomb_is_refused_quickly") {
        return;
    }
    let mut bomb = String::from("architecture: x86_64\ncreation_date: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    bomb.push_str("properties:\n  os: *i\n");
    let leaked: &'static str = Box::leak(bomb.into_boxed_str());
    let start = std::time::Instant::now();
    let err = refused(
        vec![file("metadata.yaml", leaked), dir("rootfs", 0o755)],
        Limits::default(),
    );
    assert!(matches!(err, ImageError::BadMetadata(_)), "{err:?}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "bounded work"
    );
}

#[test]
fn existing_destination_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = write(dir.path(), &build(&good(), false));
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), "k").unwrap();
    assert!(unpack(&tarball, &dest, None, &Limits::default()).is_err());
    assert_eq!(std::fs::read_to_string(dest.join("keep")).unwrap(), "k");
}

/// Unpack a split image (metadata tarball, root filesystem tarball) built from `meta` and
/// `rootfs`; on a refusal nothing but the two inputs is left.
fn split(meta: Vec<E>, rootfs: Vec<E>) -> Result<(tempfile::TempDir, PathBuf), ImageError> {
    let dir = tempfile::tempdir().unwrap();
    let (m, r) = (
        dir.path().join("meta.tar"),
        dir.path().join("rootfs.tar.gz"),
    );
    std::fs::write(&m, build(&meta, false)).unwrap();
    std::fs::write(&r, build(&rootfs, true)).unwrap();
    let dest = dir.path().join("out");
    match unpack_split(&m, &r, &dest, Some(&SHIFT), &Limits::default()) {
        Ok(_) => Ok((dir, dest)),
        Err(e) => {
            let mut left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, ["meta.tar", "rootfs.tar.gz"], "left behind after {e}");
            Err(e)
        }
    }
}

#[test]
fn split_images_unpack_as_unified_ones_under_the_same_rules() {
    if !require_root("split_images_unpack_as_unified_ones_under_the_same_rules") {
        return;
    }
    let (_dir, dest) = split(
        vec![file("metadata.yaml", META), dir("templates", 0o755)],
        vec![
            dir(".", 0o755),
            dir("bin", 0o755),
            file("bin/sh", "#!\n"),
            hardlink("bin/ash", "bin/sh"),
            symlink("bin/busybox", "/bin/sh"),
        ],
    )
    .unwrap();
    let sh = std::fs::metadata(dest.join("rootfs/bin/sh")).unwrap();
    assert_eq!((sh.uid(), sh.nlink()), (SHIFT.uid_base, 2));
    assert_eq!(
        std::fs::metadata(dest.join("rootfs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert!(dest.join("metadata.yaml").is_file() && dest.join("templates").is_dir());

    // The metadata tarball may not carry root filesystem entries.
    let e = split(
        vec![file("metadata.yaml", META), dir("rootfs", 0o755)],
        vec![dir("bin", 0o755)],
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::UnsafePath { .. }), "{e}");
    // The root filesystem tarball's paths and links stay inside it.
    for rootfs in [
        vec![file("../evil", "x")],
        vec![file("/etc/evil", "x")],
        vec![file("bin", "x"), hardlink("x", "../metadata.yaml")],
    ] {
        let e = split(vec![file("metadata.yaml", META)], rootfs).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::UnsafePath { .. } | ImageError::EscapingLink { .. }
            ),
            "{e}"
        );
    }
    // Without metadata, or without a root filesystem.
    let e = split(vec![dir("templates", 0o755)], vec![dir("bin", 0o755)]).unwrap_err();
    assert!(matches!(e, ImageError::MissingMetadata), "{e}");
}
