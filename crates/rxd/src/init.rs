//! `rxd init`: first configuration of a running rxd, as `lxd init` does it, through the unix
//! socket: `--preseed` applies a YAML document (server `config`, `networks`, `profiles`,
//! `projects`) read from standard input; `--auto` sets what its flags give and, as `lxd init
//! --auto` does, makes the managed bridge `rxdbr0` (addresses chosen automatically, NAT) and
//! gives the `default` profile an `eth0` on it (`--no-network` leaves networking alone). Both
//! may run again: keys are merged and existing networks, profiles and projects are updated.
//! What rxd does not have (storage pools, clustering) is refused by name rather than ignored.

use anyhow::{anyhow, bail, Context};
use rxd_api::project::{ProjectPut, ProjectsPost};
use rxd_client::{Client, Method};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Read a preseed YAML document from standard input (`config:` and `projects:`).
    #[arg(long, conflicts_with = "auto")]
    pub preseed: bool,
    /// Configure without questions, from the flags below.
    #[arg(long)]
    pub auto: bool,
    /// With --auto: the address to serve HTTPS on (`core.https_address`).
    #[arg(long, requires = "auto")]
    pub network_address: Option<String>,
    /// With --auto: the HTTPS port (default 8443).
    #[arg(long, requires = "network_address", default_value_t = 8443)]
    pub network_port: u16,
    /// With --auto: a trust password (prefer join tokens: `rxc config trust add --name`).
    #[arg(long, requires = "auto")]
    pub trust_password: Option<String>,
    /// With --auto: make no bridge and give the default profile no NIC.
    #[arg(long, requires = "auto")]
    pub no_network: bool,
}

