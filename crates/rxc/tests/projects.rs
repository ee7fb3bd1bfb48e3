//! Projects and role grants through the real `rxc` against a real `rxd`: creating, listing,
//! configuring, switching, renaming and deleting projects; `--project` scoping every command
//! (instances, images, exec, files, snapshots); and `rxc auth` granting a second client a role
//! on one project, which it sees and nothing else, until the grant is revoked.

use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tempfile::TempDir;

/// One client machine: its own `$RXC_CONF`, `local` pointing at the test daemon's socket.
struct Machine {
    conf: TempDir,
    rxd_dir: PathBuf,
}

impl Machine {
    fn new(d: &TestDaemon) -> Machine {
        Machine {
            conf: tempfile::tempdir().unwrap(),
            rxd_dir: d.dir(),
        }
    }

    fn conf(&self) -> &Path {
        self.conf.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", self.conf())
            .env("RXD_DIR", &self.rxd_dir)
            .env("HOME", self.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        rxd_testkit::succeeded(args, self.run(args))
    }

    fn fails(&self, args: &[&str]) -> String {
        rxd_testkit::failed(args, self.run(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("rxc {args:?}: {e}: {text}"))
    }

    /// The names in a JSON list of objects, sorted.
    fn names(&self, args: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = self
            .json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The `project` saved for `remote` in config.yml.
    fn saved_project(&self, remote: &str) -> String {
        let text = std::fs::read_to_string(self.conf().join("config.yml")).unwrap_or_default();
        let file: Value = serde_norway::from_str(&text).unwrap_or(Value::Null);
        file["remotes"][remote]["project"]
            .as_str()
            .unwrap_or("default")
            .to_owned()
    }

    /// The SHA-256 fingerprint of this machine's client certificate.
    fn fingerprint(&self) -> String {
        let pem = std::fs::read_to_string(self.conf().join("client.crt")).unwrap();
        rxd_tls::fingerprint(&rxd_tls::cert::from_pem(&pem).unwrap())
    }
}

/// Build the busybox test image into `dir`.
fn busybox_image(dir: &Path) -> PathBuf {
    let image = dir.join("bb.tar.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg(&image)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(built.success());
    image
}

fn needs(test: &str) -> bool {
    require_root(test) && require_tool("busybox", "busybox-static", test)
}

#[tokio::test]
async fn projects_are_created_configured_and_switched_to() {
    if !needs("projects_are_created_configured_and_switched_to") {
        return;
    }
    let d = TestDaemon::start().await;
    let m = Machine::new(&d);
    let image = busybox_image(m.conf());
    m.ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    m.ok(&["init", "bb", "c1"]);

    let out = m.ok(&[
        "project",
        "create",
        "p1",
        "--description",
        "First project",
        "-c",
        "user.a=b",
    ]);
    assert!(out.contains("Project p1 created"), "{out}");
    let table = m.ok(&["project", "list"]);
    assert!(table.contains("default (current)"), "{table}");
    assert!(
        table.contains("| p1 ") && table.contains("First project"),
        "{table}"
    );
    assert!(table.contains("USED BY"), "{table}");
    let list = m.json(&["project", "list", "-f", "json"]);
    let by_name = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {list}"))
    };
    assert_eq!(by_name("p1")["description"], "First project");
    assert_eq!(by_name("p1")["config"]["user.a"], "b");
    let default = by_name("default");
    let used_by: Vec<&str> = default["used_by"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(used_by.contains(&"/1.0/instances/c1"), "{used_by:?}");
    let csv = m.ok(&["project", "list", "local:", "-f", "csv"]);
    assert!(
        csv.lines().any(|l| l.starts_with("p1,First project,")),
        "{csv}"
    );
    let yaml = m.ok(&["project", "list", "-f", "yaml"]);
    assert!(yaml.contains("name: p1"), "{yaml}");

    let shown = m.ok(&["project", "show", "p1"]);
    assert!(
        shown.contains("name: p1") && shown.contains("user.a: b"),
        "{shown}"
    );

    m.ok(&["project", "set", "p1", "user.x=y"]);
    m.ok(&["project", "set", "local:p1", "user.z", "w"]);
    let shown = m.ok(&["project", "show", "p1"]);
    assert!(
        shown.contains("user.x: y") && shown.contains("user.z: w"),
        "{shown}"
    );
    assert_eq!(m.ok(&["project", "get", "p1", "user.z"]).trim(), "w");
    m.ok(&["project", "unset", "p1", "user.x"]);
    let shown = m.ok(&["project", "show", "p1"]);
    assert!(
        !shown.contains("user.x") && shown.contains("user.a: b"),
        "{shown}"
    );
    assert!(shown.contains("description: First project"), "{shown}");
    let err = m.fails(&["project", "set", "p1", "bogus.key", "1"]);
    assert!(err.contains("bogus.key"), "{err}");

    // Switching is saved in config.yml; every later command runs in the project.
    let err = m.fails(&["project", "switch", "nope"]);
    assert!(err.contains("Project not found"), "{err}");
    assert_eq!(m.saved_project("local"), "default");
    m.ok(&["project", "switch", "p1"]);
    assert_eq!(m.saved_project("local"), "p1");
    assert!(m.ok(&["project", "list"]).contains("p1 (current)"));
    assert!(m.ok(&["info"]).contains("# current project: p1"));
    assert_eq!(m.json(&["list", "-f", "json"]), serde_json::json!([]));
    assert_eq!(
        m.json(&["image", "list", "-f", "json"]),
        serde_json::json!([])
    );
    assert_eq!(
        m.names(&["list", "-f", "json", "--project", "default"]),
        ["c1"]
    );
    let err = m.fails(&["info", "c1"]);
    assert!(err.contains("not found"), "{err}");
    m.ok(&["project", "switch", "default"]);
    assert_eq!(m.names(&["list", "-f", "json"]), ["c1"]);
    m.ok(&["delete", "c1"]);
}

#[tokio::test]
async fn the_project_flag_scopes_every_command() {
    if !needs("the_project_flag_scopes_every_command") {
        return;
    }
    let d = TestDaemon::start().await;
    let m = Machine::new(&d);
    let image = busybox_image(m.conf());
    let image = image.to_str().unwrap();
    m.ok(&["project", "create", "p1"]);

    // Images belong to a project.
    m.ok(&["image", "import", image, "--alias", "bb", "--project", "p1"]);
    assert_eq!(
        m.json(&["image", "list", "-f", "json"]),
        serde_json::json!([])
    );
    let images = m.json(&["image", "list", "-f", "json", "--project", "p1"]);
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    let err = m.fails(&["init", "bb", "c0"]);
    assert!(err.to_lowercase().contains("not found"), "{err}");

    // A running container in p1: lifecycle, exec (websockets), files, snapshots, info.
    m.ok(&["--project", "p1", "launch", "bb", "c2"]);
    assert_eq!(m.json(&["list", "-f", "json"]), serde_json::json!([]));
    let list = m.json(&["list", "-f", "json", "--project", "p1"]);
    assert_eq!(list[0]["name"], "c2", "{list}");
    assert_eq!(list[0]["state"]["status"], "Running", "{list}");
    // Checked last, so that the rest runs whatever this says.
    let listed_status = list[0]["status"].clone();
    let out = m.ok(&["exec", "c2", "--project", "p1", "--", "echo", "hello"]);
    assert_eq!(out, "hello\n");
    assert_eq!(
        m.ok(&["exec", "--project", "p1", "c2", "--", "hostname"])
            .trim(),
        "c2"
    );
    let err = m.fails(&["exec", "c2", "--", "true"]);
    assert!(err.to_lowercase().contains("not found"), "{err}");
    let local = m.conf().join("greeting");
    std::fs::write(&local, "hi from the host\n").unwrap();
    m.ok(&[
        "file",
        "push",
        local.to_str().unwrap(),
        "c2/root/greeting",
        "--project",
        "p1",
    ]);
    assert_eq!(
        m.ok(&["file", "pull", "c2/root/greeting", "-", "--project", "p1"]),
        "hi from the host\n"
    );
    m.ok(&["snapshot", "c2", "s1", "--project", "p1"]);
    let info = m.ok(&["info", "c2", "--project", "p1"]);
    assert!(
        info.contains("Name: c2") && info.contains("PID: "),
        "{info}"
    );
    m.ok(&["stop", "c2", "--force", "--project", "p1"]);
    let used_by = m.json(&["project", "list", "-f", "json"]);
    let p1 = used_by
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap()
        .clone();
    assert!(
        p1["used_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "/1.0/instances/c2?project=p1"),
        "{p1}"
    );
    // A project with an instance in it cannot be deleted.
    m.fails(&["project", "delete", "p1"]);
    m.ok(&["delete", "c2", "--project", "p1"]);
    assert_eq!(
        m.json(&["list", "-f", "json", "--project", "p1"]),
        serde_json::json!([])
    );

    // --project overrides the saved project without changing it.
    m.ok(&["project", "switch", "p1"]);
    assert_eq!(
        m.json(&["image", "list", "-f", "json", "--project", "default"]),
        serde_json::json!([])
    );
    assert!(m
        .ok(&["info", "--project", "default"])
        .contains("# current project: default"));
    assert_eq!(m.saved_project("local"), "p1");
    let err = m.fails(&["list", "--project", "nope"]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(
        listed_status, "Running",
        "the list's status of a running container in a project"
    );
    assert!(info.contains("Status: RUNNING"), "{info}");
}

#[tokio::test]
async fn a_role_grant_shows_one_project_until_revoked() {
    if !require_root("a_role_grant_shows_one_project_until_revoked") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = Machine::new(&d);
    admin.ok(&["project", "create", "p1"]);
    admin.ok(&["project", "create", "p2"]);

    // A restricted client with no project of its own: it sees nothing yet.
    let out = admin.ok(&["config", "trust", "add", "--name", "bob", "--restricted"]);
    let token = out.lines().last().unwrap().to_owned();
    let bob = Machine::new(&d);
    bob.ok(&["remote", "add", "prod", &token]);
    let fp = bob.fingerprint();
    assert_eq!(
        bob.json(&["project", "list", "prod:", "-f", "json", "--project", "p1"]),
        serde_json::json!([])
    );
    // With no rights anywhere there is nothing to hide: refused, whether p1 exists or not.
    let err = bob.fails(&["list", "prod:", "--project", "p1"]);
    assert!(err.contains("not authorized"), "{err}");
    let err = bob.fails(&["list", "prod:", "--project", "nosuch"]);
    assert!(err.contains("not authorized"), "{err}");

    // Granted auditor on p1 (named by a fingerprint prefix).
    let err = bob.fails(&[
        "auth",
        "grant",
        "prod:",
        &fp[..12],
        "auditor",
        "--project",
        "p1",
    ]);
    assert!(
        err.contains("not authorized"),
        "only administrators grant: {err}"
    );
    let err = admin.fails(&["auth", "grant", &fp[..12], "auditor"]);
    assert!(err.contains("--project"), "a grant needs a scope: {err}");
    let err = admin.fails(&["auth", "grant", &fp[..12], "boss", "--project", "p1"]);
    assert!(err.contains("unknown role"), "{err}");
    let out = admin.ok(&["auth", "grant", &fp[..12], "auditor", "--project", "p1"]);
    assert!(
        out.contains(&format!(
            "Granted auditor on project p1 to certificate {fp}"
        )),
        "{out}"
    );
    let grants = admin.json(&["auth", "list", "-f", "json"]);
    let grant = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["identity"] == fp.as_str())
        .unwrap_or_else(|| panic!("no grant for {fp} in {grants}"))
        .clone();
    assert_eq!(grant["identity_type"], "certificate");
    assert_eq!(grant["role"], "auditor");
    assert_eq!(grant["scope"], "project");
    assert_eq!(grant["project"], "p1");
    assert!(out.contains(&format!("(grant {})", grant["id"])), "{out}");
    let table = admin.ok(&["auth", "list"]);
    assert!(
        table.contains("IDENTITY TYPE") && table.contains(&fp[..12]) && table.contains("auditor"),
        "{table}"
    );

    assert_eq!(
        bob.names(&["project", "list", "prod:", "-f", "json", "--project", "p1"]),
        ["p1"]
    );
    bob.ok(&["project", "switch", "prod:p1"]);
    assert_eq!(bob.saved_project("prod"), "p1");
    let table = bob.ok(&["project", "list", "prod:"]);
    assert!(
        table.contains("p1 (current)") && !table.contains("p2"),
        "{table}"
    );
    assert!(bob.ok(&["project", "show", "prod:p1"]).contains("name: p1"));
    assert_eq!(
        bob.json(&["list", "prod:", "-f", "json"]),
        serde_json::json!([])
    );
    let err = bob.fails(&["project", "show", "prod:p2"]);
    assert!(err.contains("Project not found"), "{err}");
    let err = bob.fails(&["project", "set", "prod:p1", "user.x", "y"]);
    assert!(
        err.contains("not authorized"),
        "an auditor only looks: {err}"
    );
    let err = bob.fails(&["auth", "list", "prod:"]);
    assert!(err.contains("not authorized"), "{err}");

    // Revoking by what was granted; a revoked grant is gone and so is the project.
    let err = admin.fails(&["auth", "revoke", &fp[..12], "user", "--project", "p1"]);
    assert!(err.contains("no grant of user on project p1"), "{err}");
    let out = admin.ok(&["auth", "revoke", &fp[..12], "auditor", "--project", "p1"]);
    assert!(
        out.contains(&format!("Revoked grant {}", grant["id"])),
        "{out}"
    );
    assert!(!admin.ok(&["auth", "list", "-f", "csv"]).contains(&fp));
    let err = bob.fails(&["list", "prod:"]);
    assert!(err.contains("not authorized"), "{err}");
    assert_eq!(
        bob.json(&["project", "list", "prod:", "-f", "json"]),
        serde_json::json!([])
    );
    let err = bob.fails(&["project", "show", "prod:p1"]);
    assert!(err.contains("not authorized"), "{err}");

    // Revoking by id.
    let out = admin.ok(&["auth", "grant", &fp, "user", "--all-projects"]);
    assert!(out.contains("Granted user on all projects"), "{out}");
    let grants = admin.json(&["auth", "list", "-f", "json"]);
    let id = grants[0]["id"].to_string();
    assert_eq!(grants[0]["scope"], "all-projects");
    assert_eq!(grants[0]["project"], "");
    let names = bob.names(&["project", "list", "prod:", "-f", "json"]);
    assert!(
        names.contains(&"p1".to_owned()) && names.contains(&"p2".to_owned()),
        "{names:?}"
    );
    admin.ok(&["auth", "revoke", &id]);
    assert_eq!(
        admin.json(&["auth", "list", "-f", "json"]),
        serde_json::json!([])
    );
    let err = admin.fails(&["auth", "revoke", &id]);
    assert!(err.contains("not found"), "{err}");
    let err = admin.fails(&["auth", "revoke", "local:", "x1"]);
    assert!(err.contains("not a grant id"), "{err}");
}

#[tokio::test]
async fn empty_projects_are_renamed_and_deleted() {
    if !require_root("empty_projects_are_renamed_and_deleted") {
        return;
    }
    let d = TestDaemon::start().await;
    let m = Machine::new(&d);
    m.ok(&["project", "create", "p3"]);
    m.ok(&["project", "switch", "p3"]);

    let out = m.ok(&["project", "rename", "p3", "p4"]);
    assert!(out.contains("Project p3 renamed to p4"), "{out}");
    assert_eq!(
        m.saved_project("local"),
        "p4",
        "the current project follows its rename"
    );
    assert_eq!(
        m.names(&["project", "list", "-f", "json"]),
        ["default", "p4"]
    );
    assert!(m.ok(&["project", "list"]).contains("p4 (current)"));
    let err = m.fails(&["project", "show", "p3"]);
    assert!(err.contains("Project not found"), "{err}");
    let err = m.fails(&["project", "rename", "p4", "default"]);
    assert!(!err.is_empty());
    m.fails(&["project", "delete", "default"]);

    let out = m.ok(&["project", "delete", "p4"]);
    assert!(out.contains("Project p4 deleted"), "{out}");
    assert_eq!(
        m.saved_project("local"),
        "default",
        "deleting the current project switches back"
    );
    assert_eq!(m.names(&["project", "list", "-f", "json"]), ["default"]);
    let err = m.fails(&["project", "delete", "p4"]);
    assert!(err.contains("Project not found"), "{err}");
}
