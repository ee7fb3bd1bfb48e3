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
use rxd_api::storage::{
    StoragePoolPut, StoragePoolsPost, StorageVolumePost, StorageVolumePut,
    StorageVolumeSnapshotPost, StorageVolumeSnapshotPut, StorageVolumeSnapshotsPost,
    StorageVolumesPost,
};
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
        "StoragePoolsPost" => decode_as::<StoragePoolsPost>(body),
        "StoragePoolPut" => decode_as::<StoragePoolPut>(body),
        "StorageVolumesPost" => decode_as::<StorageVolumesPost>(body),
        "StorageVolumePut" => decode_as::<StorageVolumePut>(body),
        "StorageVolumePost" => decode_as::<StorageVolumePost>(body),
        "StorageVolumeSnapshotsPost" => decode_as::<StorageVolumeSnapshotsPost>(body),
        "StorageVolumeSnapshotPut" => decode_as::<StorageVolumeSnapshotPut>(body),
        "StorageVolumeSnapshotPost" => decode_as::<StorageVolumeSnapshotPost>(body),
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

/// `body` decoded as `T` and encoded again, as text.
fn reencoded<T: DeserializeOwned + Serialize>(body: &str) -> String {
    let d = rxd_api::decode::<T>(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
    serde_json::to_string(&d.value).expect("serializes")
}

/// The storage bodies `lxc` 5.0.2 sends (written from its client code: `lxc/storage.go`,
/// `lxc/storage_volume.go`, `shared/api/storage_pool*.go`; Go sorts map keys and sends struct
/// fields in declaration order, embedded `...Put` fields first) decode, ignoring nothing, and
/// re-encode to the same bytes, so rxc sends what lxc sends.
#[test]
fn lxc_5_0_2_storage_requests_decode() {
    // (command, type, body as lxc sends it, what rxd re-encodes when that differs)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "lxc storage create p dir",
            "StoragePoolsPost",
            r#"{"config":{},"description":"","name":"p","driver":"dir"}"#,
            None,
        ),
        (
            "lxc storage create b btrfs size=4GiB",
            "StoragePoolsPost",
            r#"{"config":{"size":"4GiB"},"description":"","name":"b","driver":"btrfs"}"#,
            None,
        ),
        (
            "lxc storage set p volume.size=5GiB (a read, then PUT of the pool's writable part)",
            "StoragePoolPut",
            r#"{"config":{"source":"/var/lib/lxd/storage-pools/p","volume.size":"5GiB"},"description":""}"#,
            None,
        ),
        (
            "lxc storage unset p volume.size (set to the empty string)",
            "StoragePoolPut",
            r#"{"config":{"source":"/var/lib/lxd/storage-pools/p","volume.size":""},"description":"pool"}"#,
            None,
        ),
        (
            "lxc storage volume create p v size=1GiB (POST .../volumes/custom)",
            "StorageVolumesPost",
            r#"{"config":{"size":"1GiB"},"description":"","name":"v","type":"custom","source":{"name":"","type":"","pool":"","certificate":"","volume_only":false,"refresh":false},"content_type":"filesystem"}"#,
            None,
        ),
        (
            "lxc storage volume copy p/v p/w",
            "StorageVolumesPost",
            r#"{"config":{"size":"1GiB"},"description":"","name":"w","type":"custom","source":{"name":"v","type":"copy","pool":"p","certificate":"","volume_only":false,"refresh":false},"content_type":"filesystem"}"#,
            None,
        ),
        (
            "lxc storage volume set p v size=2GiB",
            "StorageVolumePut",
            r#"{"config":{"size":"2GiB"},"description":""}"#,
            None,
        ),
        (
            "lxc storage volume restore p v s0 (a nil config map is null)",
            "StorageVolumePut",
            r#"{"config":null,"description":"","restore":"s0"}"#,
            Some(r#"{"description":"","restore":"s0"}"#),
        ),
        (
            "lxc storage volume rename p v v2",
            "StorageVolumePost",
            r#"{"name":"v2","migration":false,"target":null,"volume_only":false}"#,
            None,
        ),
        (
            "lxc storage volume snapshot p v s0",
            "StorageVolumeSnapshotsPost",
            r#"{"name":"s0","expires_at":null}"#,
            None,
        ),
        (
            "lxc storage volume snapshot p v --no-expiry (Go's zero time)",
            "StorageVolumeSnapshotsPost",
            r#"{"name":"","expires_at":"0001-01-01T00:00:00Z"}"#,
            None,
        ),
        (
            "lxc storage volume rename p v/s0 v/s1",
            "StorageVolumeSnapshotPost",
            r#"{"name":"s1"}"#,
            None,
        ),
        (
            "lxc storage volume edit p v/s0",
            "StorageVolumeSnapshotPut",
            r#"{"description":"before the upgrade","expires_at":null}"#,
            None,
        ),
    ];
    for (what, kind, body, again) in cases {
        let value: Value = serde_json::from_str(body).expect("JSON");
        check(what, kind, &value, &[]);
        let got = match *kind {
            "StoragePoolsPost" => reencoded::<StoragePoolsPost>(body),
            "StoragePoolPut" => reencoded::<StoragePoolPut>(body),
            "StorageVolumesPost" => reencoded::<StorageVolumesPost>(body),
            "StorageVolumePut" => reencoded::<StorageVolumePut>(body),
            "StorageVolumePost" => reencoded::<StorageVolumePost>(body),
            "StorageVolumeSnapshotsPost" => reencoded::<StorageVolumeSnapshotsPost>(body),
            "StorageVolumeSnapshotPut" => reencoded::<StorageVolumeSnapshotPut>(body),
            "StorageVolumeSnapshotPost" => reencoded::<StorageVolumeSnapshotPost>(body),
            other => panic!("{what}: no type {other:?}"),
        };
        assert_eq!(got, again.unwrap_or(body), "{what}");
    }
}

