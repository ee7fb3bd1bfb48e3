//! `/1.0/networks`: LXD's network API for managed bridges (all in the `default` project, as
//! LXD 5.0 keeps them without `features.networks`), and the host's interfaces as unmanaged
//! networks for the server administrator. Writes are the server administrator's; the rules are
//! `service::networks`'.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::networks::{self, config_of};
use crate::state::Daemon;
use crate::views::{addresses, counters};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::network::{
    Network, NetworkLease, NetworkPost, NetworkPut, NetworkState, NetworkStateBridge,
    NetworkStateCounters, NetworksPost,
};
use rxd_store::NetworkRow;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a PUT replaces and the ETag covers (LXD's: config and description).
#[derive(Serialize)]
struct EtagFields {
    config: BTreeMap<String, String>,
    description: String,
}

fn etag_fields(row: &NetworkRow) -> EtagFields {
    EtagFields {
        config: config_of(row),
        description: row.description.clone(),
    }
}

fn url(name: &str) -> String {
    format!("/1.0/networks/{name}")
}

async fn to_api(d: &Daemon, caller: &Caller, row: &NetworkRow) -> ApiResult<Network> {
    Ok(Network {
        config: config_of(row),
        description: row.description.clone(),
        name: row.name.clone(),
        kind: row.kind.clone(),
        // Only what the caller may see: other projects' instances and profiles stay unnamed.
        used_by: networks::used_by(d, &row.name)
            .await?
            .into_iter()
            .filter(|(project, _)| caller.can_view(project))
            .map(|(_, url)| url)
            .collect(),
        managed: true,
        status: if d.networks.error(&row.name).is_some() {
            "Errored".into()
        } else {
            "Created".into()
        },
        locations: vec!["none".into()],
    })
}

/// A host interface as LXD lists it (`managed: false`), for the server administrator.
fn unmanaged(info: &rxd_network::LinkInfo) -> Network {
    Network {
        name: info.name.clone(),
        kind: host_kind(info).into(),
        locations: vec!["none".into()],
        ..Network::default()
    }
}

/// LXD's type of an unmanaged interface.
fn host_kind(info: &rxd_network::LinkInfo) -> &'static str {
    match info.kind.as_deref() {
        _ if info.loopback => "loopback",
        Some("bridge") => "bridge",
        Some("bond") => "bond",
        Some("vlan") => "vlan",
        None => "physical",
        Some(_) => "unknown",
    }
}

async fn host_links() -> ApiResult<Vec<rxd_network::LinkInfo>> {
    tokio::task::spawn_blocking(|| rxd_network::Netlink::open()?.list_links())
        .await?
        .map_err(ApiError::internal)
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let rows = networks::list(&d).await?;
    // A restricted project's members see the networks it may use (LXD's rule).
    let usable = networks::usable_by(&d, &caller.project);
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| caller.rights.is_admin() || usable.as_ref().is_none_or(|u| u.contains(&r.name)))
        .collect();
    let mut objects = Vec::new();
    for row in &rows {
        objects.push(if q.recursion > 0 {
            serde_json::to_value(to_api(&d, &caller, row).await?).map_err(ApiError::internal)?
        } else {
            serde_json::json!({ "name": row.name })
        });
    }
    // Host interfaces tell a non-admin nothing they may use, and too much about the host.
    if caller.rights.is_admin() {
        for link in host_links().await? {
            if rows.iter().any(|r| r.name == link.name) {
                continue;
            }
            objects.push(if q.recursion > 0 {
                serde_json::to_value(unmanaged(&link)).map_err(ApiError::internal)?
            } else {
                serde_json::json!({ "name": link.name })
            });
        }
    }
    let selected = q.select(objects, |o| url(o["name"].as_str().unwrap_or_default()))?;
    Ok(response::sync(selected))
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<NetworksPost>,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    networks::create(
        &d,
        &admin,
        &body.name,
        &body.kind,
        body.description,
        body.config,
    )
    .await?;
    let url = url(&body.name);
    tracing::info!(network = %body.name, by = %caller.identity.user_name(), "network created");
    d.events
        .lifecycle("network-created", &url, "default", &caller);
    Ok(response::created(&url))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    match networks::get(&d, &name).await {
        Ok(row) => {
            let body = to_api(&d, &caller, &row).await?;
            Ok(response::sync_with_etag(body, &etag_fields(&row)))
        }
        Err(ApiError::NotFound(m)) if caller.rights.is_admin() => {
            let link = host_links().await?.into_iter().find(|l| l.name == name);
            match link {
                Some(link) => Ok(response::sync(unmanaged(&link))),
                None => Err(ApiError::NotFound(m)),
            }
        }
        Err(e) => Err(e),
    }
}

