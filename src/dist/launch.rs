//! Who this process is in a data-parallel job: rank, world size and local rank (which GPU of its
//! node), read from the environment the usual launchers set, one process per GPU (SPMD).
//!
//! - torchrun: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`;
//! - Slurm's srun: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` (srun does not name a master:
//!   the batch script exports `MASTER_ADDR`, e.g. the first host of `$SLURM_JOB_NODELIST`);
//! - Open MPI's mpirun: `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//!   `OMPI_COMM_WORLD_LOCAL_RANK` (and `MASTER_ADDR` likewise).
//!
//! torchrun's variables win when several sets are present (torchrun under srun sets both, and
//! its own are the per-process ones). With none, the job is one process: rank 0 of 1.

use anyhow::{bail, Context, Result};

/// The port rank 0 listens on for the rendezvous when `MASTER_PORT` is not set (torchrun's).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    Single,
    Torchrun,
    Slurm,
    OpenMpi,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// The GPU this process drives on its node (`cuda:local_rank`).
    pub local_rank: usize,
    /// Where rank 0 listens for the rendezvous (host, port); None for a single process.
    pub master: Option<(String, u16)>,
}

impl Topology {
    pub fn single() -> Self {
        Topology { launcher: Launcher::Single, rank: 0, world_size: 1, local_rank: 0, master: None }
    }

    /// From the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let sets = [
            (Launcher::Torchrun, ["RANK", "WORLD_SIZE", "LOCAL_RANK"]),
            (Launcher::Slurm, ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"]),
            (Launcher::OpenMpi, ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"]),
        ];
        let Some((launcher, [rank_k, world_k, local_k])) = sets.into_iter().find(|(_, [r, w, _])| var(r).is_some() || var(w).is_some()) else {
            return Ok(Self::single());
        };
        let name = format!("{launcher:?}");
        let num = |k: &str| -> Result<usize> {
            let v = var(k).with_context(|| format!("{name} launch: {k} is not set (set beside {rank_k} and {world_k})"))?;
            v.trim().parse::<usize>().with_context(|| format!("{name} launch: {k}={v:?} is not a non-negative integer"))
        };
        let (rank, world_size, local_rank) = (num(rank_k)?, num(world_k)?, num(local_k)?);
        if world_size == 0 {
            bail!("{name} launch: {world_k}=0: a job has at least one process");
        }
        if rank >= world_size {
            bail!("{name} launch: {rank_k}={rank} is not below {world_k}={world_size}");
        }
        if local_rank > rank {
            bail!("{name} launch: {local_k}={local_rank} exceeds {rank_k}={rank} (ranks count every node's processes)");
        }
        let master = if world_size == 1 {
            None
        } else {
            let host = var("MASTER_ADDR").filter(|h| !h.trim().is_empty()).with_context(|| {
                format!("{name} launch with {world_size} processes: MASTER_ADDR is not set (the host of rank 0; under srun or mpirun export it, e.g. MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1))")
            })?;
            let port = match var("MASTER_PORT") {
                None => DEFAULT_MASTER_PORT,
                Some(p) => p.trim().parse::<u16>().ok().filter(|p| *p > 0).with_context(|| format!("{name} launch: MASTER_PORT={p:?} is not a port number (1-65535)"))?,
            };
            Some((host.trim().to_string(), port))
        };
        Ok(Topology { launcher, rank, world_size, local_rank, master })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn topo(vars: &[(&str, &str)]) -> Result<Topology> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Topology::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn each_launcher_is_read() {
        assert_eq!(topo(&[]).unwrap(), Topology::single());
        let t = topo(&[("RANK", "9"), ("WORLD_SIZE", "32"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "1234")]).unwrap();
        assert_eq!((t.launcher, t.rank, t.world_size, t.local_rank, t.master), (Launcher::Torchrun, 9, 32, 1, Some(("node0".into(), 1234))));
        let t = topo(&[("SLURM_PROCID", "17"), ("SLURM_NTASKS", "32"), ("SLURM_LOCALID", "1"), ("MASTER_ADDR", "n0")]).unwrap();
        assert_eq!((t.launcher, t.rank, t.local_rank, t.master), (Launcher::Slurm, 17, 1, Some(("n0".into(), DEFAULT_MASTER_PORT))));
        let t = topo(&[("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_LOCAL_RANK", "3"), ("MASTER_ADDR", "h")]).unwrap();
        assert_eq!((t.launcher, t.rank, t.world_size), (Launcher::OpenMpi, 3, 4));
        // torchrun under srun: torchrun's per-process variables win.
        let t = topo(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "0"), ("RANK", "5"), ("WORLD_SIZE", "16"), ("LOCAL_RANK", "5"), ("MASTER_ADDR", "h")]).unwrap();
        assert_eq!((t.launcher, t.rank, t.world_size), (Launcher::Torchrun, 5, 16));
        // One process needs no master.
        assert_eq!(topo(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")]).unwrap().master, None);
    }

    #[test]
    fn bad_variables_are_named() {
        let err = |v: &[(&str, &str)]| format!("{:#}", topo(v).unwrap_err());
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2")]).contains("LOCAL_RANK is not set"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]).contains("RANK=\"x\""));
        assert!(err(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "0")]).contains("SLURM_PROCID=4 is not below SLURM_NTASKS=4"));
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")]).contains("MASTER_ADDR is not set"));
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")]).contains("MASTER_PORT=\"99999\""));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "0"), ("LOCAL_RANK", "0")]).contains("WORLD_SIZE=0"));
    }
}
