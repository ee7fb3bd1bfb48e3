//! `GET /`, and `GET`/`PUT`/`PATCH /1.0`: the server's description and its config.

use crate::body::Json;
use crate::caller::{Admin, Caller};
use crate::config::{update_config, ConfigView};
use crate::error::ApiResult;
use crate::response::{self, check_if_match};
use crate::state::Daemon;
use crate::sync::read;
use crate::tlsstate::TlsState;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use rxd_api::server::{Environment, ServerPut};
use rxd_core::config::UpdateMode;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::OnceLock;

pub async fn get_root() -> Response {
    response::sync(["/1.0"])
}

/// `GET /1.0` as it goes on the wire: the same fields and order as `rxd_api::server::Server`,
/// with the parts that are the same for every caller serialized once (`api_extensions` for the
/// process, `environment` per TLS identity and listener addresses). A test checks the bytes are
/// those of `Server`.
#[derive(serde::Serialize)]
struct ServerView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a serde_json::Value>,
    api_extensions: &'a RawValue,
    api_status: &'static str,
    api_version: &'static str,
    auth: &'static str,
    public: bool,
    auth_methods: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_user_method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a RawValue>,
}

fn api_extensions() -> &'static RawValue {
    static JSON: OnceLock<Box<RawValue>> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::value::to_raw_value(&rxd_api::API_EXTENSIONS).expect("strings serialize")
    })
}

pub async fn get(State(d): State<Arc<Daemon>>, caller: Caller) -> Response {
    let mut server = ServerView {
        config: None,
        api_extensions: api_extensions(),
        api_status: "stable",
        api_version: "1.0",
        auth: "untrusted",
        public: false,
        auth_methods: if d.logins.config().is_some() {
            &["tls", "candid"]
        } else {
            &["tls"]
        },
        auth_user_name: None,
        auth_user_method: None,
        environment: None,
    };
    if !caller.identity.is_trusted() {
        return response::sync(server);
    }
    let environment = d
        .environment_cache
        .get(d.tls_state(), d.addresses(), |tls, addresses| {
            environment(&d, tls, addresses)
        });
    server.auth = "trusted";
    server.auth_user_name = Some(caller.identity.user_name());
    server.auth_user_method = Some(caller.identity.method());
    server.environment = Some(&environment);
    if caller.rights.may_view_server() {
        let view = ConfigView::of(&read(&d.config));
        let config = serde_json::Value::Object(view.0.clone());
        server.config = Some(&config);
        response::sync_with_etag(server, &view)
    } else {
        // Trusted without server-wide rights: LXD shows `"config": null`.
        server.config = Some(&serde_json::Value::Null);
        response::sync(server)
    }
}

/// LXD's `storage` and `storage_version`: the drivers of the pools in use, joined with
/// " | " (sorted here; LXD's order is a Go map's), and their versions likewise.
fn storage_in_use(d: &Daemon) -> (String, String) {
    let mut drivers: Vec<&'static str> = d.pools.all().iter().map(|p| p.kind().as_str()).collect();
    drivers.sort_unstable();
    drivers.dedup();
    let version = |name: &str| {
        d.facts
            .storage_drivers
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.version.clone())
            .unwrap_or_default()
    };
    (
        drivers.join(" | "),
        drivers
            .iter()
            .map(|n| version(n))
            .collect::<Vec<_>>()
            .join(" | "),
    )
}

fn environment(d: &Daemon, tls: &TlsState, addresses: &[String]) -> Environment {
    let f = &d.facts;
    let (storage, storage_version) = storage_in_use(d);
    Environment {
        addresses: addresses.to_vec(),
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
        storage,
        storage_version,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rxd_api::server::{Server, StorageDriver};

    fn sample_environment() -> Environment {
        Environment {
            addresses: vec!["127.0.0.1:8443".into()],
            architectures: vec!["x86_64".into()],
            certificate: "-----BEGIN CERTIFICATE-----\nMIIB\"\\\n-----END CERTIFICATE-----\n"
                .into(),
            certificate_fingerprint: "ab".repeat(32),
            driver: "rxd".into(),
            driver_version: "0.1.0".into(),
            firewall: String::new(),
            kernel: "Linux".into(),
            kernel_architecture: "x86_64".into(),
            kernel_features: Default::default(),
            kernel_version: "6.1".into(),
            lxc_features: Default::default(),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            project: "default".into(),
            server: "lxd".into(),
            server_clustered: false,
            server_event_mode: "full-mesh".into(),
            server_name: "vm".into(),
            server_pid: 42,
            server_version: "5.0.2".into(),
            storage: "dir".into(),
            storage_version: "1".into(),
            storage_supported_drivers: vec![StorageDriver {
                name: "dir".into(),
                version: "1".into(),
                remote: false,
            }],
            rxd_version: "0.1.0".into(),
        }
    }

    /// The one-pass view must put exactly `Server`'s bytes on the wire, in every form.
    #[test]
    fn view_bytes_equal_the_api_type() {
        let env = sample_environment();
        let env_json = serde_json::value::to_raw_value(&env).unwrap();
        let config = serde_json::json!({"core.https_address": "127.0.0.1:8443"});
        for (config, trusted, methods) in [
            (None, false, &["tls"][..]),
            (Some(serde_json::Value::Null), true, &["tls", "candid"][..]),
            (Some(config.clone()), true, &["tls"][..]),
        ] {
            let api = Server {
                config: config.clone(),
                api_extensions: rxd_api::API_EXTENSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                api_status: "stable".into(),
                api_version: "1.0".into(),
                auth: if trusted { "trusted" } else { "untrusted" }.into(),
                public: false,
                auth_methods: methods.iter().map(|s| s.to_string()).collect(),
                auth_user_name: trusted.then(|| "alice".to_owned()),
                auth_user_method: trusted.then(|| "candid".to_owned()),
                environment: trusted.then(|| env.clone()),
            };
            let static_methods: &'static [&'static str] = if methods.len() == 2 {
                &["tls", "candid"]
            } else {
                &["tls"]
            };
            let view = ServerView {
                config: config.as_ref(),
                api_extensions: api_extensions(),
                api_status: "stable",
                api_version: "1.0",
                auth: if trusted { "trusted" } else { "untrusted" },
                public: false,
                auth_methods: static_methods,
                auth_user_name: trusted.then(|| "alice".to_owned()),
                auth_user_method: trusted.then_some("candid"),
                environment: trusted.then_some(&*env_json),
            };
            assert_eq!(
                serde_json::to_string(&view).unwrap(),
                serde_json::to_string(&api).unwrap()
            );
        }
    }
}
