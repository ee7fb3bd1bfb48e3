//! A daemon killed in the middle of an operation (a fail point: the test build's `failpoints`
//! feature, armed through `RXD_FAILPOINTS`) leaves nothing half-made once it starts again: no
//! instance the API lists but cannot use, no orphaned files, a warning saying what was undone,
//! and the operation can be retried to success.

use rxd_client::{Client, Method};
use rxd_testkit::{busybox_image, require_root, succeeded, Options, TestDaemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn create(c: &Client, name: &str) -> Result<Value, String> {
    let r = c
        .request(
            Method::POST,
            "/1.0/instances",
            Some(&json!({"name": name, "source": {"type": "image", "alias": "bb"}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let op = r.envelope().map_err(|e| e.to_string())?.metadata;
    let id = op["id"].as_str().ok_or("no operation")?.to_owned();
    c.get(&format!("/1.0/operations/{id}/wait"))
        .await
        .map_err(|e| e.to_string())
}

/// The entries of the state dir's `containers/`.
fn containers(d: &TestDaemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.dir().join("containers"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_create_killed_at_any_step_is_undone_at_start_up() {
    if !require_root("a_create_killed_at_any_step_is_undone_at_start_up") {
        return;
    }
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    for point in ["instance-create:row-recorded", "instance-create:unpacked"] {
        let mut d = TestDaemon::start_with(Options {
            no_https: true,
            env: vec![("RXD_FAILPOINTS".into(), point.into())],
            ..Options::default()
        })
        .await;
        let args = ["image", "import", image.to_str().unwrap(), "--alias", "bb"];
        succeeded(&args, d.rxc(conf.path(), &args));
        let unix = d.unix();
        // Answered 202, then the daemon dies at the point before the operation ends.
        let _ = create(&unix, "c1").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.exited() {
            assert!(
                Instant::now() < deadline,
                "{point}: the daemon did not die (is rxd built with --features rxd/failpoints, as scripts/test.sh builds it?)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            d.logs().contains(point),
            "{point}: not reached; log:\n{}",
            d.logs()
        );

        d.set_env(Vec::new());
        d.spawn();
        d.wait_ready().await;
        let unix = d.unix();
        assert_eq!(
            unix.get("/1.0/instances").await.unwrap(),
            json!([]),
            "{point}: a half-made instance is listed"
        );
        assert_eq!(containers(&d), Vec::<String>::new(), "{point}: files left");
        let warnings = unix.get("/1.0/warnings?recursion=1").await.unwrap();
        assert!(
            warnings
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["last_message"]
                    .as_str()
                    .is_some_and(|m| m.contains("default/c1"))),
            "{point}: no warning says what was undone: {warnings:#}"
        );
        // The same create, retried, succeeds and makes a usable instance.
        let done = create(&unix, "c1").await.unwrap();
        assert_eq!(done["status"], "Success", "{point}: {done}");
        let c1 = unix.get("/1.0/instances/c1").await.unwrap();
        assert!(
            c1["config"]["volatile.idmap.next"].is_string(),
            "{point}: {c1:#}"
        );
        assert_eq!(containers(&d), vec!["c1".to_owned()], "{point}");
    }
}
