//! The client's configuration directory (`$RXC_CONF`, default `~/.config/rxc`, mode 0700):
//! `config.yml` with the remotes, `servercerts/<remote>.crt` pins, the client keypair, and the
//! cookie jars of Candid remotes (`jars/<remote>`).
//! Every file is replaced atomically (write a temporary file, then rename), so a failed command
//! leaves the previous state intact.

use rxd_tls::KeyPairFiles;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const LOCAL: &str = "local";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("Remote {0} doesn't exist")]
    NoSuchRemote(String),
    #[error("Remote {name} exists as {addr}")]
    RemoteExists { name: String, addr: String },
    #[error("Remote names may not contain colons")]
    Colon,
    #[error("Invalid remote name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("Remote {0} is static and cannot be modified")]
    Static(String),
    #[error("client keypair: {0}")]
    KeyPair(#[from] rxd_tls::KeyPairError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remote {
    pub addr: String,
    #[serde(default = "tls", skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default = "default_project")]
    pub project: String,
    #[serde(default = "lxd")]
    pub protocol: String,
    #[serde(default)]
    pub public: bool,
    /// For a Candid remote: the agent file used to log in again without a person (absolute).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub candid_agent: String,
}

fn tls() -> String {
    "tls".into()
}
fn default_project() -> String {
    "default".into()
}
fn lxd() -> String {
    "lxd".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(rename = "default-remote", default = "local")]
    pub default_remote: String,
    #[serde(default)]
    pub remotes: BTreeMap<String, Remote>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

fn local() -> String {
    LOCAL.into()
}

impl Default for ConfigFile {
    fn default() -> Self {
        ConfigFile {
            default_remote: local(),
            remotes: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }
}

/// The configuration directory and what it holds.
pub struct ConfigDir {
    pub dir: PathBuf,
    pub file: ConfigFile,
    /// The project named on the command line (`--project`), which replaces every remote's own
    /// for this run; never saved (LXD's `ProjectOverride`).
    pub project_override: Option<String>,
}

impl ConfigDir {
    /// `$RXC_CONF`, else `~/.config/rxc`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("RXC_CONF") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".config").join("rxc")
    }

