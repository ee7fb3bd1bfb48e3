//! A daemon killed in the middle of an operation (a fail point: the test build's `failpoints`
//! feature, armed through `RXD_FAILPOINTS`) leaves nothing half-made once it starts again: no
//! instance, snapshot or image the API lists but cannot use, nothing on disk that no row owns,
//! a warning saying what recovery did, and the operation can be retried to success.
//!
//! One table, one row per kill point: every durable step of create, delete, rename, snapshot
//! (take, rename, delete), restore, image import and delete, config update, start, stop and
//! copy.

use rxd_client::{Client, Method};
use rxd_testkit::{busybox_image, require_root, succeeded, Options, TestDaemon};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// What exists before the operation.
#[derive(Clone, Copy, PartialEq)]
enum Before {
    Nothing,
    Image,
    /// Image, stopped `c1` with snapshot `s1`, and `/marker` written after the snapshot.
    Stopped,
    /// As `Stopped`, with `c1` running.
    Running,
    /// A btrfs pool `p2`.
    Pool,
    /// A custom volume `v1` in the test's pool, with snapshot `s1` and a file `marker`
    /// written after it.
    Volume,
}

/// The operation a kill interrupts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Op {
    Create,
    Delete,
    Rename,
    Snapshot,
    SnapshotRename,
    SnapshotDelete,
    Restore,
    ImageImport,
    ImageDelete,
    Update,
    Start,
    Stop,
    /// `c1` (running, with its snapshot) copied as `c2`.
    Copy,
    /// A btrfs pool `p2` on a loop file made.
    PoolCreate,
    /// The pool `p2` deleted.
    PoolDelete,
    /// `c1` (stopped, with its snapshot) moved to the `dir` pool `m`.
    PoolMove,
    /// A custom volume `v2` made in the test's pool.
    VolumeCreate,
    /// The volume `v1` deleted.
    VolumeDelete,
    /// The volume `v1` restored to `s1`.
    VolumeRestore,
    /// The volume `v1` renamed `v3`.
    VolumeRename,
    /// `c1`'s backup (made before) imported as `c2`.
    Import,
    /// A backup of `c1` made on the server.
    Backup,
}

/// The custom volume steps, run on each pool.
const VOLUME_CASES: &[(&str, Before, Op)] = &[
    (
        "storage-volume-create:made",
        Before::Nothing,
        Op::VolumeCreate,
    ),
    (
        "storage-volume-delete:row-deleted",
        Before::Volume,
        Op::VolumeDelete,
    ),
    (
        "storage-volume-restore:copied",
        Before::Volume,
        Op::VolumeRestore,
    ),
    (
        "storage-volume-restore:swapped",
        Before::Volume,
        Op::VolumeRestore,
    ),
    (
        "storage-volume-rename:moved",
        Before::Volume,
        Op::VolumeRename,
    ),
];

const CASES: &[(&str, Before, Op)] = &[
    ("instance-create:row-recorded", Before::Image, Op::Create),
    ("instance-create:unpacked", Before::Image, Op::Create),
    (
        "instance-delete:intent-recorded",
        Before::Stopped,
        Op::Delete,
    ),
    ("instance-delete:moved-aside", Before::Stopped, Op::Delete),
    ("instance-delete:row-deleted", Before::Stopped, Op::Delete),
    (
        "instance-rename:intent-recorded",
        Before::Stopped,
        Op::Rename,
    ),
    ("instance-rename:moved", Before::Stopped, Op::Rename),
    ("instance-rename:row-renamed", Before::Stopped, Op::Rename),
    ("snapshot-create:frozen", Before::Running, Op::Snapshot),
    ("snapshot-create:placed", Before::Running, Op::Snapshot),
    (
        "snapshot-create:row-recorded",
        Before::Running,
        Op::Snapshot,
    ),
    ("snapshot-rename:moved", Before::Stopped, Op::SnapshotRename),
    (
        "snapshot-rename:row-renamed",
        Before::Stopped,
        Op::SnapshotRename,
    ),
    (
        "snapshot-delete:moved-aside",
        Before::Stopped,
        Op::SnapshotDelete,
    ),
    (
        "snapshot-delete:row-deleted",
        Before::Stopped,
        Op::SnapshotDelete,
    ),
    ("snapshot-restore:copied", Before::Running, Op::Restore),
    ("snapshot-restore:swapped", Before::Running, Op::Restore),
    ("snapshot-restore:recorded", Before::Running, Op::Restore),
    ("image-import:unpacked", Before::Nothing, Op::ImageImport),
    ("image-import:stored", Before::Nothing, Op::ImageImport),
    (
        "image-import:row-recorded",
        Before::Nothing,
        Op::ImageImport,
    ),
    ("image-delete:row-deleted", Before::Image, Op::ImageDelete),
    ("instance-update:checked", Before::Stopped, Op::Update),
    ("instance-update:row-updated", Before::Stopped, Op::Update),
    ("instance-start:started", Before::Stopped, Op::Start),
    ("instance-stop:ended", Before::Running, Op::Stop),
    ("instance-stop:cleaned-up", Before::Running, Op::Stop),
    ("instance-copy:row-recorded", Before::Running, Op::Copy),
    ("instance-copy:placed", Before::Running, Op::Copy),
    ("instance-import:row-recorded", Before::Stopped, Op::Import),
    ("instance-import:placed", Before::Stopped, Op::Import),
    ("instance-backup:written", Before::Stopped, Op::Backup),
    ("storage-pool-create:made", Before::Nothing, Op::PoolCreate),
    (
        "storage-pool-delete:row-deleted",
        Before::Pool,
        Op::PoolDelete,
    ),
];

