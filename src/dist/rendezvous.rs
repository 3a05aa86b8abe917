//! How ranks find each other before NCCL can: rank 0 listens on `MASTER_PORT`, every other rank
//! connects to `MASTER_ADDR:MASTER_PORT` (retrying while rank 0 starts), says who it is, and gets
//! rank 0's payload back — the 128-byte NCCL unique id that every rank passes to
//! `ncclCommInitRank`. Everything is bounded by one timeout, and every error names the address,
//! the port or the ranks concerned: a typo in MASTER_ADDR or a rank that never started is a
//! clear message within the timeout, not a hang.
//!
//! The connections stay open after the handshake: `heartbeat` watches them, so that a rank
//! that dies is named to every other rank (NCCL itself would only time out).
//!
//! Wire format (little-endian): a rank sends `b"SCRL"`, version, rank, world size (u32 each);
//! rank 0 answers a status byte (0: ok, 1: error) then a u32 length and the payload or message.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"SCRL";
const VERSION: u32 = 1;
/// Longest payload or message accepted (a unique id is 128 bytes).
const MAX_PAYLOAD: u32 = 1 << 16;
/// Pause between connection attempts while rank 0 is not listening yet.
const RETRY: Duration = Duration::from_millis(100);

/// Rank 0: listen on `port`, wait for the other `world - 1` ranks, send each `payload`. Returns
/// the open connections, by rank (None for rank 0), for `heartbeat::Watch`.
pub fn serve(port: u16, world: usize, payload: &[u8], timeout: Duration) -> Result<Vec<Option<TcpStream>>> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("rendezvous: rank 0 cannot listen on port {port} (MASTER_PORT)"))?;
    serve_on(listener, world, payload, timeout)
}

/// `serve` on a listener already bound (tests bind port 0 and read the port back).
pub fn serve_on(listener: TcpListener, world: usize, payload: &[u8], timeout: Duration) -> Result<Vec<Option<TcpStream>>> {
    let port = listener.local_addr()?.port();
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true)?;
    let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut arrived = 1; // rank 0 itself
    while arrived < world {
        match listener.accept() {
            Ok((mut s, from)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(remaining(deadline)))?;
                let (rank, their_world) = read_hello(&mut s).with_context(|| format!("rendezvous: bad hello from {from} on port {port}"))?;
                let problem = if their_world != world {
                    Some(format!("rank {rank} (at {from}) has world size {their_world}, rank 0 has {world}"))
                } else if rank == 0 || rank >= world {
                    Some(format!("a process at {from} claims rank {rank} of {world}"))
                } else if peers[rank].is_some() {
                    Some(format!("two processes claim rank {rank} (the second at {from})"))
                } else {
                    None
                };
                if let Some(p) = problem {
                    let _ = answer(&mut s, 1, p.as_bytes());
                    bail!("rendezvous on port {port}: {p}");
                }
                peers[rank] = Some(s);
                arrived += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (1..world).filter(|r| peers[*r].is_none()).map(|r| r.to_string()).collect();
                    bail!("rendezvous: rank(s) {} did not connect to rank 0's port {port} within {:.0} s", missing.join(", "), timeout.as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("rendezvous: accepting on port {port}")),
        }
    }
    for (rank, s) in peers.iter_mut().enumerate() {
        if let Some(s) = s {
            // The connection outlives the handshake (the heartbeat reads it for the whole run).
            s.set_read_timeout(None)?;
            answer(s, 0, payload).with_context(|| format!("rendezvous: sending the id to rank {rank}"))?;
        }
    }
    Ok(peers)
}

/// Rank `rank` > 0: connect to rank 0 at `host:port` (retrying until the deadline), return its
/// payload and the open connection (for `heartbeat::Watch`).
pub fn join(host: &str, port: u16, rank: usize, world: usize, timeout: Duration) -> Result<(Vec<u8>, TcpStream)> {
    let deadline = Instant::now() + timeout;
    let addr = format!("{host}:{port}");
    let mut s = loop {
        let tried = addr
            .to_socket_addrs()
            .with_context(|| format!("rendezvous: cannot resolve MASTER_ADDR {host:?}"))
            .and_then(|mut a| a.next().with_context(|| format!("rendezvous: MASTER_ADDR {host:?} has no address")));
        let last = match tried {
            Ok(sa) => match TcpStream::connect_timeout(&sa, remaining(deadline).min(Duration::from_secs(2))) {
                Ok(s) => break s,
                Err(e) => anyhow::Error::from(e),
            },
            Err(e) => e,
        };
        if Instant::now() + RETRY >= deadline {
            return Err(last.context(format!("rendezvous: rank {rank} could not reach rank 0 at {addr} within {:.0} s (MASTER_ADDR, MASTER_PORT)", timeout.as_secs_f64())));
        }
        std::thread::sleep(RETRY);
    };
    s.set_read_timeout(Some(remaining(deadline)))?;
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(MAGIC);
    for v in [VERSION, rank as u32, world as u32] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&hello).with_context(|| format!("rendezvous: rank {rank} writing to {addr}"))?;
    let (status, body) = read_answer(&mut s).with_context(|| {
        format!("rendezvous: rank {rank} got no answer from rank 0 at {addr} within {:.0} s (rank 0 waits for all {world} ranks)", timeout.as_secs_f64())
    })?;
    if status != 0 {
        bail!("rendezvous: rank 0 at {addr} refused rank {rank}: {}", String::from_utf8_lossy(&body));
    }
    s.set_read_timeout(None)?;
    Ok((body, s))
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

