//! Images pulled from another server speaking LXD's API: `lxc image copy src:img dst:` and
//! `lxc launch src:img dst:c1` between two rxd daemons, as Debian's `lxc` drives them (the
//! target asks the source as an untrusted client, the source's certificate pinned, a private
//! image opened by a one-time secret), and `rxc image copy`. Untrusted callers see public images
//! only; a private one without a valid secret is answered exactly as a missing one.

use rxd_testkit::session::lxc;
use rxd_testkit::{busybox_image, require_root, require_tool, TestDaemon};
use serde_json::json;
use std::path::Path;
use std::process::Command;

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

/// `GET url` with curl, as an untrusted client (no certificate): status and body.
fn untrusted_get(url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_owned(), body.to_owned())
}

/// A distinct split image (a property in `metadata.yaml`) imported into the `src` remote with
/// Debian's `lxc`; returns its fingerprint.
fn import(lxd_conf: &Path, dir: &Path, tag: &str, public: bool) -> String {
    let unified = dir.join("bb.tar.gz");
    if !unified.exists() {
        busybox_image(&unified);
    }
    let (meta, rootfs) = rxd_testkit::split_image(&unified, dir, tag, Some(tag), &[]);
    let mut args = vec![
        "image",
        "import",
        meta.to_str().unwrap(),
        rootfs.to_str().unwrap(),
        "src:",
        "--alias",
        tag,
    ];
    if public {
        args.push("--public");
    }
    let out = lxc(lxd_conf, &args);
    assert!(out.status.success(), "{out:?}");
    let fp = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(std::fs::read(&meta).unwrap());
        h.update(std::fs::read(&rootfs).unwrap());
        hex::encode(h.finalize())
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&fp),
        "{out:?}"
    );
    fp
}

