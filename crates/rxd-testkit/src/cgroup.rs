//! Reading a container's cgroup files from the host, for tests of its limits.

use std::path::PathBuf;

/// Whether the host runs the unified hierarchy (cgroup v2).
pub fn v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A file of the container's cgroup in `controller`'s hierarchy (v1), or in the unified one.
pub fn cgroup_file(pid: i32, controller: &str, file: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path: PathBuf = if v2() {
        let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        PathBuf::from("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
    } else {
        let (mount, rel) = text
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, rel) = (f.next()?, f.next()?, f.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| (controllers.to_owned(), rel.to_owned()))
            })
            .unwrap_or_else(|| panic!("no {controller} hierarchy in {text}"));
        PathBuf::from("/sys/fs/cgroup")
            .join(mount)
            .join(rel.trim_start_matches('/'))
    };
    std::fs::read_to_string(path.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.join(file).display()))
        .trim()
        .to_owned()
}
