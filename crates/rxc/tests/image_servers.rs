//! Image servers: a simplestreams tree served over HTTPS on loopback (a test CA the daemon and
//! Debian's `lxc` trust through `SSL_CERT_FILE`), pulled by the daemon for `lxc launch
//! REMOTE:ALIAS` and `lxc image copy`; every file checked against the index and the combined
//! fingerprint before anything is unpacked; who may pull from where.

use rxd_testkit::ca::TestCa;
use rxd_testkit::image_server::ImageServer;
use rxd_testkit::{bin, busybox_image, require_root, require_tool, Options, TestDaemon};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A split image (metadata tarball, root filesystem tarball) made with the system's tar from
/// the busybox image, its metadata given `serial` as a property so that each is distinct.
fn split(dir: &Path, serial: &str) -> (Vec<u8>, Vec<u8>) {
    let unified = dir.join("bb.tar.gz");
    if !unified.exists() {
        busybox_image(&unified);
    }
    let (m, r) = rxd_testkit::split_image(&unified, dir, serial, Some(serial), &[]);
    (std::fs::read(m).unwrap(), std::fs::read(r).unwrap())
}

/// The server's tree: index, products, files. Returns the fingerprints by name.
struct Tree {
    old_unified: String,
    new_split: String,
}

fn write_tree(root: &Path, work: &Path) -> Tree {
    let put = |path: &str, bytes: &[u8]| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    let unified = {
        let p = work.join("bb.tar.gz");
        busybox_image(&p);
        std::fs::read(p).unwrap()
    };
    let (meta, rootfs) = split(work, "new");
    let new_split = sha(&[meta.as_slice(), rootfs.as_slice()].concat());
    put("images/old/lxd_combined.tar.gz", &unified);
    put("images/new/lxd.tar.xz", &meta);
    put("images/new/root.tar.xz", &rootfs);
    // Tampered: the root filesystem on the server is not what the index says.
    let (tmeta, trootfs) = split(work, "tampered");
    put("images/tampered/lxd.tar.xz", &tmeta);
    put(
        "images/tampered/root.tar.xz",
        &[trootfs.as_slice(), b"extra"].concat(),
    );
    // Consistent per file, but the combined fingerprint in the index is another image's.
    let (bmeta, brootfs) = split(work, "badfp");
    put("images/badfp/lxd.tar.xz", &bmeta);
    put("images/badfp/root.tar.xz", &brootfs);
    // A hostile squashfs root filesystem: an entry named "..", patched in after mksquashfs
    // (metadata uncompressed so the name can be patched).
    let (hmeta, _) = split(work, "hostilesq");
    let hostile_sq = {
        let t = work.join("hostile-tree");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("zz"), "escape\n").unwrap();
        let out = work.join("hostile.squashfs");
        let made = Command::new("mksquashfs")
            .arg(&t)
            .arg(&out)
            .args([
                "-noappend",
                "-quiet",
                "-no-progress",
                "-noI",
                "-noId",
                "-noD",
                "-noF",
                "-noX",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("mksquashfs (squashfs-tools) runs");
        assert!(made.success());
        let mut bytes = std::fs::read(&out).unwrap();
        let at = bytes.windows(2).position(|w| w == b"zz").unwrap();
        bytes[at..at + 2].copy_from_slice(b"..");
        bytes
    };
    put("images/hostilesq/lxd.tar.xz", &hmeta);
    put("images/hostilesq/root.squashfs", &hostile_sq);
    let item = |path: &str, bytes: &[u8], ftype: &str| json!({"ftype": ftype, "path": path, "sha256": sha(bytes), "size": bytes.len()});
    let mut hostile_meta = item("images/hostilesq/lxd.tar.xz", &hmeta, "lxd.tar.xz");
    hostile_meta["combined_squashfs_sha256"] =
        json!(sha(&[hmeta.as_slice(), hostile_sq.as_slice()].concat()));
    let hostile_items = json!({"lxd.tar.xz": hostile_meta,
        "root.squashfs": item("images/hostilesq/root.squashfs", &hostile_sq, "squashfs")});
    let split_items = |dir: &str, meta: &[u8], rootfs: &[u8], combined: String| {
        let mut m = item(&format!("images/{dir}/lxd.tar.xz"), meta, "lxd.tar.xz");
        m["combined_rootxz_sha256"] = json!(combined);
        json!({"lxd.tar.xz": m, "root.tar.xz": item(&format!("images/{dir}/root.tar.xz"), rootfs, "root.tar.xz")})
    };
    let products = json!({
        "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
        "products": {
            "busybox:1:amd64:default": {
                "aliases": "busybox/1,bb", "arch": "amd64", "os": "BusyBox", "release": "1",
                "release_title": "1", "variant": "default",
                "versions": {
                    "20261130_00:00": {"items": {"lxd_combined.tar.gz": item("images/old/lxd_combined.tar.gz", &unified, "lxd_combined.tar.gz")}},
                    "20261201_00:00": {"items": split_items("new", &meta, &rootfs, new_split.clone())}
                }
            },
            "tampered:amd64": {"aliases": "tampered", "arch": "amd64", "versions": {
                "20261201_00:00": {"items": split_items("tampered", &tmeta, &trootfs, sha(&[tmeta.as_slice(), trootfs.as_slice()].concat()))}}},
            "badfp:amd64": {"aliases": "badfp", "arch": "amd64", "versions": {
                "20261201_00:00": {"items": split_items("badfp", &bmeta, &brootfs, "ba".repeat(32))}}},
            "hostilesq:amd64": {"aliases": "hostilesq", "arch": "amd64", "versions": {
                "20261201_00:00": {"items": hostile_items}}}
        }
    });
    put("streams/v1/images.json", products.to_string().as_bytes());
    let index = json!({"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0",
        "products": ["busybox:1:amd64:default", "tampered:amd64", "badfp:amd64", "hostilesq:amd64"]}}});
    put("streams/v1/index.json", index.to_string().as_bytes());
    Tree {
        old_unified: sha(&unified),
        new_split,
    }
}

