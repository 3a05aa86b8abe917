//! Who died, and who takes the next piece of work: the rendezvous connections kept open for
//! the whole run.
//!
//! - A rank's process that exits or is killed closes its connection (the kernel does, whatever
//!   state the process was in); rank 0 sees that, tells every other rank "rank r is gone", and
//!   each rank calls its `on_fault` — which records the reason and aborts the NCCL
//!   communicator, so a collective blocked on the dead rank returns and the rank stops with an
//!   error naming it, instead of hanging. A rank that finishes says `bye` first, so its normal
//!   exit is not a fault.
//! - `claim`: rank 0 deals out work items (the rollout's prompt groups) one at a time to
//!   whichever rank asks first, so a rank whose responses run long takes fewer groups and no
//!   rank idles at the end of the rollout while another finishes a long tail.
//!
//! Messages, one line each: `bye`, `claim <round> <total>` (peer → rank 0); `gone <why>`,
//! `grant <index>`, `none` (rank 0 → peer).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a rank does when another fails: record `why` and abort its communicator.
pub type OnFault = Arc<dyn Fn(String) + Send + Sync>;

/// Work items of one round, dealt in order: (round, next index).
#[derive(Default)]
pub struct Dealer {
    state: Mutex<(u64, usize)>,
}

impl Dealer {
    /// The next item of `round` (of `total`), or None once all are dealt.
    pub fn next(&self, round: u64, total: usize) -> Option<usize> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A later round starts afresh; an earlier one is over (it was dealt out before any rank
        // could move on).
        if round > st.0 {
            *st = (round, 0);
        } else if round < st.0 {
            return None;
        }
        (st.1 < total).then(|| {
            st.1 += 1;
            st.1 - 1
        })
    }
}

/// The watcher threads of one rank; `bye` on drop.
pub struct Watch {
    /// Write halves: rank 0's to every peer, a peer's to rank 0.
    links: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    /// Rank 0: the dealer its watchers answer claims from. A peer: rank 0's answers.
    dealer: Arc<Dealer>,
    answers: Option<Mutex<mpsc::Receiver<Option<usize>>>>,
}

impl Watch {
    /// Rank 0: watches every peer's connection and answers their claims.
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
        let dealer = Arc::new(Dealer::default());
        for (r, s) in reads {
            let (links, on_fault, dealer) = (links.clone(), on_fault.clone(), dealer.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    let n = reader.read_line(&mut line).unwrap_or(0);
                    let line = line.trim();
                    if n > 0 && line == "bye" {
                        links.lock().unwrap_or_else(|p| p.into_inner()).retain(|(q, _)| *q != r);
                        return;
                    }
                    if let Some((round, total)) = line.strip_prefix("claim ").and_then(|c| c.split_once(' ')) {
                        if let (Ok(round), Ok(total)) = (round.parse::<u64>(), total.parse::<usize>()) {
                            let answer = match dealer.next(round, total) {
                                Some(i) => format!("grant {i}"),
                                None => "none".to_string(),
                            };
                            if let Some((_, l)) = links.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().find(|(q, _)| *q == r) {
                                let _ = writeln!(l, "{answer}");
                            }
                            continue;
                        }
                    }
                    let why = format!("rank {r} is gone (its connection to rank 0 closed without a goodbye: the process exited or was killed)");
                    for (_, l) in links.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
                        let _ = writeln!(l, "gone {why}");
                    }
                    on_fault(why);
                    return;
                }
            });
        }
        Ok(Watch { links, dealer, answers: None })
    }

    /// Rank `rank` > 0: watches its connection to rank 0 (and receives its answers to claims).
    pub fn peer(_rank: usize, to_rank0: TcpStream, on_fault: OnFault) -> std::io::Result<Watch> {
        let read = to_rank0.try_clone()?;
        let links = Arc::new(Mutex::new(vec![(0, to_rank0)]));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(read);
            loop {
                let mut line = String::new();
                let n = reader.read_line(&mut line).unwrap_or(0);
                let line = line.trim();
                if n > 0 {
                    if line == "none" {
                        let _ = tx.send(None);
                        continue;
                    }
                    if let Some(Ok(i)) = line.strip_prefix("grant ").map(str::parse::<usize>) {
                        let _ = tx.send(Some(i));
                        continue;
                    }
                }
                let why = match line.strip_prefix("gone ") {
                    Some(why) if n > 0 => format!("rank 0 reports: {why}"),
                    _ => "rank 0 is gone (its connection closed: the process exited or was killed)".to_string(),
                };
                on_fault(why);
                return;
            }
        });
        Ok(Watch { links, dealer: Arc::new(Dealer::default()), answers: Some(Mutex::new(rx)) })
    }

    /// The next work item of `round` (of `total`) for this rank, or None when all are taken.
    /// Every rank of the round must use the same `total`; a new round number starts afresh.
    pub fn claim(&self, round: u64, total: usize, timeout: Duration) -> std::io::Result<Option<usize>> {
        let Some(answers) = &self.answers else {
            return Ok(self.dealer.next(round, total));
        };
        let answers = answers.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            writeln!(links[0].1, "claim {round} {total}")?;
        }
        answers.recv_timeout(timeout).map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("rank 0 did not answer a work claim within {:.0} s", timeout.as_secs_f64())))
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
    fn work_is_dealt_once_to_whoever_claims_first() {
        let (peers, mut conns) = group(3);
        let (f, _r) = recorder();
        let w0 = Arc::new(Watch::rank0(peers, f.clone()).unwrap());
        let w1 = Arc::new(Watch::peer(1, conns.remove(0), f.clone()).unwrap());
        let w2 = Arc::new(Watch::peer(2, conns.remove(0), f).unwrap());
        let t = Duration::from_secs(10);
        for round in [7u64, 8] {
            let claimers: Vec<_> = [w0.clone(), w1.clone(), w2.clone()]
                .into_iter()
                .map(|w| std::thread::spawn(move || std::iter::from_fn(|| w.claim(round, 50, t).unwrap()).collect::<Vec<usize>>()))
                .collect();
            let mut all: Vec<usize> = claimers.into_iter().flat_map(|c| c.join().unwrap()).collect();
            all.sort();
            assert_eq!(all, (0..50).collect::<Vec<_>>(), "round {round}: every item exactly once");
        }
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
