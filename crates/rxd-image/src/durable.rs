//! Publishing a tree durably: once a rename has put it in place and the caller has said so,
//! a power cut cannot leave the name pointing at a tree whose files were never written.

use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::Path;

fn open_dir(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Write out everything of the filesystem `path` is on: one `syncfs`, cheaper for a tree of
/// thousands of files than an `fsync` each.
pub fn sync_tree(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::syncfs(open_dir(path)?)?)
}

/// Make a rename (or creation, or removal) of an entry of `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    Ok(rustix::fs::fsync(open_dir(dir)?)?)
}

/// Move the complete tree `staged` to `dest` (which must not exist), durably: its contents are
/// written out before the rename that publishes it, and the rename after.
pub fn publish(staged: &Path, dest: &Path) -> io::Result<()> {
    sync_tree(staged)?;
    std::fs::rename(staged, dest)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}
