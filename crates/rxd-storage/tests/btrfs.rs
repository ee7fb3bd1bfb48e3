//! The btrfs driver on real btrfs filesystems (root): loop pools made by the crate under test,
//! and a pool on a directory of a btrfs filesystem the test mounts itself. Each test works in
//! its own sandbox, which unmounts and detaches whatever is left when it is dropped, pass or
//! fail; the tests themselves check that deleting a pool leaves nothing behind.

mod common;

use common::*;
use rxd_storage::{
    is_btrfs, is_subvolume, prepare_config, DriverKind, Pool, StorageError, VolumeType,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 1 GiB btrfs loop pool named `name` in `sb`'s state dir.
fn loop_pool(sb: &Sandbox, name: &str) -> Pool {
    let state = sb.state();
    let config =
        prepare_config(DriverKind::Btrfs, name, &state, &cfg(&[("size", "1GiB")])).unwrap();
    Pool::create(&state, name, DriverKind::Btrfs, config).unwrap()
}

fn errno(e: &std::io::Error) -> Option<rustix::io::Errno> {
    e.raw_os_error().map(rustix::io::Errno::from_raw_os_error)
}

/// After a pool's deletion: no mount at its mount point or below the sandbox, no loop device
/// on its file, neither the file nor the mount point left.
fn assert_gone(sb: &Sandbox, mount_point: &Path, loop_file: Option<&Path>) {
    assert!(
        !mounts()
            .iter()
            .any(|(mp, _, _)| mp.starts_with(mount_point)),
        "{} still mounted",
        mount_point.display()
    );
    assert!(
        mounted_under(sb.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(sb.path())
    );
    assert!(!mount_point.exists(), "{} left", mount_point.display());
    if let Some(file) = loop_file {
        assert_no_loop_for(file);
        assert!(!file.exists(), "{} left", file.display());
    }
}

#[test]
fn loop_pool_is_made_laid_out_and_deleted_without_leftovers() {
    let sb = Sandbox::new("loop_pool_lifecycle");
    let state = sb.state();
    let pool = loop_pool(&sb, "p1");
    let image = state.join("disks/p1.img");
    let mp = state.join("storage-pools/p1");

    // What LXD 5.0 records for `lxc storage create p1 btrfs size=1GiB`.
    assert_eq!(
        pool.config(),
        &cfg(&[("size", "1GiB"), ("source", image.to_str().unwrap())])
    );
    assert_eq!(pool.mount_point(), mp);
    assert_eq!(pool.loop_file(), Some(image.as_path()));

    // A sparse file, formatted with the pool's name as label, mounted at the mount point.
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 256 * MIB,
        "the loop file is not sparse"
    );
    assert_eq!(mode(&image), 0o600);
    assert_eq!(tool("btrfs", &[&"filesystem", &"label", &mp]).trim(), "p1");
    let (_, fstype, source) = mounts()
        .into_iter()
        .rfind(|(p, _, _)| *p == mp)
        .expect("pool not mounted");
    assert_eq!(fstype, "btrfs");
    assert!(source.starts_with("/dev/loop"), "{source}");
    assert_eq!(
        loops_under(&image).len(),
        1,
        "one loop device for the pool: {:?}",
        loops_under(&image)
    );
    let loop_name = source.trim_start_matches("/dev/");
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{loop_name}/loop/autoclear"))
            .unwrap()
            .trim(),
        "1",
        "the loop device must free itself at unmount"
    );
    assert!(is_btrfs(&mp).unwrap());
    assert!(!is_btrfs(sb.path()).unwrap() || is_btrfs(&state).unwrap());

    // The layout and its modes.
    assert_eq!(mode(&mp), 0o711);
    assert_eq!(mode(&state.join("storage-pools")), 0o711);
    for (dir, m) in [
        ("images", 0o700),
        ("containers", 0o711),
        ("containers-snapshots", 0o700),
        ("custom", 0o700),
        ("custom-snapshots", 0o700),
    ] {
        assert_eq!(mode(&mp.join(dir)), m, "{dir}");
        assert!(
            !is_subvolume(&mp.join(dir)).unwrap(),
            "{dir} is a plain directory"
        );
    }

    // Mounting again does nothing; the space is the loop file's.
    assert!(!pool.mount().unwrap());
    let res = pool.resources().unwrap();
    assert!(
        res.space.total > 900 * MIB && res.space.total <= 1 << 30,
        "{res:?}"
    );
    assert!(
        res.space.used > 0 && res.space.used < res.space.total,
        "{res:?}"
    );
    assert_eq!(res.inodes.total, 0, "btrfs reports no inode count");

    // A volume keeps the pool from being deleted, and is named in the refusal.
    let v = pool.volume_path(VolumeType::Custom, "data").unwrap();
    pool.create_volume(&v, 0o711).unwrap();
    let err = pool.clone().delete().unwrap_err();
    assert!(
        matches!(&err, StorageError::InUse { volumes, .. } if volumes == &["custom/data".to_owned()]),
        "{err}"
    );
    assert!(err.to_string().contains("custom/data"), "{err}");
    pool.delete_volume(&v).unwrap();

    pool.delete().unwrap();
    assert_gone(&sb, &mp, Some(&image));
}

