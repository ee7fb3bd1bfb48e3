//! `/1.0/instances/<name>/files?path=`: read, write and remove files inside a container, as
//! LXD 5.0 does (headers `X-LXD-uid`, `X-LXD-gid`, `X-LXD-mode`, `X-LXD-type`, `X-LXD-write`).
//!
//! Paths are resolved inside the container's root filesystem only (`rxd_image::rootfs`), and
//! owners are the container's ids, translated through the map the files on disk are shifted to
//! (none when they keep container ids behind an idmapped mount): an id outside the container's
//! map is refused. Works whether the container runs or not.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::service::instances::{config_of, find, parse_idmap, Keyed};
use crate::service::layout;
use crate::state::Daemon;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use rxd_core::launch::IdMap;
use rxd_image::rootfs::{Entry, Meta, Rootfs};
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;

/// The largest file accepted in one upload.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

impl PathQuery {
    /// The path inside the container: relative ones are relative to its root, as in LXD
    /// (Debian's `lxc file pull` sends them so).
    fn absolute(self) -> String {
        if self.path.starts_with('/') {
            self.path
        } else {
            format!("/{}", self.path)
        }
    }
}

/// How a container's ids are stored on disk: shifted by a map, or as they are (idmapped or
/// privileged), and which ids the container has at all.
#[derive(Debug, Clone, Copy)]
struct DiskIds {
    /// The map the files on disk are shifted to (`None`: container ids on disk).
    shift: Option<IdMap>,
    /// How many ids the container has (`None`: all, privileged).
    range: Option<u32>,
}

/// The container's rootfs and how its ids are stored.
async fn open(d: &Daemon, project: &str, name: &str) -> ApiResult<(Rootfs, DiskIds)> {
    let row = find(d, project, name).await?;
    open_row(d, &row)
}

/// The same, for a write: also a share of the rootfs lock, held until the write is done, so no
/// write lands while a remap or a restore changes the tree (they take it exclusively). The
/// rootfs is opened once the lock is held, so the write goes to the tree that is current then.
async fn open_for_write(d: &Daemon, project: &str, name: &str) -> ApiResult<Writing> {
    let key = find(d, project, name).await?.key();
    let lock = d.runtime.rootfs_lock(&key).read_owned().await;
    // Read again under the lock: the map (or the name) may have changed while it was awaited.
    let row = crate::service::instances::by_key(d, &key).await?;
    let (rootfs, map) = open_row(d, &row)?;
    Ok(Writing {
        rootfs,
        map,
        _lock: lock,
    })
}

struct Writing {
    rootfs: Rootfs,
    map: DiskIds,
    _lock: tokio::sync::OwnedRwLockReadGuard<()>,
}

fn open_row(d: &Daemon, row: &rxd_store::InstanceRow) -> ApiResult<(Rootfs, DiskIds)> {
    let config = config_of(row);
    let text = |key: &str| config.get(key).cloned().unwrap_or_else(|| "[]".into());
    let ids = DiskIds {
        shift: parse_idmap(&text("volatile.last_state.idmap"))?,
        range: parse_idmap(&text("volatile.idmap.next"))?.map(|m| m.size),
    };
    let rootfs = Rootfs::open(&layout::instance_dir(d, &row.pool, &row.key()).join("rootfs"))?;
    Ok((rootfs, ids))
}

/// A container id as the host id stored on disk.
fn to_host(ids: DiskIds, id: u32, gid: bool) -> ApiResult<u32> {
    let size = ids.shift.map(|m| m.size).or(ids.range);
    if size.is_some_and(|size| id >= size) {
        return Err(ApiError::BadRequest(format!(
            "{} {id} is not mapped in the container",
            if gid { "gid" } else { "uid" }
        )));
    }
    Ok(match ids.shift {
        None => id,
        Some(m) => (if gid { m.gid } else { m.uid }) + id,
    })
}

/// A host id as the container sees it (unmapped ids show as the overflow id, 65534).
fn to_container(ids: DiskIds, id: u32, gid: bool) -> u32 {
    match ids.shift {
        None if ids.range.is_some_and(|size| id >= size) => 65534,
        None => id,
        Some(m) => {
            let base = if gid { m.gid } else { m.uid };
            id.checked_sub(base)
                .filter(|i| *i < m.size)
                .unwrap_or(65534)
        }
    }
}

