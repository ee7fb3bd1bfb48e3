//! Packing an instance's tree as an image (`lxc publish`) and unpacking it again: the same
//! files, modes, links and (mapped back, then forward again) owners, in every compression.

use rxd_image::pack::{pack, Compression};
use rxd_image::{unpack, IdShift, Limits};
use sha2::Digest;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

const SHIFT: IdShift = IdShift {
    uid_base: 200_000,
    gid_base: 300_000,
    size: 65536,
};

/// An instance directory as the daemon keeps one: rootfs/ with shifted owners, templates/.
fn instance(dir: &Path) {
    let r = dir.join("rootfs");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/hostname.tpl"), "{{ container.name }}\n").unwrap();
    std::fs::write(r.join("etc/hostname"), "c1\n").unwrap();
    std::fs::write(r.join("usr/bin/su"), "binary").unwrap();
    std::fs::set_permissions(
        r.join("usr/bin/su"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(r.join("usr/bin/su"), r.join("usr/bin/su2")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", r.join("etc/link")).unwrap();
    let long: String = "n".repeat(200);
    std::fs::write(r.join(&long), "long name").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        r.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    if is_root() {
        for p in [
            "rootfs",
            "rootfs/etc",
            "rootfs/usr",
            "rootfs/usr/bin",
            "rootfs/usr/bin/su",
            "rootfs/etc/hostname",
            "rootfs/fifo",
            "templates",
            "templates/hostname.tpl",
        ] {
            std::os::unix::fs::chown(dir.join(p), Some(200_000), Some(300_000)).unwrap();
        }
        // chown clears setuid: set again, as an image's unpack does.
        std::fs::set_permissions(
            r.join("usr/bin/su"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::lchown(r.join("etc/link"), Some(201_000), Some(301_000)).unwrap();
        // Outside the map: packed as nobody.
        std::os::unix::fs::chown(r.join(&long), Some(5), Some(5)).unwrap();
    }
}

#[test]
fn a_packed_instance_unpacks_to_the_same_tree() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("c1");
    instance(&dir);
    let yaml = "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: test\n";
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ] {
        let file = work.path().join(format!("img{}", compression.extension()));
        let out = std::fs::File::create(&file).unwrap();
        let packed = pack(
            &dir,
            None,
            yaml,
            Some(&SHIFT),
            compression,
            out,
            &Limits::default(),
        )
        .unwrap();
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(packed.size, bytes.len() as u64);
        assert_eq!(
            packed.fingerprint,
            hex::encode(sha2::Sha256::digest(&bytes))
        );
        assert_eq!(packed.skipped_special, 1, "the FIFO");
        assert_eq!(packed.outside_map, if is_root() { 2 } else { 0 });

        let back = work.path().join(format!("back{}", compression.extension()));
        let other = IdShift {
            uid_base: 100_000,
            gid_base: 100_000,
            size: 65536,
        };
        let u = unpack(&file, &back, Some(&other), &Limits::default()).unwrap();
        assert_eq!(u.metadata.properties["os"], "test");
        let r = back.join("rootfs");
        assert_eq!(std::fs::read(r.join("etc/hostname")).unwrap(), b"c1\n");
        assert_eq!(
            std::fs::read(r.join("n".repeat(200))).unwrap(),
            b"long name"
        );
        let su = std::fs::metadata(r.join("usr/bin/su")).unwrap();
        let su2 = std::fs::metadata(r.join("usr/bin/su2")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!(su.ino(), su2.ino(), "the hard link is kept");
        assert_eq!(
            std::fs::read_link(r.join("etc/link")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert!(back.join("templates/hostname.tpl").exists());
        assert!(!r.join("fifo").exists());
        if is_root() {
            assert_eq!((su.uid(), su.gid()), (100_000, 100_000));
            let link = std::fs::symlink_metadata(r.join("etc/link")).unwrap();
            assert_eq!((link.uid(), link.gid()), (101_000, 101_000));
            let long = std::fs::metadata(r.join("n".repeat(200))).unwrap();
            assert_eq!(long.uid(), 100_000 + 65534, "nobody");
        }
    }
}

#[test]
fn packing_is_bounded() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("c1");
    instance(&dir);
    let out = std::fs::File::create(work.path().join("img.tar")).unwrap();
    let small = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = pack(&dir, None, "x", None, Compression::None, out, &small).unwrap_err();
    assert!(
        matches!(err, rxd_image::ImageError::TooManyEntries(3)),
        "{err}"
    );
}
