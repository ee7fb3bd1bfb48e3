//! Tidy checks: the invariants ARCHITECTURE.md states, enforced by `cargo test`.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `crates/`, with its crate name and whether it is test code.
fn sources() -> Vec<(String, PathBuf, bool, String)> {
    let mut out = Vec::new();
    let crates = workspace().join("crates");
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        walk(&dir, &mut |p| {
            if p.extension().is_some_and(|e| e == "rs") {
                let is_test = p
                    .components()
                    .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches");
                out.push((
                    name.clone(),
                    p.to_path_buf(),
                    is_test,
                    std::fs::read_to_string(p).unwrap(),
                ));
            }
        });
    }
    assert!(out.len() > 20, "found the sources");
    out
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                walk(&p, f);
            }
        } else {
            f(&p);
        }
    }
}

/// Code outside `#[cfg(test)]` modules (good enough: our test modules come last in a file).
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

fn offenders(pred: impl Fn(&str, &Path, bool, &str) -> bool) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(krate, path, is_test, text)| pred(krate, path, *is_test, text))
        .map(|(_, p, _, _)| p.strip_prefix(workspace()).unwrap().display().to_string())
        .collect()
}

/// The crate directories under `crates/`.
fn crate_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn no_unsafe_anywhere() {
    let bad = offenders(|_, path, _, text| {
        let uses = text.lines().any(|l| {
            let l = l.trim_start();
            !l.starts_with("//")
                && (l.contains("unsafe {") || l.contains("unsafe fn") || l.contains("unsafe impl"))
        });
        uses && !path.ends_with("tidy.rs")
    });
    assert!(bad.is_empty(), "`unsafe` in: {bad:?}");
}

#[test]
fn every_crate_root_forbids_unsafe() {
    let bad = offenders(|_, path, _, text| {
        let root = path.ends_with("src/lib.rs") || path.ends_with("src/main.rs");
        root && !text.contains("#![forbid(unsafe_code)]")
    });
    assert!(
        bad.is_empty(),
        "crate roots without #![forbid(unsafe_code)]: {bad:?}"
    );
}

/// The workspace lints (`unsafe_code = "forbid"` among them) reach every crate.
#[test]
fn every_crate_takes_the_workspace_lints() {
    let bad: Vec<String> = crate_names()
        .into_iter()
        .filter(|krate| {
            let toml =
                std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
                    .unwrap();
            !toml.contains("\n[lints]\nworkspace = true")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "crates without `[lints] workspace = true`: {bad:?}"
    );
}

/// The names of the dependencies a crate's Cargo.toml declares, in any dependency table
/// (`foo = ...`, `foo.workspace = true`, `[dependencies.foo]`, `package = "foo"`).
fn declared_dependencies(toml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in toml.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('[') {
            let table = table.trim_end_matches(']');
            in_deps = table.contains("dependencies");
            if let Some((_, name)) = table.split_once("dependencies.") {
                out.push(name.to_owned());
            }
            continue;
        }
        if !in_deps || line.starts_with('#') || line.is_empty() {
            continue;
        }
        let key: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        out.push(key);
        if let Some((_, rest)) = line.split_once("package") {
            let renamed: String = rest
                .trim_start_matches([' ', '=', '"'])
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            out.push(renamed);
        }
    }
    out
}

