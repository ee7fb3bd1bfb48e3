//! `rxc storage ...`: LXD's storage pools (`/1.0/storage-pools`) and their volumes as `lxc
//! storage` 5.0.2 handles them: the same requests (a change is a read and an ETag-guarded write
//! back), the same tables and texts, and custom volumes attached to instances and profiles as
//! disk devices.

use crate::cli::{Format, StorageCmd, StorageVolumeCmd};
use crate::connect::{open, remote_name, split_target, Conn};
use crate::device::Owner;
use crate::list::{iec, row_cmp};
use crate::objects::fetch;
use crate::output::print_rows;
use crate::project::escape;
use anyhow::{anyhow, bail};
use rxd_api::instance::Devices;
use rxd_api::operation::Operation;
use rxd_api::storage::{
    StoragePool, StoragePoolPut, StoragePoolState, StoragePoolsPost, StorageVolume,
    StorageVolumePost, StorageVolumePut, StorageVolumeSnapshot, StorageVolumeSnapshotPost,
    StorageVolumeSnapshotPut, StorageVolumeSnapshotsPost, StorageVolumeSource, StorageVolumeState,
    StorageVolumesPost,
};
use rxd_api::ResponseType;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// What `lxc storage edit` shows above a pool's YAML.
const POOL_EDIT_HELP: &str = "### This is a YAML representation of a storage pool.
### Any line starting with a '#' will be ignored.
###
### A storage pool consists of a set of configuration items.
###
### An example would look like:
### name: default
### driver: zfs
### used_by: []
### config:
###   size: \"61203283968\"
###   source: /home/chb/mnt/lxd_test/default.img
###   zfs.pool_name: default";

/// What `lxc storage volume edit` shows above a volume's YAML.
const VOLUME_EDIT_HELP: &str = "### This is a YAML representation of a storage volume.
### Any line starting with a '# will be ignored.
###
### A storage volume consists of a set of configuration items.
###
### name: vol1
### type: custom
### used_by: []
### config:
###   size: \"61203283968\"";

/// The volume types a `TYPE/` prefix may name.
const VOLUME_TYPES: [&str; 4] = ["custom", "image", "container", "virtual-machine"];

/// Go's zero time: a snapshot that never expires (`--no-expiry`).
const NEVER: &str = "0001-01-01T00:00:00Z";

fn pool_path(pool: &str) -> String {
    format!("/1.0/storage-pools/{}", escape(pool))
}

fn volume_path(pool: &str, kind: &str, name: &str) -> String {
    format!(
        "{}/volumes/{}/{}",
        pool_path(pool),
        escape(kind),
        escape(name)
    )
}

fn snapshot_path(pool: &str, kind: &str, volume: &str, snapshot: &str) -> String {
    format!(
        "{}/snapshots/{}",
        volume_path(pool, kind, volume),
        escape(snapshot)
    )
}

/// `[REMOTE:]POOL` opened: the connection and the pool's name.
fn pool_target(conf: &ConfigDir, spec: &str) -> anyhow::Result<(Conn, String)> {
    let (remote, pool) = split_target(conf, spec);
    if pool.is_empty() {
        bail!("Missing pool name");
    }
    Ok((open(conf, &remote)?, pool))
}

/// `[REMOTE:]POOL/VOLUME[/SNAPSHOT]` as the connection, the pool and the rest.
fn pool_volume(conf: &ConfigDir, spec: &str) -> anyhow::Result<(Conn, String, String)> {
    let (remote, path) = split_target(conf, spec);
    let Some((pool, volume)) = path
        .split_once('/')
        .filter(|(p, v)| !p.is_empty() && !v.is_empty())
    else {
        bail!("Invalid storage volume {spec:?}: expected POOL/VOLUME");
    };
    Ok((open(conf, &remote)?, pool.to_owned(), volume.to_owned()))
}

/// `[TYPE/]NAME` as the volume's name and type, `default` when no known type prefixes it (a
/// `NAME/SNAPSHOT` keeps its slash).
fn parse_volume(default: &str, arg: &str) -> (String, String) {
    match arg.split_once('/') {
        Some((kind, name)) if VOLUME_TYPES.contains(&kind) => (name.to_owned(), kind.to_owned()),
        _ => (arg.to_owned(), default.to_owned()),
    }
}

/// A volume name as the volume and, for `VOLUME/SNAPSHOT`, the snapshot.
fn split_snapshot(name: &str) -> anyhow::Result<(&str, Option<&str>)> {
    let mut parts = name.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (_, _, Some(_)) => bail!("Invalid snapshot name"),
        (Some(volume), Some(snapshot), None) => Ok((volume, Some(snapshot))),
        _ => Ok((name, None)),
    }
}

/// `KEY=VALUE...` of `set`, or the older `KEY VALUE` (lxc's `getConfig`).
fn set_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    if let [k, v] = args {
        if !k.contains('=') {
            return Ok(BTreeMap::from([(k.clone(), v.clone())]));
        }
    }
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("Invalid key=value configuration: {arg}"))
        })
        .collect()
}

/// `KEY=VALUE...` of `create` (with lxc's message: it prints the split argument as a Go list).
fn create_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("Bad key=value pair: [{arg}]"))
        })
        .collect()
}

/// The headers and rows of `lxc storage list` (SOURCE only outside a cluster), in its row order.
fn pool_table(pools: &[StoragePool], clustered: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut headers = vec!["NAME", "DRIVER"];
    if !clustered {
        headers.push("SOURCE");
    }
    headers.extend(["DESCRIPTION", "USED BY", "STATE"]);
    let mut rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            let mut row = vec![p.name.clone(), p.driver.clone()];
            if !clustered {
                row.push(p.config.get("source").cloned().unwrap_or_default());
            }
            row.extend([
                p.description.clone(),
                p.used_by.len().to_string(),
                p.status.to_uppercase(),
            ]);
            row
        })
        .collect();
    rows.sort_by(|a, b| row_cmp(a, b));
    (headers, rows)
}

/// A pool's users grouped as `lxc storage info` 5.0.2 groups them: by the URL's first path
/// segment (`instances`, `profiles`, `images`), volumes under `volumes`, each named with its
/// project and cluster member when the URL has them.
fn used_by_groups(used_by: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for url in used_by {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let Some(rest) = path.strip_prefix("/1.0/") else {
            continue;
        };
        let fields: Vec<&str> = rest.split('/').collect();
        let (kind, name) = match fields.as_slice() {
            ["storage-pools", _, _, _, volume, ..] => ("volumes", *volume),
            [kind, name, ..] if *kind != "storage-pools" => (*kind, *name),
            // lxc indexes past the end here and crashes; skipped.
            _ => continue,
        };
        let param = |key: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_owned())
                .filter(|v| !v.is_empty())
        };
        let info = match (param("project"), param("target")) {
            (Some(p), Some(t)) => format!(" (project {p:?}, target {t:?})"),
            (Some(p), None) => format!(" (project {p:?})"),
            (None, Some(t)) => format!(" (target {t:?})"),
            (None, None) => String::new(),
        };
        groups
            .entry(kind.to_owned())
            .or_default()
            .push(format!("{name}{info}"));
    }
    groups
}