async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: NetworkPut,
    replace: bool,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    let change = |row: &NetworkRow| -> ApiResult<(String, networks::Config)> {
        check_if_match(headers, &etag_fields(row))?;
        let current = etag_fields(row);
        let description = match (body.description, replace) {
            (Some(t), _) => t,
            (None, true) => String::new(),
            (None, false) => current.description,
        };
        let config = crate::patch::merged(current.config, body.config, replace);
        Ok((description, config))
    };
    networks::update(d, &admin, name, change).await?;
    tracing::info!(network = %name, by = %caller.identity.user_name(), "network updated");
    d.events
        .lifecycle("network-updated", &url(name), "default", caller);
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NetworkPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NetworkPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, false).await
}

/// `POST /1.0/networks/<name>`: rename.
pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<NetworkPost>,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    networks::rename(&d, &admin, &name, &body.name).await?;
    let new_url = url(&body.name);
    tracing::info!(network = %name, to = %body.name, by = %caller.identity.user_name(), "network renamed");
    d.events
        .lifecycle("network-renamed", &new_url, "default", &caller);
    Ok(response::created(&new_url))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    networks::delete(&d, &admin, &name).await?;
    tracing::info!(network = %name, by = %caller.identity.user_name(), "network deleted");
    d.events
        .lifecycle("network-deleted", &url(&name), "default", &caller);
    Ok(response::empty())
}

/// `GET /1.0/networks/<name>/state`: the bridge as the kernel has it.
pub async fn state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let managed = networks::get(&d, &name).await.is_ok();
    if !managed && !caller.rights.is_admin() {
        return Err(ApiError::NotFound("Network not found".into()));
    }
    let n = name.clone();
    let found = tokio::task::spawn_blocking(move || -> rxd_network::Result<_> {
        let mut nl = rxd_network::Netlink::open()?;
        let Ok(ifname) = rxd_core::network::config::IfName::parse(&n) else {
            return Ok(None);
        };
        let Some(link) = nl.link_info(&ifname)? else {
            return Ok(None);
        };
        nl.link_state(link.index).map(Some)
    })
    .await?
    .map_err(ApiError::internal)?;
    let Some(link) = found else {
        return Err(ApiError::NotFound("Network interface not found".into()));
    };
    let iface = &link.iface;
    let mut state = NetworkState {
        addresses: addresses(&iface.addresses),
        counters: {
            let c = counters(&iface.counters);
            NetworkStateCounters {
                bytes_received: c.bytes_received,
                bytes_sent: c.bytes_sent,
                packets_received: c.packets_received,
                packets_sent: c.packets_sent,
            }
        },
        hwaddr: iface.mac().map(|m| m.to_string()).unwrap_or_default(),
        mtu: i64::from(iface.mtu),
        state: iface.flags.state().into(),
        kind: rxd_network::LinkType::of_network(iface.flags)
            .as_str()
            .into(),
        ..NetworkState::default()
    };
    if let Some(b) = &link.bridge {
        state.bridge = Some(NetworkStateBridge {
            id: b.id.map(|id| id.to_string()).unwrap_or_default(),
            stp: b.stp,
            forward_delay: u64::from(b.forward_delay),
            vlan_default: u64::from(b.vlan_default),
            vlan_filtering: b.vlan_filtering,
            upper_devices: b.ports.clone(),
        });
    }
    Ok(response::sync(state))
}

/// `GET /1.0/networks/<name>/leases`: the gateway, each NIC's reservation, then dnsmasq's
/// dynamic leases; a non-admin sees only the NICs of the projects it may view.
pub async fn leases(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = networks::get(&d, &name).await?;
    let leases =
        networks::leases(&d, &row, |p| caller.can_view(p), caller.rights.is_admin()).await?;
    let out: Vec<NetworkLease> = leases
        .into_iter()
        .map(|(hostname, hwaddr, address, kind)| NetworkLease {
            hostname,
            hwaddr,
            address,
            kind: kind.into(),
            location: "none".into(),
        })
        .collect();
    Ok(response::sync(out))
}