/// What deny.toml also enforces (cargo-deny, in scripts/test.sh), checked here so that
/// `cargo test` alone catches it: rustls, SQLite and libcontainer each stay in the one crate
/// built around them (tokio-rustls only where connections are made, TLS configured by rxd-tls).
#[test]
fn confined_dependencies_only_where_allowed() {
    let confined: &[(&str, &[&str])] = &[
        ("rustls", &["rxd-tls"]),
        (
            "tokio-rustls",
            &["rxd-client", "rxd-daemon", "rxd", "rxd-web"],
        ),
        ("rusqlite", &["rxd-store"]),
        ("libcontainer", &["rxd-shim"]),
    ];
    let crates = crate_names();
    let mut bad = Vec::new();
    for (dep, allowed) in confined {
        for krate in *allowed {
            assert!(
                crates.iter().any(|c| c == krate),
                "tidy allows {dep} in {krate}, which is no crate under crates/ any more"
            );
        }
        for krate in &crates {
            let toml =
                std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
                    .unwrap();
            if declared_dependencies(&toml).iter().any(|d| d == dep)
                && !allowed.contains(&krate.as_str())
            {
                bad.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "confined dependencies outside their crates: {bad:?}"
    );
    // The parser sees what it must.
    let sample = "[dependencies]\nrustls.workspace = true\nfoo = { package = \"rusqlite\" }\n\
                  [target.'cfg(unix)'.dev-dependencies.libcontainer]\nversion = \"1\"\n";
    let found = declared_dependencies(sample);
    for dep in ["rustls", "rusqlite", "libcontainer"] {
        assert!(
            found.iter().any(|d| d == dep),
            "{dep} not found in {found:?}"
        );
    }
}

#[test]
fn sql_only_in_the_store() {
    let keywords = [
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "UPDATE ",
        "PRAGMA ",
    ];
    let bad = offenders(|krate, path, _, text| {
        krate != "rxd-store"
            && !path.ends_with("tidy.rs")
            && keywords.iter().any(|k| {
                text.lines()
                    .any(|l| l.contains(&format!("\"{k}")) || l.trim_start().starts_with(k))
            })
    });
    assert!(bad.is_empty(), "SQL outside rxd-store: {bad:?}");
}

#[test]
fn rustls_configured_only_in_the_tls_crate() {
    let markers = [
        "ServerConfig::builder",
        "ClientConfig::builder",
        "with_client_cert_verifier",
        ".dangerous()",
        "CryptoProvider {",
    ];
    let bad = offenders(|krate, path, _, text| {
        krate != "rxd-tls" && !path.ends_with("tidy.rs") && markers.iter().any(|m| text.contains(m))
    });
    assert!(bad.is_empty(), "rustls configured outside rxd-tls: {bad:?}");
}

#[test]
fn libraries_do_not_print_or_use_anyhow() {
    // Binary crates (a main.rs and no lib.rs) may print and use anyhow.
    let is_binary = |krate: &str| {
        let src = workspace().join("crates").join(krate).join("src");
        src.join("main.rs").exists() && !src.join("lib.rs").exists()
    };
    let bad = offenders(|krate, path, is_test, text| {
        if is_binary(krate) || is_test || path.ends_with("tidy.rs") {
            return false;
        }
        let code = non_test_code(text);
        // `eprintln!` (stderr) is allowed; a bare `println!`/`print!` is not.
        let prints = ["println!(", "print!("].iter().any(|m| {
            code.match_indices(m)
                .any(|(i, _)| !code[..i].ends_with('e'))
        });
        prints || code.contains("anyhow::")
    });
    assert!(
        bad.is_empty(),
        "library code printing to stdout or using anyhow: {bad:?}"
    );
}

#[test]
fn every_source_file_says_what_it_owns() {
    let bad = offenders(|_, _, _, text| !text.trim_start().starts_with("//!"));
    assert!(bad.is_empty(), "files without a leading //! line: {bad:?}");
}

/// Every JSON body goes through the daemon's one bounded extractor (`body::Json`: 64 KiB, a JSON
/// content type, errors in LXD's envelope); axum's own `Json` reads 2 MiB and answers in its own
/// format.
#[test]
fn json_bodies_only_through_the_bounded_extractor() {
    let bad = offenders(|krate, _, is_test, text| {
        let code = non_test_code(text);
        krate == "rxd-daemon"
            && !is_test
            && (code.contains("axum::Json")
                || code.contains("axum::{Json")
                || code.contains(" Json,")
                    && code.contains("use axum::")
                    && !code.contains("crate::body::Json")
                || code.contains("axum::extract::Json"))
    });
    assert!(bad.is_empty(), "axum::Json used in: {bad:?}");
}

/// `rxc` prints through its one printer (`output.rs`), whose writes return errors: a bare
/// `println!` panics when the reader has gone (`rxc info c1 | head -1`).
#[test]
fn rxc_prints_only_through_its_printer() {
    let bad = offenders(|krate, path, is_test, text| {
        if krate != "rxc" || is_test || path.ends_with("output.rs") {
            return false;
        }
        let code = non_test_code(text);
        ["println!(", "print!("].iter().any(|m| {
            code.match_indices(m)
                .any(|(i, _)| !code[..i].ends_with('e'))
        })
    });
    assert!(bad.is_empty(), "rxc printing around its printer: {bad:?}");
}