fn file_headers(map: DiskIds, meta: Meta, kind: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-lxd-uid", to_container(map, meta.uid, false).to_string());
    set("x-lxd-gid", to_container(map, meta.gid, true).to_string());
    set("x-lxd-mode", format!("{:04o}", meta.mode));
    set("x-lxd-type", kind.to_owned());
    h
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (rootfs, map) = open(&d, &caller.project, &name).await?;
    let path = q.absolute();
    let base = path.rsplit('/').next().unwrap_or_default().to_owned();
    let entry = tokio::task::spawn_blocking(move || rootfs.get(&path)).await??;
    let raw = |headers: HeaderMap, len: u64, body: Body| {
        let mut r = (headers, body).into_response();
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Ok(v) = HeaderValue::from_str(&format!("inline;filename={base}")) {
            h.insert(http::header::CONTENT_DISPOSITION, v);
        }
        r
    };
    Ok(match entry {
        Entry::File(file, meta, len) => {
            // No more than the length announced, even if the file grows meanwhile.
            let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
            let stream = tokio_util::io::ReaderStream::new(file);
            raw(
                file_headers(map, meta, "file"),
                len,
                Body::from_stream(stream),
            )
        }
        Entry::Symlink(target, meta) => raw(
            file_headers(map, meta, "symlink"),
            target.len() as u64,
            Body::from(target),
        ),
        Entry::Directory(names, meta) => {
            let mut r = response::sync(names);
            r.headers_mut().extend(file_headers(map, meta, "directory"));
            r
        }
    })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An integer as LXD parses these headers: `0x` hex, `0o` or a leading `0` octal, else decimal.
pub(crate) fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match (text.strip_prefix('-'), text.strip_prefix('+')) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, text),
    };
    // One sign at most, in front (as Go's ParseInt): `from_str_radix` would take a second one
    // (`--5`, `0x+5`).
    if digits.contains(['+', '-']) {
        return None;
    }
    let value = if let Some(hex) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o").or(digits.strip_prefix("0O")) {
        i64::from_str_radix(oct, 8).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    if negative {
        value.checked_neg()
    } else {
        Some(value)
    }
}

/// A uid or gid header: absent or `-1` means root of the container.
fn id_header(h: &HeaderMap, name: &str) -> ApiResult<u32> {
    match header(h, name) {
        None => Ok(0),
        Some(v) => match parse_int(v) {
            Some(-1) => Ok(0),
            Some(n) => u32::try_from(n)
                .map_err(|_| ApiError::BadRequest(format!("Invalid {name} header {v:?}"))),
            None => Err(ApiError::BadRequest(format!("Invalid {name} header {v:?}"))),
        },
    }
}

/// What a push will do, from its headers, checked before any of the body is read.
struct Push {
    kind: String,
    append: bool,
    mode: Option<u32>,
    rootfs: Rootfs,
    uid: u32,
    gid: u32,
    /// Held until the write is done (see [`open_for_write`]).
    lock: tokio::sync::OwnedRwLockReadGuard<()>,
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let push = match plan_push(&d, &caller, &name, &headers).await {
        Ok(push) => push,
        Err(e) => {
            // A refused push's client is likely still sending: let a small body finish, so the
            // client reads this answer rather than a broken pipe.
            if !matches!(e, ApiError::TooLarge { .. }) {
                crate::body::discard(body).await;
            }
            return Err(e);
        }
    };
    let Push {
        kind,
        append,
        mode,
        rootfs,
        uid,
        gid,
        lock: _lock,
    } = push;
    let path = q.absolute();
    match kind.as_str() {
        "directory" => {
            let mode = mode.unwrap_or(0o755);
            tokio::task::spawn_blocking(move || rootfs.mkdir(&path, uid, gid, mode)).await??;
        }
        "symlink" => {
            let target = body
                .collect()
                .await
                .map_err(|e| ApiError::BadRequest(format!("reading the request: {e}")))?
                .to_bytes();
            let target = String::from_utf8(target.to_vec())
                .map_err(|_| ApiError::BadRequest("The symlink target is not UTF-8".into()))?;
            tokio::task::spawn_blocking(move || rootfs.symlink(&path, &target, uid, gid)).await??;
        }
        _ => {
            let mode = mode.unwrap_or(0o644);
            let opened =
                tokio::task::spawn_blocking(move || rootfs.upload(&path, uid, gid, mode, append))
                    .await?;
            let mut upload = match opened {
                Ok(upload) => upload,
                Err(e) => {
                    // Refused before the body was read (a path that leaves the container, a
                    // missing directory): let a small body finish, as for a refused plan.
                    crate::body::discard(body).await;
                    return Err(e.into());
                }
            };
            // Dropped on any error before the commit: the new file goes away.
            crate::body::stream(body, MAX_FILE_BYTES, |chunk| {
                upload.file().write_all(chunk).map_err(ApiError::internal)
            })
            .await?;
            tokio::task::spawn_blocking(move || upload.commit()).await??;
        }
    }
    Ok(response::empty())
}

