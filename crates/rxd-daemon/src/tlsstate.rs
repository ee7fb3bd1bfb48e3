//! The server's TLS identity and PKI state: `server.crt`/`server.key`, and in PKI mode `server.ca`
//! with an optional `ca.crl`. Loaded at start-up; reloaded on SIGHUP or when one of the files
//! changes. A reload that finds a malformed file logs why and keeps the last good state.

use rxd_tls::pki::Pki;
use rxd_tls::KeyPairFiles;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The current state, shared by the listeners (read per connection) and handlers (per request).
pub type SharedTls = Arc<std::sync::RwLock<Arc<TlsState>>>;

pub const FILES: [&str; 4] = ["server.crt", "server.key", "server.ca", "ca.crl"];

pub enum PkiState {
    Ready(Arc<Pki>),
    /// `server.ca` exists but could not be used at start-up: fail closed, no CA-signed
    /// certificate is trusted until it is fixed.
    Broken,
}

pub struct TlsState {
    pub keypair: KeyPairFiles,
    pub config: Arc<rxd_tls::server::ServerConfig>,
    /// `None` outside PKI mode.
    pub pki: Option<PkiState>,
}

impl TlsState {
    pub fn ca_subject(&self) -> Option<String> {
        match &self.pki {
            Some(PkiState::Ready(p)) => {
                rxd_tls::cert::describe(&p.ca_der).and_then(|i| i.common_name)
            }
            _ => None,
        }
    }
}

/// Modification time and size of each file, to notice changes cheaply.
pub type Stamp = Vec<Option<(SystemTime, u64)>>;

pub fn stamp(dir: &Path) -> Stamp {
    FILES
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

fn load_pki(dir: &Path) -> Option<Result<Pki, String>> {
    let ca_path = dir.join("server.ca");
    if !ca_path.exists() {
        return None;
    }
    let ca = match std::fs::read(&ca_path) {
        Ok(b) => b,
        Err(e) => return Some(Err(format!("{}: {e}", ca_path.display()))),
    };
    let crl_path = dir.join("ca.crl");
    let crl = match std::fs::read(&crl_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Some(Err(format!("{}: {e}", crl_path.display()))),
    };
    Some(Pki::load(&ca, crl.as_deref()).map_err(|e| {
        let which = if matches!(e, rxd_tls::pki::PkiError::BadCrl(_)) {
            &crl_path
        } else {
            &ca_path
        };
        format!("{}: {e}", which.display())
    }))
}

fn build(keypair: KeyPairFiles, pki: Option<PkiState>) -> Result<TlsState, rxd_tls::TlsError> {
    let ca_names = match &pki {
        Some(PkiState::Ready(p)) => p.ca_names.clone(),
        _ => Vec::new(),
    };
    let config = rxd_tls::server::server_config(&keypair, ca_names)?;
    Ok(TlsState {
        keypair,
        config,
        pki,
    })
}

/// Start-up: keypair problems are fatal; a bad CA or CRL fails closed.
pub fn load(dir: &Path, host: &str) -> Result<TlsState, crate::DaemonError> {
    let keypair = KeyPairFiles::load_or_generate(
        &dir.join("server.crt"),
        &dir.join("server.key"),
        rxd_tls::Role::Server,
        &format!("root@{host}"),
        host,
    )?;
    if keypair.generated {
        tracing::warn!(fingerprint = %keypair.fingerprint, "generated a new server certificate; clients that pinned an earlier one will refuse it until re-added");
    }
    let pki = load_pki(dir).map(|r| match r {
        Ok(p) => PkiState::Ready(Arc::new(p)),
        Err(e) => {
            tracing::error!(error = %e, "PKI mode: cannot use the CA or CRL; no CA-signed client certificate is trusted until this is fixed");
            PkiState::Broken
        }
    });
    let state = build(keypair, pki)?;
    log_state(&state);
    Ok(state)
}

/// Reload: anything malformed is refused and the current state kept.
pub fn reload(dir: &Path, current: &TlsState) -> Result<TlsState, String> {
    let keypair = KeyPairFiles::load(&dir.join("server.crt"), &dir.join("server.key"))
        .map_err(|e| e.to_string())?;
    let pki = match load_pki(dir) {
        None => None,
        Some(Ok(p)) => Some(PkiState::Ready(Arc::new(p))),
        Some(Err(e)) => return Err(e),
    };
    let state = build(keypair, pki).map_err(|e| e.to_string())?;
    if state.keypair.fingerprint != current.keypair.fingerprint {
        tracing::warn!(old = %current.keypair.fingerprint, new = %state.keypair.fingerprint, "server certificate replaced");
    }
    log_state(&state);
    Ok(state)
}

fn log_state(state: &TlsState) {
    tracing::info!(fingerprint = %state.keypair.fingerprint, "server certificate");
    match &state.pki {
        Some(PkiState::Ready(p)) => tracing::info!(
            ca = %state.ca_subject().unwrap_or_default(),
            crl = p.has_crl,
            "PKI mode: client certificates must be issued by the CA and not revoked"
        ),
        Some(PkiState::Broken) => {}
        None => {}
    }
}

/// The CA's verdict on one certificate, as rxd-auth understands it.
pub fn ca_check(pki: &rxd_tls::pki::Pki, der: &[u8]) -> rxd_auth::CaCheck {
    match pki.verdict(der, rustls_now()) {
        rxd_tls::pki::CaVerdict::Signed => rxd_auth::CaCheck::Signed {
            subject: rxd_tls::cert::describe(der)
                .and_then(|i| i.common_name)
                .unwrap_or_else(|| "CA-issued".into()),
        },
        rxd_tls::pki::CaVerdict::NotSigned => rxd_auth::CaCheck::NotSigned,
        rxd_tls::pki::CaVerdict::Revoked => rxd_auth::CaCheck::Revoked,
        rxd_tls::pki::CaVerdict::Unverifiable => rxd_auth::CaCheck::Unverifiable,
    }
}

fn rustls_now() -> rxd_tls::pki::UnixTime {
    rxd_tls::pki::UnixTime::now()
}