    /// Open (and create, 0700) the directory and read `config.yml` if present.
    pub fn open(dir: &Path) -> Result<ConfigDir, ConfigError> {
        let io = |source| ConfigError::Io {
            path: dir.into(),
            source,
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = dir.join("config.yml");
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        Ok(ConfigDir {
            dir: dir.into(),
            file,
            project_override: None,
        })
    }

    /// Every remote, with the built-in `local` (the unix socket) first unless overridden.
    pub fn remotes(&self) -> BTreeMap<String, Remote> {
        let mut all = self.file.remotes.clone();
        all.entry(LOCAL.into()).or_insert_with(|| Remote {
            addr: "unix://".into(),
            auth_type: "file access".into(),
            domain: String::new(),
            project: default_project(),
            protocol: lxd(),
            public: false,
            candid_agent: String::new(),
        });
        all
    }

    pub fn remote(&self, name: &str) -> Result<Remote, ConfigError> {
        self.remotes()
            .remove(name)
            .ok_or_else(|| ConfigError::NoSuchRemote(name.into()))
    }

    /// The project commands on `remote` use: `--project` if given, else the remote's own.
    pub fn project_for(&self, remote: &Remote) -> String {
        match &self.project_override {
            Some(p) if !p.is_empty() => p.clone(),
            _ => remote.project.clone(),
        }
    }

    /// Make `project` the current one of remote `name` and save (`rxc project switch`).
    pub fn set_project(&mut self, name: &str, project: &str) -> Result<(), ConfigError> {
        let mut remote = self.remote(name)?;
        remote.project = project.into();
        let previous = self.file.remotes.insert(name.into(), remote);
        if let Err(e) = self.save() {
            match previous {
                Some(r) => self.file.remotes.insert(name.into(), r),
                None => self.file.remotes.remove(name),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn check_new_name(&self, name: &str) -> Result<(), ConfigError> {
        if name.contains(':') {
            return Err(ConfigError::Colon);
        }
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ConfigError::BadName(name.into()));
        }
        if let Some(r) = self.remotes().get(name) {
            return Err(ConfigError::RemoteExists {
                name: name.into(),
                addr: r.addr.clone(),
            });
        }
        Ok(())
    }

    pub fn pin_path(&self, remote: &str) -> PathBuf {
        self.dir.join("servercerts").join(format!("{remote}.crt"))
    }

    /// The cookie jar of a Candid remote.
    pub fn jar_path(&self, remote: &str) -> PathBuf {
        self.dir.join("jars").join(remote)
    }

    /// The pinned certificate (DER) of a remote, if it has one.
    pub fn pin(&self, remote: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let path = self.pin_path(remote);
        match std::fs::read_to_string(&path) {
            Ok(pem) => rxd_tls::cert::from_pem(&pem)
                .map(Some)
                .ok_or_else(|| ConfigError::Parse {
                    path,
                    reason: "no PEM certificate".into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// The CA that replaces fingerprint pinning (PKI mode), if `client.ca` exists.
    pub fn client_ca(&self) -> Option<PathBuf> {
        let p = self.dir.join("client.ca");
        p.exists().then_some(p)
    }

    pub fn has_client_cert(&self) -> bool {
        self.dir.join("client.crt").exists() || self.dir.join("client.key").exists()
    }

    /// The client keypair, generated on first need (`generated` tells the caller to say so).
    pub fn client_keypair(&self) -> Result<KeyPairFiles, ConfigError> {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| "root".into())
            });
        Ok(KeyPairFiles::load_or_generate(
            &self.dir.join("client.crt"),
            &self.dir.join("client.key"),
            rxd_tls::Role::Client,
            &format!("{user}@{host}"),
            "",
        )?)
    }

    /// Add (or replace) a remote and its pin together: the pin first, then the config; if the
    /// config cannot be written the pin is removed again.
    pub fn save_remote(
        &mut self,
        name: &str,
        remote: Remote,
        pin_pem: Option<&str>,
    ) -> Result<(), ConfigError> {
        let pin_path = self.pin_path(name);
        if let Some(pem) = pin_pem {
            let dir = self.dir.join("servercerts");
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|source| ConfigError::Io {
                        path: dir.clone(),
                        source,
                    })?;
            }
            write_atomic(&pin_path, pem.as_bytes(), 0o644)?;
        } else {
            remove_if_exists(&pin_path)?;
        }
        self.file.remotes.insert(name.into(), remote);
        if let Err(e) = self.save() {
            self.file.remotes.remove(name);
            let _ = std::fs::remove_file(&pin_path);
            return Err(e);
        }
        Ok(())
    }

    pub fn remove_remote(&mut self, name: &str) -> Result<(), ConfigError> {
        if name == LOCAL && !self.file.remotes.contains_key(LOCAL) {
            return Err(ConfigError::Static(name.into()));
        }
        if self.file.remotes.remove(name).is_none() {
            return Err(ConfigError::NoSuchRemote(name.into()));
        }
        if self.file.default_remote == name {
            self.file.default_remote = LOCAL.into();
        }
        self.save()?;
        remove_if_exists(&self.jar_path(name))?;
        remove_if_exists(&self.pin_path(name))
    }

    pub fn rename_remote(&mut self, old: &str, new: &str) -> Result<(), ConfigError> {
        if old == LOCAL && !self.file.remotes.contains_key(LOCAL) {
            return Err(ConfigError::Static(old.into()));
        }
        self.check_new_name(new)?;
        let remote = self
            .file
            .remotes
            .remove(old)
            .ok_or_else(|| ConfigError::NoSuchRemote(old.into()))?;
        self.file.remotes.insert(new.into(), remote);
        if self.file.default_remote == old {
            self.file.default_remote = new.into();
        }
        for (from, to) in [
            (self.pin_path(old), self.pin_path(new)),
            (self.jar_path(old), self.jar_path(new)),
        ] {
            if from.exists() {
                std::fs::rename(&from, &to).map_err(|source| ConfigError::Io {
                    path: from.clone(),
                    source,
                })?;
            }
        }
        self.save()
    }

    pub fn set_default(&mut self, name: &str) -> Result<(), ConfigError> {
        self.remote(name)?;
        self.file.default_remote = name.into();
        self.save()
    }

    pub fn save(&self) -> Result<(), ConfigError> {
        let path = self.dir.join("config.yml");
        let text = serde_norway::to_string(&self.file).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes(), 0o600)
    }
}

