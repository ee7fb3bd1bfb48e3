//! Optimized instance backups (`--optimized-storage`): btrfs send streams in LXD 5.0's layout, so
//! one made by LXD imports here and one made here imports into LXD.
//!
//! LXD's volume is one subvolume holding `rootfs/` beside `backup.yaml`, `metadata.yaml` and
//! `templates/`; rxd's root filesystem is a subvolume of its own inside a plain directory. So
//! each tree (every snapshot, oldest first, then the instance) goes out as two subvolumes, the
//! volume's root (`<name>.bin`: the files beside `rootfs/`, `rootfs/` empty) and its root
//! filesystem (`<name>_rootfs.bin`, LXD's encoding of a nested subvolume at `/rootfs`, sent as
//! the difference from the previous tree's), both listed in `backup/optimized_header.yaml`.
//! On import a received `/rootfs` becomes the root filesystem subvolume as it is (a snapshot of
//! it); an LXD backup without one has its `rootfs/` copied into a new subvolume.
//!
//! Receiving is the kernel's and `btrfs receive`'s parsing of the stream, as root: it may make
//! device nodes and setuid files and name any subvolume of the pool as a clone source. Imports
//! are therefore a server administrator's only (checked by the caller), each stream received
//! into a fresh empty directory with the tool confined there (`--chroot`).

use crate::error::{ApiError, ApiResult};
use crate::service::instances::Keyed;
use crate::service::{copy, layout, pools};
use crate::state::Daemon;
use rxd_image::pack::{BackupFile, Compression, Packed};
use rxd_storage::Pool;
use rxd_store::{InstanceRow, SnapshotRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `backup/optimized_header.yaml`: LXD's `BTRFSMetaDataHeader`.
#[derive(Serialize, Deserialize, Default)]
struct Header {
    #[serde(default)]
    subvolumes: Vec<Subvolume>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Subvolume {
    path: String,
    #[serde(default)]
    snapshot: String,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    uuid: String,
}

/// The most of `optimized_header.yaml` read.
const MAX_HEADER: u64 = 1 << 20;
/// Where a nested subvolume may be: rxd's (and LXD's) root filesystem, nothing else.
const ROOTFS: &str = "/rootfs";

/// The file an optimized backup holds a subvolume in: `backup/container[_rootfs].bin` or
/// `backup/snapshots/<snapshot>[_rootfs].bin` (LXD's names).
fn file_name(snapshot: &str, path: &str) -> String {
    let prefix = if snapshot.is_empty() {
        "backup/container".to_owned()
    } else {
        format!("backup/snapshots/{snapshot}")
    };
    if path == "/" {
        format!("{prefix}.bin")
    } else {
        format!("{prefix}_{}.bin", path.trim_start_matches('/'))
    }
}

/// An optimized backup of `row` with `snaps` (its `index.yaml` and `backup.yaml` as the
/// backups service writes them) into `out`: the running container frozen only while its root
/// filesystem is snapshotted. The caller holds the instance's action lock.
pub async fn pack(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    snaps: &[SnapshotRow],
    (index_text, backup_text): (String, String),
    compression: Compression,
    out: std::fs::File,
    max_bytes: u64,
) -> ApiResult<Packed> {
    let key = row.key();
    let pool = pools::get(d, &row.pool)?;
    // Two snapshots named `a` and `a_rootfs` would give two files one name.
    let mut files = std::collections::BTreeSet::new();
    for s in snaps
        .iter()
        .map(|s| s.name.as_str())
        .chain(std::iter::once(""))
    {
        for path in ["/", ROOTFS] {
            if !files.insert(file_name(s, path)) {
                return Err(ApiError::BadRequest(format!(
                    "Snapshot names {:?} give two files one name in an optimized backup: make a plain backup",
                    file_name(s, path)
                )));
            }
        }
    }
    let inst_dir = layout::instance_dir(d, &row.pool, &key);
    let snaps_dir = layout::snapshots_dir(d, &row.pool, &key);
    // Subvolumes a container made inside its root filesystem would arrive as empty
    // directories: such an instance gets a plain backup.
    for rootfs in std::iter::once(inst_dir.join("rootfs"))
        .chain(snaps.iter().map(|s| snaps_dir.join(&s.name).join("rootfs")))
    {
        if rxd_storage::has_nested_subvolumes(&rootfs).unwrap_or(true) {
            return Err(ApiError::BadRequest(format!(
                "{} holds subvolumes of its own, which an optimized backup from rxd does not carry yet: make a plain backup",
                rootfs.display()
            )));
        }
    }
    let containers = inst_dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let work = |i: usize| containers.join(format!(".backup-{}-{i}", uuid::Uuid::new_v4().simple()));
    let dirs: Vec<PathBuf> = (0..=snaps.len()).map(work).collect();
    for dir in &dirs {
        copy::private_dir(dir)?;
    }
    let main_dir = dirs[snaps.len()].clone();
    let result = async {
        // The instance's root filesystem as it is now, read-only (frozen if it runs).
        let read = d.runtime.rootfs_lock(&key);
        let reading = read.read().await;
        let freeze = d.runtime.init(&key).is_some() && !d.runtime.frozen(&key);
        if freeze {
            d.runtime.freeze(&key, true).await?;
        }
        let snapped = {
            let (pool, from, to) = (
                pool.clone(),
                inst_dir.join("rootfs"),
                main_dir.join("rootfs"),
            );
            tokio::task::spawn_blocking(move || pool.snapshot_volume(&from, &to, true)).await
        };
        if freeze {
            if let Err(e) = d.runtime.freeze(&key, false).await {
                tracing::error!(instance = %row.name, error = %e, "could not thaw after a backup's snapshot");
            }
        }
        drop(reading);
        snapped?.map_err(pools::refusal)?;
        let backups_dir = layout::backups_dir(d);
        let (pool, dirs, inst_dir) = (pool.clone(), dirs.clone(), inst_dir.clone());
        let names: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
        tokio::task::spawn_blocking(move || {
            build(
                &pool,
                &names,
                &snaps_dir,
                &inst_dir,
                &dirs,
                &backup_text,
                &index_text,
                &backups_dir,
                compression,
                out,
                max_bytes,
            )
        })
        .await?
    }
    .await;
    for dir in &dirs {
        remove_work(dir);
    }
    result
}

/// Removes a work directory of this module's: the subvolumes directly in it (a volume root, a
/// received stream, read-only ones too), then the rest.
fn remove_work(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir())
                && rxd_storage::is_subvolume(&path).unwrap_or(false)
            {
                if let Err(err) = rxd_storage::delete_subvolume_tree(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "work subvolume not removed");
                }
            }
        }
    }
    let _ = layout::remove_tree(dir);
}

