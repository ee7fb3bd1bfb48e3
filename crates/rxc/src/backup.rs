//! `rxc export` and `rxc import`: an instance's backup (LXD's backup tarball) made on the
//! server, downloaded and deleted there, as `lxc export` does; and a backup tarball sent as a
//! new instance, as `lxc import` does.

use crate::connect::{open, split_target};
use crate::image::wait;
use anyhow::{anyhow, bail};
use rxd_api::backup::InstanceBackupsPost;
use rxd_api::operation::Operation;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use std::sync::Arc;

pub struct Export {
    pub instance_only: bool,
    pub optimized_storage: bool,
    pub compression: Option<String>,
}

/// `rxc export [REMOTE:]NAME [FILE]`: FILE defaults to `backup.tar.gz` (as lxc names it).
pub async fn export(
    conf: &ConfigDir,
    target: &str,
    file: Option<&str>,
    how: Export,
) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    // Kept a day if this client dies before it deletes it (lxc's choice).
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let body = InstanceBackupsPost {
        expires_at: expires
            .format(&time::format_description::well_known::Rfc3339)
            .ok(),
        instance_only: how.instance_only,
        container_only: how.instance_only,
        optimized_storage: how.optimized_storage,
        compression_algorithm: how.compression.unwrap_or_default(),
        ..Default::default()
    };
    let base = format!("/1.0/instances/{}/backups", crate::project::escape(&name));
    let op: Operation = conn
        .send_as(Method::POST, &base, &body)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let done = wait(&conn, &op).await?;
    let backup = done
        .resources
        .as_ref()
        .and_then(|r| r.get("backups"))
        .and_then(|v| v.first())
        .and_then(|u| u.rsplit('/').next())
        .map(|b| b.split('?').next().unwrap_or(b).to_owned())
        .ok_or_else(|| anyhow!("the server named no backup"))?;
    let path = format!("{base}/{backup}");
    let out = file.unwrap_or("backup.tar.gz");
    // Every file of the instance, /etc/shadow among them: its owner's alone. Written as it
    // downloads (a backup may be far larger than this client's memory).
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .await
        .map_err(|e| anyhow!("{out}: {e}"));
    let written = opened.is_ok();
    let result = async {
        let sink: rxd_client::Sink = tokio::sync::Mutex::new(opened?);
        let (report, bar) = crate::output::download_bar("Exporting the backup".into());
        let reply = conn
            .client
            .download_to(&format!("{path}/export"), &sink, report)
            .await;
        crate::output::download_done(&bar);
        let reply = reply.map_err(|e| conn.explain(e))?;
        if reply.status != 200 {
            let err = reply
                .envelope()
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {}", reply.status));
            bail!("{err}");
        }
        sink.into_inner()
            .sync_all()
            .await
            .map_err(|e| anyhow!("{out}: {e}"))?;
        Ok(())
    }
    .await;
    if result.is_err() && written {
        // No partial backup left to be mistaken for a whole one.
        let _ = std::fs::remove_file(out);
    }
    // Deleted on the server whatever happened here.
    if let Ok(op) = conn.call_as::<Operation>(Method::DELETE, &path).await {
        let _ = wait(&conn, &op).await;
    }
    result?;
    outln!("Backup exported successfully!")?;
    Ok(())
}

/// `rxc import [REMOTE:] FILE [NAME] [--storage POOL]`.
pub async fn import(
    conf: &ConfigDir,
    remote: Option<&str>,
    file: &str,
    name: Option<&str>,
    pool: Option<&str>,
) -> anyhow::Result<()> {
    let remote = remote
        .map(|r| r.trim_end_matches(':').to_owned())
        .unwrap_or_else(|| split_target(conf, "").0);
    let conn = open(conf, &remote)?;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(n) = name {
        headers.push(("X-LXD-name", n));
    }
    if let Some(p) = pool {
        headers.push(("X-LXD-pool", p));
    }
    let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(|_| {});
    let reply = conn
        .client
        .send_file(
            Method::POST,
            "/1.0/instances",
            &headers,
            std::path::Path::new(file),
            progress,
        )
        .await
        .map_err(|e| conn.explain(e))?;
    let op: Operation = reply.metadata_as().map_err(|e| anyhow!(e))?;
    wait(&conn, &op).await?;
    Ok(())
}
