//! `rxc` commands `lxc` users reach for daily, each compared with Debian's `lxc` 5.0.2 asking
//! the same daemon the same thing: `version`, `operation list`, `warning list`, `list`, `info
//! --resources`.

use rxd_testkit::{bin, busybox_image, require_root, require_tool, TestDaemon};
use serde_json::Value;
use std::process::{Command, Output, Stdio};

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A JSON list, sorted by `key` so the two clients' orders do not matter.
fn sorted(out: &Output, key: &str) -> Vec<Value> {
    let mut list: Vec<Value> = serde_json::from_str(&text(out)).unwrap();
    list.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    list
}

#[tokio::test]
async fn version_operations_and_warnings_as_lxc_shows_them() {
    if !require_root("version_operations_and_warnings_as_lxc_shows_them")
        || !require_tool(
            "lxc",
            "lxd-client",
            "version_operations_and_warnings_as_lxc_shows_them",
        )
    {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let rxc = |args: &[&str]| d.rxc(conf.path(), args);
    let lxd_conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str]| {
        Command::new("lxc")
            .args(args)
            .env("LXD_CONF", lxd_conf.path())
            .env("HOME", lxd_conf.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // A trust password is a warning; a join token is an operation.
    text(&rxc(&["config", "set", "core.trust_password", "pw"]));
    text(&lxc(&[
        "remote",
        "add",
        "rxd",
        &d.https_address(),
        "--accept-certificate",
        "--password",
        "pw",
    ]));
    text(&rxc(&["config", "trust", "add", "--name", "joiner"]));

    let ours = text(&rxc(&["version"]));
    let theirs = text(&lxc(&["version", "rxd:"]));
    assert!(
        ours.starts_with(&format!("Client version: {}\n", env!("CARGO_PKG_VERSION"))),
        "{ours}"
    );
    let server = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Server version:"))
            .map(str::to_owned)
    };
    assert_eq!(
        server(&ours),
        server(&theirs),
        "rxc:\n{ours}\nlxc:\n{theirs}"
    );
    assert_eq!(server(&ours).as_deref(), Some("Server version: 5.0.2"));

    let ours = sorted(&rxc(&["operation", "list", "--format", "json"]), "id");
    let theirs = sorted(
        &lxc(&["operation", "list", "rxd:", "--format", "json"]),
        "id",
    );
    assert!(
        ours.iter()
            .any(|o| o["class"] == "token" && o["metadata"]["request"]["name"] == "joiner")
            || ours.iter().any(|o| o["class"] == "token"),
        "{ours:#?}"
    );
    assert_eq!(ours, theirs);
    let table = text(&rxc(&["operation", "list"]));
    assert!(
        table.contains("TOKEN") || table.contains("token"),
        "{table}"
    );

    let ours = sorted(&rxc(&["warning", "list", "--format", "json"]), "uuid");
    let theirs = sorted(
        &lxc(&["warning", "list", "rxd:", "--format", "json"]),
        "uuid",
    );
    assert!(
        ours.iter().any(|w| w["last_message"]
            .as_str()
            .is_some_and(|m| m.contains("core.trust_password"))),
        "{ours:#?}"
    );
    assert_eq!(ours, theirs);
    let csv = text(&rxc(&["warning", "list", "--format", "csv"]));
    assert!(csv.lines().count() >= 1 && csv.contains("NEW"), "{csv}");

    // An unreachable server is said so, as lxc says it, not an error.
    let out = Command::new(bin("rxc"))
        .args(["version"])
        .env("RXC_CONF", conf.path())
        .env("RXD_DIR", conf.path().join("nowhere"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(text(&out).contains("Server version: unreachable"));
}

/// A daemon with `rxc` (over the unix socket) and Debian's `lxc` (over HTTPS, remote `rxd`)
/// both trusted.
struct Both {
    d: TestDaemon,
    conf: tempfile::TempDir,
    lxd_conf: tempfile::TempDir,
}

impl Both {
    async fn new(test: &str) -> Option<Both> {
        if !require_root(test) || !require_tool("lxc", "lxd-client", test) {
            return None;
        }
        let both = Both {
            d: TestDaemon::start().await,
            conf: tempfile::tempdir().unwrap(),
            lxd_conf: tempfile::tempdir().unwrap(),
        };
        both.rxc(&["config", "set", "core.trust_password", "pw"]);
        let addr = both.d.https_address();
        both.lxc(&[
            "remote",
            "add",
            "rxd",
            &addr,
            "--accept-certificate",
            "--password",
            "pw",
        ]);
        Some(both)
    }

    fn rxc_output(&self, args: &[&str]) -> Output {
        self.d.rxc(self.conf.path(), args)
    }

    fn rxc(&self, args: &[&str]) -> String {
        let out = self.rxc_output(args);
        assert!(
            out.status.success(),
            "rxc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.d.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn lxc_output(&self, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_CONF", self.lxd_conf.path())
            .env("HOME", self.lxd_conf.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn lxc(&self, args: &[&str]) -> String {
        let out = self.lxc_output(args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rxc ARGS` and `lxc ARGS` with `rxd:` inserted after the words of the command.
    fn same(&self, words: &[&str], args: &[&str]) -> String {
        let mut ours: Vec<&str> = words.to_vec();
        ours.extend(args);
        let mut theirs: Vec<&str> = words.to_vec();
        theirs.push("rxd:");
        theirs.extend(args);
        let (ours, theirs) = (self.rxc(&ours), self.lxc(&theirs));
        assert_eq!(
            ours, theirs,
            "{words:?} {args:?}\nrxc:\n{ours}\nlxc:\n{theirs}"
        );
        ours
    }

    fn import_busybox(&self, project: &str) {
        let image = self.conf.path().join("bb.tar.gz");
        if !image.exists() {
            busybox_image(&image);
        }
        self.rxc(&[
            "--project",
            project,
            "image",
            "import",
            image.to_str().unwrap(),
            "--alias",
            "bb",
        ]);
    }
}

/// JSON instances with what changes from one request to the next (usage counters) taken out.
fn steady(text: &str) -> Vec<Value> {
    let mut list: Vec<Value> = serde_json::from_str(text).unwrap();
    for i in &mut list {
        if let Some(state) = i.get_mut("state").and_then(Value::as_object_mut) {
            state.remove("cpu");
            state.remove("memory");
            state.remove("disk");
        }
        // LXD 5.0's snapshots have no description; lxc drops the one rxd sends.
        for snap in i["snapshots"].as_array_mut().into_iter().flatten() {
            snap.as_object_mut().unwrap().remove("description");
        }
    }
    list.sort_by(|a, b| {
        (a["project"].as_str(), a["name"].as_str())
            .cmp(&(b["project"].as_str(), b["name"].as_str()))
    });
    list
}

#[tokio::test]
async fn list_columns_filters_and_formats_as_lxc_shows_them() {
    let Some(t) = Both::new("list_columns_filters_and_formats_as_lxc_shows_them").await else {
        return;
    };
    t.import_busybox("default");
    t.rxc(&["launch", "bb", "web1", "-c", "user.role=front"]);
    t.rxc(&["init", "bb", "db01", "-c", "user.role=back"]);
    t.rxc(&["init", "bb", "web10", "-e"]);
    t.rxc(&["snapshot", "db01"]);
    t.rxc(&["project", "create", "p2"]);
    t.import_busybox("p2");
    t.rxc(&["--project", "p2", "init", "bb", "other"]);

    let table = t.same(&["list"], &[]);
    assert!(table.contains("| web1  | RUNNING |"), "{table}");
    assert!(table.contains("CONTAINER (EPHEMERAL)"), "{table}");
    for args in [
        &["-c", "nsPtfF"][..],
        &["-c", "n,user.role:KIND,s"],
        &["-c", "ndbcl,user.role::3"],
        &["-c", "n,devices:root.path:ROOT"],
        &["-c", "nsp"],
        &["status=running"],
        &["status=stopped", "-c", "nS"],
        &["web"],
        &["web1"],
        &[".*01$"],
        &["u.role=b.*"],
        &["type=container", "user.role=front"],
        &["--fast", "-f", "compact"],
        &["-f", "csv", "-c", "nsSt"],
        &["--all-projects"],
        &["--all-projects", "-f", "csv"],
    ] {
        t.same(&["list"], args);
    }
    for args in [
        &["-c", "ns", "-f", "json"][..],
        &["-f", "json"],
        &["status=stopped", "-f", "json"],
        &["--all-projects", "-f", "json"],
    ] {
        let mut ours = vec!["list"];
        ours.extend(args);
        let mut theirs = vec!["list", "rxd:"];
        theirs.extend(args);
        let (ours, theirs) = (steady(&t.rxc(&ours)), steady(&t.lxc(&theirs)));
        assert!(
            ours == theirs,
            "{args:?}\nrxc:\n{}\nlxc:\n{}",
            serde_json::to_string_pretty(&ours).unwrap(),
            serde_json::to_string_pretty(&theirs).unwrap()
        );
    }
    let (ours, theirs) = (
        t.rxc(&["list", "-c", "n", "-f", "yaml"]),
        t.lxc(&["list", "rxd:", "-c", "n", "-f", "yaml"]),
    );
    assert_eq!(
        serde_norway::from_str::<Value>(&ours).unwrap(),
        serde_norway::from_str::<Value>(&theirs).unwrap(),
        "rxc:\n{ours}\nlxc:\n{theirs}"
    );

    // lxc's errors for what it refuses.
    for args in [&["-c", "nL"][..], &["--fast", "-c", "ns"], &["-c", "nz"]] {
        let mut ours = vec!["list"];
        ours.extend(args);
        let out = t.rxc_output(&ours);
        assert!(!out.status.success(), "{args:?}");
    }
    let out = t.rxc_output(&["list", "--all-projects", "--project", "p2"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Can't specify --project with --all-projects"));

    // A closed pipe ends the listing quietly.
    let mut child = Command::new(bin("rxc"))
        .args(["list"])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.rxc(&["delete", "--force", "web1"]);
}

/// A command left running, its standard output read line by line in a thread.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        use std::io::BufRead;
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The first line that `pick` accepts, within a few seconds.
    #[track_caller]
    fn find(&self, pick: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "no matching line: {e}; stderr: {}",
                    std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn monitor_prints_events_as_lxc_does() {
    let Some(t) = Both::new("monitor_prints_events_as_lxc_does").await else {
        return;
    };
    let monitor = |lxc: bool, args: &[&str]| {
        let mut cmd = if lxc {
            let mut c = Command::new("lxc");
            c.args(["monitor", "rxd:"])
                .env("LXD_CONF", t.lxd_conf.path())
                .env("HOME", t.lxd_conf.path());
            c
        } else {
            let mut c = Command::new(bin("rxc"));
            c.arg("monitor")
                .env("RXC_CONF", t.conf.path())
                .env("RXD_DIR", t.d.dir());
            c
        };
        cmd.args(args);
        Running::start(cmd)
    };
    // A project's creation is an event of that project: only --all-projects sees it from
    // `default`.
    let ours_json = monitor(false, &["--format", "json", "--all-projects"]);
    let theirs_json = monitor(true, &["--format", "json", "--all-projects"]);
    let ours_pretty = monitor(
        false,
        &["--pretty", "--type", "lifecycle", "--all-projects"],
    );
    let theirs_pretty = monitor(true, &["--pretty", "--type", "lifecycle", "--all-projects"]);
    let ours_ops = monitor(false, &["--type", "operation", "-f", "json"]);
    // Give the four a moment to subscribe, then make one event of each kind.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    t.rxc(&["project", "create", "watched"]);
    t.rxc(&["config", "trust", "add", "--name", "someone"]);

    let created = |l: &str| l.contains("project-created");
    let ours: Value = serde_json::from_str(&ours_json.find(created)).unwrap();
    let theirs: Value = serde_json::from_str(&theirs_json.find(created)).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours["metadata"]["source"], "/1.0/projects/watched");
    assert_eq!(ours_pretty.find(created), theirs_pretty.find(created));
    let op: Value = serde_json::from_str(&ours_ops.find(|l| !l.is_empty())).unwrap();
    assert_eq!(op["type"], "operation", "{op}");
}

#[tokio::test]
async fn aliases_are_kept_and_expanded_as_lxc_does() {
    let Some(t) = Both::new("aliases_are_kept_and_expanded_as_lxc_does").await else {
        return;
    };
    let both = |args: &[&str]| {
        let (ours, theirs) = (t.rxc(args), t.lxc(args));
        assert_eq!(ours, theirs, "{args:?}");
        ours
    };
    both(&["alias", "add", "names", "list -c n -f csv"]);
    both(&["alias", "add", "role", "config get @ARG1@ user.role"]);
    both(&["alias", "add", "zz", "version"]);
    both(&["alias", "rename", "zz", "ver"]);
    both(&["alias", "add", "gone", "list"]);
    both(&["alias", "remove", "gone"]);
    let table = both(&["alias", "list"]);
    assert!(table.contains("| names | list -c n -f csv"), "{table}");
    both(&["alias", "list", "-f", "csv"]);
    let (ours, theirs) = (
        t.rxc(&["alias", "list", "-f", "yaml"]),
        t.lxc(&["alias", "list", "-f", "yaml"]),
    );
    assert_eq!(
        serde_norway::from_str::<Value>(&ours).unwrap(),
        serde_norway::from_str::<Value>(&theirs).unwrap()
    );
    // The same refusals, in the same words.
    for args in [
        &["alias", "add", "names", "x"][..],
        &["alias", "remove", "nothing"],
        &["alias", "rename", "nothing", "x"],
        &["alias", "rename", "names", "role"],
    ] {
        let (ours, theirs) = (t.rxc_output(args), t.lxc_output(args));
        assert!(
            !ours.status.success() && !theirs.status.success(),
            "{args:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr),
            "{args:?}"
        );
    }
    // Stored as lxc stores them.
    let stored: Value =
        serde_norway::from_str(&std::fs::read_to_string(t.conf.path().join("config.yml")).unwrap())
            .unwrap();
    assert_eq!(stored["aliases"]["role"], "config get @ARG1@ user.role");

    // Expanded before the command line is read.
    t.import_busybox("default");
    t.rxc(&["init", "bb", "c1", "-c", "user.role=db"]);
    assert_eq!(t.rxc(&["names"]), "c1\n");
    assert_eq!(t.rxc(&["role", "c1"]), "db\n");
    assert!(t.rxc(&["ver"]).starts_with("Client version:"));
    let out = t.rxc_output(&["role"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("references an argument outside"),
        "{out:?}"
    );
}

/// An `EDITOR` that runs `script` on the file (`$1`), and counts its runs in `runs`.
fn scripted_editor(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("editor.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nset -e\necho x >> {runs}\nruns=$(wc -l < {runs})\n{script}\n",
            runs = dir.join("runs").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn edit_commands_take_yaml_from_stdin_or_the_editor() {
    let Some(t) = Both::new("edit_commands_take_yaml_from_stdin_or_the_editor").await else {
        return;
    };
    t.import_busybox("default");
    t.rxc(&["init", "bb", "c1", "-c", "user.role=db"]);
    let piped = |args: &[&str], input: &str| t.d.rxc_with_input(t.conf.path(), args, input);

    // Instance: show, change, edit from stdin; lxc sees the result.
    let shown = t.rxc(&["config", "show", "c1"]);
    let edited = shown.replace("user.role: db", "user.role: web\n  limits.processes: 100");
    assert_ne!(shown, edited);
    let out = piped(&["config", "edit", "c1"], &edited);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(t.rxc(&["config", "get", "c1", "user.role"]), "web\n");
    assert_eq!(
        t.lxc(&["config", "get", "rxd:c1", "limits.processes"]),
        "100\n"
    );
    // A number where a string is expected reads as Go reads it.
    let out = piped(
        &["config", "edit", "c1"],
        "config:\n  limits.processes: 200\n  user.role: web\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(t.rxc(&["config", "get", "c1", "limits.processes"]), "200\n");
    // What does not read is refused before anything is sent; what the server refuses is said.
    let out = piped(&["config", "edit", "c1"], "config: [\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not read"),
        "{out:?}"
    );
    let out = piped(&["config", "edit", "c1"], "config:\n  no.such.key: x\n");
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(t.rxc(&["config", "get", "c1", "user.role"]), "web\n");

    // Server, project and certificate, each as lxc shows them.
    let shown = t.rxc(&["config", "show"]);
    let out = piped(
        &["config", "edit"],
        &format!("{shown}  core.remote_token_expiry: 2d\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        t.lxc(&["config", "get", "rxd:", "core.remote_token_expiry"]),
        "2d\n"
    );
    // The trust password, shown as `true`, was sent back as `true`: unchanged.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new("lxc")
        .args(["remote", "add", "again", &t.d.https_address()])
        .args(["--accept-certificate", "--password", "pw"])
        .env("LXD_CONF", other.path())
        .env("HOME", other.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    t.rxc(&["project", "create", "p1"]);
    let out = piped(
        &["project", "edit", "p1"],
        "config:\n  features.images: \"true\"\ndescription: edited\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(t
        .lxc(&["project", "show", "rxd:p1"])
        .contains("description: edited"));
    let certs: Vec<Value> =
        serde_json::from_str(&t.rxc(&["config", "trust", "list", "-f", "json"])).unwrap();
    let fp = certs[0]["fingerprint"].as_str().unwrap().to_owned();
    let shown = t.rxc(&["config", "trust", "show", &fp]);
    assert_eq!(
        serde_norway::from_str::<Value>(&shown).unwrap(),
        serde_norway::from_str::<Value>(&t.lxc(&["config", "trust", "show", &format!("rxd:{fp}")]))
            .unwrap()
    );
    let out = piped(
        &["config", "trust", "edit", &fp],
        "name: renamed\ntype: client\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(t
        .rxc(&["config", "trust", "show", &fp])
        .contains("name: renamed"));

    // The editor, from a terminal: the first save does not read, the editor opens again on it.
    let dir = tempfile::tempdir().unwrap();
    let editor = scripted_editor(
        dir.path(),
        r#"if [ "$runs" = 1 ]; then echo 'config: [' >> "$1"; else sed -i -e 's/^config: \[$//' -e 's/user.role: web/user.role: edited/' "$1"; fi"#,
    );
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["config", "edit", "c1"])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir())
        .env("EDITOR", &editor)
        .env_remove("VISUAL");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("Config parsing error").unwrap();
    p.exp_string("Press enter to open the editor again")
        .unwrap();
    p.send_line("").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert_eq!(t.rxc(&["config", "get", "c1", "user.role"]), "edited\n");
    assert_eq!(t.rxc(&["config", "get", "c1", "limits.processes"]), "200\n");
}

#[tokio::test]
async fn image_info_and_project_info_as_lxc_shows_them() {
    let Some(t) = Both::new("image_info_and_project_info_as_lxc_shows_them").await else {
        return;
    };
    t.rxc(&[
        "project",
        "create",
        "p1",
        "-c",
        "limits.containers=5",
        "-c",
        "limits.disk=1GiB",
    ]);
    t.import_busybox("p1");
    t.rxc(&[
        "--project",
        "p1",
        "image",
        "alias",
        "create",
        "other",
        &{
            let list: Vec<Value> =
                serde_json::from_str(&t.rxc(&["--project", "p1", "image", "list", "-f", "json"]))
                    .unwrap();
            list[0]["fingerprint"].as_str().unwrap().to_owned()
        },
        "--description",
        "a second name",
    ]);
    t.rxc(&[
        "--project",
        "p1",
        "init",
        "bb",
        "c1",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.processes=50",
    ]);
    t.rxc(&[
        "--project",
        "p1",
        "init",
        "bb",
        "c2",
        "-c",
        "limits.processes=25",
    ]);

    // Properties come in Go's map order: compare the lines as sets.
    let lines = |s: String| {
        let mut l: Vec<String> = s.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    let ours = t.rxc(&["--project", "p1", "image", "info", "bb"]);
    let theirs = t.lxc(&["--project", "p1", "image", "info", "rxd:bb"]);
    assert!(ours.contains("    - other (a second name)"), "{ours}");
    assert_eq!(lines(ours), lines(theirs));

    // Image edit: properties and public change, what rxd cannot honour is refused.
    let shown = t.rxc(&["--project", "p1", "image", "show", "bb"]);
    assert!(shown.contains("public: false"), "{shown}");
    let out = {
        use std::io::Write;
        let mut child = Command::new(bin("rxc"))
            .args(["--project", "p1", "image", "edit", "bb"])
            .env("RXC_CONF", t.conf.path())
            .env("RXD_DIR", t.d.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"public: true\nproperties:\n  description: edited image\n  os: busybox\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{out:?}");
    let theirs = t.lxc(&["--project", "p1", "image", "info", "rxd:bb"]);
    assert!(
        theirs.contains("Public: yes") && theirs.contains("    description: edited image"),
        "{theirs}"
    );
    let out = t.lxc_output(&["--project", "p1", "image", "edit", "rxd:bb"]);
    assert!(
        out.status.success(),
        "lxc image edit with empty stdin: {out:?}"
    );
    let refused = Command::new(bin("rxc"))
        .args(["--project", "p1", "image", "edit", "bb"])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir())
        .stdin(
            std::fs::File::open({
                let f = t.conf.path().join("auto.yaml");
                std::fs::write(&f, "auto_update: true\n").unwrap();
                f
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("auto_update"),
        "{refused:?}"
    );

    let ours = t.rxc(&["project", "info", "p1"]);
    assert_eq!(ours, t.lxc(&["project", "info", "rxd:p1"]));
    assert!(
        ours.contains("| CONTAINERS       | 5         | 2 "),
        "{ours}"
    );
    assert!(
        ours.contains("| MEMORY           | UNLIMITED | 64.00MiB "),
        "{ours}"
    );
    assert!(
        ours.contains("| PROCESSES        | UNLIMITED | 75 "),
        "{ours}"
    );
    assert_eq!(
        t.rxc(&["project", "info", "p1", "-f", "json"]),
        t.lxc(&["project", "info", "rxd:p1", "-f", "json"])
    );
}

/// A directory tree as (relative path, kind and content, mode) lines, to compare two copies.
fn tree(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&path).unwrap().display()
                ));
            } else if meta.is_dir() {
                out.push(format!("{rel}/ {mode:o}"));
                stack.push(path);
            } else {
                out.push(format!(
                    "{rel} {mode:o} {}",
                    std::fs::read_to_string(&path).unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn file_push_pull_recursive_and_edit_as_lxc_does() {
    use std::os::unix::fs::PermissionsExt;
    let Some(t) = Both::new("file_push_pull_recursive_and_edit_as_lxc_does").await else {
        return;
    };
    t.import_busybox("default");
    t.rxc(&["init", "bb", "c1"]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("dir");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(src.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let src_s = src.to_str().unwrap();
    let at = |p: &str| work.path().join(p).to_str().unwrap().to_owned();

    // rxc pushes, lxc pulls; lxc pushes, rxc pulls: the trees come back as they left.
    t.rxc(&["file", "push", "-r", src_s, "c1/tmp"]);
    t.lxc(&["file", "pull", "-r", "rxd:c1/tmp/dir", &at("by-lxc")]);
    assert_eq!(tree(&work.path().join("by-lxc/dir")), tree(&src));
    t.lxc(&["file", "push", "-r", src_s, "rxd:c1/root/"]);
    t.rxc(&["file", "pull", "-r", "c1/root/dir", &at("by-rxc")]);
    assert_eq!(tree(&work.path().join("by-rxc/dir")), tree(&src));
    // Several sources into a directory.
    t.rxc(&[
        "file",
        "pull",
        "c1/tmp/dir/a.txt",
        "c1/tmp/dir/sub/run.sh",
        &at("flat"),
    ]);
    assert_eq!(
        tree(&work.path().join("flat")),
        ["a.txt 640 alpha\n", "run.sh 755 #!/bin/sh\n"]
    );
    let out = t.rxc_output(&["file", "pull", "c1/tmp/dir", &at("nope")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-r"),
        "{out:?}"
    );

    // A large push shows its progress on a terminal, and nothing when piped.
    let big = work.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 8 << 20]).unwrap();
    let out = t.rxc_output(&["file", "push", big.to_str().unwrap(), "c1/tmp/"]);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{out:?}"
    );
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["file", "push", big.to_str().unwrap(), "c1/tmp/big2"])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir());
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("Pushing").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(t.rxc(&["file", "pull", "c1/tmp/big2", "-"]).len(), 8 << 20);
    // So does a large pull; piped or redirected, it prints nothing, and the file is whole.
    let pulled = work.path().join("pulled.bin");
    let out = t.rxc_output(&["file", "pull", "c1/tmp/big2", pulled.to_str().unwrap()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(std::fs::read(&pulled).unwrap(), vec![7u8; 8 << 20]);
    let again = work.path().join("again.bin");
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["file", "pull", "c1/tmp/big2", again.to_str().unwrap()])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir());
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("Pulling /tmp/big2 from c1").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(std::fs::read(&again).unwrap().len(), 8 << 20);

    // file edit from standard input keeps the owner and mode.
    let out = {
        use std::io::Write;
        let mut child = Command::new(bin("rxc"))
            .args(["file", "edit", "c1/tmp/dir/a.txt"])
            .env("RXC_CONF", t.conf.path())
            .env("RXD_DIR", t.d.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"beta\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        t.lxc(&["file", "pull", "rxd:c1/tmp/dir/a.txt", "-"]),
        "beta\n"
    );
    // And in the editor, from a terminal.
    let editor = scripted_editor(work.path(), r#"sed -i 's/beta/gamma/' "$1""#);
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["file", "edit", "c1/tmp/dir/a.txt"])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir())
        .env("EDITOR", &editor)
        .env_remove("VISUAL");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_eof().unwrap();
    t.rxc(&["file", "pull", "c1/tmp/dir/a.txt", &at("edited.txt")]);
    assert_eq!(
        std::fs::read_to_string(at("edited.txt")).unwrap(),
        "gamma\n"
    );
    let mode = std::fs::metadata(at("edited.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

/// The memory lines that change between two reads of a live host (`Free:` and `Used:`).
fn without_live_memory(text: &str) -> String {
    text.lines()
        .filter(|l| !(l.starts_with("  Free: ") || l.starts_with("  Used: ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names in a sysfs class directory whose entry has a `device` link (LXD's rule for cards and
/// disks), sorted.
fn with_device(class: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(class)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn server_resources_as_lxc_shows_them() {
    let test = "server_resources_as_lxc_shows_them";
    if !require_root(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let conf = tempfile::tempdir().unwrap();
    let lxd_conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str]| {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", d.dir())
            .env("LXD_CONF", lxd_conf.path())
            .env("HOME", lxd_conf.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // The same text from both clients (the live memory figures aside), starting as lxc's does.
    let ours = text(&d.rxc(conf.path(), &["info", "--resources"]));
    let theirs = text(&lxc(&["info", "--resources"]));
    assert_eq!(without_live_memory(&ours), without_live_memory(&theirs));
    let arch = text(&Command::new("uname").arg("-m").output().unwrap());
    assert!(
        ours.starts_with(&format!("CPU ({}):\n", arch.trim()))
            || ours.starts_with(&format!("CPUs ({}):\n", arch.trim())),
        "{ours}"
    );
    assert!(ours.contains("\nMemory:\n  Free: "), "{ours}");

    // The answer describes this host.
    let r = d.unix().get("/1.0/resources").await.unwrap();
    for key in [
        "cpu", "memory", "gpu", "network", "storage", "usb", "pci", "system",
    ] {
        assert!(r.get(key).is_some(), "{key} missing: {r}");
    }
    let threads = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("topology").is_dir())
        .count();
    assert_eq!(r["cpu"]["total"], threads as u64);
    assert_eq!(r["cpu"]["architecture"], arch.trim());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let total = r["memory"]["total"].as_u64().unwrap();
    // MemTotal, or the online memory blocks (a little more: the kernel's own reservations).
    assert!(
        total >= mem_total_kib * 1024 && total < mem_total_kib * 1024 * 11 / 10,
        "{total} vs MemTotal {mem_total_kib} KiB"
    );
    let disks: Vec<String> = r["storage"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let block: Vec<String> = with_device("/sys/class/block")
        .into_iter()
        .filter(|b| {
            std::path::Path::new("/sys/class/block")
                .join(b)
                .join("dev")
                .exists()
        })
        .collect();
    assert_eq!(
        disks, block,
        "disks are block devices with a device, not loop or zram"
    );
    let ports: Vec<String> = r["network"]["cards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    for iface in with_device("/sys/class/net") {
        assert!(ports.contains(&iface), "{iface} not among {ports:?}");
    }
    assert!(!ports.iter().any(|p| p == "lo"));
    assert!(
        r["system"].get("firmware").is_some(),
        "null or an object, never absent"
    );

    // As LXD: no cluster here, so only the member `none`.
    let c = d.unix();
    assert_eq!(
        c.request(rxd_client::Method::GET, "/1.0/resources?target=none", None)
            .await
            .unwrap()
            .status,
        200
    );
    let other = c
        .request(rxd_client::Method::GET, "/1.0/resources?target=m2", None)
        .await
        .unwrap();
    assert_eq!(other.status, 404);
    assert_eq!(other.envelope().unwrap().error, "Cluster member not found");

    // Any trusted client reads it, a restricted one without this machine's identifiers;
    // an untrusted one is refused.
    let id = rxd_testkit::client_identity("resources-operator");
    rxd_testkit::api::trust_restricted(&c, &id, &["default"]).await;
    let restricted = d.https(Some(&id)).get("/1.0/resources").await.unwrap();
    assert_eq!(restricted["cpu"], r["cpu"]);
    assert_eq!(restricted["system"]["uuid"], "");
    assert_eq!(restricted["system"]["serial"], "");
    for card in restricted["network"]["cards"].as_array().unwrap() {
        for port in card["ports"].as_array().into_iter().flatten() {
            assert!(
                port.get("address").is_none(),
                "a MAC for a non-admin: {port}"
            );
        }
    }
    let stranger = rxd_testkit::client_identity("resources-stranger");
    let refused = d
        .https(Some(&stranger))
        .request(rxd_client::Method::GET, "/1.0/resources", None)
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.envelope().unwrap().error, "not authorized");
}

/// A large image export shows `lxc`'s `Exporting the image` progress on a terminal, and
/// nothing when its output is not one; the file is the one imported.
#[tokio::test]
async fn image_export_shows_progress_on_a_terminal() {
    let Some(t) = Both::new("image_export_shows_progress_on_a_terminal").await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("image");
    std::fs::create_dir_all(root.join("rootfs")).unwrap();
    std::fs::write(
        root.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: test\n",
    )
    .unwrap();
    // 8 MiB that does not compress, so the tarball stays that large.
    let mut noise = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(root.join("rootfs/noise"), &noise).unwrap();
    let tarball = work.path().join("big.tar.gz");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-czf", tarball.to_str().unwrap(), "metadata.yaml", "rootfs"])
        .status()
        .unwrap();
    assert!(tar.success());
    t.rxc(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "big",
    ]);

    let piped = work.path().join("piped");
    std::fs::create_dir(&piped).unwrap();
    let out = t.rxc_output(&["image", "export", "big", piped.to_str().unwrap()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let exported: Vec<_> = std::fs::read_dir(&piped).unwrap().collect();
    assert_eq!(exported.len(), 1);
    let file = exported[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::read(file).unwrap(),
        std::fs::read(&tarball).unwrap()
    );

    let shown = work.path().join("shown");
    std::fs::create_dir(&shown).unwrap();
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["image", "export", "big", shown.to_str().unwrap()])
        .env("RXC_CONF", t.conf.path())
        .env("RXD_DIR", t.d.dir());
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("Exporting the image").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(std::fs::read_dir(&shown).unwrap().count(), 1);
}
