//! A storage pool on this host: creating, mounting, unmounting and deleting it, its space, and
//! its volumes.
//!
//! Where a pool's files are (LXD 5.0's three cases, from `source`):
//! - a btrfs loop file `<state>/disks/<name>.img`, attached to a loop device and mounted at the
//!   mount point; the device frees itself at the last unmount (autoclear);
//! - a directory elsewhere (`dir` on any filesystem, `btrfs` on a btrfs one), bind-mounted at the
//!   mount point;
//! - the mount point itself (`dir`'s default), nothing to mount.
//!
//! Volume operations take paths, and only paths of this pool's layout: `<mount point>/<type
//! dir>/<name>` or `<mount point>/<type>-snapshots/<volume>/<snapshot>`, as
//! [`Pool::volume_path`] and [`Pool::snapshot_path`] build them. Anything else is refused, so a
//! wrong path cannot make this crate delete or snapshot something outside the pool.

use crate::config::{self, check_pool_name, is_plain_absolute, resolve_mount_options};
use crate::mounts::{self, is_btrfs, is_subvolume};
use crate::tool::run;
use crate::{btrfs, DriverKind, Result, StorageError, VolumeType, DEFAULT_BTRFS_MOUNT_OPTIONS};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The directories of a pool, with their modes: instance dirs are traversable (`0711`, LXD's)
/// so an unprivileged container's root can reach its shifted tree; images, custom volumes and
/// every snapshot dir stay private (`0700`): they hold files in container ids, real setuid-root
/// ones among them, and containers reach custom volumes only through the mounts rxd makes.
pub const LAYOUT: [(&str, u32); 5] = [
    ("images", 0o700),
    ("containers", 0o711),
    ("containers-snapshots", 0o700),
    ("custom", 0o700),
    ("custom-snapshots", 0o700),
];

/// Mode of `<state>/storage-pools`, of each pool's mount point and of its root.
const POOL_DIR_MODE: u32 = 0o711;

/// Mounts stacked on a pool's mount point that one unmount call takes off at most.
const MAX_STACKED: usize = 64;

/// How long an unmount waits for the kernel to free a loop device, twice (after the unmount,
/// then after an explicit detach).
const LOOP_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Bytes or inodes: used and total (LXD's `/1.0/storage-pools/<p>/resources` numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub total: u64,
}

/// A pool's space and inodes. Filesystems that allocate inodes as they go (btrfs) report
/// zero inodes, as in LXD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub space: Usage,
    pub inodes: Usage,
}

/// Where a pool's files are (see the module's documentation).
enum Backing<'a> {
    Loop(&'a Path),
    Bind(&'a Path),
    Direct,
}

/// A volume path's place in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Volume,
    Snapshot,
    /// A tree inside a volume or snapshot directory (its `rootfs`, or one of rxd's hidden
    /// work-in-progress names holding one): rxd's instances keep their root filesystem as a
    /// subvolume of its own there, so the directory around it (metadata, templates) can be
    /// renamed into place as one.
    Tree,
}

/// A storage pool of this host.
#[derive(Debug, Clone)]
pub struct Pool {
    kind: DriverKind,
    name: String,
    state_dir: PathBuf,
    mount_point: PathBuf,
    source: PathBuf,
    config: BTreeMap<String, String>,
}

impl Pool {
    /// A pool as its record holds it (`config` as [`crate::prepare_config`] resolved it). Does
    /// no IO: the pool may or may not be mounted ([`Pool::mount`]).
    pub fn open(
        state_dir: &Path,
        name: &str,
        kind: DriverKind,
        config: BTreeMap<String, String>,
    ) -> Result<Pool> {
        check_pool_name(name)?;
        if !is_plain_absolute(state_dir) {
            return Err(StorageError::Source {
                pool: name.to_owned(),
                path: state_dir.to_path_buf(),
                reason: "the state directory must be an absolute path without \".\" or \"..\""
                    .into(),
            });
        }
        let source = match config.get("source") {
            Some(s) if is_plain_absolute(Path::new(s)) => PathBuf::from(s),
            other => {
                return Err(StorageError::Source {
                    pool: name.to_owned(),
                    path: PathBuf::from(other.map(String::as_str).unwrap_or_default()),
                    reason: "the pool's config needs an absolute source (resolve a new pool's config with prepare_config)".into(),
                })
            }
        };
        Ok(Pool {
            kind,
            name: name.to_owned(),
            state_dir: state_dir.to_path_buf(),
            mount_point: config::mount_point(state_dir, name),
            source,
            config,
        })
    }