#[test]
fn volumes_snapshots_readonly_and_nested_subvolumes() {
    let sb = Sandbox::new("volumes");
    let pool = loop_pool(&sb, "vols");

    // An image volume, filled then made read-only, as an image is cached once per pool.
    let img = pool.volume_path(VolumeType::Image, "f00d").unwrap();
    pool.create_volume(&img, 0o700).unwrap();
    assert!(is_subvolume(&img).unwrap());
    assert_eq!(mode(&img), 0o700);
    std::fs::create_dir(img.join("rootfs")).unwrap();
    std::fs::write(img.join("rootfs/hostname"), "image\n").unwrap();
    pool.set_readonly(&img, true).unwrap();
    assert_eq!(
        tool("btrfs", &[&"property", &"get", &"-ts", &img, &"ro"]).trim(),
        "ro=true"
    );
    let e = std::fs::write(img.join("rootfs/new"), "x").unwrap_err();
    assert_eq!(errno(&e), Some(rustix::io::Errno::ROFS), "{e}");

    // An instance from it: a writable snapshot whose parent is the image.
    let c1 = pool.volume_path(VolumeType::Container, "c1").unwrap();
    pool.snapshot_volume(&img, &c1, false).unwrap();
    assert!(is_subvolume(&c1).unwrap());
    assert_eq!(
        subvolume_field(&c1, "Parent UUID"),
        subvolume_field(&img, "UUID")
    );
    assert_eq!(
        std::fs::read_to_string(c1.join("rootfs/hostname")).unwrap(),
        "image\n"
    );
    std::fs::write(c1.join("rootfs/hostname"), "c1\n").unwrap();

    // A read-only snapshot of the instance, in a private snapshot directory.
    let snap = pool
        .snapshot_path(VolumeType::Container, "c1", "snap0")
        .unwrap();
    pool.snapshot_volume(&c1, &snap, true).unwrap();
    assert_eq!(mode(snap.parent().unwrap()), 0o700);
    assert_eq!(
        std::fs::read_to_string(snap.join("rootfs/hostname")).unwrap(),
        "c1\n"
    );
    let e = std::fs::File::create(snap.join("rootfs/x")).unwrap_err();
    assert_eq!(errno(&e), Some(rustix::io::Errno::ROFS), "{e}");
    assert!(subvolume_field(&snap, "Flags").contains("readonly"));
    // Writable on demand, and back.
    pool.set_readonly(&snap, false).unwrap();
    std::fs::write(snap.join("rootfs/x"), "x").unwrap();
    pool.set_readonly(&snap, true).unwrap();
    assert!(std::fs::write(snap.join("rootfs/y"), "y").is_err());
    // A writable snapshot is writable.
    let rw = pool
        .snapshot_path(VolumeType::Container, "c1", "snap1")
        .unwrap();
    pool.snapshot_volume(&c1, &rw, false).unwrap();
    std::fs::write(rw.join("rootfs/written"), "ok").unwrap();
    // Snapshotting onto an existing volume is refused (btrfs itself would put the snapshot
    // inside it), and so is creating one; nothing is replaced or added.
    let err = pool.snapshot_volume(&c1, &rw, false).unwrap_err();
    assert!(matches!(err, StorageError::VolumeExists { .. }), "{err}");
    let err = pool.create_volume(&rw, 0o700).unwrap_err();
    assert!(matches!(err, StorageError::VolumeExists { .. }), "{err}");
    assert!(rw.join("rootfs/written").exists());
    assert!(!rw.join("c1").exists());

    // The container made subvolumes of its own: machines/ (read-only, with one inside it), a
    // deeper one under a plain directory, and one inside that.
    let machines = c1.join("rootfs/var/lib/machines");
    std::fs::create_dir_all(machines.parent().unwrap()).unwrap();
    tool("btrfs", &[&"subvolume", &"create", &machines]);
    tool("btrfs", &[&"subvolume", &"create", &machines.join("inner")]);
    std::fs::write(machines.join("inner/file"), "data").unwrap();
    tool(
        "btrfs",
        &[&"property", &"set", &"-ts", &machines, &"ro", &"true"],
    );
    let deep = c1.join("rootfs/srv/a b/deep");
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    tool("btrfs", &[&"subvolume", &"create", &deep]);
    tool("btrfs", &[&"subvolume", &"create", &deep.join("deeper")]);
    // The volume itself read-only too: every level must be made writable to empty it.
    pool.set_readonly(&c1, true).unwrap();
    pool.delete_volume(&c1).unwrap();
    assert!(!c1.exists());
    let listed = tool("btrfs", &[&"subvolume", &"list", &pool.mount_point()]);
    assert!(
        !listed.contains("containers/c1"),
        "subvolumes of c1 left:\n{listed}"
    );
    // Its snapshots are separate volumes and stay until deleted; the last one takes the
    // snapshot directory with it.
    assert!(snap.exists());
    pool.delete_volume(&snap).unwrap();
    assert!(snap.parent().unwrap().exists());
    pool.delete_volume(&rw).unwrap();
    assert!(!snap.parent().unwrap().exists());

    // A missing volume is already deleted; a plain directory at a volume path is removed.
    pool.delete_volume(&c1).unwrap();
    let plain = pool.volume_path(VolumeType::Custom, "plain").unwrap();
    std::fs::create_dir_all(plain.join("a/b")).unwrap();
    std::fs::write(plain.join("a/b/f"), "f").unwrap();
    pool.delete_volume(&plain).unwrap();
    assert!(!plain.exists());

    // Paths outside the layout are refused before anything is done.
    for bad in [
        pool.mount_point().join("containers"),
        pool.mount_point().join("images/f00d/rootfs/etc"),
        PathBuf::from("/"),
        sb.path().to_path_buf(),
    ] {
        let e = pool.delete_volume(&bad).unwrap_err();
        assert!(matches!(e, StorageError::NotAVolume { .. }), "{e}");
    }
    assert!(img.join("rootfs/hostname").exists());

    // An image volume goes even though read-only.
    pool.delete_volume(&img).unwrap();
    assert!(!img.exists());

    let (mp, file) = (
        pool.mount_point().to_owned(),
        pool.loop_file().unwrap().to_owned(),
    );
    pool.delete().unwrap();
    assert_gone(&sb, &mp, Some(&file));
}

