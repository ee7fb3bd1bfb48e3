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
            mut paths,
            recursive,
        } => {
            let dest = paths.pop().unwrap_or_default();
            let into_dir = recursive || paths.len() > 1;
            if into_dir && dest != "-" {
                std::fs::create_dir_all(&dest).with_context(|| format!("creating {dest}"))?;
            }
            for source in &paths {
                let (conn, name, path) = target(conf, source)?;
                if recursive {
                    let base = Path::new(&path).file_name().unwrap_or_default();
                    Box::pin(pull_tree(&conn, &name, &path, &Path::new(&dest).join(base))).await?;
                } else {
                    pull(&conn, &name, &path, &dest).await?;
                }
            }
            Ok(())
        }
        FileCmd::Push {
            mut paths,
            recursive,
            uid,
            gid,
            mode,
        } => {
            let dest = paths.pop().unwrap_or_default();
            let (conn, name, mut path) = target(conf, &dest)?;
            let mode = mode
                .map(|m| {
                    u32::from_str_radix(&m, 8).map_err(|_| anyhow!("--mode {m:?}: expected octal"))
                })
                .transpose()?;
            let owner = Owner { uid, gid, mode };
            if paths.len() > 1 && !path.ends_with('/') {
                path.push('/');
            }
            for source in &paths {
                let local = Path::new(source);
                if recursive {
                    let base = local
                        .canonicalize()
                        .with_context(|| format!("reading {source}"))?;
                    let base = base.file_name().unwrap_or_default().to_string_lossy();
                    let remote = format!("{}/{base}", path.trim_end_matches('/'));
                    Box::pin(push_tree(&conn, &name, local, &remote, &owner)).await?;
                } else {
                    let mut remote = path.clone();
                    if remote.ends_with('/') {
                        remote.push_str(&local.file_name().unwrap_or_default().to_string_lossy());
                    }
                    push(&conn, &name, local, &remote, &owner).await?;
                }
            }
            Ok(())
        }
        FileCmd::Edit { target: spec } => edit(conf, &spec).await,
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

/// `GET` a path in the container: the raw reply (a file's bytes, a symlink's target, or a
/// directory's listing) with its `X-LXD-*` headers.
async fn get(conn: &Conn, name: &str, path: &str) -> anyhow::Result<rxd_client::Reply> {
    let reply = conn
        .client
        .send(Method::GET, &files_url(name, path), &[], Default::default())
        .await
        .map_err(|e| conn.explain(e))?;
    check(conn, &reply)?;
    Ok(reply)
}

/// `get`, with a progress bar for a large file (`Pulling PATH from NAME`, as `lxc`).
async fn get_showing(conn: &Conn, name: &str, path: &str) -> anyhow::Result<rxd_client::Reply> {
    let (report, bar) = crate::output::download_bar(format!("Pulling {path} from {name}"));
    let reply = conn.client.download(&files_url(name, path), report).await;
    crate::output::download_done(&bar);
    let reply = reply.map_err(|e| conn.explain(e))?;
    check(conn, &reply)?;
    Ok(reply)
}

fn kind(reply: &rxd_client::Reply) -> String {
    reply.header("x-lxd-type").unwrap_or("file").to_owned()
}