/// The steps whose files differ on a btrfs pool (subvolumes, read-only snapshots), run again
/// with the instances there.
const BTRFS_CASES: &[(&str, Before, Op)] = &[
    ("instance-create:row-recorded", Before::Image, Op::Create),
    // The directory in place, its snapshot not yet made (the commit that makes it carries the
    // rename).
    (
        "instance-create:placed-before-snapshot",
        Before::Image,
        Op::Create,
    ),
    ("instance-create:unpacked", Before::Image, Op::Create),
    ("instance-delete:moved-aside", Before::Stopped, Op::Delete),
    ("instance-delete:row-deleted", Before::Stopped, Op::Delete),
    ("instance-rename:moved", Before::Stopped, Op::Rename),
    ("snapshot-create:placed", Before::Running, Op::Snapshot),
    (
        "snapshot-delete:moved-aside",
        Before::Stopped,
        Op::SnapshotDelete,
    ),
    ("snapshot-restore:copied", Before::Running, Op::Restore),
    ("snapshot-restore:swapped", Before::Running, Op::Restore),
    ("image-delete:row-deleted", Before::Image, Op::ImageDelete),
    ("instance-copy:placed", Before::Running, Op::Copy),
    ("instance-move:placed", Before::Stopped, Op::PoolMove),
    ("instance-move:recorded", Before::Stopped, Op::PoolMove),
];

/// Operations that record an intent, so recovery always has something to say about them.
fn reports(op: Op) -> bool {
    matches!(
        op,
        Op::Create
            | Op::Copy
            | Op::Delete
            | Op::Rename
            | Op::Snapshot
            | Op::SnapshotRename
            | Op::SnapshotDelete
            | Op::Restore
            | Op::VolumeRename
    )
}

struct Env {
    conf: tempfile::TempDir,
    image: std::path::PathBuf,
}

impl Env {
    fn rxc(&self, d: &TestDaemon, args: &[&str]) -> std::process::Output {
        d.rxc(self.conf.path(), args)
    }

    fn ok(&self, d: &TestDaemon, args: &[&str]) -> String {
        succeeded(args, self.rxc(d, args))
    }
}

