//! The Debian package (`scripts/package.sh`): it builds from the test binaries, holds what an
//! administrator needs (the three binaries, the systemd unit, completions, man pages, the state
//! directory), installs into a fresh root made here (maintainer scripts included, run against
//! that root), and its unit passes `systemd-analyze verify` there. Starting it under systemd and
//! restarting it with containers running is `rxc/tests/systemd.rs`'s, in a Debian container.

use rxd_testkit::candid::repo_root;
use rxd_testkit::{bin, require_root, require_tool};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An empty root with what dpkg and groupadd need to install into it.
fn fresh_root(root: &Path) {
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (file, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/group", "root:x:0:\n"),
        ("etc/gshadow", "root:*::\n"),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/shadow", "root:*:1::::::\n"),
    ] {
        std::fs::write(root.join(file), text).unwrap();
    }
}

#[test]
fn the_package_installs_into_a_fresh_root_with_a_valid_unit() {
    let test = "the_package_installs_into_a_fresh_root_with_a_valid_unit";
    if !require_root(test)
        || !require_tool("dpkg-deb", "dpkg", test)
        || !require_tool("systemd-analyze", "systemd", test)
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let bin_dir = bin("rxd").parent().unwrap().to_path_buf();
    let deb = run(Command::new("bash")
        .arg(repo_root().join("scripts/package.sh"))
        .arg(&bin_dir)
        .arg(out.path())
        .env("RXD_DEB_COMPRESSION", "none"));
    let deb = deb.trim();
    assert!(deb.ends_with(".deb"), "{deb}");

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    for path in [
        "./usr/bin/rxd",
        "./usr/bin/rxd-shim",
        "./usr/bin/rxc",
        "./lib/systemd/system/rxd.service",
        "./usr/share/bash-completion/completions/rxc",
        "./usr/share/zsh/vendor-completions/_rxc",
        "./usr/share/fish/vendor_completions.d/rxc.fish",
        "./usr/share/man/man1/rxc.1.gz",
        "./usr/share/man/man1/rxc-list.1.gz",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwx--x--x root/root") && l.ends_with("./var/lib/rxd/")),
        "{listing}"
    );

    // Installed into a root of its own: the scripts create the group and the state directory
    // there, never on this host.
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    fresh_root(root);
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-not-root",
            "--force-depends",
            "-i",
            deb,
        ]));
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("rxd:x:")), "{group}");
    // Root's subordinate ids, which rxd cannot record itself under the unit's read-only /etc.
    for f in ["etc/subuid", "etc/subgid"] {
        let ids = std::fs::read_to_string(root.join(f)).unwrap();
        assert_eq!(ids, "root:1000000:1000000000\n", "{f}");
    }
    let state = std::fs::metadata(root.join("var/lib/rxd")).unwrap();
    assert_eq!(state.permissions().mode() & 0o7777, 0o711);
    let version = run(Command::new(root.join("usr/bin/rxc"))
        .arg("--version")
        .env("RXC_CONF", root.join("conf")));
    assert!(version.starts_with("rxc "), "{version}");

    // The unit, verified inside that root (with this host's own targets, which the unit
    // names), with what keeps containers alive across a restart.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/rxd.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/rxd --dir /var/lib/rxd --group rxd",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=",
        "ProtectSystem=",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    if Path::new("/lib/systemd/system/multi-user.target").exists() {
        run(Command::new("cp")
            .args(["-an", "/lib/systemd/system/."])
            .arg(root.join("lib/systemd/system/")));
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.display()))
            .arg("rxd.service")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
