//! The `networks` table (managed networks, all in the `default` project) and
//! `nic_allocations`, the address reservation of every NIC on a managed network. The daemon
//! chooses addresses; the table's unique keys make two NICs of one network never share a MAC or
//! an address, whatever races the daemon's choice.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRow {
    /// Stable across renames: the bridge's generated MAC derives from it.
    pub id: i64,
    pub name: String,
    pub description: String,
    pub kind: String,
    /// JSON object of strings.
    pub config: String,
}

/// A NIC's reservation on a managed network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRow {
    pub network: String,
    pub project: String,
    pub instance: String,
    pub device: String,
    /// `00:16:3e:...`, as the NIC's config or `volatile.<dev>.hwaddr` holds it.
    pub hwaddr: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

const COLUMNS: &str = "id, name, description, type, config";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NetworkRow> {
    Ok(NetworkRow {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        kind: r.get(3)?,
        config: r.get(4)?,
    })
}

fn nic_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NicRow> {
    Ok(NicRow {
        network: r.get(0)?,
        project: r.get(1)?,
        instance: r.get(2)?,
        device: r.get(3)?,
        hwaddr: r.get(4)?,
        ipv4: r.get(5)?,
        ipv6: r.get(6)?,
    })
}

const NIC_SELECT: &str = "SELECT n.name, a.project, a.instance, a.device, a.hwaddr, a.ipv4, a.ipv6
     FROM nic_allocations a JOIN networks n ON n.id = a.network_id";

impl Store {
    /// Every managed network, by name.
    pub fn networks(&self) -> Result<Vec<NetworkRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM networks ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn network(&self, name: &str) -> Result<NetworkRow, StoreError> {
        self.conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM networks WHERE name = ?1"),
                params![name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "network" })
    }

    /// Records a network (its `id` is chosen here and returned).
    pub fn create_network(&self, row: &NetworkRow) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO networks (name, description, type, config) VALUES (?1, ?2, ?3, ?4)",
            params![row.name, row.description, row.kind, row.config],
        )
        .map_err(conflict("network"))?;
        Ok(conn.last_insert_rowid())
    }

    pub fn update_network(
        &self,
        name: &str,
        description: &str,
        config: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE networks SET description = ?2, config = ?3 WHERE name = ?1",
            params![name, description, config],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "network" });
        }
        Ok(())
    }

    pub fn rename_network(&self, old: &str, new: &str) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE networks SET name = ?2 WHERE name = ?1",
                params![old, new],
            )
            .map_err(conflict("network"))?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "network" });
        }
        Ok(())
    }

    /// Deletes a network and its NICs' reservations.
    pub fn delete_network(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute("DELETE FROM networks WHERE name = ?1", params![name])?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "network" });
        }
        Ok(())
    }

    /// The reservations on network `network`, by project, instance and device.
    pub fn nic_allocations(&self, network: &str) -> Result<Vec<NicRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "{NIC_SELECT} WHERE n.name = ?1 ORDER BY a.project, a.instance, a.device"
        ))?;
        let rows = stmt.query_map(params![network], nic_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An instance's reservations, on every network, by device.
    pub fn instance_nics(&self, project: &str, instance: &str) -> Result<Vec<NicRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "{NIC_SELECT} WHERE a.project = ?1 AND a.instance = ?2 ORDER BY a.device"
        ))?;
        let rows = stmt.query_map(params![project, instance], nic_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records (or replaces) a NIC's reservation. A MAC or an address another NIC of the
    /// network holds is [`StoreError::AlreadyExists`], nothing written.
    pub fn set_nic_allocation(&self, row: &NicRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let network_id: i64 = tx
            .query_row(
                "SELECT id FROM networks WHERE name = ?1",
                params![row.network],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "network" })?;
        tx.execute(
            "DELETE FROM nic_allocations WHERE project = ?1 AND instance = ?2 AND device = ?3",
            params![row.project, row.instance, row.device],
        )?;
        tx.execute(
            "INSERT INTO nic_allocations (network_id, project, instance, device, hwaddr, ipv4, ipv6)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                network_id,
                row.project,
                row.instance,
                row.device,
                row.hwaddr,
                row.ipv4,
                row.ipv6
            ],
        )
        .map_err(conflict("address reservation"))?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an instance's reservations for the devices not in `keep` (their NIC is gone
    /// or no longer on a managed network); returns the removed rows.
    pub fn prune_nic_allocations(
        &self,
        project: &str,
        instance: &str,
        keep: &[String],
    ) -> Result<Vec<NicRow>, StoreError> {
        let gone: Vec<NicRow> = self
            .instance_nics(project, instance)?
            .into_iter()
            .filter(|r| !keep.contains(&r.device))
            .collect();
        let conn = self.conn()?;
        for row in &gone {
            conn.execute(
                "DELETE FROM nic_allocations WHERE project = ?1 AND instance = ?2 AND device = ?3",
                params![project, instance, row.device],
            )?;
        }
        Ok(gone)
    }
}
