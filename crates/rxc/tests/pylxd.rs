//! pylxd (PyPI, tests/pylxd/requirements.txt), an independent client of LXD's API, against the
//! real daemon: over HTTPS, enrolment by password and by token, certificates, image upload,
//! instances, exec, files, snapshots and the events websocket (tests/pylxd/check.py); over the
//! unix socket in a network lab, managed bridges and host interfaces, an instance's DHCP lease
//! in its state and the network's leases (tests/pylxd/networks.py); and `Instance.migrate`
//! between two servers (tests/pylxd/migrate.py).

use rxd_client::Method;
use rxd_testkit::netlab::NetLab;
use rxd_testkit::{busybox_image, require_root, require_tool, TestDaemon};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// True when python3 can import pylxd. Outside CI a missing module skips the test with a
/// message; under `CI=true` it is a failure.
fn require_pylxd(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pylxd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let msg = format!(
        "{test}: needs python3 with pylxd (python3 -m pip install -r tests/pylxd/requirements.txt), skipping"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true a skip is a failure");
    }
    eprintln!("SKIP {msg}");
    false
}

/// The test password set on `d` (`core.trust_password`), which the scripts enrol with.
async fn set_trust_password(d: &TestDaemon) {
    let r = d
        .unix()
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.trust_password": "py-secret"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
}

/// `python3 tests/pylxd/<script> <servers>...` with the password, the image and the work
/// directory, as a user of pylxd over HTTPS would run it.
fn https_script(
    script: &str,
    servers: &[std::ffi::OsString],
    image: &Path,
    work: &Path,
) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pylxd")
        .join(script);
    Command::new("python3")
        .arg(script)
        .args(servers)
        .args(["--password", "py-secret"])
        .arg("--image")
        .arg(image)
        .arg("--workdir")
        .arg(work)
        // pylxd looks for certificates under ~/.config/lxc: there are none in a fresh home.
        .env("HOME", work)
        // requests lets these override the `verify` file pylxd passes, and pylxd then pins the
        // first certificate of the system bundle instead of the server's.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs")
}

#[tokio::test]
async fn pylxd_enrols_and_drives_instances_over_tls() {
    let test = "pylxd_enrols_and_drives_instances_over_tls";
    if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    if !require_pylxd(test) {
        return;
    }
    let d = TestDaemon::start().await;
    set_trust_password(&d).await;

    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("bb.tar.gz");
    busybox_image(&image);
    let servers = [
        "--endpoint".into(),
        format!("https://{}", d.https_address()).into(),
        "--server-cert".into(),
        d.dir().join("server.crt").into(),
    ];
    let out = https_script("check.py", &servers, &image, work.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("pylxd: all checks passed"),
        "check.py failed ({}):\n{stdout}\n{}\nrxd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );

    // What pylxd did is what the server holds: both clients enrolled under their names, and
    // nothing else left behind.
    let certs = d.unix().get("/1.0/certificates?recursion=1").await.unwrap();
    let mut names: Vec<&str> = certs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["pylxd-a", "pylxd-b"], "{certs}");
    assert_eq!(d.unix().get("/1.0/instances").await.unwrap(), json!([]));
    assert_eq!(d.unix().get("/1.0/images").await.unwrap(), json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn pylxd_manages_networks_over_the_unix_socket() {
    let test = "pylxd_manages_networks_over_the_unix_socket";
    if !require_pylxd(test) {
        return;
    }
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(s) = lab.session(test).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pylxd/networks.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--socket")
        .arg(s.d.socket())
        .args(["--image-alias", "bb"])
        .env("HOME", home.path())
        .env_remove("LXD_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");

    // Whatever the script left behind goes before the lab does.
    let c = s.d.unix();
    let instances = c.get("/1.0/instances").await.unwrap();
    for url in instances
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let name = url.rsplit('/').next().unwrap_or_default();
        let _ = s.rxc(&["delete", "-f", name]);
    }
    let networks = c.get("/1.0/networks?recursion=1").await.unwrap();
    let managed: Vec<&str> = networks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["managed"] == true)
        .filter_map(|n| n["name"].as_str())
        .collect();
    for name in &managed {
        let _ = s.rxc(&["network", "delete", name]);
    }

    assert!(
        out.status.success() && stdout.contains("pylxd networks: all checks passed"),
        "networks.py failed ({}):\n{stdout}\n{}\nrxd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.d.logs()
    );
    // A passing script cleaned up after itself: nothing was left for the sweep above.
    assert_eq!(instances, json!([]), "left behind");
    assert!(managed.is_empty(), "left behind: {managed:?}");
}

#[tokio::test]
async fn pylxd_migrates_an_instance_between_servers() {
    let test = "pylxd_migrates_an_instance_between_servers";
    if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    if !require_pylxd(test) {
        return;
    }
    let (src, dst) = (TestDaemon::start().await, TestDaemon::start().await);
    for d in [&src, &dst] {
        set_trust_password(d).await;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("bb.tar.gz");
    busybox_image(&image);
    let servers = [
        "--src".into(),
        format!("https://{}", src.https_address()).into(),
        "--src-cert".into(),
        src.dir().join("server.crt").into(),
        "--dst".into(),
        format!("https://{}", dst.https_address()).into(),
        "--dst-cert".into(),
        dst.dir().join("server.crt").into(),
    ];
    let out = https_script("migrate.py", &servers, &image, work.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("pylxd: migration passed"),
        "migrate.py failed ({}):\n{stdout}\n{}\nsource log:\n{}\ntarget log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        src.logs(),
        dst.logs()
    );
    assert_eq!(src.unix().get("/1.0/instances").await.unwrap(), json!([]));
    assert_eq!(dst.unix().get("/1.0/instances").await.unwrap(), json!([]));
}
