//! `/1.0/instances/<name>/console`: the console log (what the init wrote to its stdout and
//! stderr) with GET, emptied with DELETE, as LXD 5.0's `lxc console --show-log` uses it.

use super::instances::find;
use crate::caller::Admin;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::Daemon;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

/// At most this much of the end of the log is returned.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

fn open_log(path: &std::path::Path, write: bool) -> ApiResult<Option<std::fs::File>> {
    match std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Admin(_caller, _proof): Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    let path = d.runtime.console_log(&row.name);
    let text = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let Some(mut f) = open_log(&path, false)? else {
            return Ok(Vec::new());
        };
        let len = f.metadata().map_err(ApiError::internal)?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG_BYTES)))
            .map_err(ApiError::internal)?;
        let mut buf = Vec::new();
        f.take(MAX_LOG_BYTES)
            .read_to_end(&mut buf)
            .map_err(ApiError::internal)?;
        Ok(buf)
    })
    .await??;
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        text,
    )
        .into_response())
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(_caller, _proof): Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    if let Some(f) = open_log(&d.runtime.console_log(&row.name), true)? {
        f.set_len(0).map_err(ApiError::internal)?;
    }
    Ok(response::empty())
}
