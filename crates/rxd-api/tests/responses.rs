//! Every response shape rxd sends survives a Go-style round trip: serialized, then decoded the
//! way LXD's Go clients decode it (unknown fields anywhere, `null` or nothing for a zero value),
//! it comes back equal. Each case also pins the keys the daemon sends today, in order.

use rxd_api::event::{Event, EventLifecycle, EventLifecycleRequestor, EventLogging};
use rxd_api::grant::Grant;
use rxd_api::image::{Image, ImageAlias, ImageAliasesEntry, ImageSource, ImageUploadMetadata};
use rxd_api::instance::{
    Instance, InstanceExecMetadata, InstanceState, InstanceStateCpu, InstanceStateDisk,
    InstanceStateMemory, InstanceStateNetwork, InstanceStateNetworkAddress,
};
use rxd_api::operation::{Operation, TokenMetadata};
use rxd_api::project::Project;
use rxd_api::snapshot::InstanceSnapshot;
use rxd_api::storage::{
    StoragePool, StoragePoolInodes, StoragePoolSpace, StoragePoolState, StorageVolume,
    StorageVolumeSnapshot, StorageVolumeState, StorageVolumeStateUsage,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Debug;

const UNKNOWN: &str = "zz_field_from_a_newer_server";

fn decode<T: DeserializeOwned>(v: &Value) -> (T, Vec<String>) {
    let d = rxd_api::decode::<T>(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}: {v}"));
    (d.value, d.ignored)
}

/// Paths (as serde_ignored prints them) of the objects in `v` that are structs, not maps: an
/// unknown key added to a struct is reported as ignored, one added to a map is data.
fn struct_paths<T: DeserializeOwned>(v: &Value) -> Vec<Vec<String>> {
    fn objects(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                out.push(at.clone());
                for (k, child) in m {
                    at.push(k.clone());
                    objects(child, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    at.push(i.to_string());
                    objects(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    objects(v, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter(|path| {
            let mut probe = v.clone();
            at_mut(&mut probe, path).insert(UNKNOWN.into(), json!({"nested": [1, null]}));
            // A map of strings refuses the probe's object; a map of anything takes it as data.
            rxd_api::decode::<T>(probe.to_string().as_bytes())
                .is_ok_and(|d| d.ignored.contains(&dotted(path, UNKNOWN)))
        })
        .collect()
}

fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Map<String, Value> {
    let mut here = v;
    for k in path {
        here = match here {
            Value::Array(a) => &mut a[k.parse::<usize>().expect("index")],
            other => &mut other[k.as_str()],
        };
    }
    here.as_object_mut().expect("an object")
}

fn dotted(path: &[String], key: &str) -> String {
    path.iter()
        .map(String::as_str)
        .chain([key])
        .collect::<Vec<_>>()
        .join(".")
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// The one check: `value` serializes with exactly `keys` at the top (the daemon's order), and
/// Go-style variants of its JSON decode back to it.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, keys: &[&str]) {
    let v = serde_json::to_value(&value).expect("serializes");
    let name = std::any::type_name::<T>();
    let top: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, keys, "{name}: the keys rxd sends");

    let (plain, ignored) = decode::<T>(&v);
    assert_eq!(plain, value, "{name}: plain round trip");
    assert!(ignored.is_empty(), "{name}: {ignored:?}");

    // Unknown fields in every struct, at every depth, are ignored and reported.
    let structs = struct_paths::<T>(&v);
    assert!(!structs.is_empty());
    let mut noisy = v.clone();
    for path in &structs {
        at_mut(&mut noisy, path).insert(UNKNOWN.into(), json!({"nested": [1, null]}));
    }
    let (decoded, mut ignored) = decode::<T>(&noisy);
    assert_eq!(decoded, value, "{name}: with unknown fields");
    let mut expected: Vec<String> = structs.iter().map(|p| dotted(p, UNKNOWN)).collect();
    ignored.sort();
    expected.sort();
    assert_eq!(ignored, expected, "{name}: reported unknown fields");

    // A zero-valued field may come as `null` or not at all; `null` always means absent. (Absent
    // differs from zero only for an optional field, which then serializes without the key, as
    // a Go pointer left nil does with `omitempty`.)
    for path in &structs {
        let fields: Vec<(String, Value)> = at_mut(&mut v.clone(), path)
            .iter()
            .map(|(k, x)| (k.clone(), x.clone()))
            .collect();
        for (k, _) in fields.into_iter().filter(|(_, x)| is_zero(x)) {
            let field = dotted(path, &k);
            let mut nulled = v.clone();
            at_mut(&mut nulled, path).insert(k.clone(), Value::Null);
            let mut missing = v.clone();
            at_mut(&mut missing, path).remove(&k);
            let (from_null, from_missing) = (decode::<T>(&nulled).0, decode::<T>(&missing).0);
            assert_eq!(from_null, from_missing, "{name}: {field}: null is absent");
            if from_missing != value {
                let again = serde_json::to_value(&from_missing).expect("serializes");
                let left_out = !at_mut(&mut again.clone(), path).contains_key(&k);
                assert!(left_out, "{name}: {field} missing decodes to {again}");
            }
        }
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const INSTANCE_KEYS: &[&str] = &[
    "architecture",
    "config",
    "devices",
    "ephemeral",
    "profiles",
    "stateful",
    "description",
    "created_at",
    "expanded_config",
    "expanded_devices",
    "name",
    "status",
    "status_code",
    "last_used_at",
    "location",
    "type",
    "project",
];

fn instance(status: &str, code: u16) -> Instance {
    let config = map(&[
        ("volatile.base_image", "ab12"),
        ("volatile.idmap.next", "[]"),
        ("security.privileged", "true"),
    ]);
    Instance {
        architecture: "x86_64".into(),
        config: config.clone(),
        devices: BTreeMap::new(),
        ephemeral: false,
        profiles: strings(&["default"]),
        restore: String::new(),
        stateful: false,
        description: "a web server".into(),
        created_at: "2024-05-01T10:00:00Z".into(),
        expanded_config: config,
        expanded_devices: BTreeMap::new(),
        name: "c1".into(),
        status: status.into(),
        status_code: code,
        last_used_at: "0001-01-01T00:00:00Z".into(),
        location: "none".into(),
        kind: "container".into(),
        project: "default".into(),
        backups: None,
        state: None,
        snapshots: None,
    }
}

fn state(pid: i64) -> InstanceState {
    InstanceState {
        status: "Running".into(),
        status_code: 103,
        disk: BTreeMap::new(),
        memory: InstanceStateMemory {
            usage: 4 << 20,
            usage_peak: 6 << 20,
            swap_usage: 0,
            swap_usage_peak: 0,
        },
        network: None,
        pid,
        processes: 3,
        cpu: InstanceStateCpu { usage: 123_456_789 },
    }
}

fn snapshot(name: &str, expires_at: &str) -> InstanceSnapshot {
    InstanceSnapshot {
        expires_at: expires_at.into(),
        architecture: "x86_64".into(),
        config: map(&[("volatile.last_state.idmap", "[]")]),
        created_at: "2024-05-01T10:00:00Z".into(),
        devices: BTreeMap::new(),
        ephemeral: false,
        expanded_config: map(&[("volatile.last_state.idmap", "[]")]),
        expanded_devices: BTreeMap::new(),
        last_used_at: "0001-01-01T00:00:00Z".into(),
        name: name.into(),
        profiles: strings(&["default"]),
        stateful: false,
        size: -1,
        description: String::new(),
    }
}

const STATE_KEYS: &[&str] = &[
    "status",
    "status_code",
    "disk",
    "memory",
    "network",
    "pid",
    "processes",
    "cpu",
];

const SNAPSHOT_KEYS: &[&str] = &[
    "expires_at",
    "architecture",
    "config",
    "created_at",
    "devices",
    "ephemeral",
    "expanded_config",
    "expanded_devices",
    "last_used_at",
    "name",
    "profiles",
    "stateful",
    "size",
    "description",
];

const OPERATION_KEYS: &[&str] = &[
    "id",
    "class",
    "description",
    "created_at",
    "updated_at",
    "status",
    "status_code",
    "resources",
    "metadata",
    "may_cancel",
    "err",
    "location",
];

fn operation(class: &str, resources: Option<&[(&str, &[&str])]>, metadata: Value) -> Operation {
    Operation {
        id: "5f1b8a7e-3c2d-4b6a-9e0f-1a2b3c4d5e6f".into(),
        class: class.into(),
        description: "Executing command".into(),
        created_at: "2024-05-01T10:00:00Z".into(),
        updated_at: "2024-05-01T10:00:01Z".into(),
        status: "Running".into(),
        status_code: 103,
        resources: resources.map(|r| {
            r.iter()
                .map(|(k, urls)| (k.to_string(), strings(urls)))
                .collect()
        }),
        metadata,
        may_cancel: false,
        err: String::new(),
        location: "none".into(),
    }
}

#[test]
fn instances() {
    check(instance("Stopped", 102), INSTANCE_KEYS);
    let mut other = instance("Frozen", 110);
    other.project = "team-a".into();
    other.config.clear();
    other.expanded_config.clear();
    other.ephemeral = true;
    other.description.clear();
    check(other, INSTANCE_KEYS);
    let full_keys: Vec<&str> = INSTANCE_KEYS
        .iter()
        .copied()
        .chain(["backups", "state", "snapshots"])
        .collect();
    check(
        Instance {
            backups: Some(vec![]),
            state: Some(state(4242)),
            snapshots: Some(vec![snapshot("snap0", "0001-01-01T00:00:00Z")]),
            ..instance("Running", 103)
        },
        &full_keys,
    );
    let mut stopped = state(0);
    stopped.status = "Stopped".into();
    check(
        Instance {
            backups: Some(vec![]),
            state: Some(stopped),
            snapshots: Some(vec![]),
            ..instance("Stopped", 102)
        },
        &full_keys,
    );
}

#[test]
fn instance_states() {
    check(state(4242), STATE_KEYS);
    let mut stopped = state(0);
    stopped.status = "Stopped".into();
    stopped.status_code = 102;
    stopped.memory = InstanceStateMemory::default();
    stopped.processes = 0;
    stopped.cpu = InstanceStateCpu::default();
    check(stopped, STATE_KEYS);
    // What LXD sends and rxd does not yet: disks and interfaces.
    let mut lxd = state(1);
    lxd.disk
        .insert("root".into(), InstanceStateDisk { usage: 1 << 30 });
    let mut eth0 = InstanceStateNetwork {
        hwaddr: "00:16:3e:00:00:01".into(),
        host_name: "veth1234".into(),
        mtu: 1500,
        state: "up".into(),
        kind: "broadcast".into(),
        ..Default::default()
    };
    eth0.addresses.push(InstanceStateNetworkAddress {
        family: "inet".into(),
        address: "10.0.0.2".into(),
        netmask: "24".into(),
        scope: "global".into(),
    });
    eth0.counters.bytes_received = 1000;
    lxd.network = Some([("eth0".to_string(), eth0)].into_iter().collect());
    check(lxd, STATE_KEYS);
}

#[test]
fn snapshots() {
    check(snapshot("snap0", "0001-01-01T00:00:00Z"), SNAPSHOT_KEYS);
    check(
        snapshot("before-upgrade", "2024-06-01T00:00:00Z"),
        SNAPSHOT_KEYS,
    );
}

#[test]
fn operations() {
    let instance_urls: &[(&str, &[&str])] = &[
        ("containers", &["/1.0/containers/c1"]),
        ("instances", &["/1.0/instances/c1"]),
    ];
    check(
        operation("task", Some(instance_urls), Value::Null),
        OPERATION_KEYS,
    );
    let mut failed = operation(
        "task",
        Some(&[("images", &["/1.0/images/ab"])]),
        Value::Null,
    );
    failed.status = "Failure".into();
    failed.status_code = 400;
    failed.err = "Image not found".into();
    check(failed, OPERATION_KEYS);
    let exec_started = InstanceExecMetadata {
        command: strings(&["sh", "-c", "true"]),
        interactive: true,
        fds: map(&[("0", &"ab".repeat(32)), ("control", &"cd".repeat(32))]),
        ..Default::default()
    };
    check(exec_started.clone(), &["command", "interactive", "fds"]);
    check(
        operation(
            "websocket",
            Some(instance_urls),
            serde_json::to_value(&exec_started).unwrap(),
        ),
        OPERATION_KEYS,
    );
    let exec_done = InstanceExecMetadata {
        command: strings(&["ls"]),
        interactive: false,
        fds: BTreeMap::new(),
        return_code: Some(0),
        output: Some(map(&[
            ("1", "/1.0/instances/c1/logs/exec_x.stdout"),
            ("2", "/1.0/instances/c1/logs/exec_x.stderr"),
        ])),
    };
    check(exec_done, &["command", "interactive", "return", "output"]);
    check(
        InstanceExecMetadata {
            command: strings(&["false"]),
            return_code: Some(1),
            ..Default::default()
        },
        &["command", "interactive", "return"],
    );
    check(
        ImageUploadMetadata {
            fingerprint: "ab".repeat(32),
            size: 1 << 20,
        },
        &["fingerprint", "size"],
    );
    let token = TokenMetadata {
        addresses: strings(&["127.0.0.1:8443"]),
        fingerprint: "ef".repeat(32),
        request: rxd_api::certificate::CertificatesPost {
            name: "laptop".into(),
            kind: "client".into(),
            restricted: true,
            projects: strings(&["team-a"]),
            token: true,
            ..Default::default()
        },
        secret: String::new(),
        expires_at: "2024-05-02T10:00:00Z".into(),
    };
    check(
        token.clone(),
        &["addresses", "fingerprint", "request", "secret", "expiresAt"],
    );
    let mut op = operation("token", None, serde_json::to_value(&token).unwrap());
    op.may_cancel = true;
    check(op, OPERATION_KEYS);
}

#[test]
fn events() {
    let keys = &["type", "timestamp", "metadata", "location", "project"];
    let lifecycle = EventLifecycle {
        action: "instance-started".into(),
        source: "/1.0/instances/c1".into(),
        context: Map::new(),
        requestor: Some(EventLifecycleRequestor {
            username: "root".into(),
            protocol: "unix".into(),
            address: "@".into(),
        }),
    };
    check(
        lifecycle.clone(),
        &["action", "source", "context", "requestor"],
    );
    check(
        Event {
            kind: "lifecycle".into(),
            timestamp: "2024-05-01T10:00:00.123456789Z".into(),
            metadata: serde_json::to_value(&lifecycle).unwrap(),
            location: "none".into(),
            project: "default".into(),
        },
        keys,
    );
    let logging = EventLogging {
        message: "certificate added".into(),
        level: "info".into(),
        context: map(&[
            ("event", "authz_admin"),
            ("identity", "root"),
            ("path", "/1.0"),
        ]),
    };
    check(logging.clone(), &["message", "level", "context"]);
    check(
        Event {
            kind: "logging".into(),
            timestamp: "2024-05-01T10:00:00Z".into(),
            metadata: serde_json::to_value(&logging).unwrap(),
            location: "none".into(),
            project: String::new(),
        },
        keys,
    );
    check(
        Event {
            kind: "operation".into(),
            timestamp: "2024-05-01T10:00:00Z".into(),
            metadata: serde_json::to_value(operation("task", None, Value::Null)).unwrap(),
            location: "none".into(),
            project: "team-a".into(),
        },
        keys,
    );
}

#[test]
fn images() {
    let keys = &[
        "auto_update",
        "properties",
        "public",
        "expires_at",
        "profiles",
        "aliases",
        "architecture",
        "cached",
        "filename",
        "fingerprint",
        "size",
        "type",
        "created_at",
        "last_used_at",
        "uploaded_at",
        "project",
    ];
    let image = Image {
        auto_update: false,
        properties: map(&[("description", "busybox"), ("os", "busybox")]),
        public: true,
        expires_at: "0001-01-01T00:00:00Z".into(),
        profiles: strings(&["default"]),
        aliases: vec![ImageAlias {
            name: "bb".into(),
            description: String::new(),
        }],
        architecture: "x86_64".into(),
        cached: false,
        filename: "busybox.tar.gz".into(),
        fingerprint: "ab".repeat(32),
        size: 1_234_567,
        update_source: None,
        kind: "container".into(),
        created_at: "2024-05-01T10:00:00Z".into(),
        last_used_at: "0001-01-01T00:00:00Z".into(),
        uploaded_at: "2024-05-01T10:00:00Z".into(),
        project: "default".into(),
    };
    check(image.clone(), keys);
    let mut bare = image.clone();
    bare.aliases.clear();
    bare.properties.clear();
    bare.public = false;
    bare.filename.clear();
    check(bare, keys);
    // LXD's cached images say where they came from; rxd's never do.
    let mut cached = image;
    cached.update_source = Some(ImageSource {
        alias: "debian/12".into(),
        protocol: "simplestreams".into(),
        server: "https://images.example".into(),
        ..Default::default()
    });
    let with_source: Vec<&str> = keys[..11]
        .iter()
        .copied()
        .chain(["update_source"])
        .chain(keys[11..].iter().copied())
        .collect();
    check(cached, &with_source);
    check(
        ImageAliasesEntry {
            description: "the test image".into(),
            target: "ab".repeat(32),
            name: "bb".into(),
            kind: "container".into(),
        },
        &["description", "target", "name", "type"],
    );
}

#[test]
fn projects_and_grants() {
    let keys = &["config", "description", "name", "used_by"];
    check(
        Project {
            config: map(&[("features.images", "true"), ("restricted", "true")]),
            description: "team A".into(),
            name: "team-a".into(),
            used_by: strings(&[
                "/1.0/instances/c1?project=team-a",
                "/1.0/images/ab?project=team-a",
            ]),
        },
        keys,
    );
    check(
        Project {
            name: "default".into(),
            ..Default::default()
        },
        keys,
    );
    let keys = &[
        "id",
        "identity_type",
        "identity",
        "role",
        "scope",
        "project",
    ];
    check(
        Grant {
            id: 7,
            identity_type: "certificate".into(),
            identity: "ab".repeat(32),
            role: "operator".into(),
            scope: "project".into(),
            project: "team-a".into(),
        },
        keys,
    );
    check(
        Grant {
            id: 8,
            identity_type: "candid-group".into(),
            identity: "admins".into(),
            role: "admin".into(),
            scope: "server".into(),
            project: String::new(),
        },
        keys,
    );
}

#[test]
fn storage_pools_and_volumes() {
    let keys = &[
        "config",
        "description",
        "name",
        "driver",
        "used_by",
        "status",
        "locations",
    ];
    check(
        StoragePool {
            config: map(&[("source", "/var/lib/rxd/storage-pools/default")]),
            description: "the default pool".into(),
            name: "default".into(),
            driver: "dir".into(),
            used_by: strings(&[
                "/1.0/instances/c1",
                "/1.0/profiles/default",
                "/1.0/storage-pools/default/volumes/custom/data?project=team-a",
            ]),
            status: "Created".into(),
            locations: strings(&["none"]),
        },
        keys,
    );
    check(
        StoragePool {
            name: "b".into(),
            driver: "btrfs".into(),
            ..Default::default()
        },
        keys,
    );

    check(
        StoragePoolState {
            space: StoragePoolSpace {
                used: 343_537_419_776,
                total: 420_100_937_728,
            },
            inodes: StoragePoolInodes {
                used: 23_937_695,
                total: 30_709_993_797,
            },
        },
        &["space", "inodes"],
    );
    // Go leaves out a zero `space.used` (omitempty) but never a struct.
    assert_eq!(
        serde_json::to_value(StoragePoolState::default()).unwrap(),
        json!({"space": {"total": 0}, "inodes": {"used": 0, "total": 0}})
    );

    let keys = &[
        "config",
        "description",
        "name",
        "type",
        "used_by",
        "location",
        "content_type",
        "project",
        "created_at",
    ];
    check(
        StorageVolume {
            config: map(&[("size", "1GiB"), ("volatile.idmap.last", "[]")]),
            description: "shared data".into(),
            name: "data".into(),
            kind: "custom".into(),
            used_by: strings(&["/1.0/instances/c1"]),
            location: "none".into(),
            content_type: "filesystem".into(),
            project: "default".into(),
            created_at: "2024-05-01T10:00:00Z".into(),
        },
        keys,
    );
    check(
        StorageVolume {
            name: "data/snap0".into(),
            kind: "custom".into(),
            created_at: "0001-01-01T00:00:00Z".into(),
            ..Default::default()
        },
        keys,
    );

    let keys = &[
        "description",
        "expires_at",
        "name",
        "config",
        "content_type",
        "created_at",
    ];
    let snap = StorageVolumeSnapshot {
        description: String::new(),
        expires_at: Some("2024-06-01T10:00:00Z".into()),
        name: "snap0".into(),
        config: map(&[("size", "1GiB")]),
        content_type: "filesystem".into(),
        created_at: "2024-05-01T10:00:00Z".into(),
    };
    check(snap.clone(), keys);
    let never = StorageVolumeSnapshot {
        expires_at: None,
        ..snap
    };
    assert_eq!(
        serde_json::to_value(&never).unwrap()["expires_at"],
        Value::Null
    );
    check(never, keys);

    check(
        StorageVolumeState {
            usage: Some(StorageVolumeStateUsage {
                used: 1_693_552_640,
                total: 5_189_222_192,
            }),
        },
        &["usage"],
    );
    check(StorageVolumeState { usage: None }, &["usage"]);
}