#[test]
fn a_received_volume_made_writable_loses_its_received_uuid() {
    let sb = Sandbox::new("received");
    let pool = loop_pool(&sb, "recv");
    let img = pool.volume_path(VolumeType::Image, "beef").unwrap();
    pool.create_volume(&img, 0o700).unwrap();
    std::fs::write(img.join("f"), "sent\n").unwrap();
    pool.set_readonly(&img, true).unwrap();
    let stream = sb.path().join("stream");
    pool.send_volume(&img, None, std::fs::File::create(&stream).unwrap())
        .unwrap();
    // Received into a fresh directory of the layout (as an optimized import does).
    let dir = pool.volume_path(VolumeType::Container, "in").unwrap();
    std::fs::create_dir(&dir).unwrap();
    let made = pool
        .receive_volume(&dir, &mut std::fs::File::open(&stream).unwrap())
        .unwrap();
    assert_ne!(subvolume_field(&made, "Received UUID"), "-");
    assert!(std::fs::write(made.join("g"), "x").is_err(), "read-only");
    pool.set_readonly(&made, false).unwrap();
    assert_eq!(subvolume_field(&made, "Received UUID"), "-");
    std::fs::write(made.join("g"), "x").unwrap();
    assert_eq!(std::fs::read_to_string(made.join("f")).unwrap(), "sent\n");
    pool.set_readonly(&made, true).unwrap();
    assert_eq!(
        tool("btrfs", &[&"property", &"get", &"-ts", &made, &"ro"]).trim(),
        "ro=true"
    );
}

