//! Shell completions and man pages, generated from the clap definitions: every command shows up,
//! the scripts parse in their shells, and the pages render.

use rxd_testkit::bin;
use std::process::{Command, Stdio};

fn rxc(args: &[&str]) -> String {
    let conf = tempfile::tempdir().unwrap();
    let out = Command::new(bin("rxc"))
        .args(args)
        .env("RXC_CONF", conf.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completions_cover_the_commands_and_parse() {
    for (shell, check) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let script = rxc(&["completion", shell]);
        for word in ["monitor", "alias", "list", "all-projects", "config"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
        if have(check) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rxc.completion");
            std::fs::write(&path, &script).unwrap();
            let parse = if check == "fish" {
                "--no-execute"
            } else {
                "-n"
            };
            let out = Command::new(check).arg(parse).arg(&path).output().unwrap();
            assert!(out.status.success(), "{shell}: {out:?}");
        }
    }
}

#[test]
fn man_pages_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let said = rxc(&["manpages", dir.path().to_str().unwrap()]);
    assert!(said.starts_with("Wrote "), "{said}");
    for page in [
        "rxc.1",
        "rxc-list.1",
        "rxc-config-edit.1",
        "rxc-alias-add.1",
        "rxc-monitor.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie"),
            "{page}: {}",
            &text[..40.min(text.len())]
        );
    }
    if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("rxc-list.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--all-projects"), "{text}");
    }
}