fn read_u32(s: &mut TcpStream) -> Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_hello(s: &mut TcpStream) -> Result<(usize, usize)> {
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic)?;
    if &magic != MAGIC {
        bail!("not a scalerl rank (magic {magic:?})");
    }
    let version = read_u32(s)?;
    if version != VERSION {
        bail!("protocol version {version}, this build speaks {VERSION}: every rank must run the same scalerl");
    }
    Ok((read_u32(s)? as usize, read_u32(s)? as usize))
}

fn answer(s: &mut TcpStream, status: u8, body: &[u8]) -> Result<()> {
    s.write_all(&[status])?;
    s.write_all(&(body.len() as u32).to_le_bytes())?;
    s.write_all(body)?;
    Ok(())
}

fn read_answer(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut status = [0u8; 1];
    s.read_exact(&mut status)?;
    let n = read_u32(s)?;
    if n > MAX_PAYLOAD {
        bail!("answer of {n} bytes is too long");
    }
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body)?;
    Ok((status[0], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        (l, p)
    }

    #[test]
    fn every_rank_gets_rank_zeros_id() {
        let (l, port) = listener();
        let id: Vec<u8> = (0..128).collect();
        let joins: Vec<_> = (1..4).map(|r| std::thread::spawn(move || join("127.0.0.1", port, r, 4, Duration::from_secs(20)))).collect();
        let peers = serve_on(l, 4, &id, Duration::from_secs(20)).unwrap();
        assert!(peers[0].is_none() && peers[1..].iter().all(|p| p.is_some()));
        // The heartbeat reads these for the whole run: no read timeout left from the handshake.
        assert!(peers[1..].iter().all(|p| p.as_ref().unwrap().read_timeout().unwrap().is_none()));
        for j in joins {
            assert_eq!(j.join().unwrap().unwrap().0, id);
        }
    }

    #[test]
    fn a_rank_that_starts_first_waits_for_rank_zero() {
        let (l, port) = listener();
        drop(l); // nothing listens yet: the joiner retries
        let j = std::thread::spawn(move || join("127.0.0.1", port, 1, 2, Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(300));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        serve_on(l, 2, b"id", Duration::from_secs(20)).unwrap();
        assert_eq!(j.join().unwrap().unwrap().0, b"id");
    }

    #[test]
    fn errors_name_the_address_and_the_ranks() {
        // Nobody listens: the joiner names the address within its timeout.
        let (l, port) = listener();
        drop(l);
        let t = Instant::now();
        let e = format!("{:#}", join("127.0.0.1", port, 1, 2, Duration::from_millis(500)).unwrap_err());
        assert!(e.contains(&format!("could not reach rank 0 at 127.0.0.1:{port}")), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let e = format!("{:#}", join("no-such-host.invalid", port, 1, 2, Duration::from_millis(300)).unwrap_err());
        assert!(e.contains("no-such-host.invalid"), "{e}");
        // A rank that never comes: rank 0 names it.
        let (l, _) = listener();
        let e = format!("{:#}", serve_on(l, 3, b"id", Duration::from_millis(300)).unwrap_err());
        assert!(e.contains("rank(s) 1, 2 did not connect"), "{e}");
        // Disagreeing world sizes: both sides say so.
        let (l, port) = listener();
        let j = std::thread::spawn(move || join("127.0.0.1", port, 1, 8, Duration::from_secs(20)));
        let e = format!("{:#}", serve_on(l, 2, b"id", Duration::from_secs(20)).unwrap_err());
        assert!(e.contains("rank 1") && e.contains("world size 8, rank 0 has 2"), "{e}");
        let e = format!("{:#}", j.join().unwrap().unwrap_err());
        assert!(e.contains("refused rank 1") && e.contains("world size 8"), "{e}");
    }
}