#[test]
fn quota_limits_writes_and_the_pool_stays_usable() {
    let sb = Sandbox::new("quota");
    let pool = loop_pool(&sb, "q");
    let mp = pool.mount_point().to_owned();
    let v = pool.volume_path(VolumeType::Custom, "limited").unwrap();
    pool.create_volume(&v, 0o711).unwrap();

    // No size asked yet: quotas stay off (they slow snapshot deletion), and usage is unknown.
    let (on, stderr) = tool_status("btrfs", &[&"qgroup", &"show", &mp]);
    assert!(!on && stderr.contains("quotas not enabled"), "{stderr}");
    assert_eq!(pool.usage(&v).unwrap(), None);
    pool.set_quota(&v, None).unwrap();
    let (on, _) = tool_status("btrfs", &[&"qgroup", &"show", &mp]);
    assert!(!on, "clearing a limit must not turn quotas on");

    // 50 MiB on the volume: the limit is the qgroup's referenced limit.
    pool.set_quota(&v, Some(50 * MIB)).unwrap();
    let shown = tool("btrfs", &[&"qgroup", &"show", &"-r", &"--raw", &mp]);
    let id = tool("btrfs", &[&"inspect-internal", &"rootid", &v]);
    let row = shown
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("0/{}", id.trim())))
        .unwrap_or_else(|| panic!("no qgroup for the volume:\n{shown}"));
    assert_eq!(row.split_whitespace().nth(3), Some("52428800"), "{row}");

    // Writing 80 MiB stops at the limit.
    let (written, err) = write_mib(&v.join("big"), 80);
    let err = err.expect("80 MiB were written into a 50 MiB volume");
    assert!(
        matches!(
            errno(&err),
            Some(rustix::io::Errno::DQUOT | rustix::io::Errno::NOSPC)
        ),
        "unexpected error {err}"
    );
    assert!(written <= 50, "{written} MiB written");

    // The pool stays usable: the file can be removed and the space used again...
    std::fs::remove_file(v.join("big")).unwrap();
    btrfs_sync(&v);
    // Freed extents leave the qgroup's count when the kernel's cleaner has run after the
    // commit: under load that can take a few more commits.
    let mut tries = 0;
    let (written, err) = loop {
        let (written, err) = write_mib(&v.join("ten"), 10);
        tries += 1;
        if err.is_none() || tries == 60 {
            break (written, err);
        }
        // Not even made, when the quota refused its creation.
        let _ = std::fs::remove_file(v.join("ten"));
        btrfs_sync(&v);
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(
        err.is_none() && written == 10,
        "{err:?} after {tries} tries"
    );
    btrfs_sync(&v);
    let used = pool.usage(&v).unwrap().expect("usage with quotas on");
    assert!(
        (10 * MIB..50 * MIB).contains(&used),
        "usage {used} for 10 MiB written"
    );
    // ...other volumes are not limited...
    let other = pool.volume_path(VolumeType::Custom, "other").unwrap();
    pool.create_volume(&other, 0o711).unwrap();
    let (written, err) = write_mib(&other.join("f"), 80);
    assert!(err.is_none() && written == 80, "{err:?}");
    // ...and lifting the limit lets the volume grow.
    pool.set_quota(&v, None).unwrap();
    let (written, err) = write_mib(&v.join("big"), 80);
    assert!(err.is_none() && written == 80, "{err:?}");

    // A snapshot starts with its source's limit (btrfs copies it), as LXD's do.
    pool.set_quota(&v, Some(200 * MIB)).unwrap();
    let snap = pool
        .snapshot_path(VolumeType::Custom, "limited", "s0")
        .unwrap();
    pool.snapshot_volume(&v, &snap, true).unwrap();
    let snap_id = tool("btrfs", &[&"inspect-internal", &"rootid", &snap]);
    let shown = tool("btrfs", &[&"qgroup", &"show", &"-r", &"--raw", &mp]);
    let row = shown
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("0/{}", snap_id.trim())))
        .unwrap_or_else(|| panic!("no qgroup for the snapshot:\n{shown}"));
    assert_eq!(
        row.split_whitespace().nth(3),
        Some(&*(200 * MIB).to_string())
    );

    for p in [&snap, &v, &other] {
        pool.delete_volume(p).unwrap();
    }
    let file = pool.loop_file().unwrap().to_owned();
    pool.delete().unwrap();
    assert_gone(&sb, &mp, Some(&file));
}