/// Publish a newer serial of `busybox/1` on the server; returns its fingerprint.
fn add_newer_serial(root: &Path, work: &Path) -> String {
    let (meta, rootfs) = split(work, "newer");
    std::fs::create_dir_all(root.join("images/newer")).unwrap();
    std::fs::write(root.join("images/newer/lxd.tar.xz"), &meta).unwrap();
    std::fs::write(root.join("images/newer/root.tar.xz"), &rootfs).unwrap();
    let fp = sha(&[meta.as_slice(), rootfs.as_slice()].concat());
    let path = root.join("streams/v1/images.json");
    let mut products: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let item = |path: &str, bytes: &[u8], ftype: &str| json!({"ftype": ftype, "path": path, "sha256": sha(bytes), "size": bytes.len()});
    let mut m = item("images/newer/lxd.tar.xz", &meta, "lxd.tar.xz");
    m["combined_rootxz_sha256"] = json!(fp);
    products["products"]["busybox:1:amd64:default"]["versions"]["20261203_00:00"] = json!({
        "items": {"lxd.tar.xz": m, "root.tar.xz": item("images/newer/root.tar.xz", &rootfs, "root.tar.xz")}
    });
    std::fs::write(&path, products.to_string()).unwrap();
    fp
}

fn run(cmd: &str, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(cmd);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn c_instances(d: &TestDaemon) -> Value {
    d.unix().get("/1.0/instances").await.unwrap()
}

/// A simplestreams tree served over HTTPS on loopback (by a test CA that the daemon trusts
/// through `SSL_CERT_FILE`), and a daemon.
struct Fixture {
    work: tempfile::TempDir,
    root: PathBuf,
    tree: Tree,
    ca_file: PathBuf,
    server: ImageServer,
    d: TestDaemon,
}

impl Fixture {
    async fn start() -> Fixture {
        let work = tempfile::tempdir().unwrap();
        let (root, certs) = (work.path().join("www"), work.path().join("certs"));
        let tree = write_tree(&root, work.path());
        let ca = TestCa::new("image server CA");
        ca.server(1).write(&certs, "server.crt", "server.key");
        let ca_file = certs.join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let server = ImageServer::start(&root, &certs);
        let d = TestDaemon::start_with(Options {
            env: vec![("SSL_CERT_FILE".into(), ca_file.display().to_string())],
            ..Options::default()
        })
        .await;
        Fixture {
            work,
            root,
            tree,
            ca_file,
            server,
            d,
        }
    }
}

#[tokio::test]
async fn images_are_pulled_from_a_simplestreams_server_and_verified() {
    if !require_root("images_are_pulled_from_a_simplestreams_server_and_verified")
        || !require_tool(
            "lxc",
            "lxd-client",
            "images_are_pulled_from_a_simplestreams_server_and_verified",
        )
    {
        return;
    }
    let Fixture {
        work,
        root,
        tree,
        ca_file,
        server,
        d,
    } = Fixture::start().await;
    let admin = tempfile::tempdir().unwrap();
    let rxd_dir = d.dir();
    let rxc_env = [("RXC_CONF", admin.path()), ("RXD_DIR", rxd_dir.as_path())];
    ok(
        run(
            bin("rxc").to_str().unwrap(),
            &rxc_env,
            &["config", "set", "core.trust_password", "pw"],
        ),
        "trust password",
    );
    let lxd_conf = tempfile::tempdir().unwrap();
    let lxc_env = [
        ("LXD_CONF", lxd_conf.path()),
        ("HOME", lxd_conf.path()),
        ("SSL_CERT_FILE", ca_file.as_path()),
    ];
    let lxc = |args: &[&str]| run("lxc", &lxc_env, args);
    ok(
        lxc(&[
            "remote",
            "add",
            "rxd",
            &d.https_address(),
            "--accept-certificate",
            "--password",
            "pw",
        ]),
        "remote add rxd",
    );
    ok(
        lxc(&[
            "remote",
            "add",
            "ss",
            &server.url,
            "--protocol=simplestreams",
            "--public",
        ]),
        "remote add ss",
    );
    // LXD's own client reads the tree as an image server.
    let listed = ok(
        lxc(&["image", "list", "ss:", "--format", "csv"]),
        "image list ss:",
    );
    assert!(listed.contains("bb"), "{listed}");

    // Files consistent one by one whose combined fingerprint is not the image's: refused
    // before anything is unpacked, leaving nothing. (Once an image with the fingerprint the
    // index claims is here, that image is used and nothing is downloaded, as in LXD.)
    let e = err(
        lxc(&["launch", "ss:badfp", "rxd:t2"]),
        "bad fingerprint launch",
    );
    assert!(e.contains("not the fingerprint"), "{e}");
    assert_eq!(
        d.image_files(),
        Vec::<String>::new(),
        "files left by a refused pull"
    );

    // A squashfs with an entry named "..": verified as downloaded, then refused by the
    // unpacker, leaving nothing.
    let e = err(
        lxc(&["launch", "ss:hostilesq", "rxd:t3"]),
        "hostile squashfs launch",
    );
    assert!(e.contains("not a valid squashfs"), "{e}");
    assert_eq!(
        d.image_files(),
        Vec::<String>::new(),
        "files left by a refused squashfs"
    );
    assert_eq!(c_instances(&d).await, json!([]));

    // lxc launch REMOTE:ALIAS: the daemon pulls the newest serial, split, and launches it.
    ok(lxc(&["launch", "ss:bb", "rxd:c1"]), "launch ss:bb");
    ok(lxc(&["exec", "rxd:c1", "--", "ls", "/bin/sh"]), "exec");
    let c = d.unix();
    let image = c
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .unwrap();
    assert_eq!(image["properties"]["serial"], "20261201_00:00", "{image:#}");
    assert_eq!(image["properties"]["os"], "BusyBox", "{image:#}");
    assert_eq!(image["filename"], "lxd.tar.xz", "{image:#}");
    assert_eq!(server.requests("/images/new/root.tar.xz"), 1);
    // Pulled for an instance by alias: cached, kept up to date, its source recorded.
    assert_eq!(image["cached"], true, "{image:#}");
    assert_eq!(image["auto_update"], true, "{image:#}");
    assert_eq!(image["update_source"]["alias"], "bb", "{image:#}");
    assert_eq!(
        image["update_source"]["server"],
        server.url.as_str(),
        "{image:#}"
    );
    assert_eq!(
        image["update_source"]["protocol"], "simplestreams",
        "{image:#}"
    );
    assert_ne!(image["last_used_at"], "0001-01-01T00:00:00Z", "{image:#}");
    // lxc image edit of a pulled image sends auto_update back: accepted, kept.
    let show_edit = format!(
        "lxc image show rxd:{0} | lxc image edit rxd:{0}",
        tree.new_split
    );
    ok(
        run("sh", &lxc_env, &["-c", &show_edit]),
        "image show | image edit",
    );
    let image = c
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .unwrap();
    assert_eq!(image["auto_update"], true, "{image:#}");
    // A second launch uses the image already here.
    ok(lxc(&["launch", "ss:bb", "rxd:c2"]), "second launch");
    assert_eq!(
        server.requests("/images/new/root.tar.xz"),
        1,
        "downloaded again"
    );

    // lxc image copy, by fingerprint (the older, unified serial), with an alias.
    ok(
        lxc(&[
            "image",
            "copy",
            &format!("ss:{}", tree.old_unified),
            "rxd:",
            "--alias",
            "old",
        ]),
        "image copy",
    );
    let alias = c.get("/1.0/images/aliases/old").await.unwrap();
    assert_eq!(alias["target"], tree.old_unified.as_str());
    let copied = c
        .get(&format!("/1.0/images/{}", tree.old_unified))
        .await
        .unwrap();
    assert_eq!(copied["cached"], false, "{copied:#}");
    assert_eq!(copied["auto_update"], false, "by fingerprint: {copied:#}");
    assert_eq!(copied["update_source"]["alias"], "", "{copied:#}");

    // A newer serial on the server: lxc image refresh replaces the image, its aliases follow.
    ok(
        lxc(&["image", "alias", "create", "rxd:mine", &tree.new_split]),
        "alias create",
    );
    let out = ok(
        lxc(&["image", "refresh", "rxd:mine"]),
        "refresh, up to date",
    );
    assert!(out.contains("up to date"), "{out}");
    let newer = add_newer_serial(&root, work.path());
    let out = ok(lxc(&["image", "refresh", "rxd:mine"]), "refresh");
    assert!(out.contains("refreshed successfully"), "{out}");
    assert_eq!(
        c.get("/1.0/images/aliases/mine").await.unwrap()["target"],
        newer.as_str()
    );
    let refreshed = c.get(&format!("/1.0/images/{newer}")).await.unwrap();
    assert_eq!(refreshed["cached"], true, "{refreshed:#}");
    assert_eq!(refreshed["update_source"]["alias"], "bb", "{refreshed:#}");
    assert!(
        c.get(&format!("/1.0/images/{}", tree.new_split))
            .await
            .is_err(),
        "old image kept"
    );
    assert!(
        !d.image_files()
            .iter()
            .any(|f| f.starts_with(&tree.new_split)),
        "old files kept: {:?}",
        d.image_files()
    );

    // Refused before anything is unpacked, leaving nothing: a file that is not what the index
    // says.
    let before = d.image_files();
    let e = err(lxc(&["launch", "ss:tampered", "rxd:t1"]), "tampered launch");
    assert!(e.contains("index gives"), "{e}");
    let e = err(
        lxc(&["launch", "ss:badfp", "rxd:t2"]),
        "bad fingerprint launch",
    );
    assert!(e.contains("not the fingerprint"), "{e}");
    assert_eq!(d.image_files(), before, "files left by refused pulls");
    let names: Vec<Value> = c
        .get("/1.0/instances")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(names.len(), 2, "{names:?}");

    // Only https servers.
    let e = c
        .request(
            rxd_client::Method::POST,
            "/1.0/images",
            Some(
                &json!({"source": {"type": "image", "mode": "pull", "protocol": "simplestreams",
                "server": server.url.replace("https://", "http://"), "alias": "bb"}}),
            ),
        )
        .await
        .unwrap();
    let op = e.envelope().unwrap().metadata;
    let done = c
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert!(
        done["err"].as_str().unwrap().contains("only https"),
        "{done:#}"
    );

    // A cached image unused for images.remote_cache_expiry days (10 by default) is removed at
    // the next start; an image asked for is kept.
    let mut d = d;
    d.stop();
    let age = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/simplestreams/age_cached_images.py");
    let db = d.dir().join("rxd.db");
    ok(
        run(
            "python3",
            &[],
            &[age.to_str().unwrap(), db.to_str().unwrap(), "11"],
        ),
        "age the cached images",
    );
    d.spawn();
    d.wait_ready().await;
    let c = d.unix();
    assert!(
        c.get(&format!("/1.0/images/{newer}")).await.is_err(),
        "expired cached image kept"
    );
    assert!(c
        .get(&format!("/1.0/images/{}", tree.old_unified))
        .await
        .is_ok());
    assert!(
        !d.image_files().iter().any(|f| f.starts_with(&newer)),
        "expired image's files kept: {:?}",
        d.image_files()
    );

    for name in ["c1", "c2"] {
        ok(
            lxc(&["delete", "--force", &format!("rxd:{name}")]),
            "delete",
        );
    }
}

#[tokio::test]
async fn only_administrators_pull_from_servers_not_listed() {
    if !require_root("only_administrators_pull_from_servers_not_listed") {
        return;
    }
    let Fixture {
        work: _work,
        tree,
        server,
        d,
        ..
    } = Fixture::start().await;
    let (admin, bob) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rxc = |conf: &Path, args: &[&str]| {
        run(
            bin("rxc").to_str().unwrap(),
            &[
                ("RXC_CONF", conf),
                ("RXD_DIR", d.dir().as_path()),
                ("HOME", conf),
            ],
            args,
        )
    };
    // bob: a restricted client, operator on the default project.
    let out = ok(
        rxc(
            admin.path(),
            &["config", "trust", "add", "--name", "bob", "--restricted"],
        ),
        "trust add",
    );
    let token = out.lines().last().unwrap().to_owned();
    ok(
        rxc(bob.path(), &["remote", "add", "prod", &token]),
        "bob remote add",
    );
    let certs_list = d.unix().get("/1.0/certificates?recursion=1").await.unwrap();
    let fp = certs_list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bob")
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        rxc(
            admin.path(),
            &[
                "auth",
                "grant",
                &fp[..12],
                "operator",
                "--project",
                "default",
            ],
        ),
        "grant",
    );
    let body = json!({"source": {"type": "image", "mode": "pull", "protocol": "simplestreams",
        "server": server.url, "alias": "bb"}})
    .to_string();
    let query = [
        "query",
        "prod:/1.0/images",
        "-X",
        "POST",
        "-d",
        body.as_str(),
    ];
    let e = err(rxc(bob.path(), &query), "bob pulls from an unlisted server");
    assert!(e.contains("images.allowed_servers"), "{e}");
    assert_eq!(
        server.requests("/streams/v1/index.json"),
        0,
        "the daemon reached the server"
    );
    // Listed by an administrator (spelled differently: case and a trailing slash), allowed.
    ok(
        rxc(
            admin.path(),
            &[
                "config",
                "set",
                "images.allowed_servers",
                &format!(
                    "{}/",
                    server.url.to_uppercase().replace("HTTPS://", "https://")
                ),
            ],
        ),
        "allow",
    );
    let op: Value = serde_json::from_str(&ok(
        rxc(bob.path(), &query),
        "bob pulls from a listed server",
    ))
    .unwrap();
    let done = d
        .unix()
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success", "{done:#}");
    let image = d
        .unix()
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .unwrap();
    assert_eq!(image["fingerprint"], tree.new_split.as_str());
}

#[tokio::test]
async fn rxc_lists_launches_and_copies_from_an_image_server() {
    if !require_root("rxc_lists_launches_and_copies_from_an_image_server") {
        return;
    }
    let Fixture {
        work: _work,
        tree,
        ca_file,
        server,
        d,
        ..
    } = Fixture::start().await;
    let conf = tempfile::tempdir().unwrap();
    let rxd_dir = d.dir();
    let env = [
        ("RXC_CONF", conf.path()),
        ("RXD_DIR", rxd_dir.as_path()),
        ("SSL_CERT_FILE", ca_file.as_path()),
    ];
    let rxc = |args: &[&str]| run(bin("rxc").to_str().unwrap(), &env, args);
    let e = err(
        rxc(&[
            "remote",
            "add",
            "plain",
            &server.url.replace("https", "http"),
            "--protocol=simplestreams",
        ]),
        "an http image server",
    );
    assert!(e.contains("https"), "{e}");
    ok(
        rxc(&[
            "remote",
            "add",
            "ss",
            &server.url,
            "--protocol=simplestreams",
            "--public",
        ]),
        "remote add",
    );
    let listed = ok(
        rxc(&["image", "list", "ss:", "-f", "csv"]),
        "image list ss:",
    );
    assert!(
        listed.contains("busybox/1") && listed.contains(&tree.new_split[..12]),
        "{listed}"
    );
    ok(rxc(&["launch", "ss:bb", "c1"]), "launch ss:bb");
    ok(rxc(&["exec", "c1", "--", "ls", "/bin/sh"]), "exec");
    let out = ok(
        rxc(&[
            "image",
            "copy",
            &format!("ss:{}", tree.old_unified),
            "local:",
            "--alias",
            "old",
        ]),
        "image copy",
    );
    assert!(out.contains("Image copied successfully!"), "{out}");
    let c = d.unix();
    assert_eq!(
        c.get("/1.0/images/aliases/old").await.unwrap()["target"],
        tree.old_unified.as_str()
    );
    assert!(c
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .is_ok());
    ok(rxc(&["delete", "--force", "c1"]), "delete");
}

/// `images.auto_update_interval`: images kept up to date are refreshed by the daemon itself,
/// with no client asking. The daemon's hour is shortened (`RXD_TEST_IMAGE_HOUR`) so that an
/// interval passes within the test.
#[tokio::test]
async fn images_kept_up_to_date_are_refreshed_on_the_interval() {
    if !require_root("images_kept_up_to_date_are_refreshed_on_the_interval") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (root, certs) = (work.path().join("www"), work.path().join("certs"));
    let tree = write_tree(&root, work.path());
    let ca = TestCa::new("image server CA");
    ca.server(1).write(&certs, "server.crt", "server.key");
    let ca_file = certs.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = ImageServer::start(&root, &certs);
    let d = TestDaemon::start_with(Options {
        env: vec![
            ("SSL_CERT_FILE".into(), ca_file.display().to_string()),
            ("RXD_TEST_IMAGE_HOUR".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let c = d.unix();
    let pull = c
        .request(
            rxd_client::Method::POST,
            "/1.0/images",
            Some(
                &json!({"source": {"type": "image", "mode": "pull", "protocol": "simplestreams",
                "server": server.url, "fingerprint": "bb"}, "auto_update": true,
                "aliases": [{"name": "kept"}]}),
            ),
        )
        .await
        .unwrap();
    let op = pull.envelope().unwrap().operation;
    let done = c.get(&format!("{op}/wait?timeout=60")).await.unwrap();
    assert_eq!(done["status"], "Success", "{done}");
    assert_eq!(
        c.get("/1.0/images/aliases/kept").await.unwrap()["target"],
        tree.new_split.as_str()
    );
    // Off: nothing changes however many intervals pass.
    let conf = tempfile::tempdir().unwrap();
    let set = |v: &str| {
        let out = d.rxc(
            conf.path(),
            &["config", "set", "images.auto_update_interval", v],
        );
        assert!(out.status.success(), "{out:?}");
    };
    set("0");
    let newer = add_newer_serial(&root, work.path());
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        c.get("/1.0/images/aliases/kept").await.unwrap()["target"],
        tree.new_split.as_str()
    );
    // Every (shortened) hour: the newer serial replaces it and the alias follows.
    set("1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let target = c.get("/1.0/images/aliases/kept").await.unwrap()["target"].clone();
        if target == newer.as_str() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not refreshed: {target}\n{}",
            d.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(c
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .is_err());
    // The log line follows the alias's move: wait for it too.
    while !d.logs().contains("image refreshed from its server") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh logged:\n{}",
            d.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A slow image server (files sent at 300 kB/s): the daemon reports each download's progress
/// in its operation (`metadata.download_progress`, announced as events), which Debian's `lxc
/// image copy` shows as `Copying the image: rootfs: 45% (…)` and `rxc launch`, on a terminal,
/// as `Retrieving image: …`.
#[tokio::test]
async fn slow_downloads_show_their_progress() {
    let test = "slow_downloads_show_their_progress";
    if !require_root(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Fixture {
        work,
        root,
        tree,
        ca_file,
        server: _fast,
        d,
    } = Fixture::start().await;
    let slow = ImageServer::start_at_rate(&root, &work.path().join("certs"), Some(300_000));
    let rxc_conf = tempfile::tempdir().unwrap();
    let lxd_conf = tempfile::tempdir().unwrap();
    let rxd_dir = d.dir();
    let env = [
        ("RXC_CONF", rxc_conf.path()),
        ("LXD_CONF", lxd_conf.path()),
        ("HOME", lxd_conf.path()),
        ("RXD_DIR", rxd_dir.as_path()),
        ("LXD_DIR", rxd_dir.as_path()),
        ("SSL_CERT_FILE", ca_file.as_path()),
    ];
    let add = [
        "remote",
        "add",
        "slow",
        &slow.url,
        "--protocol=simplestreams",
        "--public",
    ];
    ok(
        run(bin("rxc").to_str().unwrap(), &env, &add),
        "rxc remote add",
    );
    ok(run("lxc", &env, &add), "lxc remote add");
    let progress = r"(metadata|rootfs): [0-9]+% \([0-9.]+[kMG]?B/s\)";

    // Debian's lxc, from the operation's events.
    // (lxc prints it whether or not its output is a terminal.)
    let copied = ok(
        run(
            "lxc",
            &env,
            &[
                "image",
                "copy",
                &format!("slow:{}", tree.new_split),
                "local:",
            ],
        ),
        "lxc image copy",
    );
    let re = regex_lite::Regex::new(&format!("Copying the image: {progress}")).unwrap();
    assert!(
        re.find_iter(&copied).count() >= 2,
        "fewer than two progress reports: {copied:?}"
    );
    assert!(copied.contains("rootfs: 100% ("), "{copied:?}");
    assert!(d
        .unix()
        .get(&format!("/1.0/images/{}", tree.new_split))
        .await
        .is_ok());

    // rxc, from the operation it waits for.
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["launch", &format!("slow:{}", tree.old_unified), "c1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
    p.exp_string("Retrieving image: ").unwrap();
    p.exp_regex(progress).unwrap();
    p.exp_eof().unwrap();
    assert_eq!(
        d.unix().get("/1.0/instances/c1/state").await.unwrap()["status"],
        "Running"
    );
    ok(
        run(
            bin("rxc").to_str().unwrap(),
            &env,
            &["delete", "--force", "c1"],
        ),
        "delete",
    );
}
