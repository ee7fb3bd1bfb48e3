//! Every object the real daemon sends, decoded into its `rxd-api` type as Go's decoder reads it
//! and written back: nothing may be left over (a field the type does not know) and nothing may
//! change (a field the daemon shapes differently from the type). This ties the daemon's replies
//! to the wire types clients build on; `rxd-api/tests/responses.rs` checks the types themselves.

use futures_util::StreamExt;
use rxd_api::certificate::Certificate;
use rxd_api::event::{Event, EventLifecycle};
use rxd_api::grant::Grant;
use rxd_api::image::{Image, ImageAliasesEntry};
use rxd_api::instance::{Instance, InstanceState};
use rxd_api::operation::Operation;
use rxd_api::project::Project;
use rxd_api::server::Server;
use rxd_api::snapshot::InstanceSnapshot;
use rxd_api::warning::Warning;
use rxd_client::{Client, Method};
use rxd_testkit::{busybox_image, client_identity, require_root, succeeded, TestDaemon};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Decode `v` as `T` (Go semantics), then check nothing was ignored and the type writes back
/// exactly what the daemon sent.
fn check<T: DeserializeOwned + Serialize>(what: &str, v: &Value) {
    let decoded = rxd_api::decode_value::<T>(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{what}: does not decode as {}: {e}\n{v:#}",
            std::any::type_name::<T>()
        )
    });
    assert!(
        decoded.ignored.is_empty(),
        "{what}: the daemon sends fields {} does not know: {:?}",
        std::any::type_name::<T>(),
        decoded.ignored
    );
    let back = serde_json::to_value(&decoded.value).unwrap();
    assert_eq!(&back, v, "{what}: written back differently");
}

fn each<T: DeserializeOwned + Serialize>(what: &str, list: &Value) {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {list}"));
    assert!(!items.is_empty(), "{what}: nothing to check");
    for item in items {
        check::<T>(what, item);
    }
}

async fn wait(c: &Client, reply: Value) -> Value {
    let id = reply["id"].as_str().unwrap().to_owned();
    c.get(&format!("/1.0/operations/{id}/wait")).await.unwrap()
}

#[tokio::test]
async fn every_object_the_daemon_sends_is_its_wire_type() {
    if !require_root("every_object_the_daemon_sends_is_its_wire_type") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();

    // Something of every kind: an image with an alias, an instance with a snapshot, a
    // project, a trusted certificate with a grant, a join token.
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    let args = ["image", "import", image.to_str().unwrap(), "--alias", "bb"];
    succeeded(&args, d.rxc(conf.path(), &args));

    let events = unix
        .websocket("/1.0/events?type=lifecycle,operation")
        .await
        .unwrap();
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances",
            Some(&json!({"name": "c1", "source": {"type": "image", "alias": "bb"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let reply = r.envelope().unwrap().metadata;
    check::<Operation>("the create operation", &reply);
    let done = wait(&unix, reply).await;
    assert_eq!(done["status"], "Success", "{done}");
    check::<Operation>("a finished operation", &done);

    let r = unix
        .request(
            Method::POST,
            "/1.0/instances/c1/snapshots",
            Some(&json!({"name": "s1"})),
        )
        .await
        .unwrap();
    assert_eq!(
        wait(&unix, r.envelope().unwrap().metadata).await["status"],
        "Success"
    );
    let r = unix
        .request(
            Method::POST,
            "/1.0/projects",
            Some(&json!({"name": "p1", "description": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    let id = client_identity("shapes");
    d.trust(&id).await;
    let r = unix
        .request(
            Method::POST,
            "/1.0/auth/grants",
            Some(&json!({"identity_type": "certificate", "identity": id.fingerprint, "role": "auditor", "scope": "project", "project": "p1"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    let r = unix
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"name": "joiner", "type": "client", "token": true})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    check::<Operation>("a token operation", &r.envelope().unwrap().metadata);

    check::<Server>("GET /1.0", &unix.get("/1.0").await.unwrap());
    check::<Server>(
        "GET /1.0, untrusted",
        &d.https(None).get("/1.0").await.unwrap(),
    );
    each::<Certificate>(
        "certificates",
        &unix.get("/1.0/certificates?recursion=1").await.unwrap(),
    );
    each::<Image>(
        "images",
        &unix.get("/1.0/images?recursion=1").await.unwrap(),
    );
    each::<ImageAliasesEntry>(
        "aliases",
        &unix.get("/1.0/images/aliases?recursion=1").await.unwrap(),
    );
    each::<Instance>(
        "instances",
        &unix.get("/1.0/instances?recursion=1").await.unwrap(),
    );
    each::<Instance>(
        "full instances",
        &unix.get("/1.0/instances?recursion=2").await.unwrap(),
    );
    check::<Instance>("an instance", &unix.get("/1.0/instances/c1").await.unwrap());
    check::<InstanceState>(
        "its state",
        &unix.get("/1.0/instances/c1/state").await.unwrap(),
    );
    each::<InstanceSnapshot>(
        "snapshots",
        &unix
            .get("/1.0/instances/c1/snapshots?recursion=1")
            .await
            .unwrap(),
    );
    each::<Project>(
        "projects",
        &unix.get("/1.0/projects?recursion=1").await.unwrap(),
    );
    each::<Grant>(
        "grants",
        &unix.get("/1.0/auth/grants?recursion=1").await.unwrap(),
    );
    let ops = unix.get("/1.0/operations?recursion=1").await.unwrap();
    for (status, list) in ops.as_object().unwrap() {
        each::<Operation>(&format!("{status} operations"), list);
    }
    let warnings = unix.get("/1.0/warnings?recursion=1").await.unwrap();
    for w in warnings.as_array().unwrap() {
        check::<Warning>("a warning", w);
    }

    // The events the create and the rest sent.
    let mut events = events;
    let mut lifecycle = 0;
    let mut operation = 0;
    while lifecycle == 0 || operation == 0 {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .expect("the stream stays open")
            .expect("a message");
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        check::<Event>("an event", &v);
        match v["type"].as_str() {
            Some("lifecycle") => {
                lifecycle += 1;
                check::<EventLifecycle>("lifecycle metadata", &v["metadata"]);
            }
            Some("operation") => {
                operation += 1;
                check::<Operation>("operation metadata", &v["metadata"]);
            }
            _ => {}
        }
    }
}