/// Whether Go's `gopkg.in/yaml.v2` reads `s`, written plain, as something other than a string
/// (a bool, null, a number, a timestamp): then it writes the string double-quoted.
fn go_yaml_reads_as_non_string(s: &str) -> bool {
    const WORDS: [&str; 40] = [
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        return false;
    }
    let number = regex_lite::Regex::new(concat!(
        r"^[-+]?(0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9_]+)$|",
        r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|",
        r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$|",
        r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ]|$)",
    ))
    .expect("a valid regex");
    number.is_match(s)
}

/// A string as yaml.v2 writes it in a map: double-quoted when it would read as another type,
/// else plain or single-quoted as any YAML writer does.
fn yaml_string(s: &str) -> String {
    if go_yaml_reads_as_non_string(s) {
        return format!("{:?}", s);
    }
    match serde_norway::to_string(s) {
        Ok(text) => text.trim_end_matches('\n').to_owned(),
        Err(_) => format!("{s:?}"),
    }
}

/// `lxc storage info`'s text: two YAML maps (`info`, `used by`) as yaml.v2 prints them,
/// keys sorted.
fn info_text(pool: &StoragePool, res: &StoragePoolState, bytes: bool) -> String {
    let size = |n: u64| {
        if bytes {
            n.to_string()
        } else {
            iec(i64::try_from(n).unwrap_or(i64::MAX))
        }
    };
    let info = BTreeMap::from([
        ("description", pool.description.clone()),
        ("driver", pool.driver.clone()),
        ("name", pool.name.clone()),
        ("space used", size(res.space.used)),
        ("total space", size(res.space.total)),
    ]);
    let mut out = String::from("info:\n");
    for (k, v) in info {
        out += &format!("  {k}: {}\n", yaml_string(&v));
    }
    let groups = used_by_groups(&pool.used_by);
    if groups.is_empty() {
        out += "used by: {}\n";
        return out;
    }
    out += "used by:\n";
    for (kind, names) in groups {
        out += &format!("  {}:\n", yaml_string(&kind));
        for n in names {
            out += &format!("  - {}\n", yaml_string(&n));
        }
    }
    out
}

/// A column of `lxc storage volume list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumeColumn {
    Type,
    Name,
    Description,
    ContentType,
    UsedBy,
    Usage,
    Location,
    Project,
}

impl VolumeColumn {
    fn header(self) -> &'static str {
        match self {
            VolumeColumn::Type => "TYPE",
            VolumeColumn::Name => "NAME",
            VolumeColumn::Description => "DESCRIPTION",
            VolumeColumn::ContentType => "CONTENT-TYPE",
            VolumeColumn::UsedBy => "USED BY",
            VolumeColumn::Usage => "USAGE",
            VolumeColumn::Location => "LOCATION",
            VolumeColumn::Project => "PROJECT",
        }
    }

    /// The cell for `vol`; `state` is read only for [`VolumeColumn::Usage`].
    fn cell(self, vol: &StorageVolume, state: Option<&StorageVolumeState>) -> String {
        match self {
            VolumeColumn::Type if vol.name.contains('/') => format!("{} (snapshot)", vol.kind),
            VolumeColumn::Type => vol.kind.clone(),
            VolumeColumn::Name => vol.name.clone(),
            VolumeColumn::Description => vol.description.clone(),
            VolumeColumn::ContentType if vol.content_type.is_empty() => "filesystem".into(),
            VolumeColumn::ContentType => vol.content_type.clone(),
            VolumeColumn::UsedBy => vol.used_by.len().to_string(),
            VolumeColumn::Usage => state
                .and_then(|s| s.usage.as_ref())
                .map(|u| iec(i64::try_from(u.used).unwrap_or(i64::MAX)))
                .unwrap_or_default(),
            VolumeColumn::Location => vol.location.clone(),
            VolumeColumn::Project => vol.project.clone(),
        }
    }
}

/// The default `-c` of `lxc storage volume list`.
const DEFAULT_VOLUME_COLUMNS: &str = "etndcuL";

/// `-c` as `lxc storage volume list` reads it: `L` only on a cluster (dropped from the default
/// elsewhere), `e` only with `--all-projects` (dropped otherwise), `,` between groups.
fn volume_columns(
    spec: &str,
    clustered: bool,
    all_projects: bool,
) -> anyhow::Result<Vec<VolumeColumn>> {
    let mut spec = spec.to_owned();
    if !clustered {
        if spec != DEFAULT_VOLUME_COLUMNS && spec.contains('L') {
            bail!("Can't specify column L when not clustered");
        }
        spec = spec.replace('L', "");
    }
    if !all_projects {
        spec = spec.replace('e', "");
    }
    let mut columns = Vec::new();
    for entry in spec.split(',') {
        if entry.is_empty() {
            bail!("Empty column entry (redundant, leading or trailing command) in '{spec}'");
        }
        for c in entry.chars() {
            columns.push(match c {
                't' => VolumeColumn::Type,
                'n' => VolumeColumn::Name,
                'd' => VolumeColumn::Description,
                'c' => VolumeColumn::ContentType,
                'u' => VolumeColumn::UsedBy,
                'U' => VolumeColumn::Usage,
                'L' => VolumeColumn::Location,
                'e' => VolumeColumn::Project,
                _ => bail!("Unknown column shorthand char '{c}' in '{entry}'"),
            });
        }
    }
    Ok(columns)
}

/// lxc's `ByNameAndType` on the first two cells (whatever the columns): by the type's first word
/// so a snapshot stays by its volume, then by name, empty names last.
fn volume_row_cmp(a: &[String], b: &[String]) -> Ordering {
    let first_word =
        |r: &[String]| -> String { r[0].split(' ').next().unwrap_or_default().to_owned() };
    if first_word(a) != first_word(b) {
        return row_cmp(&a[..1], &b[..1]);
    }
    row_cmp(&a[1..2], &b[1..2])
}

/// The rows of `lxc storage volume list` for `columns`, sorted as lxc sorts them.
fn volume_rows(
    volumes: &[StorageVolume],
    states: &[Option<StorageVolumeState>],
    columns: &[VolumeColumn],
) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let state = states.get(i).and_then(Option::as_ref);
            columns.iter().map(|c| c.cell(v, state)).collect()
        })
        .collect();
    if columns.len() >= 2 {
        rows.sort_by(|a, b| volume_row_cmp(a, b));
    }
    rows
}