/// Check a push's headers and resolve its owner, before any of the body is read.
async fn plan_push(
    d: &Daemon,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
) -> ApiResult<Push> {
    let kind = header(headers, "x-lxd-type").unwrap_or("file");
    let append = match header(headers, "x-lxd-write").unwrap_or("overwrite") {
        "overwrite" => false,
        "append" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid X-LXD-write {other:?}: overwrite or append"
            )))
        }
    };
    let mode = match header(headers, "x-lxd-mode") {
        None => None,
        Some(v) => Some(
            parse_int(v)
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid X-LXD-mode {v:?}")))?,
        ),
    };
    if !matches!(kind, "file" | "directory" | "symlink") {
        return Err(ApiError::BadRequest(format!(
            "Invalid X-LXD-type {kind:?}: file, directory or symlink"
        )));
    }
    if header(headers, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_FILE_BYTES)
    {
        return Err(ApiError::TooLarge {
            limit: MAX_FILE_BYTES as usize,
        });
    }
    let Writing {
        rootfs,
        map,
        _lock: lock,
    } = open_for_write(d, &caller.project, name).await?;
    let uid = to_host(map, id_header(headers, "x-lxd-uid")?, false)?;
    let gid = to_host(map, id_header(headers, "x-lxd-gid")?, true)?;
    Ok(Push {
        kind: kind.to_owned(),
        append,
        mode,
        rootfs,
        uid,
        gid,
        lock,
    })
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let Writing { rootfs, _lock, .. } = open_for_write(&d, &caller.project, &name).await?;
    let path = q.absolute();
    tokio::task::spawn_blocking(move || rootfs.remove(&path)).await??;
    Ok(response::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_integers_parse_as_lxd_does() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0644", Some(0o644)),
            ("0o644", Some(0o644)),
            ("420", Some(420)),
            ("0x1a4", Some(0x1a4)),
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("0999", None),
            ("abc", None),
            ("", None),
            // Found by fuzzing: a negated minimum overflowed (a panic in debug builds).
            ("--9223372036854775808", None),
            ("-9223372036854775808", None),
            ("--5", None),
            ("0x+5", None),
            ("+5", Some(5)),
            ("+-5", None),
            ("-0x10", Some(-16)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_int(text), *want, "{text}");
        }
    }

    #[test]
    fn ids_translate_through_the_on_disk_map() {
        let m = IdMap {
            uid: 1_000_000,
            gid: 2_000_000,
            size: 65536,
        };
        let shifted = DiskIds {
            shift: Some(m),
            range: Some(65536),
        };
        assert_eq!(to_host(shifted, 0, false).unwrap(), 1_000_000);
        assert_eq!(to_host(shifted, 1000, true).unwrap(), 2_001_000);
        assert!(to_host(shifted, 65536, false).is_err());
        assert_eq!(to_container(shifted, 1_000_033, false), 33);
        assert_eq!(to_container(shifted, 0, false), 65534);
        assert_eq!(to_container(shifted, 1_065_536, false), 65534);
        // Container ids on disk behind an idmapped mount: as they are, within the map's size.
        let idmapped = DiskIds {
            shift: None,
            range: Some(65536),
        };
        assert_eq!(to_host(idmapped, 1000, false).unwrap(), 1000);
        assert!(to_host(idmapped, 70000, true).is_err());
        assert_eq!(to_container(idmapped, 33, false), 33);
        assert_eq!(to_container(idmapped, 100_000, false), 65534);
        // Privileged: every id.
        let privileged = DiskIds {
            shift: None,
            range: None,
        };
        assert_eq!(to_host(privileged, 100_000, false).unwrap(), 100_000);
        assert_eq!(to_container(privileged, 7, true), 7);
    }
}