#[test]
fn mount_is_idempotent_and_unmount_frees_the_loop_device() {
    let sb = Sandbox::new("remount");
    let state = sb.state();
    let pool = loop_pool(&sb, "m");
    let mp = pool.mount_point().to_owned();
    let image = pool.loop_file().unwrap().to_owned();
    let v = pool.volume_path(VolumeType::Custom, "keep").unwrap();
    pool.create_volume(&v, 0o711).unwrap();
    std::fs::write(v.join("file"), "kept").unwrap();

    assert!(pool.is_mounted().unwrap());
    assert!(!pool.mount().unwrap(), "already mounted");
    assert!(pool.unmount().unwrap());
    assert!(!pool.is_mounted().unwrap());
    assert!(!mounts().iter().any(|(p, _, _)| *p == mp));
    assert_no_loop_for(&image);
    assert!(!pool.unmount().unwrap(), "nothing left to unmount");
    assert!(
        pool.resources().is_err(),
        "an unmounted pool has no resources"
    );

    // As at daemon start, from the config the store kept.
    let reopened = Pool::open(&state, "m", DriverKind::Btrfs, pool.config().clone()).unwrap();
    assert!(reopened.mount().unwrap());
    assert!(!reopened.mount().unwrap());
    assert!(!pool.mount().unwrap());
    assert_eq!(loops_under(&image).len(), 1, "{:?}", loops_under(&image));
    assert_eq!(std::fs::read_to_string(v.join("file")).unwrap(), "kept");

    // Something else mounted at the mount point is not taken for the pool.
    reopened.unmount().unwrap();
    assert_no_loop_for(&image);
    tool("mount", &[&"-t", &"tmpfs", &"tmpfs", &mp]);
    let err = reopened.mount().unwrap_err();
    assert!(
        matches!(err, StorageError::MountedElsewhere { .. }),
        "{err}"
    );
    tool("umount", &[&mp]);
    assert!(reopened.mount().unwrap());

    reopened.delete_volume(&v).unwrap();
    reopened.delete().unwrap();
    assert_gone(&sb, &mp, Some(&image));
}