/// What a body leaves out, a PATCH keeps: absent and `null` differ only where LXD's decoder
/// makes them differ (a snapshot's `expires_at`, a pointer).
#[test]
fn storage_patches_tell_absent_from_null() {
    let put = |body: &str| rxd_api::decode::<StoragePoolPut>(body.as_bytes()).unwrap();
    let d = put(r#"{"description":"d","name":"p","used_by":[]}"#);
    assert_eq!(d.value.config, None);
    assert_eq!(d.value.description.as_deref(), Some("d"));
    assert_eq!(d.ignored, ["name", "used_by"]);
    assert_eq!(put(r#"{"config":null}"#).value, StoragePoolPut::default());

    let snap = |body: &str| {
        rxd_api::decode::<StorageVolumeSnapshotPut>(body.as_bytes())
            .unwrap()
            .value
    };
    assert_eq!(snap("{}").expires_at, None);
    assert_eq!(snap(r#"{"expires_at":null}"#).expires_at, Some(None));
    assert_eq!(
        snap(r#"{"expires_at":"2030-01-01T00:00:00Z"}"#).expires_at,
        Some(Some("2030-01-01T00:00:00Z".into()))
    );
    assert_eq!(snap(r#"{"description":null}"#).description, None);

    let vol = rxd_api::decode::<StorageVolumesPost>(br#"{"name":"v","source":null}"#).unwrap();
    assert_eq!(vol.value.source, Default::default());
    assert!(vol.ignored.is_empty());
}

/// Storage bodies Go refuses are refused.
#[test]
fn wrong_storage_types_are_refused() {
    for (kind, body) in [
        ("StoragePoolsPost", r#"{"name":"p","config":{"size":4}}"#),
        ("StorageVolumesPost", r#"{"name":"v","source":"copy"}"#),
        ("StorageVolumePost", r#"{"name":"v","migration":"false"}"#),
        (
            "StorageVolumeSnapshotsPost",
            r#"{"name":"s","expires_at":0}"#,
        ),
        ("StorageVolumeSnapshotPut", r#"{"expires_at":1}"#),
    ] {
        let body: Value = serde_json::from_str(body).expect("JSON");
        let result = std::panic::catch_unwind(|| check("refused", kind, &body, &[]));
        assert!(result.is_err(), "{kind} accepted {body}");
    }
}
