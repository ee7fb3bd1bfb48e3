//! The production advice of LXD's security document, checked against the live config; and the
//! warnings of events the daemon reports once (what start-up recovery undid).

use crate::address::ListenAddress;
use crate::config::{StoredConfig, HTTPS_ADDRESS, TRUST_PASSWORD};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningKind {
    HttpsOnAllAddresses,
    TrustPasswordSet,
    /// Start-up found work a killed daemon left half-made, and undid it.
    Recovered,
    /// An instance did not halt within the timeout its stop asked for, and was killed.
    StopTimedOut,
    /// An instance that was to start with the daemon (`boot.autostart`) would not.
    AutostartFailed,
    /// A managed network could not be set up (its bridge, firewall or dnsmasq).
    NetworkUnavailable,
    /// Another table's firewall drops what a managed bridge needs (Docker, ufw, firewalld).
    FirewallConflict,
    /// A storage pool could not be mounted at start-up.
    StoragePoolUnavailable,
}

impl WarningKind {
    /// The `type` shown in `/1.0/warnings`.
    pub fn type_name(self) -> &'static str {
        match self {
            WarningKind::HttpsOnAllAddresses => "HTTPS listener bound to all addresses",
            WarningKind::TrustPasswordSet => "Trust password set",
            WarningKind::Recovered => "Unfinished work recovered at start-up",
            WarningKind::StopTimedOut => "Instance killed after its stop timeout",
            WarningKind::AutostartFailed => "Instance autostart failure",
            WarningKind::NetworkUnavailable => "Network unavailable",
            WarningKind::FirewallConflict => "Firewall conflict",
            WarningKind::StoragePoolUnavailable => "Storage pool unavailable",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            WarningKind::HttpsOnAllAddresses => "moderate",
            WarningKind::TrustPasswordSet => "low",
            WarningKind::Recovered => "moderate",
            WarningKind::StopTimedOut => "low",
            WarningKind::AutostartFailed => "moderate",
            WarningKind::NetworkUnavailable => "moderate",
            WarningKind::FirewallConflict => "moderate",
            WarningKind::StoragePoolUnavailable => "moderate",
        }
    }

    /// Whether the config decides this warning (it comes and goes with the config), rather
    /// than an event recording it.
    pub fn from_config(self) -> bool {
        !matches!(
            self,
            WarningKind::Recovered
                | WarningKind::StopTimedOut
                | WarningKind::AutostartFailed
                | WarningKind::NetworkUnavailable
                | WarningKind::FirewallConflict
                | WarningKind::StoragePoolUnavailable
        )
    }
}

/// The conditions that hold for this config, each with a message saying why it matters and what to
/// do instead.
pub fn config_warnings(config: &StoredConfig) -> Vec<(WarningKind, String)> {
    let mut out = Vec::new();
    if let Some(addr) = config.get(HTTPS_ADDRESS) {
        if ListenAddress::parse(addr).is_ok_and(|a| a.is_wildcard()) {
            out.push((
                WarningKind::HttpsOnAllAddresses,
                format!(
                    "core.https_address is {addr:?}, which accepts connections on every address of this \
                     host; set it to the single address clients use and firewall the port to admin networks"
                ),
            ));
        }
    }
    if config.contains_key(TRUST_PASSWORD) {
        out.push((
            WarningKind::TrustPasswordSet,
            "core.trust_password is set, so anyone who can reach the HTTPS port can try to guess it; \
             unset it once clients are enrolled (rxc config unset core.trust_password) and enrol new \
             clients with single-use tokens (rxc config trust add --name NAME)"
                .to_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], expected: &[WarningKind]) {
        let cfg: StoredConfig = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got: Vec<WarningKind> = config_warnings(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, expected, "{pairs:?}");
    }

    #[test]
    fn warnings_table() {
        use WarningKind::*;
        check(&[], &[]);
        check(&[(HTTPS_ADDRESS, "127.0.0.1:8443")], &[]);
        check(&[(HTTPS_ADDRESS, ":8443")], &[HttpsOnAllAddresses]);
        check(&[(HTTPS_ADDRESS, "[::]")], &[HttpsOnAllAddresses]);
        check(&[(HTTPS_ADDRESS, "0.0.0.0:1")], &[HttpsOnAllAddresses]);
        check(&[(TRUST_PASSWORD, "$argon2id$")], &[TrustPasswordSet]);
        check(
            &[(HTTPS_ADDRESS, ":1"), (TRUST_PASSWORD, "h")],
            &[HttpsOnAllAddresses, TrustPasswordSet],
        );
    }
}