/// The streams of every tree, then the tarball. `dirs[i]` is the work directory of tree `i`
/// (snapshots, then the instance, whose read-only root filesystem is in it already).
#[allow(clippy::too_many_arguments)]
fn build(
    pool: &Pool,
    snapshots: &[String],
    snaps_dir: &Path,
    inst_dir: &Path,
    dirs: &[PathBuf],
    backup_yaml: &str,
    index_yaml: &str,
    backups_dir: &Path,
    compression: Compression,
    out: std::fs::File,
    max_bytes: u64,
) -> ApiResult<Packed> {
    let mut header = Header::default();
    let mut sent = 0u64;
    let mut streams: Vec<(String, PathBuf)> = Vec::new();
    let result = (|| -> ApiResult<Packed> {
        let mut parent: Option<PathBuf> = None;
        let trees = snapshots
            .iter()
            .map(|s| (s.as_str(), Some(snaps_dir.join(s).join("rootfs"))))
            .chain(std::iter::once(("", None)));
        for (i, (snapshot, source)) in trees.enumerate() {
            // A read-only snapshot of each snapshot's root filesystem, which may be writable
            // (one copied in by a plain import); the instance's is taken already.
            let rootfs = dirs[i].join("rootfs");
            if let Some(source) = source {
                pool.snapshot_volume(&source, &rootfs, true)
                    .map_err(pools::refusal)?;
            }
            // The volume's root: LXD's files beside an empty `rootfs/`, named as LXD names it.
            let root = dirs[i].join(if snapshot.is_empty() {
                ".backup"
            } else {
                snapshot
            });
            pool.create_volume(&root, 0o711).map_err(pools::refusal)?;
            layout::copy_image_extras(inst_dir, &root).map_err(ApiError::internal)?;
            if snapshot.is_empty() {
                std::fs::write(root.join("backup.yaml"), backup_yaml)
                    .map_err(ApiError::internal)?;
            }
            std::fs::create_dir(root.join("rootfs")).map_err(ApiError::internal)?;
            pool.set_readonly(&root, true).map_err(pools::refusal)?;
            for (path, subvolume, from) in
                [("/", &root, None), (ROOTFS, &rootfs, parent.as_deref())]
            {
                let file = backups_dir.join(format!(".send-{}", uuid::Uuid::new_v4().simple()));
                streams.push((String::new(), file.clone()));
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&file)
                    .map_err(ApiError::internal)?;
                pool.send_volume(subvolume, from, f)
                    .map_err(pools::refusal)?;
                sent += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                if sent > max_bytes {
                    return Err(ApiError::BadRequest(format!(
                        "The optimized backup takes more than {max_bytes} bytes, what this project may still write (limits.disk) or the server's bound (images.max_unpacked_size)"
                    )));
                }
                if let Some(last) = streams.last_mut() {
                    last.0 = file_name(snapshot, path);
                }
                header.subvolumes.push(Subvolume {
                    path: path.to_owned(),
                    snapshot: snapshot.to_owned(),
                    readonly: !snapshot.is_empty(),
                    uuid: String::new(),
                });
            }
            parent = Some(rootfs);
        }
        let header_yaml = serde_norway::to_string(&header).map_err(ApiError::internal)?;
        let mut files = vec![(
            "backup/optimized_header.yaml".to_owned(),
            BackupFile::Bytes(header_yaml.into_bytes()),
        )];
        files.extend(
            streams
                .iter()
                .map(|(name, path)| (name.clone(), BackupFile::Disk(path.clone()))),
        );
        rxd_image::pack::pack_optimized(index_yaml, &files, compression, out)
            .map_err(|e| ApiError::internal(format!("writing the backup: {e}")))
    })();
    for (_, file) in &streams {
        let _ = std::fs::remove_file(file);
    }
    result
}