/// Run the operation; its answer does not matter (the daemon may die before giving one).
async fn run(env: &Env, d: &TestDaemon, op: Op, pool: &str) -> bool {
    let backup_file = env.conf.path().join("c1.tar.gz").display().to_string();
    let args: Vec<&str> = match op {
        Op::VolumeCreate => vec!["storage", "volume", "create", pool, "v2"],
        Op::Import => vec!["import", &backup_file, "c2"],
        Op::Backup => {
            let r = d
                .unix()
                .request(
                    Method::POST,
                    "/1.0/instances/c1/backups",
                    Some(&json!({"name": "b1"})),
                )
                .await;
            return r.is_ok_and(|r| r.status == 202);
        }
        Op::VolumeDelete => vec!["storage", "volume", "delete", pool, "v1"],
        Op::VolumeRestore => vec!["storage", "volume", "restore", pool, "v1", "s1"],
        Op::VolumeRename => vec!["storage", "volume", "rename", pool, "v1", "v3"],
        Op::Create => vec!["init", "bb", "c1"],
        Op::Delete => vec!["delete", "c1"],
        Op::Rename => vec!["rename", "c1", "c2"],
        Op::Snapshot => vec!["snapshot", "c1", "s2"],
        Op::SnapshotDelete => vec!["delete", "c1/s1"],
        Op::Restore => vec!["restore", "c1", "s1"],
        Op::ImageImport => vec![
            "image",
            "import",
            env.image.to_str().unwrap(),
            "--alias",
            "bb",
        ],
        Op::ImageDelete => vec!["image", "delete", "bb"],
        Op::Update => vec!["config", "set", "c1", "user.x", "1"],
        Op::Start => vec!["start", "c1"],
        Op::Stop => vec!["stop", "c1", "--force"],
        Op::Copy => vec!["copy", "c1", "c2"],
        Op::PoolCreate => vec!["storage", "create", "p2", "btrfs", "size=1GiB"],
        Op::PoolDelete => vec!["storage", "delete", "p2"],
        Op::PoolMove => vec!["move", "c1", "-s", "m"],
        Op::SnapshotRename => {
            let r = d
                .unix()
                .request(
                    Method::POST,
                    "/1.0/instances/c1/snapshots/s1",
                    Some(&json!({"name": "s2"})),
                )
                .await;
            return r.is_ok_and(|r| {
                r.envelope()
                    .is_ok_and(|e| e.metadata["status"] == "Success")
            });
        }
    };
    env.rxc(d, &args).status.success()
}

/// Whether the operation's effect is there.
async fn done(c: &Client, d: &TestDaemon, op: Op, pool: &str) -> bool {
    let exists = |path: &'static str| async move { c.get(path).await.is_ok() };
    let volume = |name: &str| format!("/1.0/storage-pools/{pool}/volumes/custom/{name}");
    match op {
        Op::VolumeCreate => c.get(&volume("v2")).await.is_ok(),
        Op::Import => exists("/1.0/instances/c2/snapshots/s1").await,
        Op::Backup => {
            // Made by its operation: waited for here.
            for _ in 0..100 {
                if exists("/1.0/instances/c1/backups/b1").await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
        Op::VolumeDelete => c.get(&volume("v1")).await.is_err(),
        Op::VolumeRename => {
            c.get(&volume("v3")).await.is_ok() && c.get(&volume("v1")).await.is_err()
        }
        Op::VolumeRestore => !d
            .dir()
            .join("storage-pools")
            .join(pool)
            .join("custom/v1/marker")
            .exists(),
        Op::Create => exists("/1.0/instances/c1").await,
        Op::Delete => !exists("/1.0/instances/c1").await,
        Op::Rename => exists("/1.0/instances/c2").await && !exists("/1.0/instances/c1").await,
        Op::Snapshot => exists("/1.0/instances/c1/snapshots/s2").await,
        Op::SnapshotRename => {
            exists("/1.0/instances/c1/snapshots/s2").await
                && !exists("/1.0/instances/c1/snapshots/s1").await
        }
        Op::SnapshotDelete => !exists("/1.0/instances/c1/snapshots/s1").await,
        Op::Restore => {
            // The marker was written after the snapshot: a restore removes it.
            let state = c.get("/1.0/instances/c1/state").await.unwrap();
            state["status"] == "Running"
                && c.request(Method::GET, "/1.0/instances/c1/files?path=/marker", None)
                    .await
                    .is_ok_and(|r| r.status == 404)
        }
        // The alias is the client's next request, after the import's operation ends.
        Op::ImageImport => c
            .get("/1.0/images")
            .await
            .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 1)),
        Op::ImageDelete => !exists("/1.0/images/aliases/bb").await,
        Op::Update => c.get("/1.0/instances/c1").await.unwrap()["config"]["user.x"] == "1",
        Op::Start => c.get("/1.0/instances/c1/state").await.unwrap()["status"] == "Running",
        Op::Stop => c.get("/1.0/instances/c1/state").await.unwrap()["status"] == "Stopped",
        Op::Copy => exists("/1.0/instances/c2/snapshots/s1").await,
        Op::PoolCreate => exists("/1.0/storage-pools/p2").await,
        Op::PoolDelete => !exists("/1.0/storage-pools/p2").await,
        Op::PoolMove => {
            c.get("/1.0/instances/c1").await.unwrap()["expanded_devices"]["root"]["pool"] == "m"
        }
    }
}

