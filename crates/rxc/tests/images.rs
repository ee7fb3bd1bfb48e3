//! Images over the real API: import with `rxc` (and Debian's `lxc`), aliases, deletion, and
//! hostile tarballs refused with nothing written. Hostile archives are made with Python's
//! tarfile, independently of rxd's own code.

use rxd_client::Method;
use rxd_testkit::session::lxc;
use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn rxc(d: &TestDaemon, conf: &Path, args: &[&str]) -> Output {
    Command::new(bin("rxc"))
        .args(args)
        .env("RXC_CONF", conf)
        .env("RXD_DIR", d.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = rxc(d, conf, args);
    assert!(
        out.status.success(),
        "rxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The busybox test image, built once per test from Debian's busybox-static.
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

/// A hostile tarball from a Python snippet that adds entries to `t` (a tarfile opened for writing).
fn hostile(dir: &Path, name: &str, body: &str) -> PathBuf {
    let out = dir.join(format!("{name}.tar.gz"));
    let script = format!(
        "import io, tarfile\nt = tarfile.open({out:?}, 'w:gz')\n\
         def add(name, data=b'', **kw):\n    i = tarfile.TarInfo(name); i.size = len(data)\n    for k, v in kw.items(): setattr(i, k, v)\n    t.addfile(i, io.BytesIO(data))\n\
         meta = b'architecture: x86_64\\ncreation_date: 1\\n'\n{body}\nt.close()\n",
        out = out.display().to_string()
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[tokio::test]
async fn import_alias_show_delete() {
    if !require_root("import_alias_show_delete") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let image = busybox_image(conf.path());
    let fp = rxd_image::fingerprint(&image).unwrap();
    let out = ok(
        &d,
        conf.path(),
        &["image", "import", image.to_str().unwrap(), "--alias", "bb"],
    );
    assert_eq!(out.trim(), format!("Image imported with fingerprint: {fp}"));

    let list: Value =
        serde_json::from_str(&ok(&d, conf.path(), &["image", "list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["fingerprint"], fp);
    assert_eq!(list[0]["aliases"][0]["name"], "bb");
    assert_eq!(list[0]["properties"]["os"], "busybox");
    assert_eq!(list[0]["architecture"], std::env::consts::ARCH);
    let show = ok(&d, conf.path(), &["image", "show", "bb"]);
    assert!(
        show.contains(&fp) && show.contains("filename: busybox.tar.gz"),
        "{show}"
    );
    // The tarball is kept under its fingerprint, and its unpacked tree is private.
    let meta = std::fs::metadata(d.dir().join("images")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    assert_eq!(
        rxd_image::fingerprint(&d.dir().join("images").join(&fp)).unwrap(),
        fp
    );
    let init = d
        .dir()
        .join("images")
        .join(format!("{fp}.unpacked/rootfs/sbin/init"));
    assert_eq!(
        std::fs::read_link(init).unwrap(),
        Path::new("../bin/busybox")
    );

    // The operation is listed, and waiting on it gives its result.
    let r = d
        .unix()
        .request(Method::GET, "/1.0/operations?recursion=1", None)
        .await
        .unwrap();
    let ops = r.metadata().unwrap();
    let done = &ops["success"][0];
    assert_eq!(done["metadata"]["fingerprint"], fp);
    let waited = d
        .unix()
        .get(&format!(
            "/1.0/operations/{}/wait?timeout=5",
            done["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(waited["status"], "Success");

    // Duplicates, a wrong claimed fingerprint, and JSON bodies are refused.
    let again = rxc(
        &d,
        conf.path(),
        &["image", "import", image.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("Image with same fingerprint already exists"));
    let bytes = std::fs::read(&image).unwrap();
    let r = d
        .unix()
        .send(
            Method::POST,
            "/1.0/images",
            // An upload, as clients label it: read whole, then refused for its fingerprint.
            &[
                ("x-lxd-fingerprint", &"0".repeat(64)),
                ("content-type", "application/octet-stream"),
            ],
            bytes.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = d
        .unix()
        .request(
            Method::POST,
            "/1.0/images",
            Some(&json!({"source": {"type": "url"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    // Aliases, then deletion removes everything.
    ok(
        &d,
        conf.path(),
        &["image", "alias", "create", "busybox", &fp[..12]],
    );
    ok(
        &d,
        conf.path(),
        &["image", "alias", "rename", "busybox", "bbx"],
    );
    let aliases: Value = serde_json::from_str(&ok(
        &d,
        conf.path(),
        &["image", "alias", "list", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(
        aliases
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["bb", "bbx"]
    );
    // An instance from an alias or a fingerprint prefix, each in one request (rxd resolves
    // either from `source.alias`); an unknown name is not found.
    ok(&d, conf.path(), &["init", "bbx", "by-alias"]);
    ok(&d, conf.path(), &["init", &fp[..12], "by-fp"]);
    for name in ["by-alias", "by-fp"] {
        let c = d
            .unix()
            .get(&format!("/1.0/instances/{name}"))
            .await
            .unwrap();
        assert_eq!(c["config"]["volatile.base_image"], fp);
    }
    let missing = rxc(&d, conf.path(), &["init", "nosuch", "none"]);
    let e = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && e.contains("Image not found"),
        "{e}"
    );
    ok(&d, conf.path(), &["delete", "by-alias", "by-fp"]);
    ok(&d, conf.path(), &["image", "delete", "bb"]);
    assert_eq!(d.image_files(), Vec::<String>::new());
    assert_eq!(
        d.unix().get("/1.0/images/aliases").await.unwrap(),
        json!([])
    );
}

#[tokio::test]
async fn hostile_tarballs_are_refused_with_nothing_written() {
    if !require_root("hostile_tarballs_are_refused_with_nothing_written") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let cases = [
        ("dotdot", "add('metadata.yaml', meta)\nadd('rootfs', type=tarfile.DIRTYPE)\nadd('rootfs/../../../tmp/rxd-escape', b'x')", "'..'"),
        ("absolute", "add('metadata.yaml', meta)\nadd('rootfs', type=tarfile.DIRTYPE)\nadd('/tmp/rxd-escape', b'x')", "absolute"),
        ("symlinked-rootfs", "add('metadata.yaml', meta)\nadd('rootfs', type=tarfile.SYMTYPE, linkname='/')", "must not be a link"),
        (
            "symlink-escape",
            "add('metadata.yaml', meta)\nadd('rootfs', type=tarfile.DIRTYPE)\nadd('rootfs/etc', type=tarfile.SYMTYPE, linkname='/etc')\nadd('rootfs/etc/rxd-escape', b'x')",
            "is not a directory of the image",
        ),
        (
            "hardlink-escape",
            "add('metadata.yaml', meta)\nadd('rootfs', type=tarfile.DIRTYPE)\nadd('rootfs/shadow', type=tarfile.LNKTYPE, linkname='/etc/shadow')",
            "links to",
        ),
        ("no-metadata", "add('rootfs', type=tarfile.DIRTYPE)", "no metadata.yaml"),
        ("not-a-tarball", "pass", "no metadata.yaml"),
    ];
    for (name, body, expected) in cases {
        let file = hostile(conf.path(), name, body);
        let out = rxc(
            &d,
            conf.path(),
            &["image", "import", file.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} imported");
        assert!(err.contains(expected), "{name}: {err}");
        assert_eq!(
            d.image_files(),
            Vec::<String>::new(),
            "{name}: nothing written"
        );
    }
    assert!(!Path::new("/tmp/rxd-escape").exists() && !Path::new("/etc/rxd-escape").exists());
    assert_eq!(d.unix().get("/1.0/images").await.unwrap(), json!([]));
    // Garbage that is not even a tar stream.
    let junk = conf.path().join("junk.tar.gz");
    std::fs::write(&junk, b"\x1f\x8bnot really gzip").unwrap();
    assert!(!rxc(
        &d,
        conf.path(),
        &["image", "import", junk.to_str().unwrap()]
    )
    .status
    .success());
    assert_eq!(d.image_files(), Vec::<String>::new());
}

/// Debian's `lxc` in its own config dir, with the daemon added as remote `rxd:` (by trust
/// password, set by an admin client whose config dir is returned first).
fn lxc_remote(d: &TestDaemon) -> (tempfile::TempDir, tempfile::TempDir) {
    let admin = tempfile::tempdir().unwrap();
    ok(
        d,
        admin.path(),
        &["config", "set", "core.trust_password", "pw"],
    );
    let lxd_conf = tempfile::tempdir().unwrap();
    let out = lxc(
        lxd_conf.path(),
        &[
            "remote",
            "add",
            "rxd",
            &d.https_address(),
            "--accept-certificate",
            "--password",
            "pw",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    (admin, lxd_conf)
}

#[tokio::test]
async fn debian_lxc_imports_lists_and_deletes_images() {
    if !require_root("debian_lxc_imports_lists_and_deletes_images")
        || !require_tool(
            "lxc",
            "lxd-client",
            "debian_lxc_imports_lists_and_deletes_images",
        )
    {
        return;
    }
    let d = TestDaemon::start().await;
    let (admin, lxd_conf) = lxc_remote(&d);
    let lxc = |args: &[&str]| lxc(lxd_conf.path(), args);
    let image = busybox_image(admin.path());
    let out = lxc(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "rxd:",
        "--alias",
        "bb",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Image imported with fingerprint"));
    let list = lxc(&["image", "list", "rxd:", "--format", "csv"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("bb,"),
        "{list:?}"
    );
    let exported = tempfile::tempdir().unwrap();
    let target = exported.path().join("bb");
    let out = lxc(&["image", "export", "rxd:bb", target.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(exported.path().join("bb.tar.gz")).unwrap(),
        std::fs::read(&image).unwrap(),
        "exported: {:?}",
        std::fs::read_dir(exported.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    let out = lxc(&["image", "delete", "rxd:bb"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.unix().get("/1.0/images").await.unwrap(), json!([]));
}

/// A split image (metadata tarball + root filesystem tarball, as LXD's image servers and
/// `lxc image import META ROOTFS` have them) made with the system's tar from the busybox image.
fn split_image(dir: &Path, meta_extra: &[&str]) -> (PathBuf, PathBuf) {
    let unified = busybox_image(dir);
    let (m, r) = rxd_testkit::split_image(&unified, dir, "split", None, meta_extra);
    // Named as a user's files would be (the rootfs part's name becomes the image's filename).
    let (meta, rootfs) = (dir.join("meta.tar.xz"), dir.join("rootfs.tar.xz"));
    std::fs::rename(m, &meta).unwrap();
    std::fs::rename(r, &rootfs).unwrap();
    (meta, rootfs)
}

#[tokio::test]
async fn debian_lxc_imports_and_launches_a_split_image() {
    if !require_root("debian_lxc_imports_and_launches_a_split_image")
        || !require_tool(
            "lxc",
            "lxd-client",
            "debian_lxc_imports_and_launches_a_split_image",
        )
    {
        return;
    }
    let d = TestDaemon::start().await;
    let (admin, lxd_conf) = lxc_remote(&d);
    let lxc = |args: &[&str]| lxc(lxd_conf.path(), args);
    let (meta, rootfs) = split_image(admin.path(), &[]);
    let out = lxc(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        rootfs.to_str().unwrap(),
        "rxd:",
        "--alias",
        "split",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The fingerprint of a split image: SHA-256 of the metadata, then the root filesystem.
    let both = [
        std::fs::read(&meta).unwrap(),
        std::fs::read(&rootfs).unwrap(),
    ]
    .concat();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&both))
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&expected),
        "{out:?}"
    );
    let image = d
        .unix()
        .get(&format!("/1.0/images/{expected}"))
        .await
        .unwrap();
    assert_eq!(image["filename"], "rootfs.tar.xz", "{image:#}");
    assert_eq!(image["size"], both.len() as u64, "{image:#}");
    // lxc image export gets the two files back as they were imported.
    let exported = tempfile::tempdir().unwrap();
    let target = exported.path().join("out");
    let out = lxc(&["image", "export", "rxd:split", target.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // lxc names them TARGET and TARGET.root when given a file name.
    assert_eq!(
        std::fs::read(exported.path().join("out")).unwrap(),
        std::fs::read(&meta).unwrap(),
        "metadata"
    );
    assert_eq!(
        std::fs::read(exported.path().join("out.root")).unwrap(),
        std::fs::read(&rootfs).unwrap(),
        "rootfs"
    );
    let out = lxc(&["launch", "rxd:split", "rxd:c1"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["exec", "rxd:c1", "--", "ls", "/bin/sh"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["delete", "--force", "rxd:c1"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["image", "delete", "rxd:split"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.image_files(), Vec::<String>::new());

    // A metadata tarball carrying root filesystem entries is refused, leaving nothing.
    let hostile = tempfile::tempdir().unwrap();
    let (meta, rootfs) = split_image(hostile.path(), &["rootfs/bin"]);
    let out = lxc(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        rootfs.to_str().unwrap(),
        "rxd:",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("split image's metadata tarball"),
        "{out:?}"
    );
    assert_eq!(d.unix().get("/1.0/images").await.unwrap(), json!([]));
    assert_eq!(d.image_files(), Vec::<String>::new());
}

/// `rxc image import META ROOTFS`: a split image in one multipart upload, as `lxc` sends it;
/// its fingerprint is the SHA-256 of the metadata then the root filesystem, and it launches.
#[tokio::test]
async fn rxc_imports_and_launches_a_split_image() {
    if !require_root("rxc_imports_and_launches_a_split_image") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let (meta, rootfs) = split_image(conf.path(), &[]);
    let out = ok(
        &d,
        conf.path(),
        &[
            "image",
            "import",
            meta.to_str().unwrap(),
            rootfs.to_str().unwrap(),
            "--alias",
            "split",
        ],
    );
    let both = [
        std::fs::read(&meta).unwrap(),
        std::fs::read(&rootfs).unwrap(),
    ]
    .concat();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&both))
    };
    assert!(out.contains(&expected), "{out}");
    let image = d
        .unix()
        .get(&format!("/1.0/images/{expected}"))
        .await
        .unwrap();
    assert_eq!(image["filename"], "rootfs.tar.xz", "{image:#}");
    assert_eq!(image["size"], both.len() as u64, "{image:#}");
    ok(&d, conf.path(), &["launch", "split", "c1"]);
    let out = ok(&d, conf.path(), &["exec", "c1", "--", "ls", "/bin/sh"]);
    assert!(out.contains("/bin/sh"), "{out}");
    // With the server named last, as `lxc image import META ROOTFS REMOTE:`; a hostile
    // metadata tarball is refused with nothing left.
    let hostile = tempfile::tempdir().unwrap();
    let (meta, rootfs) = split_image(hostile.path(), &["rootfs/bin"]);
    let out = rxc(
        &d,
        conf.path(),
        &[
            "image",
            "import",
            meta.to_str().unwrap(),
            rootfs.to_str().unwrap(),
            "local:",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("split image's metadata tarball"),
        "{out:?}"
    );
    assert_eq!(
        d.unix().get("/1.0/images").await.unwrap(),
        json!([format!("/1.0/images/{expected}")])
    );
}