/// What an optimized backup's file holds: a subvolume of the instance or of a snapshot.
type Slot = (String, String);

/// Receive an optimized backup's streams and put the instance and each snapshot in rxd's
/// layout (and the snapshots' rows). `listed` are the snapshots `index.yaml` lists,
/// `with_header` whether it says an optimized header is there; `limits` bound the streams'
/// bytes. Returns the streams' bytes.
pub async fn place(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    upload: &Path,
    listed: &[String],
    with_header: bool,
    snaps: &[SnapshotRow],
    limits: &rxd_image::Limits,
) -> ApiResult<u64> {
    let pool = pools::get(d, &row.pool)?;
    let dest = layout::instance_dir(d, &row.pool, &row.key());
    let containers = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let stage = containers.join(format!(".import-{}", uuid::Uuid::new_v4().simple()));
    let received = {
        let (pool, upload, listed, stage, limits) = (
            pool.clone(),
            upload.to_owned(),
            listed.to_vec(),
            stage.clone(),
            *limits,
        );
        tokio::task::spawn_blocking(move || {
            receive(&pool, &upload, &listed, with_header, &stage, &limits)
        })
        .await?
    };
    let result = match received {
        Ok((subvolumes, bytes)) => assemble(d, &pool, row, &dest, &subvolumes, snaps)
            .await
            .map(|()| bytes),
        Err(e) => Err(e),
    };
    for dir in staged_dirs(&stage) {
        remove_work(&dir);
    }
    result
}