/// Names in a directory (none if it does not exist).
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the API lists and what is on disk agree, and everything listed can be used.
async fn consistent(env: &Env, d: &TestDaemon, point: &str, pool: &str) {
    let c = d.unix();
    let pool_dir = d.dir().join("storage-pools").join(pool);
    // Custom volumes: listed ones are whole on disk with their snapshots, nothing else is.
    let listed_volumes = c
        .get(&format!(
            "/1.0/storage-pools/{pool}/volumes/custom?recursion=1"
        ))
        .await
        .unwrap();
    let mut volume_names = BTreeSet::new();
    for v in listed_volumes.as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_owned();
        let snaps = c
            .get(&format!(
                "/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots"
            ))
            .await
            .unwrap();
        let snaps: BTreeSet<String> = snaps
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            snaps,
            names(&pool_dir.join("custom-snapshots").join(&name)),
            "{point}: snapshots of volume {name}: listed vs on disk"
        );
        volume_names.insert(name);
    }
    assert_eq!(
        names(&pool_dir.join("custom")),
        volume_names,
        "{point}: {pool}/custom/ vs the volumes listed"
    );
    let snapshot_owners = names(&pool_dir.join("custom-snapshots"));
    assert!(
        snapshot_owners.is_subset(&volume_names),
        "{point}: {pool}/custom-snapshots/ holds {snapshot_owners:?}"
    );
    // Pools: a pool without a row has neither a directory, nor a mount, nor a loop device.
    for name in ["p2"] {
        let row = c.get(&format!("/1.0/storage-pools/{name}")).await.is_ok();
        let dir = d.dir().join("storage-pools").join(name);
        let img = d.dir().join("disks").join(format!("{name}.img"));
        let loops = loop_devices(&img);
        if row {
            assert!(mounted(&dir), "{point}: pool {name} not mounted");
            assert_eq!(loops.len(), 1, "{point}: {loops:?}");
        } else {
            assert!(
                !dir.exists() && !img.exists(),
                "{point}: pool {name} left on disk"
            );
            assert!(loops.is_empty(), "{point}: loop devices left: {loops:?}");
            assert!(!mounted(&dir), "{point}: pool {name} left mounted");
        }
    }
    let instances = c.get("/1.0/instances?recursion=1").await.unwrap();
    // Backup files: one per backup listed, nothing else.
    let mut backups = 0;
    for i in instances.as_array().unwrap() {
        let name = i["name"].as_str().unwrap();
        let listed = c
            .get(&format!("/1.0/instances/{name}/backups"))
            .await
            .unwrap();
        backups += listed.as_array().unwrap().len();
    }
    assert_eq!(
        names(&d.dir().join("backups")).len(),
        backups,
        "{point}: backup files vs backups listed"
    );
    let mut listed = BTreeSet::new();
    // Instances by the pool their root disk names (the default profile's is `pool`'s).
    let mut by_pool: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for p in [pool, "m"] {
        by_pool.insert(p.to_owned(), BTreeSet::new());
    }
    for i in instances.as_array().unwrap() {
        let name = i["name"].as_str().unwrap().to_owned();
        let in_pool = i["expanded_devices"]["root"]["pool"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        by_pool
            .entry(in_pool.clone())
            .or_default()
            .insert(name.clone());
        let pool_dir = d.dir().join("storage-pools").join(&in_pool);
        assert!(
            i["config"]["volatile.idmap.next"].is_string(),
            "{point}: {name} is listed half-made: {i:#}"
        );
        let dir = pool_dir.join("containers").join(&name);
        assert!(
            dir.join("rootfs/bin").exists(),
            "{point}: {name} has no root filesystem"
        );
        let inner: BTreeSet<String> = names(&dir)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            inner.is_empty(),
            "{point}: work in progress left in {name}: {inner:?}"
        );
        let snaps = c
            .get(&format!("/1.0/instances/{name}/snapshots"))
            .await
            .unwrap();
        let snaps: BTreeSet<String> = snaps
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_owned())
            .collect();
        let on_disk = names(&pool_dir.join("containers-snapshots").join(&name));
        assert_eq!(
            snaps, on_disk,
            "{point}: snapshots of {name}: listed vs on disk"
        );
        for s in &snaps {
            assert!(
                pool_dir
                    .join("containers-snapshots")
                    .join(&name)
                    .join(s)
                    .join("rootfs/bin")
                    .exists(),
                "{point}: snapshot {name}/{s} is not whole"
            );
        }
        let state = c
            .get(&format!("/1.0/instances/{name}/state"))
            .await
            .unwrap();
        assert_ne!(state["status"], "Frozen", "{point}: {name} left frozen");
        listed.insert(name);
    }
    for (p, owners) in &by_pool {
        let dir = d.dir().join("storage-pools").join(p);
        assert_eq!(
            names(&dir.join("containers")),
            *owners,
            "{point}: {p}/containers/"
        );
        let snapshot_owners = names(&dir.join("containers-snapshots"));
        assert!(
            snapshot_owners.is_subset(owners),
            "{point}: {p}/containers-snapshots/ holds {snapshot_owners:?}, instances are {owners:?}"
        );
    }
    let snapshot_owners = names(&pool_dir.join("containers-snapshots"));
    // Image volumes only of images there are (a btrfs pool's).
    let volumes: BTreeSet<String> = names(&pool_dir.join("images"));
    assert!(
        snapshot_owners.is_subset(&listed),
        "{point}: snapshots/ holds {snapshot_owners:?}, instances are {listed:?}"
    );
    let images = c.get("/1.0/images").await.unwrap();
    let mut owned = BTreeSet::new();
    for url in images.as_array().unwrap() {
        let fp = url.as_str().unwrap().rsplit('/').next().unwrap();
        owned.insert(fp.to_owned());
        owned.insert(format!("{fp}.unpacked"));
        owned.insert(format!("{fp}.rootfs"));
    }
    let files: BTreeSet<String> = d.image_files().into_iter().collect();
    assert!(
        volumes.iter().all(|v| owned.contains(v)),
        "{point}: image volumes {volumes:?}; rows own {owned:?}"
    );
    assert!(
        files.is_subset(&owned) && files.iter().all(|f| !f.starts_with('.')),
        "{point}: images/ holds {files:?}; rows own {owned:?}"
    );
    // Cgroups only for running containers.
    let mut running = BTreeSet::new();
    for name in &listed {
        let state = c
            .get(&format!("/1.0/instances/{name}/state"))
            .await
            .unwrap();
        if state["status"] == "Running" {
            running.insert(name.clone());
        }
    }
    let cgroups = d.container_cgroups();
    assert!(
        cgroups.is_subset(&running),
        "{point}: cgroups {cgroups:?}, running {running:?}"
    );
    // Every instance starts, runs a command, and stops.
    for name in &listed {
        let state = c
            .get(&format!("/1.0/instances/{name}/state"))
            .await
            .unwrap();
        if state["status"] != "Running" {
            env.ok(d, &["start", name]);
        }
        env.ok(d, &["exec", name, "--", "true"]);
        if state["status"] != "Running" {
            env.ok(d, &["stop", name, "--force"]);
        }
    }
}

