//! `rxc publish`: a stopped container (or one stopped for it with `--force`) or a snapshot made
//! into an image by the server, as `lxc publish` asks for it.

use crate::connect::{open, split_target};
use crate::image::wait;
use crate::instance::change_state;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;

/// What `rxc publish` asks for besides its source.
pub struct Publish {
    pub properties: Vec<String>,
    pub aliases: Vec<String>,
    pub public: bool,
    pub compression: Option<String>,
    pub force: bool,
}

/// `rxc publish`: the server packs the container (stopped, or stopped for it with `--force`)
/// or snapshot as an image, as `lxc publish` asks it to.
pub async fn publish(conf: &ConfigDir, source: &str, p: Publish) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, source);
    let conn = open(conf, &remote)?;
    let mut properties = serde_json::Map::new();
    for kv in &p.properties {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{kv:?}: properties are KEY=VALUE"))?;
        properties.insert(k.to_owned(), v.into());
    }
    let snapshot = name.contains('/');
    let mut restart = false;
    if !snapshot {
        let state: rxd_api::instance::InstanceState =
            conn.get_as(&format!("/1.0/instances/{name}/state")).await?;
        if state.status == "Running" {
            if !p.force {
                anyhow::bail!(
                    "The instance is currently running. Use --force to have it stopped and restarted"
                );
            }
            change_state(&conn, &name, "stop", false, -1).await?;
            restart = true;
        }
    }
    let body = serde_json::json!({
        "source": {"type": if snapshot { "snapshot" } else { "instance" }, "name": name},
        "public": p.public,
        "properties": if properties.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(properties) },
        "compression_algorithm": p.compression.unwrap_or_default(),
        "aliases": p.aliases.iter().map(|a| serde_json::json!({"name": a, "description": ""})).collect::<Vec<_>>(),
    });
    let result = async {
        let op = conn.send_as(Method::POST, "/1.0/images", &body).await?;
        wait(&conn, &op).await
    }
    .await;
    if restart {
        change_state(&conn, &name, "start", false, -1).await?;
    }
    let done = result?;
    let fp = done
        .metadata
        .get("fingerprint")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    outln!("Instance published with fingerprint: {fp}")?;
    Ok(())
}
