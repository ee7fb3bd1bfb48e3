//! `rxc image ...`: import with a progress bar, list, show, delete, and aliases.

use crate::cli::{AliasCmd, ImageCmd};
use crate::connect::{open, remote_name, split_target, Conn};
use crate::output::{column, print_list, str_of, yes_no};
use anyhow::{anyhow, bail, Context};
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn run(conf: &ConfigDir, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import {
            file,
            remote,
            alias,
            public,
        } => import(conf, &file, remote.as_deref(), &alias, public).await,
        ImageCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let images = conn
                .call(Method::GET, "/1.0/images?recursion=1", None)
                .await?;
            let items = images.as_array().cloned().unwrap_or_default();
            let columns = [
                column("ALIAS", |v| {
                    v["aliases"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x["name"].as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                }),
                column("FINGERPRINT", |v| {
                    str_of(v, "fingerprint").chars().take(12).collect()
                }),
                column("PUBLIC", |v| yes_no(v["public"] == true)),
                column("DESCRIPTION", |v| {
                    v["properties"]["description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }),
                column("ARCHITECTURE", |v| str_of(v, "architecture")),
                column("TYPE", |v| str_of(v, "type")),
                column("SIZE", |v| {
                    format!("{:.2}MiB", v["size"].as_f64().unwrap_or(0.0) / 1048576.0)
                }),
                column("UPLOAD DATE", |v| str_of(v, "uploaded_at")),
            ];
            print_list(format.format, &items, &columns)
        }
        ImageCmd::Show { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let v = conn
                .call(Method::GET, &format!("/1.0/images/{fp}"), None)
                .await?;
            print!("{}", serde_norway::to_string(&v)?);
            Ok(())
        }
        ImageCmd::Delete { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let op = conn
                .call(Method::DELETE, &format!("/1.0/images/{fp}"), None)
                .await?;
            wait(&conn, &op).await.map(drop)
        }
        ImageCmd::Alias(cmd) => alias(conf, cmd).await,
    }
}

/// `[REMOTE:]ALIAS_OR_FINGERPRINT` to a connection and a fingerprint (prefix).
async fn resolve(conf: &ConfigDir, target: &str) -> anyhow::Result<(Conn, String)> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let reply = conn
        .client
        .request(Method::GET, &format!("/1.0/images/aliases/{name}"), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let fp = match reply.metadata() {
        Ok(alias) => alias["target"].as_str().unwrap_or_default().to_owned(),
        Err(_) => name,
    };
    Ok((conn, fp))
}

/// Wait for an operation (given as the object a 202 returned) and return its final form.
pub async fn wait(conn: &Conn, op: &Value) -> anyhow::Result<Value> {
    let id = op["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server returned no operation"))?;
    let done = conn
        .call(Method::GET, &format!("/1.0/operations/{id}/wait"), None)
        .await?;
    match done["status"].as_str() {
        Some("Success") => Ok(done),
        _ => bail!(
            "{}",
            done["err"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or("the operation failed")
        ),
    }
}

async fn import(
    conf: &ConfigDir,
    file: &str,
    remote: Option<&str>,
    aliases: &[String],
    public: bool,
) -> anyhow::Result<()> {
    let conn = open(conf, &remote_name(conf, remote))?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {file}"))?
        .len();
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "Transferring image: {bytes}/{total_bytes} ({bytes_per_sec}) {wide_bar}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress_bar = bar.clone();
    let filename = std::path::Path::new(file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut headers = vec![("x-lxd-filename", filename.as_str())];
    if public {
        headers.push(("x-lxd-public", "1"));
    }
    let reply = conn
        .client
        .send_file(
            Method::POST,
            "/1.0/images",
            &headers,
            std::path::Path::new(file),
            Arc::new(move |n| progress_bar.set_position(n)),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    bar.finish_and_clear();
    let op = reply.metadata().map_err(|e| anyhow!(e))?;
    let done = wait(&conn, &op).await?;
    let fp = done["metadata"]["fingerprint"]
        .as_str()
        .ok_or_else(|| anyhow!("no fingerprint in the reply"))?
        .to_owned();
    for name in aliases {
        conn.call(
            Method::POST,
            "/1.0/images/aliases",
            Some(&json!({"name": name, "target": fp, "description": ""})),
        )
        .await?;
    }
    println!("Image imported with fingerprint: {fp}");
    Ok(())
}

async fn alias(conf: &ConfigDir, cmd: AliasCmd) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Create {
            name,
            fingerprint,
            description,
        } => {
            let (remote, name) = split_target(conf, &name);
            let conn = open(conf, &remote)?;
            let body = json!({"name": name, "target": fingerprint, "description": description});
            conn.call(Method::POST, "/1.0/images/aliases", Some(&body))
                .await
                .map(drop)
        }
        AliasCmd::Delete { name } => {
            let (remote, name) = split_target(conf, &name);
            open(conf, &remote)?
                .call(Method::DELETE, &format!("/1.0/images/aliases/{name}"), None)
                .await
                .map(drop)
        }
        AliasCmd::Rename { old, new } => {
            let (remote, old) = split_target(conf, &old);
            let body = json!({"name": new});
            open(conf, &remote)?
                .call(
                    Method::POST,
                    &format!("/1.0/images/aliases/{old}"),
                    Some(&body),
                )
                .await
                .map(drop)
        }
        AliasCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let list = conn
                .call(Method::GET, "/1.0/images/aliases?recursion=1", None)
                .await?;
            let items = list.as_array().cloned().unwrap_or_default();
            let columns = [
                column("ALIAS", |v| str_of(v, "name")),
                column("FINGERPRINT", |v| {
                    str_of(v, "target").chars().take(12).collect()
                }),
                column("TYPE", |v| str_of(v, "type")),
                column("DESCRIPTION", |v| str_of(v, "description")),
            ];
            print_list(format.format, &items, &columns)
        }
    }
}
