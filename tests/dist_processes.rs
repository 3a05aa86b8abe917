//! A killed rank stops the others, across real processes: this test binary re-runs itself as
//! three rank processes (`rank_process`, driven by environment variables as a launcher would
//! set them), which meet at the TCP rendezvous and keep its connections as the heartbeat. The
//! parent SIGKILLs rank 2 while the others wait (as they would inside a collective that needs
//! rank 2); ranks 0 and 1 must then exit on their own, within a bound, with an error naming
//! rank 2 — the path by which an NCCL group's ranks abort their communicator instead of hanging.
use scalerl::dist::heartbeat::{OnFault, Watch};
use scalerl::dist::{rendezvous, Topology};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The body of one rank process; does nothing when run as an ordinary test.
#[test]
fn rank_process() {
    if std::env::var("SCALERL_TEST_RANK_PROCESS").is_err() {
        return;
    }
    let topo = Topology::from_env().unwrap();
    let (host, port) = topo.master.clone().unwrap();
    let timeout = Duration::from_secs(30);
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let on_fault: OnFault = Arc::new(move |why: String| {
        let _ = tx.lock().unwrap().send(why);
    });
    let _watch = if topo.rank == 0 {
        let peers = rendezvous::serve(port, topo.world_size, &[7u8; 128], timeout).unwrap();
        Watch::rank0(peers, on_fault).unwrap()
    } else {
        let (id, conn) = rendezvous::join(&host, port, topo.rank, topo.world_size, timeout).unwrap();
        assert_eq!(id, vec![7u8; 128]);
        Watch::peer(topo.rank, conn, on_fault).unwrap()
    };
    println!("rank {} ready", topo.rank);
    // "Inside a collective": wait for the fault that ends it.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(why) => {
            eprintln!("rank {} stops: {why}", topo.rank);
            std::process::exit(3);
        }
        Err(_) => {
            eprintln!("rank {} was never told", topo.rank);
            std::process::exit(4);
        }
    }
}

fn spawn(rank: usize, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rank_process", "--nocapture", "--test-threads", "1"])
        .env("SCALERL_TEST_RANK_PROCESS", "1")
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "3")
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_rank_process_stops_the_others_naming_it() {
    if std::env::var("SCALERL_TEST_RANK_PROCESS").is_ok() {
        return;
    }
    // A free port: bind, read it, release.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let mut ranks: Vec<Child> = (0..3).map(|r| spawn(r, port)).collect();
    // Wait for all three to be ready (the rendezvous done), by reading their "ready" lines.
    use std::io::{BufRead, BufReader};
    let mut outs = Vec::new();
    for c in ranks.iter_mut() {
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "a rank exited before the rendezvous");
            if line.contains("ready") {
                break;
            }
        }
        outs.push(out);
    }
    let t = Instant::now();
    ranks[2].kill().unwrap();
    ranks[2].wait().unwrap();
    for (r, c) in ranks.iter_mut().enumerate().take(2) {
        let status = c.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(3), "rank {r}: {err}");
        assert!(err.contains("rank 2 is gone"), "rank {r}: {err}");
    }
    assert!(t.elapsed() < Duration::from_secs(20), "the others took {:?} to stop", t.elapsed());
    eprintln!("ranks 0 and 1 stopped {:?} after rank 2 was killed", t.elapsed());
    drop(outs);
}
