//! The layering ARCHITECTURE.md promises, enforced by `cargo test`: no import circle between the
//! files of any crate, routes that do not import each other, and services that know nothing of
//! HTTP. The graph is read from `use crate::…`, `crate::…::` and `super::…` paths, the way
//! rust-analyzer's tidy reads sources: textually, which is enough for code that follows our
//! style (test modules last in a file, no glob imports outside them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/<name> is two levels below the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file relative to its crate's `src`: `routes/mod.rs` and
/// `routes.rs` are both `["routes"]`, `lib.rs` and `main.rs` are `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Code outside `#[cfg(test)]` modules, without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate::` or `super::`, as segments from the crate root,
/// including each name of a `use crate::a::{b, c::d}` group.
fn referenced_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let boundary = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let (base, skip) = if boundary && rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if boundary && rest.starts_with("super::") {
            let mut parent = module.to_vec();
            parent.pop();
            (parent, 7)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        let mut path = base;
        // Further `super::` hops.
        loop {
            let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
            if rest == "super::" {
                path.pop();
                i += 7;
            } else {
                break;
            }
        }
        i = read_tree(&bytes, i, path, &mut out);
    }
    out
}

/// Read `a::b::{c, d::e}` from `i`, pushing each full path; returns where it stopped.
fn read_tree(
    bytes: &[char],
    mut i: usize,
    mut path: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_alphanumeric() || bytes[i] == '_') {
            i += 1;
        }
        if i > start {
            path.push(bytes[start..i].iter().collect());
        }
        if bytes.get(i) == Some(&':') && bytes.get(i + 1) == Some(&':') {
            i += 2;
            if bytes.get(i) == Some(&'{') {
                i += 1;
                loop {
                    while bytes.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        i += 1;
                    }
                    if bytes.get(i).is_none_or(|c| *c == '}') {
                        return i + 1;
                    }
                    let before = i;
                    i = read_tree(bytes, i, path.clone(), out);
                    if i == before {
                        i += 1;
                    }
                }
            }
            continue;
        }
        out.push(path);
        return i;
    }
}

/// The file a path names: the longest prefix of it that is a module of this crate.
fn resolve<'a>(
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
    path: &[String],
) -> Option<&'a PathBuf> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

struct CrateGraph {
    name: String,
    /// file -> the files it imports from.
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// file -> the code it contains.
    code: BTreeMap<PathBuf, String>,
}

fn graphs() -> Vec<CrateGraph> {
    let root = workspace();
    let mut out = Vec::new();
    let Ok(crates) = std::fs::read_dir(root.join("crates")) else {
        panic!("no crates/ directory under {}", root.display());
    };
    for krate in crates.flatten() {
        let src = krate.path().join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .iter()
            .map(|f| (module_of(f.strip_prefix(&src).unwrap_or(f)), f.clone()))
            .collect();
        let mut edges = BTreeMap::new();
        let mut codes = BTreeMap::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let module = module_of(f.strip_prefix(&src).unwrap_or(f));
            let code = code(&text);
            let targets: BTreeSet<PathBuf> = referenced_paths(&module, &code)
                .iter()
                .filter(|p| !p.is_empty())
                .filter_map(|p| resolve(&modules, p))
                .filter(|t| *t != f)
                // A parent module declaring its children (`mod x;`) is not an import, and the
                // crate root only wires modules together.
                .filter(|t| !module_of(t.strip_prefix(&src).unwrap_or(t)).is_empty())
                .cloned()
                .collect();
            edges.insert(f.clone(), targets);
            codes.insert(f.clone(), code);
        }
        out.push(CrateGraph {
            name: krate.file_name().to_string_lossy().into_owned(),
            edges,
            code: codes,
        });
    }
    assert!(out.len() > 5, "found the crates");
    out
}

/// One circle through `start`, if there is one (depth-first search back to it).
fn circle_through(
    edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    start: &PathBuf,
) -> Option<Vec<PathBuf>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