/// lxc's `parseFilters`: `KEY=VALUE` filters as the API's `KEY eq VALUE and ...`; other words
/// are dropped.
fn filter_expression(filters: &[String]) -> String {
    filters
        .iter()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| format!("{k} eq {v}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// `GET .../volumes` with lxc's query: `all-projects`, the filter when there is one, recursion.
fn volumes_query(pool: &str, filters: &[String], all_projects: bool) -> String {
    let mut query = Vec::new();
    if all_projects {
        query.push("all-projects=true".to_owned());
    }
    let filter = filter_expression(filters);
    if !filter.is_empty() {
        query.push(format!("filter={}", rxd_client::query_escape(&filter)));
    }
    query.push("recursion=1".into());
    format!("{}/volumes?{}", pool_path(pool), query.join("&"))
}

/// `attach`'s optional arguments as the device name and the path: one more argument is the
/// path, two are the device and the path; the device is named as the volume was given.
fn attach_names(volume: &str, first: Option<String>, second: Option<String>) -> (String, String) {
    match (first, second) {
        (Some(device), Some(path)) => (device, path),
        (Some(path), None) => (volume.to_owned(), path),
        _ => (volume.to_owned(), String::new()),
    }
}

/// The disk device of a pool's custom volume; `path` left out for a profile's block volume.
fn disk(pool: &str, source: &str, path: Option<String>) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([
        ("type".to_owned(), "disk".to_owned()),
        ("pool".to_owned(), pool.to_owned()),
        ("source".to_owned(), source.to_owned()),
    ]);
    if let Some(p) = path {
        d.insert("path".into(), p);
    }
    d
}

/// The device `detach` removes: `device` if given (it must exist), else the one disk of
/// `pool` whose source is `volume` as given.
fn detached_device(
    devices: &Devices,
    pool: &str,
    volume: &str,
    device: Option<String>,
) -> anyhow::Result<String> {
    let name = match device {
        Some(d) => d,
        None => {
            let is = |d: &BTreeMap<String, String>, k: &str, v: &str| {
                d.get(k).map(String::as_str) == Some(v)
            };
            let mut matching = devices.iter().filter(|(_, d)| {
                is(d, "type", "disk") && is(d, "pool", pool) && is(d, "source", volume)
            });
            match (matching.next(), matching.next()) {
                (Some((name, _)), None) => name.clone(),
                (Some(_), Some(_)) => {
                    bail!("More than one device matches, specify the device name")
                }
                (None, _) => bail!("No device found for this storage volume"),
            }
        }
    };
    if !devices.contains_key(&name) {
        bail!("The specified device doesn't exist");
    }
    Ok(name)
}

/// What `lxc storage edit` sends: both writable fields, what the YAML left out empty.
fn pool_writable(new: StoragePoolPut) -> StoragePoolPut {
    StoragePoolPut {
        config: Some(new.config.unwrap_or_default()),
        description: Some(new.description.unwrap_or_default()),
    }
}

/// What `lxc storage volume edit` sends for a volume.
fn volume_writable(new: StorageVolumePut) -> StorageVolumePut {
    StorageVolumePut {
        config: Some(new.config.unwrap_or_default()),
        description: Some(new.description.unwrap_or_default()),
        restore: new.restore,
    }
}

/// What `lxc storage volume edit` sends for a snapshot: an expiry the YAML left out is `null`,
/// never expires.
fn snapshot_writable(new: StorageVolumeSnapshotPut) -> StorageVolumeSnapshotPut {
    StorageVolumeSnapshotPut {
        description: Some(new.description.unwrap_or_default()),
        expires_at: Some(new.expires_at.flatten()),
    }
}

/// Send a request, waiting for the operation when the server answers with one.
async fn send(
    conn: &Conn,
    method: Method,
    path: &str,
    body: Option<&impl serde::Serialize>,
) -> anyhow::Result<()> {
    let body = body.map(serde_json::to_value).transpose()?;
    let reply = conn
        .client
        .request(method, path, body.as_ref())
        .await
        .map_err(|e| conn.explain(e))?;
    let metadata = reply.metadata().map_err(|e| anyhow!(e))?;
    if reply
        .envelope()
        .is_ok_and(|e| e.kind == ResponseType::Async)
    {
        let op: Operation = crate::connect::decode(metadata)?;
        conn.wait_operation(&op.id).await?;
    }
    Ok(())
}

/// Whether the server is a cluster (SOURCE and LOCATION columns depend on it).
async fn clustered(conn: &Conn) -> anyhow::Result<bool> {
    let info = conn.call(Method::GET, "/1.0", None).await?;
    Ok(info["environment"]["server_clustered"] == true)
}

/// Read a pool, let `change` edit its config, write it back under its ETag.
async fn modify_pool(
    conf: &ConfigDir,
    spec: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let (conn, pool) = pool_target(conf, spec)?;
    let (mut p, etag) = fetch::<StoragePool>(&conn, &pool_path(&pool)).await?;
    change(&mut p.config);
    let body = StoragePoolPut::from_pool(&p);
    crate::edit::put(&conn, &pool_path(&pool), &body, etag.as_deref()).await
}

/// Read a volume (not a snapshot: those are read-only), let `change` edit its config, write it
/// back under its ETag.
async fn modify_volume(
    conf: &ConfigDir,
    spec: &str,
    volume: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let (conn, pool) = pool_target(conf, spec)?;
    let (name, kind) = parse_volume("custom", volume);
    if split_snapshot(&name)?.1.is_some() {
        bail!("Snapshots are read-only and can't have their configuration changed");
    }
    let path = volume_path(&pool, &kind, &name);
    let (mut v, etag) = fetch::<StorageVolume>(&conn, &path).await?;
    change(&mut v.config);
    let body = StorageVolumePut::from_volume(&v);
    crate::edit::put(&conn, &path, &body, etag.as_deref()).await
}

pub async fn run(conf: &ConfigDir, cmd: StorageCmd) -> anyhow::Result<()> {
    match cmd {
        StorageCmd::Create {
            pool,
            driver,
            config,
            description,
        } => {
            let config = create_args(&config)?;
            let (conn, name) = pool_target(conf, &pool)?;
            let body = StoragePoolsPost {
                config,
                description,
                name: name.clone(),
                driver,
            };
            send(&conn, Method::POST, "/1.0/storage-pools", Some(&body)).await?;
            outln!("Storage pool {name} created")?;
            Ok(())
        }
        StorageCmd::Delete { pool } => {
            let (conn, name) = pool_target(conf, &pool)?;
            send(&conn, Method::DELETE, &pool_path(&name), None::<&Value>).await?;
            outln!("Storage pool {name} deleted")?;
            Ok(())
        }
        StorageCmd::Edit { pool } => {
            let (conn, name) = pool_target(conf, &pool)?;
            let p = pool_path(&name);
            // From a terminal the editor starts on the pool as it is, and the write is guarded
            // by its ETag; YAML on standard input is sent as it is, as lxc does.
            let (current, etag) = if std::io::stdin().is_terminal() {
                let (pool, etag) = fetch::<StoragePool>(&conn, &p).await?;
                (serde_norway::to_string(&pool)?, etag)
            } else {
                (String::new(), None)
            };
            let (conn, p, etag) = (&conn, &p, etag.as_deref());
            crate::edit::edit(
                POOL_EDIT_HELP,
                &current,
                |new: StoragePoolPut, interactive| async move {
                    let body = pool_writable(new);
                    crate::edit::put(conn, p, &body, etag.filter(|_| interactive)).await
                },
            )
            .await
        }
        StorageCmd::Get { pool, key } => {
            let (conn, name) = pool_target(conf, &pool)?;
            let (p, _) = fetch::<StoragePool>(&conn, &pool_path(&name)).await?;
            // As lxc: a key that is not set prints nothing at all.
            if let Some(v) = p.config.get(&key) {
                outln!("{v}")?;
            }
            Ok(())
        }
        StorageCmd::Info { pool, bytes } => {
            let (conn, name) = pool_target(conf, &pool)?;
            let (p, _) = fetch::<StoragePool>(&conn, &pool_path(&name)).await?;
            let res: StoragePoolState = conn
                .get_as(&format!("{}/resources", pool_path(&name)))
                .await?;
            out!("{}", info_text(&p, &res, bytes))?;
            Ok(())
        }
        StorageCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let pools: Vec<StoragePool> = conn.get_as("/1.0/storage-pools?recursion=1").await?;
            // Only the table shows what a cluster changes; asking costs a request.
            let clustered = match format.format {
                Format::Table | Format::Compact | Format::Csv => clustered(&conn).await?,
                Format::Json | Format::Yaml => false,
            };
            let (headers, rows) = pool_table(&pools, clustered);
            print_rows(format.format, &headers, &rows, &pools)
        }
        StorageCmd::Set { pool, args } => {
            let set = set_args(&args)?;
            modify_pool(conf, &pool, |config| config.extend(set)).await
        }
        StorageCmd::Show { pool, resources } => {
            let (conn, name) = pool_target(conf, &pool)?;
            if resources {
                let res: StoragePoolState = conn
                    .get_as(&format!("{}/resources", pool_path(&name)))
                    .await?;
                out!("{}", serde_norway::to_string(&res)?)?;
                return Ok(());
            }
            let (mut p, _) = fetch::<StoragePool>(&conn, &pool_path(&name)).await?;
            p.used_by.sort();
            out!("{}", serde_norway::to_string(&p)?)?;
            Ok(())
        }
        StorageCmd::Unset { pool, key } => {
            // As lxc: the key is sent with an empty value, which the server takes as unset.
            modify_pool(conf, &pool, |config| {
                config.insert(key, String::new());
            })
            .await
        }
        StorageCmd::Volume(cmd) => run_volume(conf, cmd).await,
    }
}