#[test]
fn pool_on_a_directory_of_an_existing_btrfs_filesystem() {
    let sb = Sandbox::new("existing_btrfs");
    let state = sb.state();
    // The administrator's btrfs filesystem, mounted by the test itself.
    let disk = sb.path().join("admin.img");
    let host = sb.path().join("admin");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    tool("mkfs.btrfs", &[&"-q", &disk]);
    std::fs::create_dir(&host).unwrap();
    tool("mount", &[&"-o", &"loop", &disk, &host]);
    assert!(is_btrfs(&host).unwrap());

    // Refusals: a source that is not on btrfs, a non-empty one, one inside the state dir.
    let not_btrfs = sb.path().join("plain");
    std::fs::create_dir(&not_btrfs).unwrap();
    let refused = |source: &Path, expected: &str| {
        let config = prepare_config(
            DriverKind::Btrfs,
            "ext",
            &state,
            &cfg(&[("source", source.to_str().unwrap())]),
        )
        .unwrap();
        let e = Pool::create(&state, "ext", DriverKind::Btrfs, config)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{source:?}: {e}");
        assert!(
            !state.join("storage-pools/ext").exists(),
            "{source:?}: mount point left"
        );
    };
    if !is_btrfs(&not_btrfs).unwrap() {
        refused(&not_btrfs, "does not reside on a btrfs filesystem");
    }
    let full = host.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), "").unwrap();
    refused(&full, "isn't empty");
    refused(&state.join("elsewhere"), "inside the state directory");

    // A missing directory becomes a subvolume; the pool is bind-mounted from it.
    let source = host.join("pools/ext");
    std::fs::create_dir(host.join("pools")).unwrap();
    let config = prepare_config(
        DriverKind::Btrfs,
        "ext",
        &state,
        &cfg(&[("source", source.to_str().unwrap()), ("size", "5GiB")]),
    )
    .unwrap();
    assert_eq!(
        config,
        cfg(&[
            ("source", source.to_str().unwrap()),
            ("volatile.initial_source", source.to_str().unwrap()),
        ]),
        "size is dropped for a directory source, as LXD drops it"
    );
    let pool = Pool::create(&state, "ext", DriverKind::Btrfs, config).unwrap();
    let mp = pool.mount_point().to_owned();
    assert!(is_subvolume(&source).unwrap());
    assert!(pool.loop_file().is_none());
    assert!(pool.is_mounted().unwrap());
    assert!(!pool.mount().unwrap());
    assert!(
        source.join("containers").is_dir(),
        "the layout is in the source"
    );
    assert_eq!(mode(&mp.join("containers-snapshots")), 0o700);

    let c = pool.volume_path(VolumeType::Container, "c").unwrap();
    pool.create_volume(&c, 0o711).unwrap();
    assert!(is_subvolume(&source.join("containers/c")).unwrap());
    let s = pool.snapshot_path(VolumeType::Container, "c", "s").unwrap();
    pool.snapshot_volume(&c, &s, true).unwrap();
    assert!(std::fs::write(s.join("x"), "x").is_err());
    pool.set_quota(&c, Some(10 * MIB)).unwrap();
    let (_, err) = write_mib(&c.join("f"), 20);
    assert!(err.is_some(), "the quota holds on a bind-mounted pool too");
    assert!(pool.resources().unwrap().space.total > 900 * MIB);

    // Unmount and mount again, from the stored config.
    assert!(pool.unmount().unwrap());
    assert!(!pool.is_mounted().unwrap());
    assert!(pool.mount().unwrap());

    pool.delete_volume(&s).unwrap();
    pool.delete_volume(&c).unwrap();
    pool.delete().unwrap();
    // The source stays, emptied of the pool's directories, as LXD leaves it.
    assert!(source.is_dir());
    assert_eq!(std::fs::read_dir(&source).unwrap().count(), 0);
    assert!(!mp.exists());
    assert!(!mounts().iter().any(|(p, _, _)| p.starts_with(&mp)));

    // An existing empty directory is used as it is.
    let empty = host.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let config = prepare_config(
        DriverKind::Btrfs,
        "ext2",
        &state,
        &cfg(&[("source", empty.to_str().unwrap())]),
    )
    .unwrap();
    let pool = Pool::create(&state, "ext2", DriverKind::Btrfs, config).unwrap();
    assert!(!is_subvolume(&empty).unwrap());
    let v = pool.volume_path(VolumeType::Custom, "v").unwrap();
    pool.create_volume(&v, 0o711).unwrap();
    assert!(is_subvolume(&empty.join("custom/v")).unwrap());
    pool.delete_volume(&v).unwrap();
    let mp = pool.mount_point().to_owned();
    pool.delete().unwrap();
    assert!(!mp.exists());

    tool("umount", &[&host]);
    assert_no_loop_for(&disk);
    assert!(mounted_under(sb.path()).is_empty());
}

#[test]
fn failed_creation_leaves_nothing_behind() {
    let sb = Sandbox::new("failed_create");
    let state = sb.state();
    // Too small for mkfs.btrfs.
    let config =
        prepare_config(DriverKind::Btrfs, "tiny", &state, &cfg(&[("size", "1MiB")])).unwrap();
    let err = Pool::create(&state, "tiny", DriverKind::Btrfs, config.clone()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Tool { command, .. } if command.starts_with("mkfs.btrfs")),
        "{err}"
    );
    assert!(err.to_string().contains("tiny.img"), "{err}");
    assert!(!state.join("disks/tiny.img").exists());
    assert!(!state.join("storage-pools/tiny").exists());
    assert!(loops_under(sb.path()).is_empty());

    // A leftover loop file is not overwritten.
    std::fs::create_dir_all(state.join("disks")).unwrap();
    std::fs::write(state.join("disks/tiny.img"), "someone's data").unwrap();
    let err = Pool::create(&state, "tiny", DriverKind::Btrfs, config).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(state.join("disks/tiny.img")).unwrap(),
        "someone's data"
    );
    assert!(!state.join("storage-pools/tiny").exists());

    // Deleting a pool whose loop file was removed by hand cleans up what is left.
    let pool = loop_pool(&sb, "gone");
    let file = pool.loop_file().unwrap().to_owned();
    let mp = pool.mount_point().to_owned();
    pool.unmount().unwrap();
    std::fs::remove_file(&file).unwrap();
    pool.delete().unwrap();
    assert_gone(&sb, &mp, Some(&file));
}
