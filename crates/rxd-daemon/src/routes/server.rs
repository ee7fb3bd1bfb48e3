//! `GET /`, and `GET`/`PUT`/`PATCH /1.0`: the server's description and its config.

use crate::body::Json;
use crate::caller::{Admin, Caller};
use crate::config::{update_config, ConfigView};
use crate::error::ApiResult;
use crate::response::{self, check_if_match};
use crate::state::{read, Daemon};
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use rxd_api::server::{Environment, Server, ServerPut};
use rxd_core::config::UpdateMode;
use std::sync::Arc;

pub async fn get_root() -> Response {
    response::sync(["/1.0"])
}

pub async fn get(State(d): State<Arc<Daemon>>, caller: Caller) -> Response {
    let mut server = Server {
        config: None,
        api_extensions: rxd_api::API_EXTENSIONS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        api_status: "stable".into(),
        api_version: "1.0".into(),
        auth: "untrusted".into(),
        public: false,
        auth_methods: if d.logins.config().is_some() {
            vec!["tls".into(), "candid".into()]
        } else {
            vec!["tls".into()]
        },
        auth_user_name: None,
        auth_user_method: None,
        environment: None,
    };
    if !caller.identity.is_trusted() {
        return response::sync(server);
    }
    server.auth = "trusted".into();
    server.auth_user_name = Some(caller.identity.user_name());
    server.auth_user_method = Some(caller.identity.method().into());
    server.environment = Some(environment(&d));
    if caller.rights.server_view {
        let view = ConfigView::of(&read(&d.config));
        server.config = Some(serde_json::Value::Object(view.0.clone()));
        response::sync_with_etag(server, &view)
    } else {
        // Trusted without server-wide rights: LXD shows `"config": null`.
        server.config = Some(serde_json::Value::Null);
        response::sync(server)
    }
}

fn environment(d: &Daemon) -> Environment {
    let f = &d.facts;
    let tls = d.tls_state();
    Environment {
        addresses: d.addresses(),
        architectures: f.architectures.clone(),
        certificate: tls.keypair.cert_pem.clone(),
        certificate_fingerprint: tls.keypair.fingerprint.clone(),
        driver: "rxd".into(),
        driver_version: env!("CARGO_PKG_VERSION").into(),
        firewall: String::new(),
        kernel: f.kernel.clone(),
        kernel_architecture: f.kernel_architecture.clone(),
        kernel_features: f.kernel_features(),
        kernel_version: f.kernel_version.clone(),
        lxc_features: Default::default(),
        os_name: f.os_name.clone(),
        os_version: f.os_version.clone(),
        project: "default".into(),
        server: "lxd".into(),
        server_clustered: false,
        server_event_mode: "full-mesh".into(),
        server_name: f.server_name.clone(),
        server_pid: std::process::id(),
        server_version: rxd_api::COMPAT_SERVER_VERSION.into(),
        storage: "dir".into(),
        storage_version: "1".into(),
        storage_supported_drivers: f.storage_drivers.clone(),
        rxd_version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    headers: HeaderMap,
    Json(body): Json<ServerPut>,
) -> ApiResult<Response> {
    check_if_match(&headers, &ConfigView::of(&read(&d.config)))?;
    update_config(&d, &proof, &caller, body.config, UpdateMode::Replace).await?;
    Ok(response::empty())
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    headers: HeaderMap,
    Json(body): Json<ServerPut>,
) -> ApiResult<Response> {
    check_if_match(&headers, &ConfigView::of(&read(&d.config)))?;
    update_config(&d, &proof, &caller, body.config, UpdateMode::Merge).await?;
    Ok(response::empty())
}