    pub fn kind(&self) -> DriverKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<state>/storage-pools/<name>`: where the pool's volumes are reached.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The config to record (what `GET /1.0/storage-pools/<name>` shows).
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// Where the pool's files are: its loop file, a directory bind-mounted at the mount point,
    /// or the mount point itself.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The loop file behind a btrfs loop pool.
    pub fn loop_file(&self) -> Option<&Path> {
        match self.backing() {
            Backing::Loop(file) => Some(file),
            _ => None,
        }
    }

    /// Whether volumes of this pool can be given a size.
    pub fn supports_quota(&self) -> bool {
        self.kind == DriverKind::Btrfs
    }

    /// `btrfs.mount_options`, or LXD's default when unset.
    pub fn mount_options(&self) -> &str {
        self.config
            .get("btrfs.mount_options")
            .map(String::as_str)
            .filter(|o| !o.is_empty())
            .unwrap_or(DEFAULT_BTRFS_MOUNT_OPTIONS)
    }

    fn backing(&self) -> Backing<'_> {
        if self.kind == DriverKind::Btrfs
            && self.source == config::loop_file(&self.state_dir, &self.name)
        {
            Backing::Loop(&self.source)
        } else if self.source == self.mount_point {
            Backing::Direct
        } else {
            Backing::Bind(&self.source)
        }
    }

    fn source_err(&self, path: &Path, reason: impl Into<String>) -> StorageError {
        StorageError::Source {
            pool: self.name.clone(),
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Creates the pool on disk from `config` as [`crate::prepare_config`] resolved it, mounts
    /// it and lays out its directories ([`LAYOUT`]). A btrfs loop pool gets a new sparse loop
    /// file of `size`, formatted with `mkfs.btrfs -L <name>`; a btrfs directory source is made a
    /// subvolume if missing, else must be an empty directory on btrfs; a `dir` source other than
    /// the mount point must be an existing empty directory (a filesystem's `lost+found` aside).
    /// On failure everything made so far is undone.
    pub fn create(
        state_dir: &Path,
        name: &str,
        kind: DriverKind,
        config: BTreeMap<String, String>,
    ) -> Result<Pool> {
        let pool = Pool::open(state_dir, name, kind, config)?;
        if let Some(opts) = pool.config.get("btrfs.mount_options") {
            resolve_mount_options(opts)?;
        }
        let mut undo = Undo {
            pool: &pool,
            mount_point: false,
            image: false,
            source_subvolume: false,
            mounted: false,
            layout: Vec::new(),
            done: false,
        };
        mkdir_mode(&state_dir.join("storage-pools"), POOL_DIR_MODE, true)?;
        match pool.backing() {
            Backing::Loop(image) => {
                let size = match pool.config.get("size") {
                    Some(s) => config::parse_size(s).map_err(|e| StorageError::InvalidValue {
                        key: "size".into(),
                        reason: e.to_string(),
                    })?,
                    None => {
                        return Err(pool.source_err(
                            image,
                            "a loop file needs a size (resolve a new pool's config with prepare_config)",
                        ))
                    }
                };
                undo.mount_point = pool.make_mount_point()?;
                if let Some(disks) = image.parent() {
                    mkdir_mode(disks, 0o700, true)?;
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(image)
                    .map_err(|e| match e.kind() {
                        ErrorKind::AlreadyExists => pool.source_err(
                            image,
                            "the loop file already exists (left by an earlier pool of this name?); remove it first",
                        ),
                        _ => StorageError::io("creating the loop file", image)(e),
                    })?;
                undo.image = true;
                file.set_len(size)
                    .map_err(StorageError::io("sizing the loop file", image))?;
                drop(file);
                run(
                    "mkfs.btrfs",
                    &[
                        OsStr::new("-q"),
                        OsStr::new("-L"),
                        OsStr::new(&pool.name),
                        image.as_os_str(),
                    ],
                )?;
                undo.mounted = pool.mount()?;
            }
            Backing::Bind(source) => {
                if source.starts_with(state_dir) {
                    return Err(pool.source_err(
                        source,
                        format!(
                            "it is inside the state directory {state_dir:?}, where the only allowed source is {:?}",
                            pool.mount_point
                        ),
                    ));
                }
                undo.source_subvolume = pool.check_source(source)?;
                undo.mount_point = pool.make_mount_point()?;
                undo.mounted = pool.mount()?;
            }
            Backing::Direct => {
                undo.mount_point = pool.make_mount_point()?;
                if kind == DriverKind::Btrfs && !is_btrfs(&pool.mount_point)? {
                    return Err(pool.source_err(
                        &pool.mount_point,
                        "it does not reside on a btrfs filesystem",
                    ));
                }
            }
        }
        set_mode(&pool.mount_point, POOL_DIR_MODE)?;
        for (dir, mode) in LAYOUT {
            let path = pool.mount_point.join(dir);
            if mkdir_mode(&path, mode, false)? {
                undo.layout.push(path);
            }
        }
        undo.done = true;
        drop(undo);
        Ok(pool)
    }

    /// Makes the mount point (`0711`); an existing one must be an empty directory. Returns
    /// whether it was made.
    fn make_mount_point(&self) -> Result<bool> {
        if mkdir_mode(&self.mount_point, POOL_DIR_MODE, true)? {
            return Ok(true);
        }
        if !mounts::mounts_at(&self.mount_point)?.is_empty() {
            return Err(self.source_err(
                &self.mount_point,
                "something is already mounted at the pool's mount point",
            ));
        }
        if !is_empty_dir(&self.mount_point)? {
            return Err(self.source_err(
                &self.mount_point,
                "the pool's mount point exists and isn't empty (left by an earlier pool of this name?)",
            ));
        }
        Ok(false)
    }

    /// Checks a directory source for a new pool, making a btrfs one a subvolume if it does not
    /// exist (returns whether it was made).
    fn check_source(&self, source: &Path) -> Result<bool> {
        match std::fs::symlink_metadata(source) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if self.kind == DriverKind::Dir {
                    return Err(self.source_err(source, "it doesn't exist"));
                }
                let parent = source.parent().unwrap_or(Path::new("/"));
                if !is_btrfs(parent)? {
                    return Err(self.source_err(
                        source,
                        "it doesn't exist, and its parent does not reside on a btrfs filesystem",
                    ));
                }
                btrfs::create_subvolume(source)?;
                Ok(true)
            }
            Err(e) => Err(StorageError::io("inspecting", source)(e)),
            Ok(m) if !m.is_dir() => Err(self.source_err(source, "it isn't a directory")),
            Ok(_) => {
                if self.kind == DriverKind::Btrfs && !is_btrfs(source)? {
                    return Err(self.source_err(source, "it does not reside on a btrfs filesystem"));
                }
                let mut names = read_names(source)?;
                // A filesystem's own `lost+found` at its root is acceptable (LXD).
                if !mounts::mounts_at(source)?.is_empty() {
                    names.retain(|n| n != "lost+found");
                }
                if !names.is_empty() {
                    return Err(self.source_err(source, "it isn't empty"));
                }
                Ok(false)
            }
        }
    }

    /// Whether the pool is mounted where it belongs, from what it belongs to. Something else
    /// mounted there is an error.
    pub fn is_mounted(&self) -> Result<bool> {
        let top = match self.backing() {
            Backing::Direct => return Ok(self.mount_point.is_dir()),
            _ => mounts::mounts_at(&self.mount_point)?.pop(),
        };
        let Some(top) = top else {
            return Ok(false);
        };
        let elsewhere = |expected: &Path| StorageError::MountedElsewhere {
            pool: self.name.clone(),
            mount_point: self.mount_point.clone(),
            found: format!("{} ({}, {})", top.source, top.fstype, top.root.display()),
            expected: expected.to_path_buf(),
        };
        match self.backing() {
            Backing::Loop(image) => {
                let image = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
                let ours = top.fstype == "btrfs"
                    && top.root == Path::new("/")
                    && mounts::loop_backing_file(&top.source).as_deref() == Some(image.as_path());
                if ours {
                    Ok(true)
                } else {
                    Err(elsewhere(&image))
                }
            }
            Backing::Bind(source) => {
                if mounts::identity(&self.mount_point)? == mounts::identity(source)? {
                    Ok(true)
                } else {
                    Err(elsewhere(source))
                }
            }
            Backing::Direct => Ok(true),
        }
    }

    /// Mounts the pool if it isn't (at daemon start, and at creation); returns whether it
    /// mounted it. A btrfs loop file is attached with autoclear, so [`Pool::unmount`] frees the
    /// loop device; `btrfs.mount_options` apply to it. Directory sources are bind-mounted as
    /// they are: the filesystem under them is the administrator's, and rxd does not remount it
    /// with other options (LXD does, which changes them for every user of that filesystem).
    pub fn mount(&self) -> Result<bool> {
        if self.is_mounted()? {
            return Ok(false);
        }
        match self.backing() {
            Backing::Direct => Err(StorageError::Io {
                action: "mounting storage pool",
                path: self.mount_point.clone(),
                source: ErrorKind::NotFound.into(),
            }),
            Backing::Loop(image) => {
                let (flags, data) = resolve_mount_options(self.mount_options())?;
                let data = CString::new(data).map_err(|_| StorageError::InvalidValue {
                    key: "btrfs.mount_options".into(),
                    reason: "it contains NUL".into(),
                })?;
                std::fs::metadata(image)
                    .map_err(StorageError::io("opening the loop file", image))?;
                mkdir_mode(&self.mount_point, POOL_DIR_MODE, true)?;
                let device = mounts::attach_loop(image)?;
                let mounted = rustix::mount::mount(
                    &device,
                    &self.mount_point,
                    "btrfs",
                    flags,
                    (!data.is_empty()).then_some(data.as_c_str()),
                );
                // Mounted: the device is busy and this sets autoclear. Not mounted: this frees it.
                if let Err(e) = mounts::detach_loop(&device) {
                    tracing::warn!(device = %device.display(), error = %e, "could not set the pool's loop device to free itself");
                }
                mounted.map_err(|e| StorageError::Io {
                    action: "mounting btrfs loop device",
                    path: device.clone(),
                    source: e.into(),
                })?;
                tracing::info!(pool = %self.name, device = %device.display(), "storage pool mounted");
                Ok(true)
            }
            Backing::Bind(source) => {
                let m = std::fs::symlink_metadata(source)
                    .map_err(StorageError::io("opening the pool's source", source))?;
                if !m.is_dir() {
                    return Err(self.source_err(source, "it isn't a directory"));
                }
                if self.kind == DriverKind::Btrfs && !is_btrfs(source)? {
                    return Err(self.source_err(source, "it does not reside on a btrfs filesystem"));
                }
                mkdir_mode(&self.mount_point, POOL_DIR_MODE, true)?;
                rustix::mount::mount_bind(source, &self.mount_point).map_err(
                    StorageError::errno("bind-mounting the pool's source at", &self.mount_point),
                )?;
                tracing::info!(pool = %self.name, source = %source.display(), "storage pool mounted");
                Ok(true)
            }
        }
    }

    /// Gives the layout's directories their modes ([`LAYOUT`]), making any that is missing: a
    /// pool made by an older rxd gets today's modes at its next mount.
    pub fn secure_layout(&self) -> Result<()> {
        for (dir, mode) in LAYOUT {
            let path = self.mount_point.join(dir);
            mkdir_mode(&path, mode, true)?;
            set_mode(&path, mode)?;
        }
        Ok(())
    }

    /// Unmounts the pool (every mount stacked on its mount point); returns whether anything was
    /// unmounted. A busy pool is an error, not a lazy detach. For a loop pool this waits for the
    /// kernel to free the loop device, detaching it explicitly if it was attached without
    /// autoclear.
    pub fn unmount(&self) -> Result<bool> {
        if matches!(self.backing(), Backing::Direct) {
            return Ok(false);
        }
        let mut unmounted = false;
        let mut stacked = mounts::mounts_at(&self.mount_point)?.len();
        // One unmount per mount stacked there, a bounded number whatever the table says.
        for _ in 0..stacked.min(MAX_STACKED) {
            match rustix::mount::unmount(&self.mount_point, rustix::mount::UnmountFlags::NOFOLLOW) {
                Ok(()) => unmounted = true,
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => {
                    return Err(StorageError::Io {
                        action: "unmounting storage pool",
                        path: self.mount_point.clone(),
                        source: e.into(),
                    })
                }
            }
            stacked = mounts::mounts_at(&self.mount_point)?.len();
            if stacked == 0 {
                break;
            }
        }
        if stacked > 0 {
            return Err(StorageError::Io {
                action: "unmounting storage pool (still mounted after unmounting)",
                path: self.mount_point.clone(),
                source: ErrorKind::ResourceBusy.into(),
            });
        }
        if let Backing::Loop(image) = self.backing() {
            let mut left = mounts::wait_loop_released(image, LOOP_RELEASE_WAIT)?;
            if !left.is_empty() {
                for device in &left {
                    // Fails when the kernel is already freeing it; the wait below tells.
                    let _ = mounts::detach_loop(device);
                }
                left = mounts::wait_loop_released(image, LOOP_RELEASE_WAIT)?;
            }
            if !left.is_empty() {
                tracing::warn!(pool = %self.name, devices = ?left, "loop devices of the pool are still attached (in use elsewhere?); they free themselves when no longer used");
            }
        }
        if unmounted {
            tracing::info!(pool = %self.name, "storage pool unmounted");
        }
        Ok(unmounted)
    }

    /// Removes the pool from the host: refuses while any volume is left in it (the caller checks
    /// `used_by` too), then removes its directories, unmounts it, removes a loop file and the
    /// mount point. A directory source is left in place, emptied of the pool's directories, as
    /// LXD leaves it.
    pub fn delete(self) -> Result<()> {
        let exists = |path: &Path| match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("inspecting", path)(e)),
        };
        // What is gone needs no cleaning: a pool whose loop file or source was removed by hand
        // is left unmounted and without its mount point.
        let backing_gone = match self.backing() {
            Backing::Loop(file) => !exists(file)?,
            Backing::Bind(source) => !exists(source)?,
            Backing::Direct => false,
        };
        if backing_gone {
            tracing::warn!(pool = %self.name, source = %self.source.display(), "the storage pool's source is gone; removing what is left");
            self.unmount()?;
            remove_dir_if_present(&self.mount_point)?;
            return Ok(());
        }
        if exists(&self.mount_point)? {
            self.mount()?;
            let mut left = Vec::new();
            for (dir, _) in LAYOUT {
                let path = self.mount_point.join(dir);
                match read_names(&path) {
                    Ok(names) => left.extend(names.into_iter().map(|n| format!("{dir}/{n}"))),
                    Err(StorageError::Io { source, .. })
                        if source.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if !left.is_empty() {
                const SHOWN: usize = 10;
                let more = left.len().saturating_sub(SHOWN);
                left.truncate(SHOWN);
                return Err(StorageError::InUse {
                    pool: self.name.clone(),
                    volumes: left,
                    more,
                });
            }
            if !matches!(self.backing(), Backing::Loop(_)) {
                for (dir, _) in LAYOUT {
                    remove_dir_if_present(&self.mount_point.join(dir))?;
                }
            }
            self.unmount()?;
            remove_dir_if_present(&self.mount_point)?;
        }
        if let Backing::Loop(image) = self.backing() {
            match std::fs::remove_file(image) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(StorageError::io("removing the loop file", image)(e))
                }
                _ => {}
            }
        }
        tracing::info!(pool = %self.name, "storage pool deleted");
        Ok(())
    }

    /// The pool's space and inodes (`statfs` of its mount point; it must be mounted).
    pub fn resources(&self) -> Result<Resources> {
        if !self.is_mounted()? {
            return Err(StorageError::NotMounted {
                pool: self.name.clone(),
                mount_point: self.mount_point.clone(),
            });
        }
        let st = rustix::fs::statfs(&self.mount_point).map_err(StorageError::errno(
            "reading the space of",
            &self.mount_point,
        ))?;
        let block = st.f_frsize as u64;
        let mut res = Resources {
            space: Usage {
                used: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(block),
                total: st.f_blocks.saturating_mul(block),
            },
            inodes: Usage::default(),
        };
        if st.f_files > 0 {
            res.inodes = Usage {
                used: st.f_files.saturating_sub(st.f_ffree),
                total: st.f_files,
            };
        }
        Ok(res)
    }

    /// `<mount point>/<type dir>/<name>`.
    pub fn volume_path(&self, vtype: VolumeType, name: &str) -> Result<PathBuf> {
        check_volume_name("volume name", name)?;
        Ok(self.mount_point.join(vtype.dir()).join(name))
    }

    /// `<mount point>/<type>-snapshots/<volume>/<snapshot>`; images have no snapshots.
    pub fn snapshot_path(
        &self,
        vtype: VolumeType,
        volume: &str,
        snapshot: &str,
    ) -> Result<PathBuf> {
        let Some(dir) = vtype.snapshots_dir() else {
            return Err(StorageError::InvalidName {
                what: "volume type",
                name: vtype.to_string(),
                reason: "image volumes have no snapshots",
            });
        };
        check_volume_name("volume name", volume)?;
        check_volume_name("snapshot name", snapshot)?;
        Ok(self.mount_point.join(dir).join(volume).join(snapshot))
    }

    /// Where `path` is in the layout; anything outside it is refused.
    fn place(&self, path: &Path) -> Result<Place> {
        let refuse = || StorageError::NotAVolume {
            pool: self.name.clone(),
            path: path.to_path_buf(),
        };
        let rel = path.strip_prefix(&self.mount_point).map_err(|_| refuse())?;
        let parts: Vec<&OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => Ok(s),
                _ => Err(refuse()),
            })
            .collect::<Result<_>>()?;
        let is = |s: &OsStr, names: &[&str]| names.iter().any(|n| s == OsStr::new(n));
        match parts.as_slice() {
            [dir, _] if is(dir, &["images", "containers", "custom"]) => Ok(Place::Volume),
            [dir, _, _] if is(dir, &["containers-snapshots", "custom-snapshots"]) => {
                Ok(Place::Snapshot)
            }
            [dir, _, _] if is(dir, &["images", "containers", "custom"]) => Ok(Place::Tree),
            [dir, _, _, _] if is(dir, &["containers-snapshots", "custom-snapshots"]) => {
                Ok(Place::Tree)
            }
            _ => Err(refuse()),
        }
    }

    /// Checks that nothing is at `path` yet: btrfs would put a snapshot *inside* an existing
    /// directory, and a rename would replace an empty one.
    fn check_free(path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Err(StorageError::VolumeExists {
                path: path.to_path_buf(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("inspecting", path)(e)),
        }
    }

    /// Makes the parent of a snapshot path (`<type>-snapshots/<volume>`, `0700`).
    fn snapshot_parent(&self, path: &Path, place: Place) -> Result<()> {
        if place == Place::Snapshot {
            if let Some(parent) = path.parent() {
                mkdir_mode(parent, 0o700, true)?;
            }
        }
        Ok(())
    }

    /// Creates an empty volume at `path` with `mode` for its root directory: a subvolume
    /// (btrfs) or a directory (dir). Nothing may be at `path` yet.
    pub fn create_volume(&self, path: &Path, mode: u32) -> Result<()> {
        let place = self.place(path)?;
        Self::check_free(path)?;
        self.snapshot_parent(path, place)?;
        match self.kind {
            DriverKind::Btrfs => btrfs::create_subvolume(path)?,
            DriverKind::Dir => std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(StorageError::io("creating volume", path))?,
        }
        set_mode(path, mode)
    }

    /// Makes `dst` a copy of the volume `src`, as a snapshot or as a new instance from an image
    /// volume: btrfs takes an instant snapshot (read-only if asked); dir copies the tree with
    /// owners, modes, hard links and times kept (rxd-image's descriptor copy), and `readonly`
    /// does nothing there (LXD's dir snapshots are plain directories). Nothing may be at `dst`
    /// yet (btrfs would snapshot into an existing directory).
    pub fn snapshot_volume(&self, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        self.place(src)?;
        let place = self.place(dst)?;
        Self::check_free(dst)?;
        self.snapshot_parent(dst, place)?;
        match self.kind {
            DriverKind::Btrfs => {
                if !is_subvolume(src)? {
                    return Err(StorageError::NotSubvolume {
                        path: src.to_path_buf(),
                    });
                }
                btrfs::snapshot(src, dst, readonly)
            }
            DriverKind::Dir => match rxd_image::copy::copy_tree(src, dst) {
                Ok(_) => Ok(()),
                Err(source) => {
                    // Nothing half-copied stays behind.
                    let _ = rxd_image::remove::remove_tree(dst);
                    Err(StorageError::Copy {
                        src: src.to_path_buf(),
                        dst: dst.to_path_buf(),
                        source,
                    })
                }
            },
        }
    }

    /// Makes the volume at `path` read-only or writable (btrfs: the subvolume's `ro` property;
    /// dir: nothing, as in LXD).
    pub fn set_readonly(&self, path: &Path, readonly: bool) -> Result<()> {
        self.place(path)?;
        match self.kind {
            DriverKind::Btrfs => btrfs::set_readonly(path, readonly),
            DriverKind::Dir => Ok(()),
        }
    }

    /// Writes the read-only subvolume at `path` (in the layout) into `out` as a `btrfs send`
    /// stream, as its difference from the read-only subvolume `parent` when given (LXD's
    /// optimized backups). btrfs pools only.
    pub fn send_volume(
        &self,
        path: &Path,
        parent: Option<&Path>,
        out: std::fs::File,
    ) -> Result<()> {
        self.place(path)?;
        if let Some(parent) = parent {
            self.place(parent)?;
        }
        self.btrfs_only()?;
        btrfs::send(path, parent, out)
    }

    /// Receives one `btrfs send` stream from `input` into `dir`, an empty directory in the
    /// layout, the tool confined there: returns the subvolume it made, the one entry `dir` then
    /// holds. The stream is the kernel's to parse and may make device nodes and setuid files in
    /// it, and refer to any subvolume of the pool as a clone source: callers take it from
    /// server administrators only. btrfs pools only.
    pub fn receive_volume(&self, dir: &Path, input: &mut dyn std::io::Read) -> Result<PathBuf> {
        self.place(dir)?;
        self.btrfs_only()?;
        if !is_empty_dir(dir)? {
            return Err(StorageError::VolumeExists {
                path: dir.to_path_buf(),
            });
        }
        btrfs::receive(dir, input)?;
        let names = read_names(dir)?;
        let made = match names.as_slice() {
            [one] => dir.join(one),
            _ => {
                return Err(StorageError::ToolOutput {
                    command: format!("btrfs receive {}", dir.display()),
                    detail: format!(
                        "{} entries made where one subvolume was expected",
                        names.len()
                    ),
                })
            }
        };
        if !is_subvolume(&made)? {
            return Err(StorageError::NotSubvolume { path: made });
        }
        Ok(made)
    }

    fn btrfs_only(&self) -> Result<()> {
        match self.kind {
            DriverKind::Btrfs => Ok(()),
            DriverKind::Dir => Err(StorageError::UnsupportedDriver(
                "dir (btrfs send and receive need a btrfs pool)".into(),
            )),
        }
    }

    /// Renames a volume or snapshot within the pool (an instance rename, a restore's swap);
    /// nothing may be at `to` yet.
    pub fn rename_volume(&self, from: &Path, to: &Path) -> Result<()> {
        self.place(from)?;
        let place = self.place(to)?;
        Self::check_free(to)?;
        self.snapshot_parent(to, place)?;
        std::fs::rename(from, to).map_err(StorageError::io("renaming volume", from))
    }

    /// Deletes the volume at `path`; a missing one is not an error. btrfs: the subvolume and
    /// every subvolume a container made inside it, deepest first (read-only ones made writable
    /// where that is needed); a plain directory there is removed by descriptor. dir: removed by
    /// descriptor. An emptied snapshot directory (`<type>-snapshots/<volume>`) goes too.
    pub fn delete_volume(&self, path: &Path) -> Result<()> {
        let place = self.place(path)?;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("inspecting volume", path)(e)),
            Ok(_) => {
                if self.kind == DriverKind::Btrfs && is_subvolume(path)? {
                    btrfs::delete_tree(path)?;
                } else {
                    rxd_image::remove::remove_tree(path)
                        .map_err(StorageError::io("removing volume", path))?;
                }
            }
        }
        // The volume's (or the snapshot's volume's) snapshot directory, when empty.
        let snapshots = match place {
            Place::Snapshot => path.parent().map(Path::to_path_buf),
            Place::Volume => self.snapshots_dir_of(path),
            Place::Tree => None,
        };
        if let Some(dir) = snapshots {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {}
                Err(e) => return Err(StorageError::io("removing snapshot directory", dir)(e)),
            }
        }
        Ok(())
    }

    /// `<type>-snapshots/<name>` for the volume at `path` (a volume place).
    fn snapshots_dir_of(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.mount_point).ok()?;
        let mut parts = rel.components();
        let dir = parts.next()?.as_os_str();
        let name = parts.next()?.as_os_str();
        let vtype = [VolumeType::Container, VolumeType::Custom]
            .into_iter()
            .find(|t| OsStr::new(t.dir()) == dir)?;
        Some(self.mount_point.join(vtype.snapshots_dir()?).join(name))
    }

    /// Limits the volume at `path` to `size` bytes (`None`: no limit). btrfs: a limit on the
    /// referenced bytes of its qgroup `0/<subvolume id>`; quotas are turned on for the pool the
    /// first time a size is asked for (they slow snapshot deletion, so not before), and the
    /// qgroup made if missing. A snapshot taken later starts with its source's limit (btrfs
    /// copies it). dir: no quotas.
    pub fn set_quota(&self, path: &Path, size: Option<u64>) -> Result<()> {
        self.place(path)?;
        if self.kind == DriverKind::Dir {
            return match size {
                Some(_) => Err(StorageError::QuotaUnsupported),
                None => Ok(()),
            };
        }
        if !is_subvolume(path)? {
            return Err(StorageError::NotSubvolume {
                path: path.to_path_buf(),
            });
        }
        let id = btrfs::subvolume_id(path)?;
        let groups = match btrfs::qgroups(path)? {
            Some(groups) => groups,
            None if size.is_none() => return Ok(()),
            None => {
                btrfs::enable_quota(&self.mount_point)?;
                btrfs::qgroups(path)?.unwrap_or_default()
            }
        };
        if !groups.contains_key(&id) {
            btrfs::qgroup_create(id, path)?;
        }
        btrfs::qgroup_limit(id, size, path)
    }

    /// Bytes the volume at `path` references, when the pool counts them (btrfs with quotas on;
    /// as of the last transaction commit, at most 30 s old); `None` otherwise.
    pub fn usage(&self, path: &Path) -> Result<Option<u64>> {
        self.place(path)?;
        if self.kind == DriverKind::Dir || !is_subvolume(path)? {
            return Ok(None);
        }
        let id = btrfs::subvolume_id(path)?;
        Ok(btrfs::qgroups(path)?.and_then(|groups| groups.get(&id).copied()))
    }
}

/// Undoes a half-made pool when [`Pool::create`] fails.
struct Undo<'a> {
    pool: &'a Pool,
    mount_point: bool,
    image: bool,
    source_subvolume: bool,
    mounted: bool,
    layout: Vec<PathBuf>,
    done: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let pool = self.pool;
        tracing::warn!(pool = %pool.name, "storage pool creation failed; undoing it");
        for dir in self.layout.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        if self.mounted {
            if let Err(e) = pool.unmount() {
                tracing::warn!(pool = %pool.name, error = %e, "could not unmount the half-made pool");
            }
        }
        if self.source_subvolume {
            if let Err(e) = btrfs::delete_tree(&pool.source) {
                tracing::warn!(pool = %pool.name, error = %e, "could not delete the half-made pool's subvolume");
            }
        }
        if self.image {
            if let Some(file) = pool.loop_file() {
                let _ = std::fs::remove_file(file);
            }
        }
        if self.mount_point {
            let _ = std::fs::remove_dir(&pool.mount_point);
        }
    }
}

/// A volume or snapshot name is one path component.
fn check_volume_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it is a relative directory name"
    } else if name.contains('/') {
        "it contains a slash"
    } else if name.contains('\0') {
        "it contains NUL"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

/// Makes the directory `path` with `mode` (exactly: the umask does not apply); an existing
/// directory is left as it is when `exist_ok`. Returns whether it was made.
fn mkdir_mode(path: &Path, mode: u32, exist_ok: bool) -> Result<bool> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            set_mode(path, mode)?;
            Ok(true)
        }
        Err(e) if exist_ok && e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(StorageError::io("creating directory", path)(e)),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(StorageError::io("setting the mode of", path))
}

fn read_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))? {
        let entry = entry.map_err(StorageError::io("listing", dir))?;
        names.push(String::from_utf8_lossy(entry.file_name().as_bytes()).into_owned());
    }
    names.sort();
    Ok(names)
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(read_names(dir)?.is_empty())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(StorageError::io("removing directory", dir)(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: DriverKind, source: &str) -> Pool {
        let config = [("source".to_owned(), source.to_owned())].into();
        Pool::open(Path::new("/state"), "p", kind, config).unwrap()
    }

    #[test]
    fn paths_of_the_layout() {
        let p = pool(DriverKind::Dir, "/state/storage-pools/p");
        assert_eq!(
            p.volume_path(VolumeType::Container, "c1").unwrap(),
            Path::new("/state/storage-pools/p/containers/c1")
        );
        assert_eq!(
            p.volume_path(VolumeType::Image, "ab12").unwrap(),
            Path::new("/state/storage-pools/p/images/ab12")
        );
        assert_eq!(
            p.snapshot_path(VolumeType::Custom, "v", "snap0").unwrap(),
            Path::new("/state/storage-pools/p/custom-snapshots/v/snap0")
        );
        assert!(p.snapshot_path(VolumeType::Image, "ab12", "s").is_err());
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(p.volume_path(VolumeType::Custom, bad).is_err(), "{bad:?}");
            assert!(
                p.snapshot_path(VolumeType::Custom, "v", bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_layout_paths_are_volumes() {
        let p = pool(DriverKind::Dir, "/state/storage-pools/p");
        let ok = |s: &str| p.place(Path::new(s)).is_ok();
        assert!(ok("/state/storage-pools/p/containers/c1"));
        assert!(ok("/state/storage-pools/p/images/fp"));
        assert!(ok("/state/storage-pools/p/custom/v"));
        assert!(ok("/state/storage-pools/p/containers-snapshots/c1/s"));
        assert!(ok("/state/storage-pools/p/custom-snapshots/v/s"));
        assert!(!ok("/state/storage-pools/p"));
        assert!(!ok("/state/storage-pools/p/containers"));
        // A volume's own tree (rxd's rootfs subvolumes), and nothing deeper.
        assert!(ok("/state/storage-pools/p/containers/c1/rootfs"));
        assert!(ok(
            "/state/storage-pools/p/containers-snapshots/c1/s/rootfs"
        ));
        assert!(!ok("/state/storage-pools/p/containers/c1/rootfs/etc"));
        assert!(!ok(
            "/state/storage-pools/p/containers-snapshots/c1/s/rootfs/etc"
        ));
        assert!(!ok(
            "/state/storage-pools/p/containers/../../q/containers/c1"
        ));
        assert!(!ok("/state/storage-pools/p/images-snapshots/fp/s"));
        assert!(!ok("/state/storage-pools/p/containers-snapshots/c1"));
        assert!(!ok("/state/storage-pools/q/containers/c1"));
        assert!(!ok("/etc"));
        // The refusal says which pool and which path.
        let e = p
            .delete_volume(Path::new("/etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"/etc/passwd\"") && e.contains("\"p\""), "{e}");
    }

    #[test]
    fn backing_follows_source() {
        assert!(matches!(
            pool(DriverKind::Btrfs, "/state/disks/p.img").backing(),
            Backing::Loop(_)
        ));
        assert!(matches!(
            pool(DriverKind::Btrfs, "/mnt/b/pool").backing(),
            Backing::Bind(_)
        ));
        assert!(matches!(
            pool(DriverKind::Dir, "/state/storage-pools/p").backing(),
            Backing::Direct
        ));
        assert!(matches!(
            pool(DriverKind::Dir, "/srv/pool").backing(),
            Backing::Bind(_)
        ));
        // A dir pool never takes a file for a loop file.
        assert!(matches!(
            pool(DriverKind::Dir, "/state/disks/p.img").backing(),
            Backing::Bind(_)
        ));
    }

    #[test]
    fn open_needs_an_absolute_source_and_state_dir() {
        let cfg = |s: &str| [("source".to_owned(), s.to_owned())].into();
        assert!(Pool::open(Path::new("/s"), "p", DriverKind::Dir, BTreeMap::new()).is_err());
        assert!(Pool::open(Path::new("/s"), "p", DriverKind::Dir, cfg("rel")).is_err());
        assert!(Pool::open(Path::new("s"), "p", DriverKind::Dir, cfg("/s/x")).is_err());
        assert!(Pool::open(Path::new("/s"), "../p", DriverKind::Dir, cfg("/s/x")).is_err());
    }

    #[test]
    fn dir_pools_have_no_quotas() {
        let p = pool(DriverKind::Dir, "/state/storage-pools/p");
        let v = p.volume_path(VolumeType::Custom, "v").unwrap();
        assert_eq!(
            p.set_quota(&v, Some(1 << 20)).unwrap_err().to_string(),
            "Quotas aren't supported by the dir driver"
        );
        p.set_quota(&v, None).unwrap();
        assert_eq!(p.usage(&v).unwrap(), None);
        assert!(!p.supports_quota());
    }
}
