//! `metadata.yaml` as the daemon reads it from an uploaded image: the bytes become the only
//! entry of an in-memory tar, which `read_metadata` reads with the daemon's size bound.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_image::Limits;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rxd-fuzz-metadata-{}.tar", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, "metadata.yaml", data)
        .unwrap();
    let tarball = builder.into_inner().unwrap();
    std::fs::write(path(), tarball).unwrap();
    // The daemon's default bound on metadata.yaml.
    let limits = Limits::default();
    if let Ok(meta) = rxd_image::read_metadata(path(), &limits) {
        // What the daemon does with it next: store it as JSON-ish text.
        let _ = format!("{meta:?}");
    }
});
