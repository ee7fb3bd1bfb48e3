//! The dir driver (root: owners other than the test's are written and checked): a pool at its
//! default place and one bind-mounted from a directory elsewhere; copies keep owners, modes,
//! set-id bits, hard links and symlinks.

mod common;

use common::*;
use rxd_storage::{prepare_config, DriverKind, Pool, StorageError, VolumeType};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn dir_pool_copies_keep_owners_modes_and_links() {
    let sb = Sandbox::new("dir_copy");
    let state = sb.state();
    let config = prepare_config(DriverKind::Dir, "d", &state, &BTreeMap::new()).unwrap();
    let mp = state.join("storage-pools/d");
    assert_eq!(config, cfg(&[("source", mp.to_str().unwrap())]));
    let pool = Pool::create(&state, "d", DriverKind::Dir, config).unwrap();
    assert_eq!(pool.mount_point(), mp);
    assert_eq!(mode(&mp), 0o711);
    for (dir, m) in rxd_storage::LAYOUT {
        assert_eq!(mode(&mp.join(dir)), m, "{dir}");
    }
    // Nothing is mounted for a pool at its own mount point.
    assert!(!pool.mount().unwrap());
    assert!(mounted_under(sb.path()).is_empty());
    assert!(pool.resources().unwrap().space.total > 0);

    // A container's tree with shifted owners, a setuid file, a hard link and a symlink.
    let c1 = pool.volume_path(VolumeType::Container, "c1").unwrap();
    pool.create_volume(&c1, 0o100).unwrap();
    assert_eq!(mode(&c1), 0o100);
    let rootfs = c1.join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
    std::os::unix::fs::chown(&rootfs, Some(1_000_000), Some(1_000_000)).unwrap();
    let su = rootfs.join("usr/bin/su");
    std::fs::write(&su, b"#!not really\n").unwrap();
    std::os::unix::fs::chown(&su, Some(1_000_000), Some(1_000_042)).unwrap();
    std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(&su, rootfs.join("usr/bin/su-link")).unwrap();
    std::os::unix::fs::symlink("usr/bin/su", rootfs.join("su")).unwrap();
    std::os::unix::fs::lchown(rootfs.join("su"), Some(1_000_007), Some(1_000_008)).unwrap();
    let private = rootfs.join("root");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&private, Some(1_000_000), Some(1_000_000)).unwrap();

    let snap = pool
        .snapshot_path(VolumeType::Container, "c1", "snap0")
        .unwrap();
    pool.snapshot_volume(&c1, &snap, true).unwrap();
    assert_eq!(mode(snap.parent().unwrap()), 0o700);
    assert_eq!(mode(&snap), 0o100, "the volume root keeps its mode");
    let copied = snap.join("rootfs");
    assert_eq!(owner(&copied), (1_000_000, 1_000_000));
    assert_eq!(owner(&copied.join("usr/bin/su")), (1_000_000, 1_000_042));
    assert_eq!(mode(&copied.join("usr/bin/su")), 0o4755);
    assert_eq!(
        std::fs::read(copied.join("usr/bin/su")).unwrap(),
        b"#!not really\n"
    );
    let a = std::fs::metadata(copied.join("usr/bin/su")).unwrap();
    let b = std::fs::metadata(copied.join("usr/bin/su-link")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "the hard link is kept");
    assert_ne!(
        a.ino(),
        std::fs::metadata(&su).unwrap().ino(),
        "a copy, not a link"
    );
    assert_eq!(
        std::fs::read_link(copied.join("su")).unwrap(),
        Path::new("usr/bin/su")
    );
    assert_eq!(owner(&copied.join("su")), (1_000_007, 1_000_008));
    assert_eq!(mode(&copied.join("root")), 0o700);
    // dir snapshots are plain directories: `readonly` and `set_readonly` change nothing.
    pool.set_readonly(&snap, true).unwrap();
    std::fs::write(snap.join("rootfs/new"), "x").unwrap();
    // A copy onto an existing volume is refused and leaves it alone.
    let err = pool.snapshot_volume(&c1, &snap, false).unwrap_err();
    assert!(matches!(err, StorageError::VolumeExists { .. }), "{err}");
    assert!(snap.join("rootfs/new").exists());

    // No quotas on dir.
    assert_eq!(
        pool.set_quota(&c1, Some(1 << 30)).unwrap_err().to_string(),
        "Quotas aren't supported by the dir driver"
    );
    assert_eq!(pool.usage(&c1).unwrap(), None);

    // Renames stay within the layout.
    let c2 = pool.volume_path(VolumeType::Container, "c2").unwrap();
    pool.rename_volume(&c1, &c2).unwrap();
    assert!(c2.join("rootfs/usr/bin/su").exists() && !c1.exists());
    assert!(pool.rename_volume(&c2, &sb.path().join("out")).is_err());

    // The pool refuses deletion while volumes are left; a snapshot counts.
    pool.delete_volume(&c2).unwrap();
    let err = pool.clone().delete().unwrap_err();
    assert!(err.to_string().contains("containers-snapshots/c1"), "{err}");
    pool.delete_volume(&snap).unwrap();
    assert!(!snap.parent().unwrap().exists());
    pool.delete().unwrap();
    assert!(!mp.exists());
    assert!(state.join("storage-pools").is_dir());
}

#[test]
fn dir_pool_on_an_external_directory_is_bind_mounted() {
    let sb = Sandbox::new("dir_bind");
    let state = sb.state();
    let ext = sb.path().join("external");

    // The source must exist, be a directory and be empty, and not be in the state dir.
    let create = |name: &str, source: &Path| {
        let config = prepare_config(
            DriverKind::Dir,
            name,
            &state,
            &cfg(&[("source", source.to_str().unwrap())]),
        )?;
        Pool::create(&state, name, DriverKind::Dir, config)
    };
    let e = create("x", &ext).unwrap_err().to_string();
    assert!(e.contains("doesn't exist"), "{e}");
    std::fs::create_dir(&ext).unwrap();
    std::fs::write(ext.join("f"), "").unwrap();
    let e = create("x", &ext).unwrap_err().to_string();
    assert!(e.contains("isn't empty"), "{e}");
    std::fs::remove_file(ext.join("f")).unwrap();
    let e = create("x", &state.join("inside")).unwrap_err().to_string();
    assert!(e.contains("inside the state directory"), "{e}");
    assert!(!state.join("storage-pools/x").exists());

    let pool = create("ext", &ext).unwrap();
    let mp = pool.mount_point().to_owned();
    assert!(pool.is_mounted().unwrap());
    assert!(mounted_under(sb.path()).contains(&mp));
    assert!(ext.join("custom").is_dir(), "the layout is in the source");
    assert!(!pool.mount().unwrap());

    let v = pool.volume_path(VolumeType::Custom, "v").unwrap();
    pool.create_volume(&v, 0o711).unwrap();
    std::fs::write(v.join("f"), "data").unwrap();
    assert_eq!(std::fs::read(ext.join("custom/v/f")).unwrap(), b"data");

    assert!(pool.unmount().unwrap());
    assert!(!pool.is_mounted().unwrap());
    assert!(
        !mp.join("custom").exists(),
        "unmounted: the mount point is empty"
    );
    assert!(pool.mount().unwrap());
    assert_eq!(std::fs::read(v.join("f")).unwrap(), b"data");

    pool.delete_volume(&v).unwrap();
    pool.delete().unwrap();
    assert!(!mp.exists());
    assert!(mounted_under(sb.path()).is_empty());
    // The source stays, emptied of the pool's directories.
    assert_eq!(std::fs::read_dir(&ext).unwrap().count(), 0);
}