fn short(p: &Path) -> String {
    p.strip_prefix(workspace())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut circles = Vec::new();
    for g in graphs() {
        for f in g.edges.keys() {
            if let Some(c) = circle_through(&g.edges, f) {
                circles.push(format!(
                    "{}: {}",
                    g.name,
                    c.iter().map(|p| short(p)).collect::<Vec<_>>().join(" -> ")
                ));
                break;
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn routes_do_not_import_each_other() {
    let mut offenders = Vec::new();
    for g in graphs().into_iter().filter(|g| g.name == "rxd-daemon") {
        for (f, targets) in &g.edges {
            let is_route = |p: &Path| {
                p.parent().is_some_and(|d| d.ends_with("src/routes"))
                    && p.file_name().is_some_and(|n| n != "mod.rs")
            };
            if !is_route(f) {
                continue;
            }
            for t in targets
                .iter()
                .filter(|t| is_route(t) || t.ends_with("routes/mod.rs"))
            {
                offenders.push(format!("{} imports {}", short(f), short(t)));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn services_know_nothing_of_http() {
    // What a service must not name: the HTTP framework, the request and response layer.
    const HTTP: [&str; 8] = [
        "axum",
        "hyper",
        "http::",
        "crate::routes",
        "crate::response",
        "crate::body",
        "crate::authorize",
        "crate::origin",
    ];
    let mut offenders = Vec::new();
    for g in graphs() {
        for (f, code) in &g.code {
            let in_service = f.components().any(|c| c.as_os_str() == "service")
                && f.components().any(|c| c.as_os_str() == "rxd-daemon");
            if !in_service {
                continue;
            }
            for word in HTTP.iter().filter(|w| code.contains(*w)) {
                offenders.push(format!("{} names {word}", short(f)));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The store's writes to what decides access happen only where a proof is asked for:
/// `service/access.rs` (trust store, tokens, grants, projects) and `config.rs` (server config).
#[test]
fn access_is_written_only_with_a_proof() {
    const WRITES: [&str; 13] = [
        ".insert_certificate(",
        ".insert_certificates(",
        ".replace_certificate(",
        ".delete_certificate(",
        ".insert_token(",
        ".delete_token(",
        ".redeem_token(",
        ".insert_grant(",
        ".delete_grant(",
        ".create_project(",
        ".update_project(",
        ".rename_project(",
        ".delete_project(",
    ];
    let mut offenders = Vec::new();
    let mut seen = 0;
    for g in graphs().into_iter().filter(|g| g.name == "rxd-daemon") {
        for (f, code) in &g.code {
            let allowed = f.ends_with("service/access.rs");
            for w in WRITES.iter().filter(|w| code.contains(*w)) {
                if allowed {
                    seen += 1;
                } else {
                    offenders.push(format!("{} calls {w}", short(f)));
                }
            }
            let config_write = code.contains(".update_config(");
            if config_write && !f.ends_with("src/config.rs") {
                offenders.push(format!("{} calls .update_config(", short(f)));
            }
        }
    }
    assert!(
        seen >= 10,
        "the access service holds the writes ({seen} seen)"
    );
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The checks above must be able to fail: a circle, a route importing a route and a service
/// naming HTTP are all seen in made-up sources.
#[test]
fn the_checks_see_what_they_look_for() {
    let module = vec!["routes".to_owned(), "exec".to_owned()];
    let paths = referenced_paths(
        &module,
        "use super::instances::{find, Keyed};\nuse crate::service::{images, layout::instance_dir};\nlet x = crate::sync::lock(&m);",
    );
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "routes::instances::find",
            "routes::instances::Keyed",
            "service::images",
            "service::layout::instance_dir",
            "sync::lock",
        ]
    );
    let a = PathBuf::from("a.rs");
    let b = PathBuf::from("b.rs");
    let c = PathBuf::from("c.rs");
    let mut edges = BTreeMap::new();
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([c.clone()]));
    edges.insert(c.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(
        circle_through(&edges, &a),
        Some(vec![a.clone(), b.clone(), c.clone()])
    );
    edges.insert(c.clone(), BTreeSet::new());
    assert_eq!(circle_through(&edges, &a), None);
}
