//! `NcclGroup`: the `Collective` of a multi-process run on GPUs — one process per GPU, NCCL for
//! the data (`device::nccl`), the rendezvous for NCCL's id, the heartbeat for naming a rank that
//! dies, and a watchdog that bounds every collective in time.
//!
//! A collective is enqueued on the device's stream and waited for; meanwhile the watchdog polls
//! NCCL's asynchronous error and the time spent. A peer that died (the heartbeat), an NCCL error,
//! or a collective past the timeout aborts the communicator — the blocked wait returns — and
//! the call fails with the reason. NCCL cannot say which peer stalled; the heartbeat can say
//! which one died.

use super::collective::Collective;
use super::heartbeat::{Dealer, OnFault, Watch};
use super::launch::Topology;
use super::rendezvous;
use crate::device::nccl::{unique_id, Aborter, CommStream, NcclComm};
use crate::device::{Buffer, DType, Device};
use anyhow::{bail, Context, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The rendezvous port: `SCALERL_RENDEZVOUS_PORT`, else MASTER_PORT + 1 (torchrun's agent may
/// serve its own store on MASTER_PORT itself).
pub fn rendezvous_port(master_port: u16) -> Result<u16> {
    match std::env::var("SCALERL_RENDEZVOUS_PORT") {
        Ok(p) => p.trim().parse::<u16>().ok().filter(|p| *p > 0).with_context(|| format!("SCALERL_RENDEZVOUS_PORT={p:?} is not a port number")),
        Err(_) => master_port.checked_add(1).context("MASTER_PORT 65535 leaves no port for the rendezvous (set SCALERL_RENDEZVOUS_PORT)"),
    }
}

struct Shared {
    /// Why the group stopped (first reason wins).
    fault: Mutex<Option<String>>,
    /// The collective in flight: its number and start.
    in_flight: Mutex<Option<(u64, Instant)>>,
    aborter: Aborter,
}

impl Shared {
    fn stop(&self, why: String) {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
        self.aborter.abort();
    }
}

pub struct NcclGroup {
    comm: NcclComm,
    /// The device the group's own staging buffers live on (the GPU of this rank).
    dev: Arc<Device>,
    shared: Arc<Shared>,
    calls: u64,
    /// The gradient buckets' stream (made on the first bucket) and whether buckets are pending.
    buckets: Option<CommStream>,
    pending: bool,
    /// How long a rank waits for an answer to a work claim.
    timeout: Duration,
    /// The dealer of a group of one.
    solo: Dealer,
    _watch: Option<Watch>,
    stop_watchdog: Arc<std::sync::atomic::AtomicBool>,
}

impl NcclGroup {
    /// Joins the job `topo` describes, on `dev` (this rank's GPU): rendezvous with rank 0, NCCL
    /// init, heartbeat and watchdog. `timeout` bounds the rendezvous and every collective.
    pub fn new(topo: &Topology, dev: Arc<Device>, timeout: Duration) -> Result<NcclGroup> {
        let (rank, world) = (topo.rank, topo.world_size);
        // A group of one (the GPU check's) needs no rendezvous: it makes its own id.
        let (id, links) = if world == 1 {
            (unique_id()?, None)
        } else {
            let (host, master_port) = topo.master.clone().context("a group of several processes needs MASTER_ADDR")?;
            let port = rendezvous_port(master_port)?;
            if rank == 0 {
                let id = unique_id()?;
                let peers = rendezvous::serve(port, world, &id, timeout)?;
                (id, Some(Err(peers)))
            } else {
                let (id, conn) = rendezvous::join(&host, port, rank, world, timeout)?;
                (id, Some(Ok(conn)))
            }
        };
        let comm = NcclComm::new(&dev, &id, rank, world)?;
        let shared = Arc::new(Shared { fault: Mutex::new(None), in_flight: Mutex::new(None), aborter: comm.aborter() });
        let on_fault: OnFault = {
            let shared = shared.clone();
            Arc::new(move |why: String| shared.stop(why))
        };
        let watch = match links {
            None => None,
            Some(Err(peers)) => Some(Watch::rank0(peers, on_fault)?),
            Some(Ok(conn)) => Some(Watch::peer(rank, conn, on_fault)?),
        };
        let stop_watchdog = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (shared, stop) = (shared.clone(), stop_watchdog.clone());
            std::thread::spawn(move || watchdog(shared, stop, rank, timeout));
        }
        Ok(NcclGroup { comm, dev, shared, calls: 0, buckets: None, pending: false, timeout, solo: Dealer::default(), _watch: watch, stop_watchdog })
    }

    fn failed(&self) -> Result<()> {
        match self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(why) => bail!("rank {} stops: {why}", self.comm.rank()),
            None => Ok(()),
        }
    }

    /// Runs `enqueue` (a collective on `dev`'s stream) and waits for it under the watchdog.
    fn guarded(&mut self, dev: &Device, enqueue: impl FnOnce(&mut NcclComm) -> Result<()>) -> Result<()> {
        self.failed()?;
        self.calls += 1;
        *self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.calls, Instant::now()));
        let r = enqueue(&mut self.comm).and_then(|_| dev.synchronize());
        *self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // A fault explains a failed wait better than the wait's own error.
        self.failed()?;
        r.with_context(|| format!("collective #{} on rank {}", self.calls, self.comm.rank()))
    }
}

