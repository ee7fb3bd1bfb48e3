//! `rxc file pull|push|delete`: files inside a container, through the files API; and
//! `rxc console --show-log`, the console log.

use crate::cli::FileCmd;
use crate::connect::{open, split_target, Conn};
use anyhow::{anyhow, bail, Context};
use rxd_client::remotes::ConfigDir;
use rxd_client::ClientError;
use rxd_client::Method;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[REMOTE:]NAME/PATH` → the connection, the container and the absolute path inside it.
fn target(conf: &ConfigDir, spec: &str) -> anyhow::Result<(Conn, String, String)> {
    let (remote, rest) = split_target(conf, spec);
    let (name, path) = rest
        .split_once('/')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| anyhow!("{spec:?}: expected [REMOTE:]NAME/PATH"))?;
    Ok((open(conf, &remote)?, name.to_owned(), format!("/{path}")))
}

fn files_url(name: &str, path: &str) -> String {
    let mut url = format!("/1.0/instances/{name}/files?path=");
    url.extend(path.bytes().map(|b| match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
            (b as char).to_string()
        }
        _ => format!("%{b:02X}"),
    }));
    url
}

/// The API error in a reply that is not the raw file (errors come in LXD's envelope).
fn check(conn: &Conn, reply: &rxd_client::Reply) -> anyhow::Result<()> {
    if reply.status >= 400 {
        let err = reply
            .metadata()
            .err()
            .unwrap_or(ClientError::Decode(format!("status {}", reply.status)));
        return Err(match err {
            ClientError::Api { message, .. } => anyhow!(message),
            e => conn.explain(e),
        });
    }
    Ok(())
}

pub async fn run(conf: &ConfigDir, cmd: FileCmd) -> anyhow::Result<()> {
    match cmd {
        FileCmd::Pull {
            source,
            target: dest,
        } => pull(conf, &source, &dest).await,
        FileCmd::Push {
            source,
            target: dest,
            uid,
            gid,
            mode,
        } => push(conf, &source, &dest, uid, gid, mode).await,
        FileCmd::Delete { targets } => {
            for t in targets {
                let (conn, name, path) = target(conf, &t)?;
                conn.call(Method::DELETE, &files_url(&name, &path), None)
                    .await?;
            }
            Ok(())
        }
    }
}

async fn pull(conf: &ConfigDir, source: &str, dest: &str) -> anyhow::Result<()> {
    let (conn, name, path) = target(conf, source)?;
    let reply = conn
        .client
        .send(
            Method::GET,
            &files_url(&name, &path),
            &[],
            Default::default(),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    check(&conn, &reply)?;
    let kind = reply.header("x-lxd-type").unwrap_or("file").to_owned();
    if kind == "directory" {
        bail!("{source} is a directory (recursive pull is not supported yet)");
    }
    if dest == "-" {
        std::io::stdout().write_all(&reply.body)?;
        return Ok(());
    }
    let mut out = PathBuf::from(dest);
    if out.is_dir() {
        out.push(Path::new(&path).file_name().unwrap_or_default());
    }
    if kind == "symlink" {
        let target = String::from_utf8_lossy(&reply.body).into_owned();
        let _ = std::fs::remove_file(&out);
        std::os::unix::fs::symlink(&target, &out)
            .with_context(|| format!("creating {}", out.display()))?;
        return Ok(());
    }
    // Written beside the destination, then renamed: an interrupted pull leaves no half file.
    let temp = out.with_file_name(format!(
        ".{}.rxc-pull",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&temp, &reply.body).with_context(|| format!("writing {}", temp.display()))?;
    if let Some(mode) = reply
        .header("x-lxd-mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
    {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    std::fs::rename(&temp, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

async fn push(
    conf: &ConfigDir,
    source: &str,
    dest: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<String>,
) -> anyhow::Result<()> {
    let (conn, name, mut path) = target(conf, dest)?;
    let local = Path::new(source);
    let meta = std::fs::metadata(local).with_context(|| format!("reading {source}"))?;
    if !meta.is_file() {
        bail!("{source} is not a regular file");
    }
    if path.ends_with('/') {
        path.push_str(&local.file_name().unwrap_or_default().to_string_lossy());
    }
    let mode = match mode {
        Some(m) => {
            u32::from_str_radix(&m, 8).map_err(|_| anyhow!("--mode {m:?}: expected octal"))?
        }
        None => meta.permissions().mode() & 0o7777,
    };
    let (uid, gid, mode) = (
        uid.unwrap_or(0).to_string(),
        gid.unwrap_or(0).to_string(),
        format!("{mode:04o}"),
    );
    let headers = [
        ("x-lxd-uid", uid.as_str()),
        ("x-lxd-gid", gid.as_str()),
        ("x-lxd-mode", mode.as_str()),
        ("x-lxd-type", "file"),
        ("x-lxd-write", "overwrite"),
    ];
    let reply = conn
        .client
        .send_file(
            Method::POST,
            &files_url(&name, &path),
            &headers,
            local,
            Arc::new(|_| {}),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    check(&conn, &reply)
}

pub async fn console(conf: &ConfigDir, target: &str, show_log: bool) -> anyhow::Result<()> {
    if !show_log {
        return crate::instance::console(conf, target).await;
    }
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let reply = conn
        .client
        .send(
            Method::GET,
            &format!("/1.0/instances/{name}/console"),
            &[],
            Default::default(),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    check(&conn, &reply)?;
    std::io::stdout().write_all(&reply.body)?;
    Ok(())
}