/// What a preseed may hold. The sections rxd has no such thing for are read only to refuse them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Preseed {
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default)]
    projects: Vec<PreseedProject>,
    #[serde(default)]
    storage_pools: Vec<Value>,
    #[serde(default)]
    networks: Vec<PreseedNetwork>,
    #[serde(default)]
    profiles: Vec<PreseedProfile>,
    #[serde(default)]
    cluster: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PreseedProject {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PreseedNetwork {
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// LXD's preseeds may name the project (networks live in `default` in rxd).
    #[serde(default)]
    project: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PreseedProfile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    project: Option<String>,
}

/// The bridge `--auto` makes, as `lxd init --auto` makes `lxdbr0`.
const AUTO_BRIDGE: &str = "rxdbr0";

fn parse(text: &str) -> anyhow::Result<Preseed> {
    let preseed: Preseed = match serde_norway::from_str::<Option<Preseed>>(text) {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => bail!("the preseed does not read: {e}"),
    };
    let mut missing = Vec::new();
    for (section, present) in [
        ("storage_pools", !preseed.storage_pools.is_empty()),
        (
            "cluster",
            preseed.cluster.as_ref().is_some_and(|c| !c.is_null()),
        ),
    ] {
        if present {
            missing.push(section);
        }
    }
    if !missing.is_empty() {
        bail!(
            "rxd has no {}: remove {} from the preseed (containers use rxd's own storage)",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(preseed)
}

async fn call(client: &Client, method: Method, path: &str, body: &Value) -> anyhow::Result<()> {
    client
        .request(method.clone(), path, Some(body))
        .await
        .map_err(|e| anyhow!("{method} {path}: {e}"))?
        .metadata()
        .map_err(|e| anyhow!("{method} {path}: {e}"))?;
    Ok(())
}

async fn exists(client: &Client, path: &str) -> anyhow::Result<bool> {
    Ok(client
        .request(Method::GET, path, None)
        .await
        .map_err(|e| anyhow!("{e}"))?
        .status
        == 200)
}

/// `--auto`'s networking: `rxdbr0` if it is missing, and an `eth0` on it in the default
/// profile if that profile has no NIC yet (an administrator's own choice is kept).
async fn auto_network(client: &Client) -> anyhow::Result<()> {
    let path = format!("/1.0/networks/{AUTO_BRIDGE}");
    if !exists(client, &path).await? {
        call(
            client,
            Method::POST,
            "/1.0/networks",
            &json!({"name": AUTO_BRIDGE, "type": "bridge", "config": {}}),
        )
        .await?;
    }
    let profile = client
        .get("/1.0/profiles/default")
        .await
        .map_err(|e| anyhow!("GET /1.0/profiles/default: {e}"))?;
    let has_nic = profile["devices"]
        .as_object()
        .is_some_and(|d| d.values().any(|v| v["type"] == "nic"));
    if !has_nic {
        let mut devices = profile["devices"].clone();
        if !devices.is_object() {
            devices = json!({});
        }
        devices["eth0"] = json!({"type": "nic", "network": AUTO_BRIDGE, "name": "eth0"});
        call(
            client,
            Method::PATCH,
            "/1.0/profiles/default",
            &json!({"devices": devices}),
        )
        .await?;
    }
    Ok(())
}

async fn apply(client: &Client, preseed: Preseed) -> anyhow::Result<()> {
    if !preseed.config.is_empty() {
        call(
            client,
            Method::PATCH,
            "/1.0",
            &json!({ "config": preseed.config }),
        )
        .await?;
    }
    for network in preseed.networks {
        if network.project.as_deref().is_some_and(|p| p != "default") {
            bail!(
                "network {:?}: rxd keeps managed networks in the default project",
                network.name
            );
        }
        let path = format!("/1.0/networks/{}", network.name);
        if exists(client, &path).await? {
            let body = json!({"config": network.config, "description": network.description});
            call(client, Method::PATCH, &path, &body).await?;
        } else {
            let body = json!({
                "name": network.name,
                "type": network.kind,
                "description": network.description,
                "config": network.config,
            });
            call(client, Method::POST, "/1.0/networks", &body).await?;
        }
    }
    for profile in preseed.profiles {
        let suffix = match profile.project.as_deref() {
            Some(p) if p != "default" => format!("?project={p}"),
            _ => String::new(),
        };
        let path = format!("/1.0/profiles/{}{suffix}", profile.name);
        if exists(client, &path).await? {
            let body = json!({
                "config": profile.config,
                "description": profile.description,
                "devices": profile.devices,
            });
            call(client, Method::PATCH, &path, &body).await?;
        } else {
            let body = json!({
                "name": profile.name,
                "description": profile.description,
                "config": profile.config,
                "devices": profile.devices,
            });
            call(
                client,
                Method::POST,
                &format!("/1.0/profiles{suffix}"),
                &body,
            )
            .await?;
        }
    }
    for project in preseed.projects {
        if exists(client, &format!("/1.0/projects/{}", project.name)).await? {
            let body = ProjectPut {
                config: Some(project.config),
                description: Some(project.description),
            };
            let path = format!("/1.0/projects/{}", project.name);
            call(client, Method::PATCH, &path, &serde_json::to_value(body)?).await?;
        } else {
            let body = ProjectsPost {
                name: project.name,
                description: project.description,
                config: project.config,
            };
            call(
                client,
                Method::POST,
                "/1.0/projects",
                &serde_json::to_value(body)?,
            )
            .await?;
        }
    }
    Ok(())
}

pub async fn run(dir: &Path, args: InitArgs) -> anyhow::Result<()> {
    let preseed = if args.preseed {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the preseed from standard input")?;
        parse(&text)?
    } else if args.auto {
        let mut config = Map::new();
        if let Some(addr) = &args.network_address {
            let host = if addr.contains(':') && !addr.starts_with('[') {
                format!("[{addr}]")
            } else {
                addr.clone()
            };
            config.insert(
                "core.https_address".into(),
                Value::String(format!("{host}:{}", args.network_port)),
            );
        }
        if let Some(pw) = &args.trust_password {
            config.insert("core.trust_password".into(), Value::String(pw.clone()));
        }
        Preseed {
            config,
            ..Default::default()
        }
    } else {
        bail!("rxd init asks no questions: use --preseed (YAML on standard input) or --auto");
    };
    let client = Client::unix(dir.join("unix.socket"));
    client.get("/1.0").await.map_err(|e| {
        anyhow!(
            "cannot reach rxd at {}: {e} (is it running? systemctl start rxd)",
            dir.join("unix.socket").display()
        )
    })?;
    apply(&client, preseed).await?;
    if args.auto && !args.no_network {
        auto_network(&client).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preseeds_read_as_lxd_writes_them_or_are_refused_by_name() {
        let p = parse(
            "config:\n  core.https_address: '[::]:8443'\nprojects:\n- name: web\n  config:\n    limits.containers: '5'\n",
        )
        .unwrap();
        assert_eq!(p.config["core.https_address"], "[::]:8443");
        assert_eq!(p.projects[0].config["limits.containers"], "5");
        assert!(parse("").unwrap().config.is_empty());
        assert!(parse("networks: []\nprofiles: []\ncluster: null\n").is_ok());
        let p = parse("networks:\n- name: br1\n  type: bridge\n  config:\n    ipv4.address: auto\nprofiles:\n- name: default\n  devices:\n    eth0:\n      type: nic\n      network: br1\n").unwrap();
        assert_eq!(p.networks[0].config["ipv4.address"], "auto");
        assert_eq!(p.profiles[0].devices["eth0"]["network"], "br1");
        let e = parse("storage_pools:\n- name: default\n  driver: dir\n").unwrap_err();
        assert!(e.to_string().contains("no storage_pools"), "{e}");
        assert!(parse("config: [1]").is_err());
        assert!(parse("colour: blue").is_err());
    }
}