/// `attach` and `attach-profile`.
async fn attach(
    conf: &ConfigDir,
    spec: &str,
    volume: &str,
    owner: Owner,
    target: String,
    names: (Option<String>, Option<String>),
) -> anyhow::Result<()> {
    let (conn, pool) = pool_target(conf, spec)?;
    let (name, kind) = parse_volume("custom", volume);
    if kind != "custom" {
        bail!("Only \"custom\" volumes can be attached to instances");
    }
    let (device, path) = attach_names(volume, names.0, names.1);
    let disk = match owner {
        Owner::Instance => disk(&pool, &name, Some(path)),
        Owner::Profile => {
            // As lxc: the volume must exist, and a block volume has no path.
            let (v, _) = fetch::<StorageVolume>(&conn, &volume_path(&pool, &kind, &name)).await?;
            let path = Some(path).filter(|_| v.content_type != "block");
            disk(&pool, &v.name, path)
        }
    };
    let mut held = crate::device::read_on(conn, owner, target).await?;
    if held.devices.contains_key(&device) {
        bail!("Device already exists: {device}");
    }
    held.devices.insert(device, disk);
    crate::device::write(held).await
}

/// `detach` and `detach-profile`.
async fn detach(
    conf: &ConfigDir,
    spec: &str,
    volume: &str,
    owner: Owner,
    target: String,
    device: Option<String>,
) -> anyhow::Result<()> {
    let (conn, pool) = pool_target(conf, spec)?;
    let mut held = crate::device::read_on(conn, owner, target).await?;
    let name = detached_device(&held.devices, &pool, volume, device)?;
    held.devices.remove(&name);
    crate::device::write(held).await
}

