//! Warnings shown at `/1.0/warnings`. Those of the config are kept in step with it: a condition
//! that appears is a `new` warning (and a log line), one that goes away is `resolved`. Those of
//! events (start-up recovery) are recorded when they happen and stay until a client resolves or
//! deletes them.

use crate::sync::now_rfc3339;
use rxd_api::warning::Warning;
use rxd_core::config::StoredConfig;
use rxd_core::warnings::{config_warnings, WarningKind};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Warnings {
    by_kind: BTreeMap<WarningKind, Warning>,
}

impl Warnings {
    fn entry(&mut self, kind: WarningKind, now: &str) -> &mut Warning {
        self.by_kind.entry(kind).or_insert_with(|| Warning {
            status: "new".into(),
            uuid: uuid::Uuid::new_v4().to_string(),
            location: "none".into(),
            project: String::new(),
            kind: kind.type_name().into(),
            count: 0,
            first_seen_at: now.to_owned(),
            last_seen_at: now.to_owned(),
            last_message: String::new(),
            severity: kind.severity().into(),
            entity_url: String::new(),
        })
    }

    /// An event worth a warning happened (again): counted, `new`, with this message.
    pub fn record(&mut self, kind: WarningKind, message: String) {
        let now = now_rfc3339();
        let w = self.entry(kind, &now);
        w.count += 1;
        w.status = "new".into();
        w.last_seen_at = now;
        w.last_message = message;
    }

    pub fn refresh(&mut self, config: &StoredConfig) {
        let active = config_warnings(config);
        let now = now_rfc3339();
        for (kind, message) in &active {
            let w = self.entry(*kind, &now);
            let reappeared = w.status == "resolved" || w.count == 0;
            if reappeared {
                w.count += 1;
                w.status = "new".into();
                w.last_seen_at = now.clone();
                tracing::warn!(warning = kind.type_name(), "{message}");
            }
            w.last_message = message.clone();
        }
        for (kind, w) in self.by_kind.iter_mut() {
            let gone = kind.from_config() && !active.iter().any(|(k, _)| k == kind);
            if w.status != "resolved" && gone {
                w.status = "resolved".into();
                w.last_seen_at = now.clone();
            }
        }
    }

    pub fn list(&self) -> Vec<Warning> {
        self.by_kind.values().cloned().collect()
    }

    pub fn get(&self, uuid: &str) -> Option<Warning> {
        self.by_kind.values().find(|w| w.uuid == uuid).cloned()
    }

    /// Set the status of a warning (`new`, `acknowledged` or `resolved`).
    pub fn set_status(&mut self, uuid: &str, status: &str) -> bool {
        match self.by_kind.values_mut().find(|w| w.uuid == uuid) {
            Some(w) => {
                w.status = status.to_owned();
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, uuid: &str) -> bool {
        let before = self.by_kind.len();
        self.by_kind.retain(|_, w| w.uuid != uuid);
        self.by_kind.len() != before
    }
}