async fn wait_dead(d: &mut TestDaemon, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.exited() {
        assert!(
            Instant::now() < deadline,
            "{point}: the daemon did not die (is rxd built with --features rxd/failpoints, as scripts/test.sh builds it?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        d.logs().contains(point),
        "{point}: not reached; log:\n{}",
        d.logs()
    );
}

fn loop_devices(file: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(text.trim()) == file {
                found.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path.to_str().unwrap()))
}

#[tokio::test]
async fn a_daemon_killed_at_any_step_leaves_nothing_half_made() {
    if !require_root("a_daemon_killed_at_any_step_leaves_nothing_half_made") {
        return;
    }
    killed_at_every_step(CASES, "default", Db::Kept).await;
    killed_at_every_step(VOLUME_CASES, "default", Db::Kept).await;
}

/// The steps after which a create, a copy or an import has made files while its row's commit,
/// not synced on its own (`Store::create_instance`), may not have reached the disk: a power
/// cut there leaves the files and a database without the row.
const LOST_ROW_CASES: &[(&str, Before, Op)] = &[
    ("instance-create:unpacked", Before::Image, Op::Create),
    ("instance-copy:placed", Before::Running, Op::Copy),
    ("instance-import:placed", Before::Stopped, Op::Import),
];

const BTRFS_LOST_ROW_CASES: &[(&str, Before, Op)] = &[
    (
        "instance-create:placed-before-snapshot",
        Before::Image,
        Op::Create,
    ),
    ("instance-create:unpacked", Before::Image, Op::Create),
    ("instance-copy:placed", Before::Running, Op::Copy),
];