fn remove_if_exists(path: &Path) -> Result<(), ConfigError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ConfigError::Io {
            path: path.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Write `data` to a fresh temporary file next to `path`, then rename it over `path`.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), ConfigError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let io = |source| ConfigError::Io {
        path: path.into(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ConfigDir::open(dir.path()).unwrap();
        assert!(matches!(c.check_new_name("a:b"), Err(ConfigError::Colon)));
        assert!(matches!(
            c.check_new_name("local"),
            Err(ConfigError::RemoteExists { .. })
        ));
        assert!(matches!(
            c.check_new_name("a b"),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            c.check_new_name("../x"),
            Err(ConfigError::BadName(_))
        ));
        c.check_new_name("prod-1").unwrap();
        let r = Remote {
            addr: "https://127.0.0.1:8443".into(),
            auth_type: "tls".into(),
            domain: String::new(),
            project: "default".into(),
            protocol: "lxd".into(),
            public: false,
            candid_agent: String::new(),
        };
        c.save_remote("prod", r.clone(), Some("-----BEGIN CERTIFICATE-----\n"))
            .unwrap();
        std::fs::create_dir_all(dir.path().join("jars")).unwrap();
        std::fs::write(c.jar_path("prod"), "[]").unwrap();
        c.set_default("prod").unwrap();
        let c2 = ConfigDir::open(dir.path()).unwrap();
        assert_eq!(c2.remote("prod").unwrap(), r);
        assert_eq!(c2.file.default_remote, "prod");
        let mut c2 = c2;
        c2.rename_remote("prod", "live").unwrap();
        assert!(c2.pin_path("live").exists() && !c2.pin_path("prod").exists());
        assert!(c2.jar_path("live").exists() && !c2.jar_path("prod").exists());
        c2.remove_remote("live").unwrap();
        assert!(!c2.pin_path("live").exists());
        assert!(
            !c2.jar_path("live").exists(),
            "the jar goes with the remote"
        );
        assert_eq!(c2.file.default_remote, "local");
        assert!(matches!(
            c2.remove_remote("local"),
            Err(ConfigError::Static(_))
        ));
    }

    #[test]
    fn the_current_project_is_saved_and_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ConfigDir::open(dir.path()).unwrap();
        let local = c.remote(LOCAL).unwrap();
        assert_eq!(c.project_for(&local), "default");
        c.set_project(LOCAL, "p1").unwrap();
        let mut c = ConfigDir::open(dir.path()).unwrap();
        let local = c.remote(LOCAL).unwrap();
        assert_eq!(
            (local.addr.as_str(), local.project.as_str()),
            ("unix://", "p1")
        );
        assert_eq!(c.project_for(&local), "p1");
        c.project_override = Some("p2".into());
        assert_eq!(c.project_for(&local), "p2");
        assert!(matches!(
            c.set_project("nowhere", "p1"),
            Err(ConfigError::NoSuchRemote(_))
        ));
        let text = std::fs::read_to_string(dir.path().join("config.yml")).unwrap();
        assert!(!text.contains("p2"), "the override is never saved: {text}");
    }
}
