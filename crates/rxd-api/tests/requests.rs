//! The request bodies Debian's `lxc` 5.0.2 and pylxd 2.4.2 were recorded sending
//! (`fixtures/*.json`, made with `fixtures/capture.py`) all decode into their types, ignoring
//! exactly the fields the fixture lists, and re-encode to something that decodes the same.

use rxd_api::certificate::CertificatesPost;
use rxd_api::image::{ImageAliasesEntryPost, ImageAliasesEntryPut, ImageAliasesPost, ImagePut};
use rxd_api::instance::{
    InstanceConsolePost, InstanceExecPost, InstancePost, InstancePut, InstanceStatePut,
    InstancesPost,
};
use rxd_api::project::{ProjectPost, ProjectPut, ProjectsPost};
use rxd_api::server::ServerPut;
use rxd_api::snapshot::{InstanceSnapshotPost, InstanceSnapshotsPost};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Debug;

/// Decode `body` as `T`; the fields it ignored, or why it failed.
fn decode_as<T: DeserializeOwned + Serialize + PartialEq + Debug>(
    body: &Value,
) -> Result<Vec<String>, String> {
    let d = rxd_api::decode::<T>(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let again = serde_json::to_vec(&d.value).map_err(|e| e.to_string())?;
    let back = rxd_api::decode::<T>(&again).map_err(|e| format!("re-encoded: {e}"))?;
    assert_eq!(back.value, d.value, "re-encoding changed {body}");
    Ok(d.ignored)
}

/// The one check: `body` decodes as the type named `kind`, ignoring `ignored`.
fn check(what: &str, kind: &str, body: &Value, ignored: &[String]) {
    let got = match kind {
        "InstancesPost" => decode_as::<InstancesPost>(body),
        "InstancePut" => decode_as::<InstancePut>(body),
        "InstancePost" => decode_as::<InstancePost>(body),
        "InstanceStatePut" => decode_as::<InstanceStatePut>(body),
        "InstanceExecPost" => decode_as::<InstanceExecPost>(body),
        "InstanceConsolePost" => decode_as::<InstanceConsolePost>(body),
        "InstanceSnapshotsPost" => decode_as::<InstanceSnapshotsPost>(body),
        "InstanceSnapshotPost" => decode_as::<InstanceSnapshotPost>(body),
        "ImageAliasesPost" => decode_as::<ImageAliasesPost>(body),
        "ImageAliasesEntryPost" => decode_as::<ImageAliasesEntryPost>(body),
        "ImageAliasesEntryPut" => decode_as::<ImageAliasesEntryPut>(body),
        "ImagePut" => decode_as::<ImagePut>(body),
        "ProjectsPost" => decode_as::<ProjectsPost>(body),
        "ProjectPut" => decode_as::<ProjectPut>(body),
        "ProjectPost" => decode_as::<ProjectPost>(body),
        "CertificatesPost" => decode_as::<CertificatesPost>(body),
        "ServerPut" => decode_as::<ServerPut>(body),
        other => panic!("{what}: no type {other:?}"),
    };
    match got {
        Ok(got) => assert_eq!(got, ignored, "{what}: ignored fields of {body}"),
        Err(e) => panic!("{what}: {body} does not decode as {kind}: {e}"),
    }
}

fn check_file(name: &str) -> usize {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let doc: Value = serde_json::from_str(&text).expect("fixture JSON");
    let mut checked = 0;
    for r in doc["requests"].as_array().expect("requests") {
        let what = format!("{name}: {} ({} {})", r["command"], r["method"], r["path"]);
        let Some(kind) = r["type"].as_str() else {
            // A raw upload (an image tarball): its headers describe it, there is no JSON.
            assert!(r["body_bytes"].as_u64().unwrap_or(0) > 0, "{what}");
            continue;
        };
        let ignored: Vec<String> = serde_json::from_value(r["ignored"].clone()).expect("ignored");
        check(&what, kind, &r["body"], &ignored);
        checked += 1;
    }
    checked
}

#[test]
fn lxc_5_0_2_requests_decode() {
    assert!(check_file("lxc-5.0.2.json") >= 25);
}

#[test]
fn pylxd_2_4_2_requests_decode() {
    assert!(check_file("pylxd-2.4.2.json") >= 15);
}

/// What Go's decoder refuses, these types refuse too: a wrong type is an error, not a default.
#[test]
fn wrong_types_are_refused() {
    let refused: &[(&str, &str)] = &[
        ("InstanceExecPost", r#"{"command":["sh"],"user":-1}"#),
        ("InstanceExecPost", r#"{"command":["sh"],"user":"1000"}"#),
        ("InstanceExecPost", r#"{"command":"sh"}"#),
        ("InstanceExecPost", r#"{"command":["sh"],"width":80.5}"#),
        ("InstanceStatePut", r#"{"action":"stop","timeout":"30"}"#),
        ("InstanceStatePut", r#"{"action":"stop","force":"true"}"#),
        (
            "InstancesPost",
            r#"{"name":"c1","config":{"limits.cpu":2}}"#,
        ),
        ("InstancesPost", r#"{"name":"c1","source":"image"}"#),
        ("ProjectsPost", r#"{"name":["p1"]}"#),
        ("InstanceSnapshotsPost", r#"{"name":"s1","expires_at":0}"#),
        ("InstanceConsolePost", r#"{"width":-1.0}"#),
    ];
    for (kind, body) in refused {
        let body: Value = serde_json::from_str(body).expect("JSON");
        let result = std::panic::catch_unwind(|| check("refused", kind, &body, &[]));
        assert!(result.is_err(), "{kind} accepted {body}");
    }
}