/// A power cut that loses the unfinished row is imitated by putting back the database as it
/// was before the operation: recovery must then remove the files no row owns.
#[tokio::test]
async fn files_whose_row_a_power_cut_lost_are_removed() {
    let test = "files_whose_row_a_power_cut_lost_are_removed";
    if !require_root(test) || !rxd_testkit::require_tool("btrfs", "btrfs-progs", test) {
        return;
    }
    killed_at_every_step(LOST_ROW_CASES, "default", Db::RowLost).await;
    killed_at_every_step(BTRFS_LOST_ROW_CASES, "b", Db::RowLost).await;
}

/// What becomes of the database when the daemon dies.
#[derive(Clone, Copy, PartialEq)]
enum Db {
    /// Everything committed survives (a kill).
    Kept,
    /// Back to what it was before the operation (a power cut losing unsynced commits).
    RowLost,
}

/// The database's files (the WAL and its index when there are any), copied from `from` to
/// `to`; a file `from` does not have is removed from `to`.
fn copy_database(from: &Path, to: &Path) {
    for name in ["rxd.db", "rxd.db-wal", "rxd.db-shm"] {
        let (src, dst) = (from.join(name), to.join(name));
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        } else if dst.exists() {
            std::fs::remove_file(&dst).unwrap();
        }
    }
}

/// The same on a btrfs pool (the default profile's root disk there): subvolumes, read-only
/// snapshots and image volumes.
#[tokio::test]
async fn a_daemon_killed_at_any_step_on_btrfs_leaves_nothing_half_made() {
    let test = "a_daemon_killed_at_any_step_on_btrfs_leaves_nothing_half_made";
    if !require_root(test) || !rxd_testkit::require_tool("btrfs", "btrfs-progs", test) {
        return;
    }
    killed_at_every_step(BTRFS_CASES, "b", Db::Kept).await;
    killed_at_every_step(VOLUME_CASES, "b", Db::Kept).await;
}

