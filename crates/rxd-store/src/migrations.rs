//! Schema migrations, applied in order inside one transaction each. `PRAGMA user_version` records
//! how many have run. Never edit a released migration: add a new one.

use crate::StoreError;
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: server configuration.
    "CREATE TABLE config (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );",
    // 2: the trust store, and certificate add tokens (only a hash of each secret is kept).
    "CREATE TABLE certificates (
        fingerprint TEXT PRIMARY KEY NOT NULL CHECK (length(fingerprint) = 64),
        name        TEXT NOT NULL,
        type        TEXT NOT NULL,
        restricted  INTEGER NOT NULL,
        certificate TEXT NOT NULL,
        not_before  INTEGER NOT NULL,
        not_after   INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE certificate_projects (
        fingerprint TEXT NOT NULL REFERENCES certificates(fingerprint) ON DELETE CASCADE,
        project     TEXT NOT NULL,
        PRIMARY KEY (fingerprint, project)
    );
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY NOT NULL,
        secret_sha256 BLOB NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        restricted    INTEGER NOT NULL,
        projects      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL
    );",
    // 3: images (content-addressed by the SHA-256 of the tarball) and their aliases, per project.
    "CREATE TABLE images (
        project      TEXT NOT NULL,
        fingerprint  TEXT NOT NULL CHECK (length(fingerprint) = 64),
        filename     TEXT NOT NULL,
        size         INTEGER NOT NULL,
        architecture TEXT NOT NULL,
        properties   TEXT NOT NULL,
        public       INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        uploaded_at  INTEGER NOT NULL,
        PRIMARY KEY (project, fingerprint)
    );
    CREATE TABLE image_aliases (
        project     TEXT NOT NULL,
        name        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (project, name),
        FOREIGN KEY (project, fingerprint) REFERENCES images (project, fingerprint) ON DELETE CASCADE
    );",
    // 4: instances, and every isolated idmap block in one table (all projects), so allocation
    // sees every other block.
    "CREATE TABLE instances (
        project      TEXT NOT NULL,
        name         TEXT NOT NULL,
        architecture TEXT NOT NULL,
        config       TEXT NOT NULL,
        description  TEXT NOT NULL,
        ephemeral    INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (project, name)
    );
    CREATE TABLE idmap_blocks (
        project  TEXT NOT NULL,
        instance TEXT NOT NULL,
        base     INTEGER NOT NULL UNIQUE,
        size     INTEGER NOT NULL,
        PRIMARY KEY (project, instance),
        FOREIGN KEY (project, instance) REFERENCES instances (project, name) ON DELETE CASCADE ON UPDATE CASCADE
    );",
    // 5: snapshots; `config` is the instance's config when taken (its on-disk idmap included).
    "CREATE TABLE snapshots (
        project    TEXT NOT NULL,
        instance   TEXT NOT NULL,
        name       TEXT NOT NULL,
        config     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (project, instance, name),
        FOREIGN KEY (project, instance) REFERENCES instances (project, name) ON DELETE CASCADE ON UPDATE CASCADE
    );",
    // 6: projects (`default` always exists) and role grants. A grant names its subject by type and
    // name; `project` is empty unless `scope` is `project`.
    r#"CREATE TABLE projects (
        name        TEXT PRIMARY KEY NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        config      TEXT NOT NULL DEFAULT '{}'
    );
    INSERT INTO projects (name, description, config) VALUES ('default', 'Default rxd project',
        '{"features.images":"true","features.networks":"true","features.profiles":"true","features.storage.volumes":"true"}');
    CREATE TABLE grants (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        identity_type TEXT NOT NULL,
        identity      TEXT NOT NULL,
        role          TEXT NOT NULL,
        scope         TEXT NOT NULL,
        project       TEXT NOT NULL DEFAULT '',
        UNIQUE (identity_type, identity, role, scope, project)
    );"#,
    // 7: Candid logins. The daemon's curve25519 key (third-party caveats are encrypted from it)
    // and the root keys of the login macaroons it minted, so logins survive a restart; root keys
    // rotate and old ones are purged.
    "CREATE TABLE bakery_keypair (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        secret BLOB NOT NULL
    );
    CREATE TABLE bakery_root_keys (
        id         BLOB PRIMARY KEY NOT NULL,
        root_key   BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 8: disk accounting for `limits.disk`: the bytes an image unpacks to, and the bytes of an
    // instance's root filesystem as unpacked at creation. Rows from before count as 0.
    "ALTER TABLE images ADD COLUMN unpacked_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN rootfs_size INTEGER NOT NULL DEFAULT 0;",
    // 9: intents: an operation with several durable steps (files and rows) records what it is
    // about to do before its first step and removes the record after its last, so start-up
    // recovery can finish or undo one a killed daemon left half-done. `detail` is the daemon's
    // JSON; the store does not read it.
    "CREATE TABLE intents (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 10: images pulled from image servers: how they are kept (LXD's cached, auto_update,
    // update_source, last_used_at).
    "ALTER TABLE images ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN auto_update INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN update_source TEXT NOT NULL DEFAULT '';
    ALTER TABLE images ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;",
    // 11: profiles, per project (a project without `features.profiles=true` uses `default`'s),
    // each project that has them starting with an empty `default` profile; instances and
    // snapshots name theirs in order (JSON arrays; existing ones use `default`) and carry their
    // own devices (JSON object of objects).
    r#"CREATE TABLE profiles (
        project     TEXT NOT NULL,
        name        TEXT NOT NULL,
        description TEXT NOT NULL,
        config      TEXT NOT NULL,
        devices     TEXT NOT NULL,
        PRIMARY KEY (project, name)
    );
    INSERT INTO profiles (project, name, description, config, devices)
        VALUES ('default', 'default', 'Default LXD profile', '{}', '{}');
    INSERT INTO profiles (project, name, description, config, devices)
        SELECT name, 'default', 'Default LXD profile for project ' || name, '{}', '{}'
        FROM projects
        WHERE name <> 'default' AND json_extract(config, '$."features.profiles"') = 'true';
    ALTER TABLE instances ADD COLUMN profiles TEXT NOT NULL DEFAULT '["default"]';
    ALTER TABLE instances ADD COLUMN devices TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE snapshots ADD COLUMN profiles TEXT NOT NULL DEFAULT '["default"]';
    ALTER TABLE snapshots ADD COLUMN devices TEXT NOT NULL DEFAULT '{}';"#,
    // 12: managed networks (all in the `default` project, as LXD 5.0 keeps bridges), and the
    // address reservation of every NIC on one: sticky while the instance keeps the device,
    // removed with the instance and renamed with it in the same statement (triggers), unique
    // per network by MAC and by address.
    r#"CREATE TABLE networks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        type        TEXT NOT NULL,
        config      TEXT NOT NULL
    );
    CREATE TABLE nic_allocations (
        network_id INTEGER NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
        project    TEXT NOT NULL,
        instance   TEXT NOT NULL,
        device     TEXT NOT NULL,
        hwaddr     TEXT NOT NULL,
        ipv4       TEXT,
        ipv6       TEXT,
        PRIMARY KEY (project, instance, device),
        UNIQUE (network_id, hwaddr),
        UNIQUE (network_id, ipv4),
        UNIQUE (network_id, ipv6)
    );
    CREATE TRIGGER nic_allocations_instance_deleted AFTER DELETE ON instances BEGIN
        DELETE FROM nic_allocations WHERE project = old.project AND instance = old.name;
    END;
    CREATE TRIGGER nic_allocations_instance_renamed AFTER UPDATE OF project, name ON instances BEGIN
        UPDATE nic_allocations SET project = new.project, instance = new.name
            WHERE project = old.project AND instance = old.name;
    END;"#,
    // 13: storage pools (global, as in LXD; `default` is made at start-up with its source, a
    // `dir` pool holding what rxd kept before pools), and the pool each instance lives in.
    r#"CREATE TABLE storage_pools (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL UNIQUE,
        driver      TEXT NOT NULL,
        description TEXT NOT NULL,
        config      TEXT NOT NULL
    );
    ALTER TABLE instances ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';"#,
    // 14: custom storage volumes (per pool and project, as in LXD) and their snapshots.
    r#"CREATE TABLE storage_volumes (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        pool         TEXT NOT NULL,
        project      TEXT NOT NULL,
        name         TEXT NOT NULL,
        description  TEXT NOT NULL,
        config       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        UNIQUE (pool, project, name)
    );
    CREATE TABLE storage_volume_snapshots (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        pool        TEXT NOT NULL,
        project     TEXT NOT NULL,
        volume      TEXT NOT NULL,
        name        TEXT NOT NULL,
        description TEXT NOT NULL,
        config      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        UNIQUE (pool, project, volume, name)
    );"#,
    // 15: instance backups (`lxc export`): the file each is in, how it was made.
    r#"CREATE TABLE instance_backups (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        project           TEXT NOT NULL,
        instance          TEXT NOT NULL,
        name              TEXT NOT NULL,
        file              TEXT NOT NULL UNIQUE,
        created_at        INTEGER NOT NULL,
        expires_at        INTEGER,
        instance_only     INTEGER NOT NULL,
        optimized_storage INTEGER NOT NULL,
        compression       TEXT NOT NULL,
        UNIQUE (project, instance, name)
    );
    CREATE TRIGGER instance_backups_instance_deleted AFTER DELETE ON instances BEGIN
        DELETE FROM instance_backups WHERE project = old.project AND instance = old.name;
    END;
    CREATE TRIGGER instance_backups_instance_renamed AFTER UPDATE OF project, name ON instances BEGIN
        UPDATE instance_backups SET project = new.project, instance = new.name
            WHERE project = old.project AND instance = old.name;
    END;"#,
];

pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