#[tokio::test]
async fn images_are_pulled_from_another_server_with_one_time_secrets() {
    let test = "images_are_pulled_from_another_server_with_one_time_secrets";
    if !require_root(test)
        || !require_tool("lxc", "lxd-client", test)
        || !require_tool("curl", "curl", test)
    {
        return;
    }
    let (src, dst) = (TestDaemon::start().await, TestDaemon::start().await);
    let admin = tempfile::tempdir().unwrap();
    let a = admin.path();
    ok(&src, a, &["config", "set", "core.trust_password", "pw"]);
    ok(&dst, a, &["config", "set", "core.trust_password", "pw"]);
    let conf = tempfile::tempdir().unwrap();
    for (name, d) in [("src", &src), ("dst", &dst)] {
        let addr = d.https_address();
        let args = [
            "remote",
            "add",
            name,
            &addr,
            "--accept-certificate",
            "--password",
            "pw",
        ];
        let out = lxc(conf.path(), &args);
        assert!(out.status.success(), "{out:?}");
    }
    let work = tempfile::tempdir().unwrap();
    let private = import(conf.path(), work.path(), "private", false);
    let public = import(conf.path(), work.path(), "public", true);
    let other = import(conf.path(), work.path(), "other", false);

    // Untrusted: public images only; a private one is "not found", byte for byte.
    let base = format!("https://{}", src.https_address());
    let (status, body) = untrusted_get(&format!("{base}/1.0/images"));
    assert_eq!(status, "200", "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["metadata"],
        json!([format!("/1.0/images/{public}")]),
        "{body}"
    );
    let missing = untrusted_get(&format!("{base}/1.0/images/{}", "0".repeat(64)));
    assert_eq!(missing.0, "404");
    assert_eq!(
        untrusted_get(&format!("{base}/1.0/images/{private}")),
        missing
    );
    assert_eq!(
        untrusted_get(&format!("{base}/1.0/images/{private}/export")),
        missing
    );
    assert_eq!(
        untrusted_get(&format!("{base}/1.0/images/{}", &private[..12])),
        missing,
        "a prefix names public images only"
    );
    let (status, _) = untrusted_get(&format!("{base}/1.0/images/{public}/export"));
    assert_eq!(status, "200");
    let (status, _) = untrusted_get(&format!("{base}/1.0/images/aliases/private"));
    assert_eq!(status, "404");
    let (status, _) = untrusted_get(&format!("{base}/1.0/images/aliases/public"));
    assert_eq!(status, "200");

    // A secret opens its own image, on the two GETs, and no other image.
    let r = src
        .unix()
        .request(
            rxd_client::Method::POST,
            &format!("/1.0/images/{private}/secret"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let op = r.metadata().unwrap();
    assert_eq!(op["class"], "token", "{op}");
    assert_eq!(
        op["resources"]["images"],
        json!([format!("/1.0/images/{private}")])
    );
    let secret = op["metadata"]["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        untrusted_get(&format!("{base}/1.0/images/{other}?secret={secret}")),
        missing
    );
    let (status, body) = untrusted_get(&format!("{base}/1.0/images/{private}?secret={secret}"));
    assert_eq!(status, "200", "{body}");
    let (status, _) = untrusted_get(&format!("{base}/1.0/images/{private}?secret=nonsense"));
    assert_eq!(status, "404");

    // Debian's lxc: copy a private image (secret), a public one, and launch from a private one.
    let lxc = |args: &[&str]| {
        let out = lxc(conf.path(), args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {out:?}\nsrc: {}\ndst: {}",
            src.logs(),
            dst.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lxc(&["image", "copy", "src:private", "dst:", "--alias", "copied"]);
    let copied = dst
        .unix()
        .get(&format!("/1.0/images/{private}"))
        .await
        .unwrap();
    assert_eq!(copied["aliases"][0]["name"], "copied", "{copied}");
    assert_eq!(copied["update_source"]["protocol"], "lxd", "{copied}");
    lxc(&["image", "copy", "src:public", "dst:"]);
    dst.unix()
        .get(&format!("/1.0/images/{public}"))
        .await
        .unwrap();
    lxc(&["launch", "src:other", "dst:c1"]);
    let out = lxc(&["exec", "dst:c1", "--", "cat", "/proc/1/comm"]);
    assert_eq!(out, "init\n");
    let image = dst
        .unix()
        .get(&format!("/1.0/images/{other}"))
        .await
        .unwrap();
    assert_eq!(image["cached"], true, "{image}");
    lxc(&["delete", "--force", "dst:c1"]);

    // rxc: the same copy, from a remote added with a token.
    let bob = tempfile::tempdir().unwrap();
    let out = ok(&src, a, &["config", "trust", "add", "--name", "bob"]);
    let token = out.lines().last().unwrap().to_owned();
    ok(&dst, bob.path(), &["remote", "add", "src", &token]);
    let moved = dst
        .unix()
        .request(
            rxd_client::Method::DELETE,
            &format!("/1.0/images/{private}"),
            None,
        )
        .await
        .unwrap();
    assert!(moved.status == 200 || moved.status == 202);
    dst.unix()
        .get(&format!(
            "{}/wait?timeout=30",
            moved.envelope().unwrap().operation
        ))
        .await
        .ok();
    ok(
        &dst,
        bob.path(),
        &["image", "copy", "src:private", "local:", "--alias", "again"],
    );
    dst.unix()
        .get(&format!("/1.0/images/{private}"))
        .await
        .unwrap();

    // A certificate that is not the source's: refused, nothing kept.
    let wrong = rxd_tls::cert::to_pem(&dst.server_cert_der());
    let r = dst
        .unix()
        .request(
            rxd_client::Method::POST,
            "/1.0/images",
            Some(
                &json!({"source": {"type": "image", "mode": "pull", "protocol": "lxd",
                "server": base, "certificate": wrong, "fingerprint": public}}),
            ),
        )
        .await
        .unwrap();
    let op = r.envelope().unwrap().operation;
    let done = dst
        .unix()
        .get(&format!("{op}/wait?timeout=30"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Failure", "{done}");
    assert!(
        done["err"].as_str().unwrap().contains("pinned certificate"),
        "{done}"
    );
    assert!(
        dst.image_files().iter().all(|f| !f.starts_with('.')),
        "{:?}",
        dst.image_files()
    );
}