async fn killed_at_every_step(cases: &[(&str, Before, Op)], pool: &str, db: Db) {
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    let env = Env { conf, image };
    let marker = env.conf.path().join("marker");
    std::fs::write(&marker, "after the snapshot\n").unwrap();
    for &(point, before, op) in cases {
        let mut d = TestDaemon::start_with(Options {
            no_https: true,
            ..Options::default()
        })
        .await;
        if pool != "default" {
            env.ok(&d, &["storage", "create", pool, "btrfs", "size=2GiB"]);
            env.ok(
                &d,
                &[
                    "profile",
                    "device",
                    "add",
                    "default",
                    "root",
                    "disk",
                    "path=/",
                    &format!("pool={pool}"),
                ],
            );
        }
        if before == Before::Pool {
            env.ok(&d, &["storage", "create", "p2", "btrfs", "size=1GiB"]);
        }
        if op == Op::PoolMove {
            env.ok(&d, &["storage", "create", "m", "dir"]);
        }
        if before != Before::Nothing {
            env.ok(
                &d,
                &[
                    "image",
                    "import",
                    env.image.to_str().unwrap(),
                    "--alias",
                    "bb",
                ],
            );
        }
        if matches!(before, Before::Stopped | Before::Running) {
            // Left to recovery, not to LXD's autostart rule (which would start again an
            // instance killed before its stop was recorded, racing the checks below).
            env.ok(&d, &["init", "bb", "c1", "-c", "boot.autostart=false"]);
            env.ok(&d, &["snapshot", "c1", "s1"]);
            env.ok(&d, &["file", "push", marker.to_str().unwrap(), "c1/marker"]);
        }
        if op == Op::Import {
            let file = env.conf.path().join("c1.tar.gz");
            env.ok(&d, &["export", "c1", file.to_str().unwrap()]);
        }
        if before == Before::Running {
            env.ok(&d, &["start", "c1"]);
        }
        if before == Before::Volume {
            env.ok(&d, &["storage", "volume", "create", pool, "v1"]);
            env.ok(&d, &["storage", "volume", "snapshot", pool, "v1", "s1"]);
            let dir = d.dir().join("storage-pools").join(pool).join("custom/v1");
            std::fs::write(dir.join("marker"), "after the snapshot\n").unwrap();
        }
        // Armed now: the set-up above must not hit it.
        d.stop();
        let saved = env.conf.path().join("db-before");
        if db == Db::RowLost {
            std::fs::create_dir_all(&saved).unwrap();
            copy_database(&d.dir(), &saved);
        }
        d.set_env(vec![("RXD_FAILPOINTS".into(), point.into())]);
        d.spawn();
        d.wait_ready().await;
        let _ = run(&env, &d, op, pool).await;
        wait_dead(&mut d, point).await;
        if db == Db::RowLost {
            copy_database(&saved, &d.dir());
        }

        d.set_env(Vec::new());
        d.spawn();
        d.wait_ready().await;
        consistent(&env, &d, point, pool).await;
        let c = d.unix();
        if reports(op) {
            let warnings = c.get("/1.0/warnings?recursion=1").await.unwrap();
            assert!(
                warnings
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w["last_message"].as_str().is_some_and(|m| {
                        // Once the row is gone the delete is done: only its files, set aside
                        // under a hidden name, are left to remove.
                        m.contains(match op {
                            Op::Copy => "c2",
                            Op::VolumeRename => "storage volume v1",
                            _ => "c1",
                        }) || point == "instance-delete:row-deleted" && m.contains(".trash-")
                    })),
                "{point}: no warning says what recovery did: {warnings:#}"
            );
        }
        if op == Op::Update {
            // One transaction: nothing to recover, so recovery says nothing (and never takes
            // the daemon's own files, such as the security log, for leftovers).
            let warnings = c.get("/1.0/warnings?recursion=1").await.unwrap();
            assert!(
                !warnings.as_array().unwrap().iter().any(|w| w["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Unfinished work"))),
                "{point}: {warnings:#}"
            );
        }
        // Retried, the operation succeeds (or is found already done).
        if !done(&c, &d, op, pool).await {
            if op == Op::Restore
                && c.get("/1.0/instances/c1/state").await.unwrap()["status"] != "Running"
            {
                env.ok(&d, &["start", "c1"]);
            }
            if !done(&c, &d, op, pool).await {
                assert!(run(&env, &d, op, pool).await, "{point}: the retry failed");
            }
        }
        assert!(
            done(&c, &d, op, pool).await,
            "{point}: not done after the retry"
        );
        consistent(&env, &d, point, pool).await;
        d.kill_containers();
    }
}

