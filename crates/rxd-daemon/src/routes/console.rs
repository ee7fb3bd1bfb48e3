//! `/1.0/instances/<name>/console`: the console log (what the init wrote to its stdout and
//! stderr) with GET, emptied with DELETE, as LXD 5.0's `lxc console --show-log` uses it; and
//! `/1.0/instances/<name>/logs[/<file>]`: the console log and recorded exec output by name.

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

/// A log file's name as this API accepts it: the console log or recorded exec output.
fn log_name(file: &str) -> ApiResult<&str> {
    let recorded = file
        .strip_prefix("exec_")
        .and_then(|rest| {
            rest.strip_suffix(".stdout")
                .or_else(|| rest.strip_suffix(".stderr"))
        })
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    if file == "console.log" || recorded {
        Ok(file)
    } else {
        Err(ApiError::NotFound("Log file not found".into()))
    }
}

/// `GET /1.0/instances/<name>/logs`: the instance's log files.
pub async fn logs(
    State(d): State<Arc<Daemon>>,
    Admin(_caller, _proof): Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    let mut files: Vec<String> = match std::fs::read_dir(d.runtime.logs_dir(&row.name)) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|f| log_name(f).is_ok())
            .map(|f| format!("/1.0/instances/{}/logs/{f}", row.name))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    Ok(response::sync(files))
}

pub async fn log_file(
    State(d): State<Arc<Daemon>>,
    Admin(_caller, _proof): Admin,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    let path = d.runtime.logs_dir(&row.name).join(log_name(&file)?);
    let text = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let Some(f) = open_log(&path, false)? else {
            return Err(ApiError::NotFound("Log file not found".into()));
        };
        let mut buf = Vec::new();
        f.take(MAX_LOG_BYTES * 32)
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

pub async fn delete_log_file(
    State(d): State<Arc<Daemon>>,
    Admin(_caller, _proof): Admin,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    let file = log_name(&file)?;
    if file == "console.log" {
        return Err(ApiError::BadRequest(
            "The console log is emptied with DELETE /1.0/instances/<name>/console".into(),
        ));
    }
    match std::fs::remove_file(d.runtime.logs_dir(&row.name).join(file)) {
        Ok(()) => Ok(response::empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::NotFound("Log file not found".into()))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_log_names_are_served() {
        for ok in ["console.log", "exec_0a1b-2c.stdout", "exec_ff.stderr"] {
            assert!(log_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../console.log",
            "exec_.stdout",
            "exec_x/../../etc.stdout",
            "exec_zz.stdout",
            "lxc.conf",
            "",
        ] {
            assert!(log_name(bad).is_err(), "{bad}");
        }
    }
}
