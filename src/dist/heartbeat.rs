//! Who died: the rendezvous connections kept open for the whole run. A rank's process that exits
//! or is killed closes its connection (the kernel does, whatever state the process was in);
//! rank 0 sees that, tells every other rank "rank r is gone", and each rank calls its
//! `on_fault` — which records the reason and aborts the NCCL communicator, so a collective
//! blocked on the dead rank returns and the rank stops with an error naming it, instead of
//! hanging. A rank that finishes says `bye` first, so its normal exit is not a fault.
//!
//! Messages on a connection: one line of UTF-8 (`bye`, or `gone <why>` from rank 0).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// What a rank does when another fails: record `why` and abort its communicator.
pub type OnFault = Arc<dyn Fn(String) + Send + Sync>;

/// The watcher threads of one rank; `bye` on drop.
pub struct Watch {
    /// Write halves: rank 0's to every peer, a peer's to rank 0.
    links: Arc<Mutex<Vec<(usize, TcpStream)>>>,
}

impl Watch {
    /// Rank 0: watches every peer's connection.
    pub fn rank0(peers: Vec<Option<TcpStream>>, on_fault: OnFault) -> std::io::Result<Watch> {
        let mut links = Vec::new();
        let mut reads = Vec::new();
        for (r, p) in peers.into_iter().enumerate() {
            if let Some(p) = p {
                reads.push((r, p.try_clone()?));
                links.push((r, p));
            }
        }
        let links = Arc::new(Mutex::new(links));
        for (r, s) in reads {
            let (links, on_fault) = (links.clone(), on_fault.clone());
            std::thread::spawn(move || {
                let mut line = String::new();
                let n = BufReader::new(s).read_line(&mut line).unwrap_or(0);
                if n > 0 && line.trim() == "bye" {
                    links.lock().unwrap_or_else(|p| p.into_inner()).retain(|(q, _)| *q != r);
                    return;
                }
                let why = format!("rank {r} is gone (its connection to rank 0 closed without a goodbye: the process exited or was killed)");
                for (_, l) in links.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
                    let _ = writeln!(l, "gone {why}");
                }
                on_fault(why);
            });
        }
        Ok(Watch { links })
    }

    /// Rank `rank` > 0: watches its connection to rank 0.
    pub fn peer(rank: usize, to_rank0: TcpStream, on_fault: OnFault) -> std::io::Result<Watch> {
        let read = to_rank0.try_clone()?;
        let links = Arc::new(Mutex::new(vec![(0, to_rank0)]));
        let _ = rank;
        std::thread::spawn(move || {
            let mut line = String::new();
            let n = BufReader::new(read).read_line(&mut line).unwrap_or(0);
            let why = match line.trim().strip_prefix("gone ") {
                Some(why) if n > 0 => format!("rank 0 reports: {why}"),
                _ => "rank 0 is gone (its connection closed: the process exited or was killed)".to_string(),
            };
            on_fault(why);
        });
        Ok(Watch { links })
    }
}

impl Drop for Watch {
    /// A normal end: say goodbye, so the others do not take this exit for a death.
    fn drop(&mut self) {
        for (_, l) in self.links.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            let _ = writeln!(l, "bye");
            let _ = l.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rendezvous::{join, serve_on};
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    fn group(world: usize) -> (Vec<Option<TcpStream>>, Vec<TcpStream>) {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let joins: Vec<_> = (1..world).map(|r| std::thread::spawn(move || join("127.0.0.1", port, r, world, Duration::from_secs(20)))).collect();
        let peers = serve_on(l, world, b"id", Duration::from_secs(20)).unwrap();
        (peers, joins.into_iter().map(|j| j.join().unwrap().unwrap().1).collect())
    }

    fn recorder() -> (OnFault, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (Arc::new(move |why: String| {
            let _ = tx.lock().unwrap().send(why);
        }), rx)
    }

    #[test]
    fn a_dead_rank_is_named_to_every_other_rank() {
        let (peers, mut conns) = group(3);
        let (f0, r0) = recorder();
        let _w0 = Watch::rank0(peers, f0).unwrap();
        let (f1, r1) = recorder();
        let _w1 = Watch::peer(1, conns.remove(0), f1).unwrap();
        // Rank 2 "dies": its connection closes with no goodbye.
        drop(conns.remove(0));
        let t = Duration::from_secs(10);
        assert!(r0.recv_timeout(t).unwrap().contains("rank 2 is gone"));
        let e = r1.recv_timeout(t).unwrap();
        assert!(e.contains("rank 0 reports: rank 2 is gone"), "{e}");
    }

    #[test]
    fn a_normal_exit_is_not_a_fault_and_rank_zeros_death_is() {
        let (peers, mut conns) = group(2);
        let (f0, r0) = recorder();
        let w0 = Watch::rank0(peers, f0).unwrap();
        let (f1, r1) = recorder();
        let w1 = Watch::peer(1, conns.remove(0), f1).unwrap();
        drop(w1); // rank 1 finishes: bye
        assert!(r0.recv_timeout(Duration::from_millis(500)).is_err(), "a goodbye is not a fault");
        // The other way round: rank 0 dies (its end closes); rank 1's watcher names it.
        let (peers, mut conns) = group(2);
        let (f1, r1b) = recorder();
        let _w1 = Watch::peer(1, conns.remove(0), f1).unwrap();
        drop(peers);
        let e = r1b.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(e.contains("rank 0 is gone"), "{e}");
        drop((w0, r1));
    }
}
