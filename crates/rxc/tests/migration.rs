//! Instances copied and moved between two rxd daemons as Debian's `lxc` drives them (LXD's
//! stateless migration): pull (the target dials the source's operation), push (the source dials
//! the target's) and relay (the client splices both), with and without snapshots, with `-c`
//! overrides, a snapshot as an instance of its own, and `lxc move` to the other server; and
//! `rxc copy`/`rxc move` (pull, or push from a source not on the network). The target confines the instance and every snapshot it brings
//! as its own project demands; a refused one leaves nothing behind.

use rxd_testkit::session::lxc;
use rxd_testkit::{busybox_image, require_root, require_tool, TestDaemon};
use std::path::Path;

fn ok(conf: &Path, args: &[&str], daemons: &[&TestDaemon]) -> String {
    let out = lxc(conf, args);
    assert!(
        out.status.success(),
        "lxc {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemons
            .iter()
            .map(|d| d.logs())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshots(conf: &Path, instance: &str) -> Vec<String> {
    let out = lxc(conf, &["query", &format!("{instance}/snapshots")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let list: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    list.iter()
        .map(|u| u.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

/// `lxc query` of a remote path (`dst:/1.0/...`).
fn query(conf: &Path, path: &str) -> serde_json::Value {
    let out = lxc(conf, &["query", path]);
    assert!(out.status.success(), "lxc query {path}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn instances_are_copied_and_moved_between_servers() {
    let test = "instances_are_copied_and_moved_between_servers";
    if !require_root(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let (src, dst) = (TestDaemon::start().await, TestDaemon::start().await);
    let both = [&src, &dst];
    let admin = tempfile::tempdir().unwrap();
    for d in both {
        let out = d.rxc(
            admin.path(),
            &["config", "set", "core.trust_password", "pw"],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let conf = tempfile::tempdir().unwrap();
    let c = conf.path();
    for (name, d) in [("src", &src), ("dst", &dst)] {
        let addr = d.https_address();
        ok(
            c,
            &[
                "remote",
                "add",
                name,
                &addr,
                "--accept-certificate",
                "--password",
                "pw",
            ],
            &both,
        );
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("bb.tar.gz");
    busybox_image(&image);
    ok(
        c,
        &[
            "image",
            "import",
            image.to_str().unwrap(),
            "src:",
            "--alias",
            "bb",
        ],
        &both,
    );
    ok(c, &["launch", "src:bb", "src:c1"], &both);
    ok(
        c,
        &[
            "exec",
            "src:c1",
            "--",
            "sh",
            "-c",
            "echo migrated > /root/marker",
        ],
        &both,
    );
    ok(c, &["snapshot", "src:c1", "s0"], &both);
    ok(c, &["config", "set", "src:c1", "user.origin", "src"], &both);

    // A running source is copied stateless only: rxd checkpoints nothing (LXD without CRIU
    // answers the same).
    let live = lxc(c, &["copy", "src:c1", "dst:c2"]);
    assert!(!live.status.success(), "{live:?}");
    assert!(
        String::from_utf8_lossy(&live.stderr).contains("--stateless"),
        "{live:?}"
    );
    assert!(!lxc(c, &["query", "dst:/1.0/instances/c2"]).status.success());
    // Pull (lxc's default), from a running source: the snapshot comes along, the files too.
    ok(c, &["copy", "src:c1", "dst:c2", "--stateless"], &both);
    assert_eq!(snapshots(c, "dst:/1.0/instances/c2"), ["s0"]);
    let c2 = query(c, "dst:/1.0/instances/c2");
    assert_eq!(c2["config"]["user.origin"], "src", "{c2}");
    assert_eq!(c2["status"], "Stopped", "{c2}");
    ok(c, &["start", "dst:c2"], &both);
    let inside = ok(c, &["exec", "dst:c2", "--", "cat", "/root/marker"], &both);
    assert_eq!(inside.trim(), "migrated");
    // Its files are the container's own inside (uid 0), whatever the target's map.
    let owner = ok(
        c,
        &["exec", "dst:c2", "--", "stat", "-c", "%u", "/root/marker"],
        &both,
    );
    assert_eq!(owner.trim(), "0");
    // The source is untouched and still running.
    assert_eq!(query(c, "src:/1.0/instances/c1")["status"], "Running");

    // Push, instance only: no snapshot.
    ok(
        c,
        &[
            "copy",
            "src:c1",
            "dst:c3",
            "--mode",
            "push",
            "--instance-only",
            "--stateless",
        ],
        &both,
    );
    assert!(snapshots(c, "dst:/1.0/instances/c3").is_empty());
    assert_eq!(
        query(c, "dst:/1.0/instances/c3")["config"]["user.origin"],
        "src"
    );

    // Relay, with an override.
    ok(
        c,
        &[
            "copy",
            "src:c1",
            "dst:c4",
            "--mode",
            "relay",
            "-c",
            "user.origin=relayed",
            "--stateless",
        ],
        &both,
    );
    assert_eq!(snapshots(c, "dst:/1.0/instances/c4"), ["s0"]);
    assert_eq!(
        query(c, "dst:/1.0/instances/c4")["config"]["user.origin"],
        "relayed"
    );

    // A snapshot, as an instance of its own (no snapshots, the snapshot's files).
    ok(c, &["copy", "src:c1/s0", "dst:c6"], &both);
    assert!(snapshots(c, "dst:/1.0/instances/c6").is_empty());
    ok(c, &["start", "dst:c6"], &both);
    let inside = ok(c, &["exec", "dst:c6", "--", "cat", "/root/marker"], &both);
    assert_eq!(inside.trim(), "migrated");
    ok(c, &["delete", "-f", "dst:c6"], &both);

    // Move: stopped, copied, then deleted on the source.
    ok(c, &["stop", "src:c1", "--force"], &both);
    ok(c, &["move", "src:c1", "dst:c5"], &both);
    assert!(!lxc(c, &["query", "src:/1.0/instances/c1"]).status.success());
    assert_eq!(snapshots(c, "dst:/1.0/instances/c5"), ["s0"]);

    // A moved container keeps its NICs' MACs (`lxc move` sends the volatile keys); a copy gets
    // MACs of its own. A p2p NIC, never started: these daemons run in the host's namespace.
    let mac = |r: &str, name: &str| {
        query(c, &format!("{r}:/1.0/instances/{name}"))["config"]["volatile.eth0.hwaddr"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}:{name} has no MAC"))
            .to_owned()
    };
    for r in ["src", "dst"] {
        let profile = format!("{r}:nic");
        ok(c, &["profile", "create", &profile], &both);
        ok(
            c,
            &[
                "profile",
                "device",
                "add",
                &profile,
                "eth0",
                "nic",
                "nictype=p2p",
            ],
            &both,
        );
    }
    ok(
        c,
        &["init", "src:bb", "src:m1", "-p", "default", "-p", "nic"],
        &both,
    );
    let m1 = mac("src", "m1");
    ok(c, &["move", "src:m1", "dst:m1"], &both);
    assert_eq!(mac("dst", "m1"), m1);
    ok(c, &["copy", "dst:m1", "src:m1"], &both);
    assert_ne!(mac("src", "m1"), m1);
    ok(c, &["delete", "src:m1"], &both);
    ok(c, &["start", "dst:c5"], &both);
    let inside = ok(c, &["exec", "dst:c5", "--", "cat", "/root/marker"], &both);
    assert_eq!(inside.trim(), "migrated");

    // A snapshot the target's project would refuse (privileged, in a restricted project) is
    // refused with the whole copy, however harmless the instance's own config.
    ok(c, &["init", "src:bb", "src:p1"], &both);
    ok(
        c,
        &["config", "set", "src:p1", "security.privileged", "true"],
        &both,
    );
    ok(c, &["snapshot", "src:p1", "priv"], &both);
    ok(
        c,
        &["config", "unset", "src:p1", "security.privileged"],
        &both,
    );
    ok(
        c,
        &["project", "create", "dst:locked", "-c", "restricted=true"],
        &both,
    );
    let refused = lxc(
        c,
        &["copy", "src:p1", "dst:p1", "--target-project", "locked"],
    );
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("Snapshot \"priv\"") && said.contains("forbids privileged containers"),
        "{said}"
    );
    let left = query(c, "dst:/1.0/instances?project=locked");
    assert_eq!(left, serde_json::json!([]), "{left}");
    // Without the snapshot it is allowed there.
    ok(
        c,
        &[
            "copy",
            "src:p1",
            "dst:p1",
            "--target-project",
            "locked",
            "--instance-only",
        ],
        &both,
    );

    // rxc: from its local server (the source, on the network) the target pulls; a move copies
    // then deletes the source.
    let rc = tempfile::tempdir().unwrap();
    let rxc = |args: &[&str]| {
        let out = src.rxc(rc.path(), args);
        assert!(
            out.status.success(),
            "rxc {args:?}: {}\n{}\n----\n{}",
            String::from_utf8_lossy(&out.stderr),
            src.logs(),
            dst.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = dst.https_address();
    rxc(&[
        "remote",
        "add",
        "dst",
        &addr,
        "--accept-certificate",
        "--password",
        "pw",
    ]);
    rxc(&["snapshot", "p1", "s1"]);
    rxc(&["init", "bb", "m2", "-p", "default", "-p", "nic"]);
    let m2 = mac("src", "m2");
    rxc(&["copy", "m2", "dst:m3"]);
    assert_ne!(mac("dst", "m3"), m2);
    rxc(&["copy", "p1", "dst:r1", "-c", "user.by=rxc"]);
    rxc(&["copy", "p1/s1", "dst:r3"]);
    assert!(snapshots(c, "dst:/1.0/instances/r3").is_empty());
    assert_eq!(snapshots(c, "dst:/1.0/instances/r1"), ["priv", "s1"]);
    assert_eq!(
        query(c, "dst:/1.0/instances/r1")["config"]["user.by"],
        "rxc"
    );
    // A source not on the network pushes to the target instead.
    rxc(&["config", "unset", "core.https_address"]);
    rxc(&["move", "p1", "dst:r2"]);
    rxc(&["move", "m2", "dst:m2"]);
    assert_eq!(mac("dst", "m2"), m2);
    assert!(rxc(&["list", "-c", "n", "--format", "csv"])
        .trim()
        .is_empty());
    assert_eq!(snapshots(c, "dst:/1.0/instances/r2"), ["priv", "s1"]);

    for n in ["c2", "c3", "c4", "c5", "r1", "r2", "r3", "m1", "m2", "m3"] {
        ok(c, &["delete", "-f", &format!("dst:{n}")], &both);
    }
    ok(c, &["delete", "-f", "dst:p1", "--project", "locked"], &both);
}

/// A push-mode migration target on `d` for instance `name`: its operation id and secrets.
async fn push_target(d: &TestDaemon, name: &str) -> (String, serde_json::Value) {
    let r = d
        .unix()
        .request(
            rxd_client::Method::POST,
            "/1.0/instances",
            Some(&serde_json::json!({
                "name": name,
                "source": {"type": "migration", "mode": "push"},
            })),
        )
        .await
        .unwrap();
    let env = r.envelope().unwrap();
    assert_eq!(r.status, 202, "{env:?}");
    let op = env.metadata.clone();
    (
        op["id"].as_str().unwrap().to_owned(),
        op["metadata"].clone(),
    )
}

/// A hostile or broken source: a stream cut short, or not the one its header announced, is
/// refused before anything is imported, and nothing is left behind; the channels' secrets never
/// appear in an operation's error.
#[tokio::test]
async fn a_migration_stream_cut_short_or_changed_is_never_imported() {
    use futures_util::SinkExt;
    use sha2::Digest;
    use tokio_tungstenite::tungstenite::Message;
    let test = "a_migration_stream_cut_short_or_changed_is_never_imported";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start().await;
    let data = vec![7u8; 300_000];
    let digest = hex::encode(sha2::Sha256::digest(&data));
    // (what is sent, the header's length, the header's digest, what the refusal says)
    let cases = [
        (&data[..100_000], data.len(), digest.clone(), "cut short"),
        (
            &data[..],
            data.len(),
            "0".repeat(64),
            "cut short or changed",
        ),
        (&data[..], 1000, digest.clone(), "more than the 1000 bytes"),
    ];
    for (i, (sent, bytes, sha, said)) in cases.into_iter().enumerate() {
        let name = format!("m{i}");
        let (id, secrets) = push_target(&d, &name).await;
        let path = |ch: &str| {
            format!(
                "/1.0/operations/{id}/websocket?secret={}",
                secrets[ch].as_str().unwrap()
            )
        };
        let mut control = d.unix().websocket(&path("control")).await.unwrap();
        let mut fs = d.unix().websocket(&path("fs")).await.unwrap();
        let header = serde_json::json!({
            "rxd_migration": "rxd-backup/1", "snapshots": [], "bytes": bytes, "sha256": sha,
        });
        control
            .send(Message::Text(header.to_string().into()))
            .await
            .unwrap();
        for chunk in sent.chunks(65536) {
            // The target may refuse (and close the channel) as soon as a stream runs past
            // what its header announced: the rest is not sent.
            if fs
                .send(Message::Binary(chunk.to_vec().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = fs.close(None).await;
        let done = d
            .unix()
            .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
            .await
            .unwrap();
        assert_eq!(done["status"], "Failure", "{done}");
        let err = done["err"].as_str().unwrap();
        assert!(err.contains(said), "{err}");
        let listed = d.unix().get("/1.0/instances").await.unwrap();
        assert_eq!(listed, serde_json::json!([]), "{listed}");
        drop(control);
    }
    // Nothing half-received is kept.
    let uploads = d.dir().join("backups");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("migration"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A migration nobody connects to can be cancelled (lxc cancels a source whose target
    // refused): it ends at once, not when its wait for the other side runs out.
    let (id, _) = push_target(&d, "mx").await;
    let r = d
        .unix()
        .request(
            rxd_client::Method::DELETE,
            &format!("/1.0/operations/{id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let done = d
        .unix()
        .get(&format!("/1.0/operations/{id}/wait?timeout=10"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Cancelled", "{done}");

    // A pull from a peer that cannot be reached: the error names the operation, never the
    // secrets in the channels' URLs.
    let r = d
        .unix()
        .request(
            rxd_client::Method::POST,
            "/1.0/instances",
            Some(&serde_json::json!({
                "name": "p0",
                "source": {
                    "type": "migration", "mode": "pull", "certificate": "",
                    "operation": "https://127.0.0.1:1/1.0/operations/0a1b",
                    "secrets": {"control": "SEKRIT-CONTROL", "fs": "SEKRIT-FS"},
                },
            })),
        )
        .await
        .unwrap();
    let env = r.envelope().unwrap();
    assert_eq!(r.status, 202, "{env:?}");
    let id = env.metadata["id"].as_str().unwrap().to_owned();
    let done = d
        .unix()
        .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Failure", "{done}");
    let err = done["err"].as_str().unwrap();
    assert!(err.contains("127.0.0.1:1/1.0/operations/0a1b"), "{err}");
    assert!(
        !err.contains("SEKRIT") && !d.logs().contains("SEKRIT"),
        "{err}"
    );
}