async fn run_volume(conf: &ConfigDir, cmd: StorageVolumeCmd) -> anyhow::Result<()> {
    match cmd {
        StorageVolumeCmd::Attach {
            pool,
            volume,
            instance,
            first,
            second,
        } => {
            let names = (first, second);
            attach(conf, &pool, &volume, Owner::Instance, instance, names).await
        }
        StorageVolumeCmd::AttachProfile {
            pool,
            volume,
            profile,
            first,
            second,
        } => {
            let names = (first, second);
            attach(conf, &pool, &volume, Owner::Profile, profile, names).await
        }
        StorageVolumeCmd::Create {
            pool,
            volume,
            config,
            content_type,
        } => {
            let config = create_args(&config)?;
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            let body = StorageVolumesPost {
                config,
                name,
                kind: kind.clone(),
                content_type,
                ..Default::default()
            };
            let path = format!("{}/volumes/{}", pool_path(&pool), escape(&kind));
            send(&conn, Method::POST, &path, Some(&body)).await?;
            outln!("Storage volume {volume} created")?;
            Ok(())
        }
        StorageVolumeCmd::Delete { pool, volume } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            let path = match name.split_once('/') {
                Some((vol, snap)) => snapshot_path(&pool, &kind, vol, snap),
                None => volume_path(&pool, &kind, &name),
            };
            send(&conn, Method::DELETE, &path, None::<&Value>).await?;
            outln!("Storage volume {volume} deleted")?;
            Ok(())
        }
        StorageVolumeCmd::Detach {
            pool,
            volume,
            instance,
            device,
        } => detach(conf, &pool, &volume, Owner::Instance, instance, device).await,
        StorageVolumeCmd::DetachProfile {
            pool,
            volume,
            profile,
            device,
        } => detach(conf, &pool, &volume, Owner::Profile, profile, device).await,
        StorageVolumeCmd::Edit { pool, volume } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            let interactive = std::io::stdin().is_terminal();
            let conn = &conn;
            match split_snapshot(&name)? {
                (vol, Some(snap)) => {
                    let p = &snapshot_path(&pool, &kind, vol, snap);
                    let (current, etag) = if interactive {
                        let (s, etag) = fetch::<StorageVolumeSnapshot>(conn, p).await?;
                        (serde_norway::to_string(&s)?, etag)
                    } else {
                        (String::new(), None)
                    };
                    let etag = etag.as_deref();
                    crate::edit::edit(
                        VOLUME_EDIT_HELP,
                        &current,
                        |new: StorageVolumeSnapshotPut, interactive| async move {
                            let body = snapshot_writable(new);
                            crate::edit::put(conn, p, &body, etag.filter(|_| interactive)).await
                        },
                    )
                    .await
                }
                (_, None) => {
                    let p = &volume_path(&pool, &kind, &name);
                    let (current, etag) = if interactive {
                        let (mut v, etag) = fetch::<StorageVolume>(conn, p).await?;
                        v.used_by.sort();
                        (serde_norway::to_string(&v)?, etag)
                    } else {
                        (String::new(), None)
                    };
                    let etag = etag.as_deref();
                    crate::edit::edit(
                        VOLUME_EDIT_HELP,
                        &current,
                        |new: StorageVolumePut, interactive| async move {
                            let body = volume_writable(new);
                            crate::edit::put(conn, p, &body, etag.filter(|_| interactive)).await
                        },
                    )
                    .await
                }
            }
        }
        StorageVolumeCmd::Get { pool, volume, key } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            let config = match split_snapshot(&name)? {
                (vol, Some(snap)) => {
                    let path = snapshot_path(&pool, &kind, vol, snap);
                    fetch::<StorageVolumeSnapshot>(&conn, &path).await?.0.config
                }
                (_, None) => {
                    let path = volume_path(&pool, &kind, &name);
                    fetch::<StorageVolume>(&conn, &path).await?.0.config
                }
            };
            if let Some(v) = config.get(&key) {
                outln!("{v}")?;
            }
            Ok(())
        }
        StorageVolumeCmd::List {
            pool,
            filters,
            columns,
            all_projects,
            format,
        } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            // Only the table's columns depend on a cluster; asking costs a request.
            let clustered = match format.format {
                Format::Table | Format::Compact | Format::Csv => clustered(&conn).await?,
                Format::Json | Format::Yaml => false,
            };
            let columns = volume_columns(&columns, clustered, all_projects)?;
            let volumes: Vec<StorageVolume> = conn
                .get_as(&volumes_query(&pool, &filters, all_projects))
                .await?;
            let mut states = Vec::with_capacity(volumes.len());
            let usage = columns.contains(&VolumeColumn::Usage);
            for v in &volumes {
                states.push(if usage && !v.name.contains('/') && v.kind != "image" {
                    let path = format!("{}/state", volume_path(&pool, &v.kind, &v.name));
                    Some(conn.get_as::<StorageVolumeState>(&path).await?)
                } else {
                    None
                });
            }
            let headers: Vec<&str> = columns.iter().map(|c| c.header()).collect();
            let rows = volume_rows(&volumes, &states, &columns);
            print_rows(format.format, &headers, &rows, &volumes)
        }
        StorageVolumeCmd::Copy {
            source,
            target,
            volume_only,
        } => {
            let (conn, src_pool, src) = pool_volume(conf, &source)?;
            let (dst_conn, dst_pool, dst) = pool_volume(conf, &target)?;
            if conn.name != dst_conn.name {
                bail!("Copying storage volumes between servers is not supported by rxc yet");
            }
            let (name, snap) = split_snapshot(&src)?;
            let from = volume_path(&src_pool, "custom", name);
            let (vol, _) = fetch::<StorageVolume>(&conn, &from).await?;
            let body = StorageVolumesPost {
                config: vol.config,
                description: vol.description,
                name: dst.clone(),
                kind: "custom".into(),
                source: StorageVolumeSource {
                    name: match snap {
                        Some(s) => format!("{name}/{s}"),
                        None => name.to_owned(),
                    },
                    kind: "copy".into(),
                    pool: src_pool.clone(),
                    volume_only: volume_only || snap.is_some(),
                    ..Default::default()
                },
                content_type: vol.content_type,
            };
            let path = format!("{}/volumes/custom", pool_path(&dst_pool));
            send(&conn, Method::POST, &path, Some(&body)).await?;
            outln!("Storage volume copied successfully!")?;
            Ok(())
        }
        StorageVolumeCmd::Move {
            source,
            target,
            target_project,
        } => {
            let (conn, src_pool, src) = pool_volume(conf, &source)?;
            let (dst_conn, dst_pool, dst) = pool_volume(conf, &target)?;
            if conn.name != dst_conn.name {
                bail!("Moving storage volumes between servers is not supported by rxc yet");
            }
            let body = StorageVolumePost {
                name: dst.clone(),
                pool: if dst_pool == src_pool {
                    String::new()
                } else {
                    dst_pool.clone()
                },
                project: target_project.clone().unwrap_or_default(),
                ..Default::default()
            };
            let path = volume_path(&src_pool, "custom", &src);
            send(&conn, Method::POST, &path, Some(&body)).await?;
            if dst_pool == src_pool && target_project.is_none() {
                outln!("Renamed storage volume from \"{src}\" to \"{dst}\"")?;
            } else {
                outln!("Storage volume moved successfully!")?;
            }
            Ok(())
        }
        StorageVolumeCmd::Rename { pool, old, new } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &old);
            match split_snapshot(&name)? {
                (vol, Some(snap)) => {
                    // As lxc (`GetParentAndSnapshotName`): a NEW without a slash names a
                    // parent volume too, so the parent check comes first.
                    let (parent, new_snap) = match new.split_once('/') {
                        Some((parent, snap)) => (parent, Some(snap.to_owned())),
                        None => (new.as_str(), None),
                    };
                    if parent != vol {
                        bail!(
                            "Invalid new snapshot name, parent volume must be the same as source"
                        );
                    }
                    let Some(new_snap) = new_snap else {
                        bail!("Invalid new snapshot name");
                    };
                    let body = StorageVolumeSnapshotPost {
                        name: new_snap.clone(),
                        ..Default::default()
                    };
                    let path = snapshot_path(&pool, &kind, vol, snap);
                    send(&conn, Method::POST, &path, Some(&body)).await?;
                    outln!("Renamed storage volume from \"{name}\" to \"{new_snap}\"")?;
                }
                (_, None) => {
                    let body = StorageVolumePost {
                        name: new.clone(),
                        ..Default::default()
                    };
                    let path = volume_path(&pool, &kind, &name);
                    send(&conn, Method::POST, &path, Some(&body)).await?;
                    outln!("Renamed storage volume from \"{name}\" to \"{new}\"")?;
                }
            }
            Ok(())
        }
        StorageVolumeCmd::Restore {
            pool,
            volume,
            snapshot,
        } => {
            // As lxc: the volume is a custom one, named as given.
            let (conn, pool) = pool_target(conf, &pool)?;
            let path = volume_path(&pool, "custom", &volume);
            let (_, etag) = fetch::<StorageVolume>(&conn, &path).await?;
            let body = StorageVolumePut {
                config: None,
                description: Some(String::new()),
                restore: snapshot,
            };
            crate::edit::put(&conn, &path, &body, etag.as_deref()).await
        }
        StorageVolumeCmd::Set { pool, volume, args } => {
            let set = set_args(&args)?;
            modify_volume(conf, &pool, &volume, |config| config.extend(set)).await
        }
        StorageVolumeCmd::Show { pool, volume } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            let text = match split_snapshot(&name)? {
                (vol, Some(snap)) => {
                    let path = snapshot_path(&pool, &kind, vol, snap);
                    let (s, _) = fetch::<StorageVolumeSnapshot>(&conn, &path).await?;
                    serde_norway::to_string(&s)?
                }
                (_, None) => {
                    let path = volume_path(&pool, &kind, &name);
                    let (mut v, _) = fetch::<StorageVolume>(&conn, &path).await?;
                    v.used_by.sort();
                    serde_norway::to_string(&v)?
                }
            };
            out!("{text}")?;
            Ok(())
        }
        StorageVolumeCmd::Snapshot {
            pool,
            volume,
            snapshot,
            no_expiry,
            reuse,
        } => {
            let (conn, pool) = pool_target(conf, &pool)?;
            let (name, kind) = parse_volume("custom", &volume);
            if kind != "custom" {
                bail!("Only \"custom\" volumes can be snapshotted");
            }
            // As lxc: the volume must exist.
            fetch::<StorageVolume>(&conn, &volume_path(&pool, &kind, &name)).await?;
            let snapshot = snapshot.unwrap_or_default();
            if reuse && !snapshot.is_empty() {
                let path = snapshot_path(&pool, &kind, &name, &snapshot);
                if fetch::<StorageVolumeSnapshot>(&conn, &path).await.is_ok() {
                    send(&conn, Method::DELETE, &path, None::<&Value>).await?;
                }
            }
            let body = StorageVolumeSnapshotsPost {
                name: snapshot,
                expires_at: no_expiry.then(|| NEVER.to_owned()),
            };
            let path = format!("{}/snapshots", volume_path(&pool, &kind, &name));
            send(&conn, Method::POST, &path, Some(&body)).await
        }
        StorageVolumeCmd::Unset { pool, volume, key } => {
            // As lxc: the key is sent with an empty value, which the server takes as unset.
            modify_volume(conf, &pool, &volume, |config| {
                config.insert(key, String::new());
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter().map(|r| strings(r)).collect()
    }

    fn parse(args: &[&str]) -> StorageCmd {
        let cli = Cli::try_parse_from([&["rxc", "storage"], args].concat()).unwrap();
        match cli.command {
            crate::cli::Command::Storage(cmd) => cmd,
            other => panic!("not a storage command: {other:?}"),
        }
    }

    fn parse_volume_cmd(args: &[&str]) -> StorageVolumeCmd {
        match parse(&[&["volume"], args].concat()) {
            StorageCmd::Volume(cmd) => cmd,
            other => panic!("not a volume command: {other:?}"),
        }
    }

    #[test]
    fn arguments_parse_as_lxc_takes_them() {
        let StorageCmd::Create {
            pool,
            driver,
            config,
            description,
        } = parse(&["create", "r:b", "btrfs", "size=4GiB", "--description", "d"])
        else {
            panic!()
        };
        assert_eq!((pool.as_str(), driver.as_str()), ("r:b", "btrfs"));
        assert_eq!(create_args(&config).unwrap(), map(&[("size", "4GiB")]));
        assert_eq!(description, "d");
        assert!(matches!(parse(&["rm", "p"]), StorageCmd::Delete { .. }));
        assert!(matches!(
            parse(&["ls", "r:", "-f", "csv"]),
            StorageCmd::List { remote: Some(r), format } if r == "r:" && format.format == Format::Csv
        ));
        assert!(matches!(
            parse(&["info", "p", "--bytes"]),
            StorageCmd::Info { bytes: true, .. }
        ));
        assert!(matches!(
            parse(&["show", "p", "--resources"]),
            StorageCmd::Show {
                resources: true,
                ..
            }
        ));

        let StorageVolumeCmd::Attach { first, second, .. } =
            parse_volume_cmd(&["attach", "p", "v", "c1", "/mnt"])
        else {
            panic!()
        };
        assert_eq!(
            attach_names("v", first, second),
            ("v".into(), "/mnt".into())
        );
        let StorageVolumeCmd::Attach { first, second, .. } =
            parse_volume_cmd(&["attach", "p", "custom/v", "c1", "data", "/srv"])
        else {
            panic!()
        };
        assert_eq!(
            attach_names("custom/v", first, second),
            ("data".into(), "/srv".into())
        );
        assert_eq!(attach_names("v", None, None), ("v".into(), String::new()));
        let StorageVolumeCmd::Create {
            config,
            content_type,
            ..
        } = parse_volume_cmd(&["create", "p", "v", "size=1GiB"])
        else {
            panic!()
        };
        assert_eq!((config.len(), content_type.as_str()), (1, "filesystem"));
        assert!(matches!(
            parse_volume_cmd(&["create", "p", "v", "--type", "block"]),
            StorageVolumeCmd::Create { content_type, .. } if content_type == "block"
        ));
        assert!(matches!(
            parse_volume_cmd(&["snapshot", "p", "v", "s0", "--no-expiry", "--reuse"]),
            StorageVolumeCmd::Snapshot { snapshot: Some(s), no_expiry: true, reuse: true, .. }
                if s == "s0"
        ));
        assert!(matches!(
            parse_volume_cmd(&["ls", "p", "-c", "tnU", "--all-projects", "type=custom"]),
            StorageVolumeCmd::List { columns, all_projects: true, filters, .. }
                if columns == "tnU" && filters == ["type=custom"]
        ));
        assert!(matches!(
            parse_volume_cmd(&["detach", "p", "v", "c1"]),
            StorageVolumeCmd::Detach { device: None, .. }
        ));
        for bad in [
            &["create", "p"][..],
            &["get", "p"],
            &["set", "p"],
            &["unset", "p", "a", "b"],
            &["volume", "attach", "p", "v"],
            &["volume", "attach", "p", "v", "c1", "d", "/mnt", "extra"],
            &["volume", "detach", "p", "v", "c1", "d", "extra"],
            &["volume", "get", "p", "v"],
            &["volume", "set", "p", "v"],
            &["volume", "snapshot", "p"],
            &["volume", "unset", "p", "v", "a", "b"],
            &["volume", "rename", "p", "v"],
        ] {
            assert!(
                Cli::try_parse_from([&["rxc", "storage"], bad].concat()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn set_takes_both_forms() {
        let check = |args: &[&str], want: Result<&[(&str, &str)], &str>| {
            let got = set_args(&strings(args)).map_err(|e| e.to_string());
            match want {
                Ok(pairs) => assert_eq!(got.unwrap(), map(pairs), "{args:?}"),
                Err(message) => assert_eq!(got.unwrap_err(), message, "{args:?}"),
            }
        };
        check(&["size", "4GiB"], Ok(&[("size", "4GiB")]));
        check(&["a=1", "b=-2"], Ok(&[("a", "1"), ("b", "-2")]));
        check(&["a=b=c"], Ok(&[("a", "b=c")]));
        check(&["a="], Ok(&[("a", "")]));
        check(&["a=1", "b"], Err("Invalid key=value configuration: b"));
        check(&["size"], Err("Invalid key=value configuration: size"));
        let StorageCmd::Set { args, .. } = parse(&["set", "p", "volume.size", "-5"]) else {
            panic!()
        };
        assert_eq!(set_args(&args).unwrap(), map(&[("volume.size", "-5")]));
        assert_eq!(
            create_args(&strings(&["size"])).unwrap_err().to_string(),
            "Bad key=value pair: [size]"
        );
    }

    #[test]
    fn volume_names_parse_as_lxc_parses_them() {
        let check = |arg: &str, name: &str, kind: &str| {
            assert_eq!(
                parse_volume("custom", arg),
                (name.to_owned(), kind.to_owned()),
                "{arg}"
            );
        };
        check("v", "v", "custom");
        check("custom/v", "v", "custom");
        check("container/c1", "c1", "container");
        check("virtual-machine/vm", "vm", "virtual-machine");
        check("image/ab12", "ab12", "image");
        check("v/snap0", "v/snap0", "custom");
        check("custom/v/snap0", "v/snap0", "custom");
        assert_eq!(split_snapshot("v").unwrap(), ("v", None));
        assert_eq!(split_snapshot("v/s0").unwrap(), ("v", Some("s0")));
        assert_eq!(
            split_snapshot("v/s0/x").unwrap_err().to_string(),
            "Invalid snapshot name"
        );
    }

    fn pool(name: &str, driver: &str, source: &str, used_by: usize) -> StoragePool {
        StoragePool {
            config: map(&[("source", source)]),
            name: name.into(),
            driver: driver.into(),
            used_by: (0..used_by)
                .map(|i| format!("/1.0/instances/c{i}"))
                .collect(),
            status: "Created".into(),
            locations: strings(&["none"]),
            ..Default::default()
        }
    }

    #[test]
    fn pool_list_as_lxc_shows_it() {
        let mut b = pool("pool10", "btrfs", "/var/lib/rxd/disks/pool10.img", 0);
        b.description = "fast".into();
        let pools = [
            b,
            pool("default", "dir", "/var/lib/rxd/storage-pools/default", 3),
            pool("pool2", "dir", "", 1),
        ];
        let (headers, got) = pool_table(&pools, false);
        assert_eq!(
            headers,
            [
                "NAME",
                "DRIVER",
                "SOURCE",
                "DESCRIPTION",
                "USED BY",
                "STATE"
            ]
        );
        assert_eq!(
            got,
            rows(&[
                &[
                    "default",
                    "dir",
                    "/var/lib/rxd/storage-pools/default",
                    "",
                    "3",
                    "CREATED"
                ],
                &["pool2", "dir", "", "", "1", "CREATED"],
                &[
                    "pool10",
                    "btrfs",
                    "/var/lib/rxd/disks/pool10.img",
                    "fast",
                    "0",
                    "CREATED"
                ],
            ])
        );
        assert_eq!(
            crate::output::table(&headers, &got[..1], false),
            "+---------+--------+------------------------------------+-------------+---------+---------+\n\
             |  NAME   | DRIVER |               SOURCE               | DESCRIPTION | USED BY |  STATE  |\n\
             +---------+--------+------------------------------------+-------------+---------+---------+\n\
             | default | dir    | /var/lib/rxd/storage-pools/default |             | 3       | CREATED |\n\
             +---------+--------+------------------------------------+-------------+---------+---------+\n"
        );
        let (headers, got) = pool_table(&pools[1..2], true);
        assert_eq!(
            headers,
            ["NAME", "DRIVER", "DESCRIPTION", "USED BY", "STATE"]
        );
        assert_eq!(got, rows(&[&["default", "dir", "", "3", "CREATED"]]));
    }

    #[test]
    fn info_as_lxc_prints_it() {
        let mut p = pool("default", "dir", "/var/lib/rxd/storage-pools/default", 0);
        p.used_by = strings(&[
            "/1.0/instances/c1",
            "/1.0/profiles/default",
            "/1.0/instances/web?project=team-a",
            "/1.0/images/ab12cd",
            "/1.0/storage-pools/default/volumes/custom/data",
            "/1.0/storage-pools/default/volumes/custom/data/snapshots/snap0",
            "/1.0/storage-pools/default/volumes/custom/logs?project=team-a&target=m1",
        ]);
        let res = StoragePoolState {
            space: rxd_api::storage::StoragePoolSpace {
                used: 1_610_612_736,
                total: 10_737_418_240,
            },
            ..Default::default()
        };
        assert_eq!(
            info_text(&p, &res, false),
            "info:\n\
             \x20 description: \"\"\n\
             \x20 driver: dir\n\
             \x20 name: default\n\
             \x20 space used: 1.50GiB\n\
             \x20 total space: 10.00GiB\n\
             used by:\n\
             \x20 images:\n\
             \x20 - ab12cd\n\
             \x20 instances:\n\
             \x20 - c1\n\
             \x20 - web (project \"team-a\")\n\
             \x20 profiles:\n\
             \x20 - default\n\
             \x20 volumes:\n\
             \x20 - data\n\
             \x20 - data\n\
             \x20 - logs (project \"team-a\", target \"m1\")\n"
        );
        let mut empty = pool("b", "btrfs", "", 0);
        empty.description = "a: b".into();
        let res = StoragePoolState {
            space: rxd_api::storage::StoragePoolSpace {
                used: 0,
                total: 4096,
            },
            ..Default::default()
        };
        assert_eq!(
            info_text(&empty, &res, true),
            "info:\n\
             \x20 description: 'a: b'\n\
             \x20 driver: btrfs\n\
             \x20 name: b\n\
             \x20 space used: \"0\"\n\
             \x20 total space: \"4096\"\n\
             used by: {}\n"
        );
    }

    #[test]
    fn strings_quote_as_go_yaml_quotes_them() {
        for (s, want) in [
            ("", "\"\""),
            ("dir", "dir"),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("off", "\"off\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("12", "\"12\""),
            ("-1.5e3", "\"-1.5e3\""),
            ("0x1f", "\"0x1f\""),
            ("1:30", "\"1:30\""),
            ("2024-05-01", "\"2024-05-01\""),
            ("1.50GiB", "1.50GiB"),
            ("10.0.3.1/24", "10.0.3.1/24"),
            ("web (project \"a\")", "web (project \"a\")"),
            ("a: b", "'a: b'"),
            ("- x", "'- x'"),
        ] {
            assert_eq!(yaml_string(s), want, "{s:?}");
        }
    }

    fn volume(kind: &str, name: &str, content_type: &str, used_by: usize) -> StorageVolume {
        StorageVolume {
            name: name.into(),
            kind: kind.into(),
            content_type: content_type.into(),
            used_by: (0..used_by)
                .map(|i| format!("/1.0/instances/c{i}"))
                .collect(),
            location: "none".into(),
            project: "default".into(),
            ..Default::default()
        }
    }

    #[test]
    fn volume_list_as_lxc_shows_it() {
        let columns = volume_columns(DEFAULT_VOLUME_COLUMNS, false, false).unwrap();
        let headers: Vec<&str> = columns.iter().map(|c| c.header()).collect();
        assert_eq!(
            headers,
            ["TYPE", "NAME", "DESCRIPTION", "CONTENT-TYPE", "USED BY"]
        );
        let mut data = volume("custom", "data", "filesystem", 2);
        data.description = "shared".into();
        let volumes = [
            volume("custom", "data/snap0", "filesystem", 0),
            volume("image", "ab12", "filesystem", 1),
            volume("container", "c10", "filesystem", 1),
            volume("container", "c2", "", 1),
            data,
            volume("custom", "blk", "block", 0),
        ];
        let got = volume_rows(&volumes, &[], &columns);
        assert_eq!(
            got,
            rows(&[
                &["container", "c2", "", "filesystem", "1"],
                &["container", "c10", "", "filesystem", "1"],
                &["custom", "blk", "", "block", "0"],
                &["custom", "data", "shared", "filesystem", "2"],
                &["custom (snapshot)", "data/snap0", "", "filesystem", "0"],
                &["image", "ab12", "", "filesystem", "1"],
            ])
        );
        assert_eq!(
            crate::output::table(&headers, &got[..1], false),
            "+-----------+------+-------------+--------------+---------+\n\
             |   TYPE    | NAME | DESCRIPTION | CONTENT-TYPE | USED BY |\n\
             +-----------+------+-------------+--------------+---------+\n\
             | container | c2   |             | filesystem   | 1       |\n\
             +-----------+------+-------------+--------------+---------+\n"
        );

        // Usage comes from the volume's state; nothing when the driver cannot tell.
        let columns = volume_columns("nU", false, false).unwrap();
        let states = [
            Some(StorageVolumeState {
                usage: Some(rxd_api::storage::StorageVolumeStateUsage {
                    used: 1_048_576,
                    total: 0,
                }),
            }),
            Some(StorageVolumeState { usage: None }),
        ];
        let got = volume_rows(&volumes[4..], &states, &columns);
        assert_eq!(got, rows(&[&["blk", ""], &["data", "1.00MiB"]]));
    }

    #[test]
    fn volume_columns_as_lxc_reads_them() {
        use VolumeColumn::*;
        let check =
            |spec: &str, clustered: bool, all: bool, want: Result<&[VolumeColumn], &str>| {
                let got = volume_columns(spec, clustered, all).map_err(|e| e.to_string());
                match want {
                    Ok(cols) => assert_eq!(got.unwrap(), cols, "{spec}"),
                    Err(message) => assert_eq!(got.unwrap_err(), message, "{spec}"),
                }
            };
        let default = DEFAULT_VOLUME_COLUMNS;
        check(
            default,
            true,
            true,
            Ok(&[
                Project,
                Type,
                Name,
                Description,
                ContentType,
                UsedBy,
                Location,
            ]),
        );
        check(
            default,
            false,
            true,
            Ok(&[Project, Type, Name, Description, ContentType, UsedBy]),
        );
        check("n,t", false, false, Ok(&[Name, Type]));
        check("nL", true, false, Ok(&[Name, Location]));
        check(
            "nL",
            false,
            false,
            Err("Can't specify column L when not clustered"),
        );
        check(
            "nx",
            false,
            false,
            Err("Unknown column shorthand char 'x' in 'nx'"),
        );
        check(
            "n,",
            false,
            false,
            Err("Empty column entry (redundant, leading or trailing command) in 'n,'"),
        );
        check(
            "e",
            false,
            false,
            Err("Empty column entry (redundant, leading or trailing command) in ''"),
        );
    }

    #[test]
    fn volume_queries_are_lxcs() {
        assert_eq!(
            volumes_query("default", &[], false),
            "/1.0/storage-pools/default/volumes?recursion=1"
        );
        assert_eq!(
            volumes_query("p 1", &strings(&["type=custom", "word", "name=v"]), true),
            "/1.0/storage-pools/p%201/volumes?all-projects=true&filter=type%20eq%20custom%20and%20name%20eq%20v&recursion=1"
        );
        assert_eq!(
            snapshot_path("p", "custom", "v", "s0"),
            "/1.0/storage-pools/p/volumes/custom/v/snapshots/s0"
        );
    }

    #[test]
    fn attach_and_detach_build_the_devices_lxc_builds() {
        assert_eq!(
            disk("default", "data", Some("/mnt".into())),
            map(&[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "data"),
                ("path", "/mnt")
            ])
        );
        assert_eq!(
            disk("default", "blk", None),
            map(&[("type", "disk"), ("pool", "default"), ("source", "blk")])
        );
        let devices = Devices::from([
            (
                "root".into(),
                map(&[("type", "disk"), ("path", "/"), ("pool", "default")]),
            ),
            (
                "data".into(),
                map(&[
                    ("type", "disk"),
                    ("pool", "default"),
                    ("source", "data"),
                    ("path", "/mnt"),
                ]),
            ),
            (
                "data2".into(),
                map(&[
                    ("type", "disk"),
                    ("pool", "other"),
                    ("source", "data"),
                    ("path", "/o"),
                ]),
            ),
            (
                "logs1".into(),
                map(&[
                    ("type", "disk"),
                    ("pool", "default"),
                    ("source", "logs"),
                    ("path", "/a"),
                ]),
            ),
            (
                "logs2".into(),
                map(&[
                    ("type", "disk"),
                    ("pool", "default"),
                    ("source", "logs"),
                    ("path", "/b"),
                ]),
            ),
        ]);
        let check = |pool: &str, volume: &str, device: Option<&str>, want: Result<&str, &str>| {
            let got = detached_device(&devices, pool, volume, device.map(str::to_owned))
                .map_err(|e| e.to_string());
            match want {
                Ok(name) => assert_eq!(got.unwrap(), name, "{pool} {volume} {device:?}"),
                Err(message) => {
                    assert_eq!(got.unwrap_err(), message, "{pool} {volume} {device:?}")
                }
            }
        };
        check("default", "data", None, Ok("data"));
        check("other", "data", None, Ok("data2"));
        check("default", "logs", Some("logs2"), Ok("logs2"));
        check(
            "default",
            "logs",
            None,
            Err("More than one device matches, specify the device name"),
        );
        check(
            "default",
            "nope",
            None,
            Err("No device found for this storage volume"),
        );
        check(
            "default",
            "data",
            Some("eth0"),
            Err("The specified device doesn't exist"),
        );
    }

    #[test]
    fn edits_send_what_lxc_sends() {
        let put: StoragePoolPut =
            crate::edit::parse("name: p\nconfig:\n  size: 4GiB\n  volume.size: 1\nused_by: []\n")
                .unwrap();
        assert_eq!(
            serde_json::to_value(pool_writable(put)).unwrap(),
            serde_json::json!({"config": {"size": "4GiB", "volume.size": "1"}, "description": ""})
        );
        let put: StorageVolumePut = crate::edit::parse("description: mine\n").unwrap();
        assert_eq!(
            serde_json::to_value(volume_writable(put)).unwrap(),
            serde_json::json!({"config": {}, "description": "mine"})
        );
        let put: StorageVolumeSnapshotPut =
            crate::edit::parse("description: x\nname: s0\n").unwrap();
        assert_eq!(
            serde_json::to_value(snapshot_writable(put)).unwrap(),
            serde_json::json!({"description": "x", "expires_at": null})
        );
        let put: StorageVolumeSnapshotPut =
            crate::edit::parse("expires_at: 2030-01-01T00:00:00Z\n").unwrap();
        assert_eq!(
            serde_json::to_value(snapshot_writable(put)).unwrap(),
            serde_json::json!({"description": "", "expires_at": "2030-01-01T00:00:00Z"})
        );
    }
}
