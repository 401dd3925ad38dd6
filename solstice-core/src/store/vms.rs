//! Machine records: every machine is written down before its process starts, so a
//! restarted orchestrator (or `solstice vm list`) can see and reap what a crashed one
//! left behind.

use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, VmRecord, now_ms, query_error};
use crate::{JobId, MachineFootprint};

/// The columns [`vm_record`] reads, in its order.
macro_rules! vm_columns {
    () => {
        "SELECT id, job_id, owner, pid, ssh_port, files FROM vms"
    };
}

/// How [`vm_record`] treats a file list it cannot read.
#[derive(Clone, Copy)]
enum Files {
    /// As no files: the reaper still stops the machine's process.
    Lenient,
    /// As a corrupt record.
    Strict,
}

impl Store {
    /// Every machine recorded by any orchestrator, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn all_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(concat!(vm_columns!(), " ORDER BY created_at"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("all_vms"))?;
        rows.iter().map(|row| vm_record(row, "all_vms", Files::Strict)).collect()
    }

    /// One machine's record, by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn vm(&self, id: &str) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query(concat!(vm_columns!(), " WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("vm"))?;
        row.as_ref().map(|row| vm_record(row, "vm", Files::Strict)).transpose()
    }

    /// Records a machine before its process starts.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn record_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let files = serde_json::to_string(&vm.files).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO vms (id, job_id, owner, pid, ssh_port, files, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, ssh_port = excluded.ssh_port, files = excluded.files",
        )
        .bind(vm.id.clone())
        .bind(vm.job_id.to_string())
        .bind(vm.owner.clone())
        .bind(vm.pid.map(i64::from))
        .bind(vm.ssh_port.map(i64::from))
        .bind(files)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error("record_vm"))?;
        Ok(())
    }

    /// Forgets a machine that was destroyed.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn remove_vm(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vms WHERE id = $1")
            .bind(id.to_owned())
            .execute(&self.pool)
            .await
            .map_err(query_error("remove_vm"))?;
        Ok(())
    }

    /// The machines recorded for an orchestrator (to reap after a crash). A record
    /// whose file list cannot be read comes back without files, so that its process
    /// is still stopped.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn vms_of(&self, owner: &str) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(concat!(vm_columns!(), " WHERE owner = $1 ORDER BY created_at"))
            .bind(owner.to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("vms_of"))?;
        rows.iter().map(|row| vm_record(row, "vms_of", Files::Lenient)).collect()
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

fn vm_record(row: &AnyRow, query: &'static str, files_policy: Files) -> Result<VmRecord, StoreError> {
    let get = || query_error(query);
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
        files: match (serde_json::from_str(&files), files_policy) {
            (Ok(files), _) => files,
            (Err(_), Files::Lenient) => Vec::new(),
            (Err(e), Files::Strict) => return Err(StoreError::Corrupt { id: id.clone(), what: format!("files: {e}") }),
        },
        id,
    })
}
