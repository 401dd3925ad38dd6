//! Machine records: every machine is written down before its process starts, so a
//! restarted orchestrator (or `solstice vm list`) can see and reap what a crashed one
//! left behind.

use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, VmRecord, query_error};
use crate::{JobId, MachineFootprint};

impl Store {
    /// Every machine recorded by any orchestrator, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn all_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, job_id, owner, pid, ssh_port, files FROM vms ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("all_vms"))?;
        rows.iter().map(vm_record).collect()
    }

    /// One machine's record, by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn vm(&self, id: &str) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query("SELECT id, job_id, owner, pid, ssh_port, files FROM vms WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("vm"))?;
        row.as_ref().map(vm_record).transpose()
    }
}

impl VmRecord {
    /// What a reaper needs to remove this machine.
    pub fn footprint(&self) -> MachineFootprint {
        MachineFootprint {
            machine_id: self.id.clone(),
            pid: self.pid,
            ssh_port: self.ssh_port,
            files: self.files.iter().map(Into::into).collect(),
        }
    }

    /// The record of a machine of `job_id` owned by `owner`, from its footprint.
    pub fn from_footprint(footprint: &MachineFootprint, job_id: JobId, owner: &str) -> Self {
        VmRecord {
            id: footprint.machine_id.clone(),
            job_id,
            owner: owner.to_owned(),
            pid: footprint.pid,
            ssh_port: footprint.ssh_port,
            files: footprint.files.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
        }
    }
}

fn vm_record(row: &AnyRow) -> Result<VmRecord, StoreError> {
    let get = || query_error("vm row");
    let id: String = row.try_get(0).map_err(get())?;
    let job_id: String = row.try_get(1).map_err(get())?;
    let pid: Option<i64> = row.try_get(3).map_err(get())?;
    let port: Option<i64> = row.try_get(4).map_err(get())?;
    let files: String = row.try_get(5).map_err(get())?;
    Ok(VmRecord {
        job_id: JobId::from_str(&job_id).map_err(|e| StoreError::Corrupt { id: id.clone(), what: e.to_string() })?,
        owner: row.try_get(2).map_err(get())?,
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        ssh_port: port.and_then(|p| u16::try_from(p).ok()),
        files: serde_json::from_str(&files)
            .map_err(|e| StoreError::Corrupt { id: id.clone(), what: format!("files: {e}") })?,
        id,
    })
}
