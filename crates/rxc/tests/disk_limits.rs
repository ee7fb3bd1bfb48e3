//! Unpack bounds over the real daemon: a compression bomb stops at `images.max_unpacked_size`
//! with nothing left behind, and a project's `limits.disk` refuses the import or create that
//! would exceed it (before unpacking when the recorded sizes tell, during it otherwise) and
//! accepts one that fits.

use rxd_client::{Client, Method};
use rxd_testkit::{bin, require_root, TestDaemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `rxc ARGS` on the test daemon, with no standard input.
fn rxc_command(d: &TestDaemon, conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("rxc"));
    c.args(args)
        .env("RXC_CONF", conf)
        .env("RXD_DIR", d.dir())
        .stdin(Stdio::null());
    c
}

fn rxc(d: &TestDaemon, conf: &Path, args: &[&str]) -> Output {
    rxc_command(d, conf, args).output().unwrap()
}

fn busybox_image(dir: &Path) -> PathBuf {
    let out = dir.join("busybox.tar.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "make-busybox-image.sh failed");
    out
}

/// A small gzip'd image whose rootfs holds `mib` MiB of zeros (made with Python's tarfile,
/// independently of rxd's code).
fn bomb(dir: &Path, mib: u64) -> PathBuf {
    let out = dir.join("bomb.tar.gz");
    let script = format!(
        "import io, tarfile\n\
         t = tarfile.open({out:?}, 'w:gz')\n\
         meta = b'architecture: x86_64\\ncreation_date: 1\\n'\n\
         i = tarfile.TarInfo('metadata.yaml'); i.size = len(meta); t.addfile(i, io.BytesIO(meta))\n\
         i = tarfile.TarInfo('rootfs'); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)\n\
         i = tarfile.TarInfo('rootfs/zeros'); i.size = {size}\n\
         t.addfile(i, open('/dev/zero', 'rb'))\n\
         t.close()\n",
        out = out.display().to_string(),
        size = mib << 20,
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

async fn patch(c: &Client, path: &str, body: Value) {
    let r = c.request(Method::PATCH, path, Some(&body)).await.unwrap();
    assert_eq!(r.status, 200, "{path}: {:?}", r.envelope());
}

/// Bytes of the regular files under `dir` (what the unpacker counts).
fn file_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            total += file_bytes(&e.path());
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

/// POST an instance in `project` and wait; Ok, or the error (synchronous or the operation's).
async fn create(d: &TestDaemon, project: &str, name: &str) -> Result<(), String> {
    let mut c = d.unix();
    c.set_project(Some(project.to_owned()));
    let body = json!({"name": name, "source": {"type": "image", "alias": "bb"}});
    let r = c
        .request(Method::POST, "/1.0/instances", Some(&body))
        .await
        .unwrap();
    if r.status != 202 {
        return Err(r.envelope().unwrap().error);
    }
    let op = r.envelope().unwrap().metadata;
    let done = c
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    if done["status"] == "Success" {
        Ok(())
    } else {
        Err(done["err"].as_str().unwrap_or_default().to_owned())
    }
}

#[tokio::test]
async fn a_compression_bomb_stops_at_the_server_bound_with_nothing_left() {
    if !require_root("a_compression_bomb_stops_at_the_server_bound_with_nothing_left") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let bomb = bomb(conf.path(), 200);
    assert!(
        std::fs::metadata(&bomb).unwrap().len() < 2 << 20,
        "the bomb is small"
    );
    // Below the bound's minimum: refused by the registry.
    let r = d
        .unix()
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"images.max_unpacked_size": "12"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    patch(
        &d.unix(),
        "/1.0",
        json!({"config": {"images.max_unpacked_size": "100MiB"}}),
    )
    .await;

    let out = rxc(
        &d,
        conf.path(),
        &["image", "import", bomb.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the bomb was imported");
    assert!(
        err.contains("more than 104857600 bytes") && err.contains("images.max_unpacked_size"),
        "{err}"
    );
    assert_eq!(d.image_files(), Vec::<String>::new(), "nothing left");
    assert_eq!(d.unix().get("/1.0/images").await.unwrap(), json!([]));

    // An ordinary image fits under the same bound.
    let image = busybox_image(conf.path());
    let out = rxc(
        &d,
        conf.path(),
        &["image", "import", image.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn limits_disk_refuses_what_would_exceed_it_and_accepts_what_fits() {
    if !require_root("limits_disk_refuses_what_would_exceed_it_and_accepts_what_fits") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let conf = tempfile::tempdir().unwrap();
    let image = busybox_image(conf.path());
    let fp = rxd_image::fingerprint(&image).unwrap();
    for p in ["tight", "roomy"] {
        let r = unix
            .request(Method::POST, "/1.0/projects", Some(&json!({"name": p})))
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    let r = unix
        .request(
            Method::PATCH,
            "/1.0/projects/tight",
            Some(&json!({"config": {"limits.disk": "lots"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "limits.disk is validated");

    // Too small for the image: refused while unpacking (nothing is recorded for it yet).
    patch(
        &unix,
        "/1.0/projects/tight",
        json!({"config": {"limits.disk": "64KiB"}}),
    )
    .await;
    let import = |project: &str| {
        rxc(
            &d,
            conf.path(),
            &[
                "image",
                "import",
                image.to_str().unwrap(),
                "--alias",
                "bb",
                "--project",
                project,
            ],
        )
    };
    let out = import("tight");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "imported over limits.disk");
    assert!(
        err.contains("\"tight\" would exceed its limits.disk of 65536 bytes"),
        "{err}"
    );
    assert_eq!(d.image_files(), Vec::<String>::new(), "nothing left");

    // Without a limit it imports; its unpacked size is recorded.
    let out = import("roomy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = file_bytes(&d.dir().join("images").join(format!("{fp}.unpacked")));
    assert!(size > 64 << 10);

    // The same content in the tight project is now refused before unpacking, from the record.
    let out = import("tight");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("this needs {size} more")), "{err}");

    // Room for the image and one instance, not two.
    let limit = size * 2 + size / 2;
    patch(
        &unix,
        "/1.0/projects/roomy",
        json!({"config": {"limits.disk": limit.to_string()}}),
    )
    .await;
    create(&d, "roomy", "c1").await.unwrap();
    let err = create(&d, "roomy", "c2").await.unwrap_err();
    assert!(
        err.contains(&format!(
            "\"roomy\" would exceed its limits.disk of {limit} bytes"
        )) && err.contains(&format!("{} bytes are in use", size * 2)),
        "{err}"
    );
    let mut c = d.unix();
    c.set_project(Some("roomy".into()));
    let names: Vec<Value> = c
        .get("/1.0/instances")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(names, vec![json!("/1.0/instances/c1?project=roomy")]);
    assert!(
        !d.dir()
            .join("storage-pools/default/containers")
            .join("roomy_c2")
            .exists(),
        "nothing left of the refused instance"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.dir().join("storage-pools/default/containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".unpack-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Deleting c1 gives its room back.
    let r = c
        .request(Method::DELETE, "/1.0/instances/c1", None)
        .await
        .unwrap();
    let op = r.envelope().unwrap().metadata;
    c.get(&format!(
        "/1.0/operations/{}/wait",
        op["id"].as_str().unwrap()
    ))
    .await
    .unwrap();
    create(&d, "roomy", "c2").await.unwrap();
}

/// `limits.instances` holds when imports race: each import checks the count as its upload
/// starts and again before it records its row, and the store checks it with the row, in one
/// transaction. The daemon is made to wait right before the record (a pause point), so all
/// three pass the checks they make alone. The refused ones leave nothing behind.
#[tokio::test]
async fn racing_imports_stop_at_the_instance_limit() {
    if !require_root("racing_imports_stop_at_the_instance_limit") {
        return;
    }
    // Each import waits just before recording its row, after the checks it made on its own.
    let d = TestDaemon::start_with(rxd_testkit::Options {
        env: vec![("RXD_PAUSEPOINTS".into(), "instance-record:before".into())],
        ..Default::default()
    })
    .await;
    let unix = d.unix();
    let conf = tempfile::tempdir().unwrap();
    let image = busybox_image(conf.path());
    let backup = conf.path().join("c1.tar.gz");
    for args in [
        &["image", "import", image.to_str().unwrap(), "--alias", "bb"][..],
        &["init", "bb", "c1"],
        &["export", "c1", backup.to_str().unwrap()],
    ] {
        let out = rxc(&d, conf.path(), args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    patch(
        &unix,
        "/1.0/projects/default",
        json!({"config": {"limits.instances": "2"}}),
    )
    .await;
    let imports: Vec<_> = (0..3)
        .map(|i| {
            let name = format!("i{i}");
            rxc_command(
                &d,
                conf.path(),
                &["import", backup.to_str().unwrap(), &name],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outs: Vec<Output> = imports
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(
        outs.iter().filter(|o| o.status.success()).count(),
        1,
        "{outs:?}"
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("reached its limit of 2 instances"), "{e}");
    }
    let listed = unix.get("/1.0/instances").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // Nothing of the refused ones: two instance directories, no work directory.
    let containers = d.dir().join("storage-pools/default/containers");
    let entries: Vec<String> = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}
