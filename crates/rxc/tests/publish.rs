//! `publish` and `image export`: a container's files (with the container's own ids, whatever
//! host ids its isolated map gave them) become an image others can launch and export, through
//! `rxc` and Debian's `lxc`. A running container is refused, a snapshot is not; an image
//! that exists already is not made twice.

use rxd_testkit::session::lxc;
use rxd_testkit::{busybox_image, require_root, require_tool, TestDaemon};
use serde_json::json;
use std::path::Path;

fn ok(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = d.rxc(conf, args);
    assert!(
        out.status.success(),
        "rxc {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = d.rxc(conf, args);
    assert!(!out.status.success(), "rxc {args:?} should fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn containers_and_snapshots_are_published_as_images() {
    let test = "containers_and_snapshots_are_published_as_images";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let c = conf.path();
    let image = c.join("bb.tar.gz");
    busybox_image(&image);
    ok(
        &d,
        c,
        &["image", "import", image.to_str().unwrap(), "--alias", "bb"],
    );
    // An isolated map: the files are on disk under host ids no other container has.
    ok(
        &d,
        c,
        &["launch", "bb", "c1", "-c", "security.idmap.isolated=true"],
    );
    ok(
        &d,
        c,
        &[
            "exec",
            "c1",
            "--",
            "sh",
            "-c",
            "echo made-in-c1 > /root/marker; chown 1000:1000 /root/marker",
        ],
    );

    // Running: refused by the client (no --force) and by the server.
    let e = err(&d, c, &["publish", "c1", "--alias", "pub"]);
    assert!(e.contains("Use --force"), "{e}");
    let r = d
        .unix()
        .request(
            rxd_client::Method::POST,
            "/1.0/images",
            Some(&json!({"source": {"type": "instance", "name": "c1"}})),
        )
        .await
        .unwrap();
    let op = r.envelope().unwrap().operation;
    let done = d
        .unix()
        .get(&format!("{op}/wait?timeout=30"))
        .await
        .unwrap();
    assert_eq!(
        done["err"], "Cannot export a running instance as an image",
        "{done}"
    );

    // --force stops it, publishes and starts it again.
    let out = ok(
        &d,
        c,
        &[
            "publish",
            "c1",
            "--alias",
            "pub",
            "--force",
            "os=Marker",
            "release=1",
        ],
    );
    let fp = out
        .trim()
        .strip_prefix("Instance published with fingerprint: ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert_eq!(fp.len(), 64, "{out}");
    let state = d.unix().get("/1.0/instances/c1/state").await.unwrap();
    assert_eq!(state["status"], "Running");
    let img = d.unix().get(&format!("/1.0/images/{fp}")).await.unwrap();
    assert_eq!(
        img["properties"],
        json!({"os": "Marker", "release": "1"}),
        "{img}"
    );
    assert_eq!(img["aliases"][0]["name"], "pub", "{img}");
    assert_eq!(img["cached"], false);

    // A container from it has the file, owned by the container's ids (not c1's host ids).
    ok(&d, c, &["launch", "pub", "c2"]);
    let out = ok(
        &d,
        c,
        &[
            "exec",
            "c2",
            "--",
            "sh",
            "-c",
            "cat /root/marker; stat -c '%u:%g' /root/marker /bin",
        ],
    );
    assert_eq!(out, "made-in-c1\n1000:1000\n0:0\n");

    // Export gives back exactly the image; importing that file elsewhere gives the same one.
    let out_dir = tempfile::tempdir().unwrap();
    ok(
        &d,
        c,
        &["image", "export", "pub", out_dir.path().to_str().unwrap()],
    );
    let exported = out_dir.path().join(format!("{fp}.tar.gz"));
    assert_eq!(sha256(&exported), fp);
    ok(&d, c, &["project", "create", "other"]);
    let out = ok(
        &d,
        c,
        &[
            "image",
            "import",
            exported.to_str().unwrap(),
            "--project",
            "other",
        ],
    );
    assert!(out.contains(&fp), "{out}");

    // Publishing the same files again makes the same image: refused, as LXD does.
    ok(&d, c, &["stop", "c1"]);
    ok(
        &d,
        c,
        &["publish", "c1", "--alias", "again", "--compression", "none"],
    );
    let e = err(&d, c, &["publish", "c1", "--compression", "none"]);
    assert!(e.contains("The image already exists"), "{e}");

    // A snapshot, while the container runs and changes; xz this time.
    ok(&d, c, &["start", "c1"]);
    ok(&d, c, &["snapshot", "c1", "s0"]);
    ok(&d, c, &["exec", "c1", "--", "rm", "/root/marker"]);
    let out = ok(
        &d,
        c,
        &[
            "publish",
            "c1/s0",
            "--alias",
            "fromsnap",
            "--compression",
            "xz",
        ],
    );
    assert!(
        out.starts_with("Instance published with fingerprint: "),
        "{out}"
    );
    let img = d.unix().get("/1.0/images/aliases/fromsnap").await.unwrap();
    let snap_fp = img["target"].as_str().unwrap().to_owned();
    let info = d
        .unix()
        .get(&format!("/1.0/images/{snap_fp}"))
        .await
        .unwrap();
    assert!(
        info["filename"].as_str().unwrap().ends_with(".tar.xz"),
        "{info}"
    );
    ok(&d, c, &["launch", "fromsnap", "c3"]);
    let out = ok(&d, c, &["exec", "c3", "--", "cat", "/root/marker"]);
    assert_eq!(out, "made-in-c1\n");

    // Bad requests: an unknown compression, a missing instance or snapshot.
    let e = err(&d, c, &["publish", "c1/s0", "--compression", "rar"]);
    assert!(e.contains("Unsupported compression algorithm"), "{e}");
    let e = err(&d, c, &["publish", "c1/nope"]);
    assert!(e.to_lowercase().contains("not found"), "{e}");
    for name in ["c1", "c2", "c3"] {
        ok(&d, c, &["delete", "--force", name]);
    }
    // Nothing half-written was left in the image store.
    assert!(
        d.image_files().iter().all(|f| !f.starts_with('.')),
        "{:?}",
        d.image_files()
    );
}

#[tokio::test]
async fn debian_lxc_publishes_and_exports() {
    let test = "debian_lxc_publishes_and_exports";
    if !require_root(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = tempfile::tempdir().unwrap();
    let a = admin.path();
    ok(&d, a, &["config", "set", "core.trust_password", "pw"]);
    let image = a.join("bb.tar.gz");
    busybox_image(&image);
    ok(
        &d,
        a,
        &["image", "import", image.to_str().unwrap(), "--alias", "bb"],
    );
    let conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str]| {
        let out = lxc(conf.path(), args);
        assert!(out.status.success(), "lxc {args:?}: {out:?}\n{}", d.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lxc(&[
        "remote",
        "add",
        "rxd",
        &d.https_address(),
        "--accept-certificate",
        "--password",
        "pw",
    ]);
    lxc(&["launch", "rxd:bb", "rxd:l1"]);
    lxc(&["exec", "rxd:l1", "--", "touch", "/root/from-lxc"]);
    lxc(&["stop", "rxd:l1"]);
    let out = lxc(&[
        "publish",
        "rxd:l1",
        "rxd:",
        "--alias",
        "lxcpub",
        "description=published",
    ]);
    assert!(
        out.contains("Instance published with fingerprint: "),
        "{out}"
    );
    let fp = out.trim().rsplit(' ').next().unwrap().to_owned();
    let listed = lxc(&["image", "list", "rxd:", "--format", "csv", "-c", "lfd"]);
    assert!(
        listed.contains(&format!("lxcpub,{},published", &fp[..12])),
        "{listed}"
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pub");
    lxc(&["image", "export", "rxd:lxcpub", target.to_str().unwrap()]);
    // lxc adds the extension the server's file name has.
    let file = dir.path().join("pub.tar.gz");
    assert_eq!(sha256(&file), fp);
    lxc(&["launch", "rxd:lxcpub", "rxd:l2"]);
    lxc(&["exec", "rxd:l2", "--", "ls", "/root/from-lxc"]);
    lxc(&["delete", "--force", "rxd:l1"]);
    lxc(&["delete", "--force", "rxd:l2"]);
}
