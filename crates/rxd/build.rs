//! Release builds of `rxd` on x86_64 Linux are linked with `startup.order`: the functions
//! the daemon runs while starting and serving its first requests, laid out together. The
//! kernel maps a program's code 64 KiB around every page it first touches (fault-around), so
//! start-up code scattered over the whole text kept two thirds of it resident; grouped, it
//! takes a few windows. `scripts/startup-order.sh` regenerates the list.
//!
//! The option is LLD's, rustc's own linker for that target since Rust 1.90; older compilers,
//! or flags that choose another linker, get the default layout. Names the linker does not find
//! (functions renamed since the list was made) are skipped.

use std::process::Command;

fn main() {
    let order =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("startup.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=RUSTFLAGS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let target = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    // Flags that choose another linker; other link arguments (`.cargo/config.toml` packs
    // relocations) leave rustc's own.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = !["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f));
    if var("PROFILE") == "release" && target && own_linker && rustc_links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bin=rxd=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=rxd=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the compiler is 1.90 or newer (`rustc 1.95.0 (...)`).
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    matches!((version.next(), version.next()), (Some(1), Some(minor)) if minor >= 90)
}