fn mode_of(reply: &rxd_client::Reply) -> Option<u32> {
    reply
        .header("x-lxd-mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
}

async fn pull(conn: &Conn, name: &str, path: &str, dest: &str) -> anyhow::Result<()> {
    let reply = if dest == "-" {
        get(conn, name, path).await?
    } else {
        get_showing(conn, name, path).await?
    };
    if kind(&reply) == "directory" {
        bail!("{path} is a directory: pull it with -r");
    }
    if dest == "-" {
        std::io::stdout().write_all(&reply.body)?;
        return Ok(());
    }
    let mut out = PathBuf::from(dest);
    if out.is_dir() {
        out.push(Path::new(path).file_name().unwrap_or_default());
    }
    write_local(&reply, &out)
}

/// Write what a `GET` returned (a file or a symlink) at `out`.
fn write_local(reply: &rxd_client::Reply, out: &Path) -> anyhow::Result<()> {
    if kind(reply) == "symlink" {
        let target = String::from_utf8_lossy(&reply.body).into_owned();
        let _ = std::fs::remove_file(out);
        std::os::unix::fs::symlink(&target, out)
            .with_context(|| format!("creating {}", out.display()))?;
        return Ok(());
    }
    // Written beside the destination, then renamed: an interrupted pull leaves no half file.
    let temp = out.with_file_name(format!(
        ".{}.rxc-pull",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&temp, &reply.body).with_context(|| format!("writing {}", temp.display()))?;
    if let Some(mode) = mode_of(reply) {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    std::fs::rename(&temp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `rxc file pull -r`: `path` and everything under it, to `out`.
async fn pull_tree(conn: &Conn, name: &str, path: &str, out: &Path) -> anyhow::Result<()> {
    let reply = get_showing(conn, name, path).await?;
    if kind(&reply) != "directory" {
        return write_local(&reply, out);
    }
    let entries: Vec<String> = crate::connect::decode(reply.metadata().map_err(|e| anyhow!(e))?)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if let Some(mode) = mode_of(&reply) {
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    for entry in entries {
        if entry.contains('/') || entry == "." || entry == ".." {
            bail!("the server listed {entry:?} in {path}: not a file name");
        }
        let child = format!("{}/{entry}", path.trim_end_matches('/'));
        Box::pin(pull_tree(conn, name, &child, &out.join(&entry))).await?;
    }
    Ok(())
}

/// What `file push` says about owner and mode; unset parts come from elsewhere (root and the
/// local mode for one file; the local owner and mode for `-r`).
struct Owner {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// `POST` one entry: a file (streamed from `local`), a directory, or a symlink (`body` is
/// its target).
async fn post(
    conn: &Conn,
    name: &str,
    path: &str,
    kind: &str,
    (uid, gid, mode): (u32, u32, u32),
    local: Option<&Path>,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let (uid, gid, mode) = (uid.to_string(), gid.to_string(), format!("{mode:04o}"));
    let headers = [
        ("x-lxd-uid", uid.as_str()),
        ("x-lxd-gid", gid.as_str()),
        ("x-lxd-mode", mode.as_str()),
        ("x-lxd-type", kind),
        ("x-lxd-write", "overwrite"),
    ];
    let url = files_url(name, path);
    let reply = match local {
        Some(file) => {
            // Progress for what takes a while to send; small files would only flicker.
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            let bar = (size >= 4 << 20).then(|| {
                crate::output::transfer_bar(&format!("Pushing {} to {path}", file.display()), size)
            });
            let progress = bar.clone();
            let reply = conn
                .client
                .send_file(
                    Method::POST,
                    &url,
                    &headers,
                    file,
                    Arc::new(move |n| {
                        if let Some(bar) = &progress {
                            bar.set_position(n);
                        }
                    }),
                )
                .await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            reply
        }
        None => {
            conn.client
                .send(Method::POST, &url, &headers, body.into())
                .await
        }
    }
    .map_err(|e| conn.explain(e))?;
    check(conn, &reply)
}

async fn push(
    conn: &Conn,
    name: &str,
    local: &Path,
    path: &str,
    owner: &Owner,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(local).with_context(|| format!("reading {}", local.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (push directories with -r)",
            local.display()
        );
    }
    let ids = (
        owner.uid.unwrap_or(0),
        owner.gid.unwrap_or(0),
        owner.mode.unwrap_or(meta.permissions().mode() & 0o7777),
    );
    post(conn, name, path, "file", ids, Some(local), Vec::new()).await
}

/// `rxc file push -r`: `local` (a directory, file or symlink) and everything under it, at
/// `path`, with the local owners and modes unless `owner` says otherwise.
async fn push_tree(
    conn: &Conn,
    name: &str,
    local: &Path,
    path: &str,
    owner: &Owner,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(local).with_context(|| format!("reading {}", local.display()))?;
    let ids = (
        owner.uid.unwrap_or(meta.uid()),
        owner.gid.unwrap_or(meta.gid()),
        owner.mode.unwrap_or(meta.mode() & 0o7777),
    );
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(local)?;
        let target = target.as_os_str().as_encoded_bytes().to_vec();
        return post(conn, name, path, "symlink", ids, None, target).await;
    }
    if kind.is_file() {
        return post(conn, name, path, "file", ids, Some(local), Vec::new()).await;
    }
    if !kind.is_dir() {
        eprintln!(
            "Skipping {}: not a file, directory or symlink",
            local.display()
        );
        return Ok(());
    }
    post(conn, name, path, "directory", ids, None, Vec::new()).await?;
    let mut entries: Vec<_> = std::fs::read_dir(local)
        .with_context(|| format!("reading {}", local.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = format!("{path}/{}", entry.file_name().to_string_lossy());
        Box::pin(push_tree(conn, name, &entry.path(), &child, owner)).await?;
    }
    Ok(())
}

/// `rxc file edit`: the file in the editor, or standard input when that is not a terminal,
/// written back with the owner and mode it had.
async fn edit(conf: &ConfigDir, spec: &str) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Read};
    let (conn, name, path) = target(conf, spec)?;
    let reply = get(&conn, &name, &path).await?;
    if kind(&reply) != "file" {
        bail!("{path} is a {}: only files can be edited", kind(&reply));
    }
    let id = |h: &str| {
        reply
            .header(h)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let ids = (
        id("x-lxd-uid"),
        id("x-lxd-gid"),
        mode_of(&reply).unwrap_or(0o644),
    );
    let content = if std::io::stdin().is_terminal() {
        crate::edit::edit_text(&reply.body)?
    } else {
        let mut all = Vec::new();
        std::io::stdin().read_to_end(&mut all)?;
        all
    };
    post(&conn, &name, &path, "file", ids, None, content).await
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