/// A small deterministic generator (xorshift64*): the soak prints its seed, so a failing run
/// can be repeated with `RXD_SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One worker's round: operations on its own instance (`w<i>a`, renamed to and fro with
/// `w<i>b`) until one fails, as it does once the daemon is killed.
fn work(conf: std::path::PathBuf, dir: std::path::PathBuf, worker: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let rxc = |args: &[&str]| {
        std::process::Command::new(rxd_testkit::bin("rxc"))
            .args(args)
            .env("RXC_CONF", &conf)
            .env("RXD_DIR", &dir)
            .stdin(std::process::Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (a, b) = (format!("w{worker}a"), format!("w{worker}b"));
    for _ in 0..50 {
        let name = if dir
            .join("storage-pools/default/containers")
            .join(&b)
            .exists()
        {
            b.clone()
        } else {
            a.clone()
        };
        let other = if name == a { &b } else { &a };
        let snap = format!("{name}/s{}", rng.below(3));
        let ok = match rng.below(11) {
            0 | 1 => rxc(&["init", "bb", &name, "-c", "boot.autostart=false"]),
            2 => rxc(&["start", &name]),
            3 => rxc(&["stop", &name, "--force"]),
            4 => rxc(&["snapshot", &name, &format!("s{}", rng.below(3))]),
            5 => rxc(&["restore", &name, &format!("s{}", rng.below(3))]),
            6 => rxc(&["delete", &snap]),
            7 => rxc(&["rename", &name, other]),
            8 => rxc(&["config", "set", &name, "user.n", &rng.next().to_string()]),
            9 => rxc(&["delete", &name, "--force"]),
            _ => rxc(&["exec", &name, "--", "true"]),
        };
        // A refusal (already exists, not found, running) is normal; a dead daemon ends the round.
        if !ok && !dir.join("unix.socket").exists() {
            return;
        }
    }
}

/// Randomized soak: workers run concurrent operations while the daemon is killed (SIGKILL) at
/// a random moment; it is started again and checked; repeat. 20 seconds here; 30 minutes from
/// `scripts/soak.sh` (`RXD_SOAK_SECONDS`).
#[tokio::test]
async fn a_daemon_killed_at_random_moments_under_load_stays_consistent() {
    if !require_root("a_daemon_killed_at_random_moments_under_load_stays_consistent") {
        return;
    }
    let seconds: u64 = std::env::var("RXD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("RXD_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: {seconds} s, RXD_SOAK_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    let env = Env { conf, image };
    let mut d = TestDaemon::start_with(Options {
        no_https: true,
        ..Options::default()
    })
    .await;
    env.ok(
        &d,
        &[
            "image",
            "import",
            env.image.to_str().unwrap(),
            "--alias",
            "bb",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut rounds, mut kills) = (0, 0);
    while Instant::now() < deadline {
        rounds += 1;
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (conf, dir, s) = (env.conf.path().to_owned(), d.dir(), rng.next());
                std::thread::spawn(move || work(conf, dir, w, s))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(2500))).await;
        if !workers.iter().all(|w| w.is_finished()) {
            kills += 1;
        }
        d.crash();
        for w in workers {
            w.join().unwrap();
        }
        d.spawn();
        d.wait_ready().await;
        consistent(
            &env,
            &d,
            &format!("soak round {rounds} (RXD_SOAK_SEED={seed})"),
            "default",
        )
        .await;
    }
    eprintln!("soak: {rounds} rounds, {kills} kills during work, seed {seed}");
    d.kill_containers();
}

/// A move to another project killed after its files moved, before its row did: recovery puts
/// the files back under the old key, the instance works where it was, and the move retried
/// succeeds.
#[tokio::test]
async fn a_project_move_killed_midway_is_undone() {
    if !require_root("a_project_move_killed_midway_is_undone") {
        return;
    }
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    let env = Env { conf, image };
    let mut d = TestDaemon::start_with(Options {
        no_https: true,
        ..Options::default()
    })
    .await;
    env.ok(
        &d,
        &[
            "image",
            "import",
            env.image.to_str().unwrap(),
            "--alias",
            "bb",
        ],
    );
    env.ok(&d, &["project", "create", "q"]);
    env.ok(
        &d,
        &[
            "profile",
            "device",
            "add",
            "default",
            "root",
            "disk",
            "path=/",
            "pool=default",
            "--project",
            "q",
        ],
    );
    env.ok(&d, &["init", "bb", "c1", "-c", "boot.autostart=false"]);
    env.ok(&d, &["snapshot", "c1", "s1"]);
    let point = "instance-project-move:moved";
    d.stop();
    d.set_env(vec![("RXD_FAILPOINTS".into(), point.into())]);
    d.spawn();
    d.wait_ready().await;
    let _ = env.rxc(&d, &["move", "c1", "--target-project", "q"]);
    wait_dead(&mut d, point).await;
    d.set_env(Vec::new());
    d.spawn();
    d.wait_ready().await;
    let containers = d.dir().join("storage-pools/default/containers");
    assert!(
        containers.join("c1/rootfs/bin").exists(),
        "files back under c1"
    );
    assert!(!containers.join("q_c1").exists());
    let c = d.unix();
    assert!(c.get("/1.0/instances/c1").await.is_ok());
    let warnings = c.get("/1.0/warnings?recursion=1").await.unwrap();
    assert!(
        warnings
            .to_string()
            .contains("undid moving instance default/c1 to q/c1"),
        "{warnings:#}"
    );
    env.ok(&d, &["start", "c1"]);
    env.ok(&d, &["exec", "c1", "--", "true"]);
    env.ok(&d, &["stop", "c1", "--force"]);
    env.ok(&d, &["move", "c1", "--target-project", "q"]);
    assert!(containers.join("q_c1/rootfs/bin").exists());
    assert!(d
        .dir()
        .join("storage-pools/default/containers-snapshots/q_c1/s1/rootfs/bin")
        .exists());
    d.kill_containers();
}