/// Polls NCCL's asynchronous error and the collective in flight every 100 ms.
fn watchdog(shared: Arc<Shared>, stop: Arc<std::sync::atomic::AtomicBool>, rank: usize, timeout: Duration) {
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        let late = *shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((call, since)) = late {
            if let Some(e) = shared.aborter.async_error() {
                shared.stop(format!("NCCL error during collective #{call} on rank {rank}: {e}"));
            }
            if since.elapsed() > timeout {
                shared.stop(format!(
                    "collective #{call} did not complete within {:.0} s on rank {rank}: a peer hung or is far behind (see the other ranks' errors)",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        self.stop_watchdog.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Collective for NcclGroup {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let dev = self.dev.clone();
        let b = dev.upload(buf)?.typed(DType::F32);
        self.guarded(&dev, |c| c.all_reduce_sum_f32(&dev, &b))?;
        buf.copy_from_slice(&dev.download::<f32>(&b)?);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let dev = self.dev.clone();
        let b = dev.upload(buf)?;
        self.guarded(&dev, |c| c.all_reduce_sum_f64(&dev, &b))?;
        buf.copy_from_slice(&dev.download::<f64>(&b)?);
        Ok(())
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let dev = self.dev.clone();
        let b = dev.upload(buf)?.typed(DType::F32);
        self.guarded(&dev, |c| c.broadcast_f32(&dev, &b, root))?;
        buf.copy_from_slice(&dev.download::<f32>(&b)?);
        Ok(())
    }
    /// Over the heartbeat connections: rank 0 deals (a group of one deals to itself).
    fn claim(&mut self, round: u64, total: usize) -> Result<Option<usize>> {
        self.failed()?;
        match &self._watch {
            Some(w) => match w.claim(round, total, self.timeout) {
                Ok(item) => Ok(item),
                // A dead rank 0 ends the wait too: say why, if the heartbeat knows.
                Err(e) => {
                    self.failed()?;
                    Err(e).with_context(|| format!("rank {}: claiming work", self.comm.rank()))
                }
            },
            None => Ok(self.solo.next(round, total)),
        }
    }
    /// In place on the GPU: the flat gradient buffer never leaves the device.
    fn all_reduce_sum_buffer(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        self.guarded(dev, |c| c.all_reduce_sum_f32(dev, buf))
    }
    /// On the bucket stream, after the work queued so far on `dev` (the backward that wrote the
    /// bucket), while `dev` goes on with the backward of the earlier layers.
    fn all_reduce_bucket(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        self.failed()?;
        if self.buckets.is_none() {
            self.buckets = Some(CommStream::new(dev)?);
        }
        let on = self.buckets.as_ref().expect("made above");
        on.after(dev)?;
        if !self.pending {
            self.pending = true;
            self.calls += 1;
            *self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.calls, Instant::now()));
        }
        self.comm.all_reduce_sum_f32_on(on, dev, buf)
    }
    /// `dev` waits for the buckets; the host waits too, under the watchdog (a fault or a
    /// timeout aborts the communicator, so this wait returns).
    fn finish_buckets(&mut self, dev: &Device) -> Result<()> {
        let Some(on) = self.buckets.as_ref().filter(|_| self.pending) else { return Ok(()) };
        let r = on.join(dev).and_then(|_| on.synchronize());
        self.pending = false;
        *self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.failed()?;
        r.with_context(|| format!("gradient buckets (collective #{}) on rank {}", self.calls, self.comm.rank()))
    }
}