/// The work directories of one import (`<stage>-<n>`).
fn staged_dirs(stage: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(prefix)) = (stage.parent(), stage.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}-", prefix.to_string_lossy());
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Every stream of the backup received, each into a fresh directory `<stage>-<n>`.
fn receive(
    pool: &Pool,
    upload: &Path,
    listed: &[String],
    with_header: bool,
    stage: &Path,
    limits: &rxd_image::Limits,
) -> ApiResult<(BTreeMap<Slot, PathBuf>, u64)> {
    let bad = |m: String| ApiError::BadRequest(format!("Invalid backup: {m}"));
    // LXD's backups before the header: one subvolume per tree.
    let pseudo = || {
        let mut want: BTreeMap<String, Slot> = listed
            .iter()
            .map(|s| (file_name(s, "/"), (s.clone(), "/".to_owned())))
            .collect();
        want.insert(file_name("", "/"), (String::new(), "/".to_owned()));
        want
    };
    let mut want: Option<BTreeMap<String, Slot>> = (!with_header).then(pseudo);
    let mut got: BTreeMap<Slot, PathBuf> = BTreeMap::new();
    let mut bytes = 0u64;
    rxd_image::each_backup_file(
        upload,
        limits.max_entries,
        limits.max_total_bytes,
        |name, data| {
            if name == "backup/index.yaml" {
                return Ok(());
            }
            let refuse = |m: String| rxd_image::ImageError::Archive(m);
            if name == "backup/optimized_header.yaml" {
                if want.is_some() {
                    return Err(refuse(
                        "optimized_header.yaml is not where index.yaml says, or comes twice".into(),
                    ));
                }
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(data, MAX_HEADER), &mut text)
                    .map_err(|e| refuse(format!("optimized_header.yaml: {e}")))?;
                let header: Header = serde_norway::from_str(&text)
                    .map_err(|e| refuse(format!("optimized_header.yaml: {e}")))?;
                let mut map = BTreeMap::new();
                for sub in header.subvolumes {
                    if !sub.snapshot.is_empty() && !listed.contains(&sub.snapshot) {
                        return Err(refuse(format!(
                            "optimized_header.yaml names snapshot {:?}, which index.yaml does not list",
                            sub.snapshot
                        )));
                    }
                    if sub.path != "/" && sub.path != ROOTFS {
                        return Err(refuse(format!(
                            "a subvolume at {:?}: rxd takes the volume's and its root filesystem's only",
                            sub.path
                        )));
                    }
                    let file = file_name(&sub.snapshot, &sub.path);
                    if map.insert(file, (sub.snapshot, sub.path)).is_some() {
                        return Err(refuse("optimized_header.yaml lists a subvolume twice".into()));
                    }
                }
                want = Some(map);
                return Ok(());
            }
            let Some(slot) = want.as_ref().and_then(|w| w.get(name)).cloned() else {
                return Err(refuse(format!(
                    "{name}: not a stream this optimized backup's header lists"
                )));
            };
            if got.contains_key(&slot) {
                return Err(refuse(format!("{name} comes twice")));
            }
            let dir = stage.with_file_name(format!(
                "{}-{}",
                stage.file_name().unwrap_or_default().to_string_lossy(),
                got.len()
            ));
            copy::private_dir(&dir).map_err(|e| refuse(e.to_string()))?;
            let mut counted = CountingReader {
                inner: data,
                bytes: 0,
            };
            let made = pool
                .receive_volume(&dir, &mut counted)
                .map_err(|e| refuse(format!("{name}: {e}")))?;
            bytes += counted.bytes;
            got.insert(slot, made);
            Ok(())
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    let want = want.unwrap_or_else(pseudo);
    for (file, slot) in &want {
        if !got.contains_key(slot) {
            return Err(bad(format!("it does not hold {file}")));
        }
    }
    for s in listed.iter().map(String::as_str).chain(std::iter::once("")) {
        if !got.contains_key(&(s.to_owned(), "/".to_owned())) {
            return Err(bad(format!("it does not hold {}", file_name(s, "/"))));
        }
    }
    Ok((got, bytes))
}

struct CountingReader<'a> {
    inner: &'a mut dyn std::io::Read,
    bytes: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The received subvolumes put in rxd's layout: the instance's directory with its root
/// filesystem (writable) and its `metadata.yaml` and `templates/`, then each snapshot's
/// (read-only) and its row.
async fn assemble(
    d: &Arc<Daemon>,
    pool: &Arc<Pool>,
    row: &InstanceRow,
    dest: &Path,
    got: &BTreeMap<Slot, PathBuf>,
    snaps: &[SnapshotRow],
) -> ApiResult<()> {
    let tree = |snapshot: &str, to: PathBuf, readonly: bool| {
        let root = got
            .get(&(snapshot.to_owned(), "/".to_owned()))
            .cloned()
            .unwrap_or_default();
        let rootfs = got.get(&(snapshot.to_owned(), ROOTFS.to_owned())).cloned();
        let (pool, snapshot) = (pool.clone(), snapshot.to_owned());
        tokio::task::spawn_blocking(move || -> ApiResult<()> {
            copy::private_dir(&to)?;
            let target = to.join("rootfs");
            match rootfs {
                Some(sub) => pool
                    .snapshot_volume(&sub, &target, readonly)
                    .map_err(pools::refusal)?,
                // LXD's layout: its root filesystem is a directory of the volume.
                None => {
                    pools::clone_tree(&pool, &root.join("rootfs"), &target, false)?;
                    if readonly {
                        pool.set_readonly(&target, true).map_err(pools::refusal)?;
                    }
                }
            }
            // Snapshots keep their root filesystem only, as every snapshot rxd takes.
            if snapshot.is_empty() {
                layout::copy_image_extras(&root, &to).map_err(ApiError::internal)?;
            }
            Ok(())
        })
    };
    let containers = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let temp = containers.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
    let placed = tree("", temp.clone(), false)
        .await?
        .and_then(|()| rxd_image::durable::publish(&temp, dest).map_err(ApiError::internal));
    if let Err(e) = placed {
        let _ = layout::remove_tree(&temp);
        return Err(e);
    }
    if !snaps.is_empty() {
        let snaps_dir = layout::snapshots_dir(d, &row.pool, &row.key());
        copy::private_dir(&snaps_dir)?;
        for snap in snaps {
            let temp = snaps_dir.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
            let filled = tree(&snap.name, temp.clone(), true).await?;
            crate::service::snapshots::publish_brought(d, filled, &temp, &snaps_dir, snap.clone())
                .await?;
        }
    }
    Ok(())
}
