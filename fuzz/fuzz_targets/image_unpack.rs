//! The image unpacker on hostile archives: the bytes (tar, gzip or xz) are written to a file and
//! unpacked into a fresh directory with small limits, with and without an id shift, then
//! `read_metadata` reads the same file. Whatever happens, nothing may appear outside the
//! sandbox directory the unpacker was pointed into, and a refused unpack leaves nothing behind.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_image::{IdShift, Limits};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const LIMITS: Limits = Limits {
    max_entries: 64,
    max_total_bytes: 256 << 10,
    max_metadata_bytes: 4 << 10,
};

/// `<base>/outside` is a canary directory next to the sandboxes: it must stay as it was.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let root = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let base = root.join(format!("rxd-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/canary"), b"canary").unwrap();
        base
    })
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn check_untouched(base: &Path, sandbox_name: &str) {
    assert_eq!(
        names(base),
        ["outside".to_owned(), sandbox_name.to_owned()].into(),
        "something was created next to the sandbox"
    );
    assert_eq!(names(&base.join("outside")), ["canary".to_owned()].into());
    assert_eq!(fs::read(base.join("outside/canary")).unwrap(), b"canary");
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = base();
    let name = format!("s{}", N.fetch_add(1, Ordering::Relaxed));
    let sandbox = base.join(&name);
    fs::create_dir(&sandbox).unwrap();
    let tarball = sandbox.join("image.tar");
    fs::write(&tarball, data).unwrap();

    // The daemon unpacks with a shift for unprivileged containers and without for privileged.
    let shift = IdShift {
        uid_base: 1_000_000,
        gid_base: 1_000_000,
        size: 65_536,
    };
    for (i, shift) in [None, Some(&shift)].into_iter().enumerate() {
        let dest = sandbox.join(format!("out{i}"));
        let result = rxd_image::unpack(&tarball, &dest, shift, &LIMITS);
        let mut expected: BTreeSet<String> = ["image.tar".to_owned()].into();
        expected.extend(
            (0..i)
                .map(|j| format!("out{j}"))
                .filter(|p| sandbox.join(p).exists()),
        );
        if result.is_ok() {
            expected.insert(format!("out{i}"));
            assert!(fs::symlink_metadata(dest.join("metadata.yaml"))
                .unwrap()
                .is_file());
            assert!(fs::symlink_metadata(dest.join("rootfs")).unwrap().is_dir());
        }
        assert_eq!(
            names(&sandbox),
            expected,
            "unpack left other entries: {result:?}"
        );
        check_untouched(base, &name);
    }
    let _ = rxd_image::read_metadata(&tarball, &LIMITS);
    check_untouched(base, &name);
    fs::remove_dir_all(&sandbox).unwrap();
});
