//! The new-connection rate: a server that accepts and closes, and one client that connects and
//! closes as fast as it can for a fixed time, each on a thread of this process entered into a
//! namespace (`seam_linux::netns::run_in`). One client and the same code for every path, so the
//! paths compared differ only in the network between them. `flows` and `conn-rate` use it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use seam_linux::netns;

/// How long one connect may take before it counts as failed (a lost SYN costs the kernel's
/// first retransmission, one second).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A TCP server in a namespace that accepts every connection and closes it at once; stopped
/// (and its thread joined) when dropped.
pub struct AcceptServer {
    netns: std::path::PathBuf,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptServer {
    /// Listens on `ip:port` inside `netns` and starts accepting.
    pub fn start(netns: &Path, ip: Ipv4Addr, port: u16) -> anyhow::Result<AcceptServer> {
        let addr = SocketAddr::from((ip, port));
        let listener = netns::run_in(netns, || TcpListener::bind(addr))?
            .with_context(|| format!("listen on {addr} in {}", netns.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Blocking accepts: a full accept queue drops SYNs, which costs a client a second.
                while !stop.load(Ordering::Relaxed) {
                    let _ = listener.accept();
                }
            })
        };
        Ok(AcceptServer {
            netns: netns.to_path_buf(),
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the last blocking accept, from the server's own namespace (always reachable).
        let addr = self.addr;
        let _ = netns::run_in(&self.netns, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connections made in one measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSample {
    /// Completed connect + close per second.
    pub per_second: f64,
    /// Completed connections.
    pub completed: u64,
    /// Connects that failed or timed out.
    pub failed: u64,
}

/// Lets a client namespace open thousands of connections a second for seconds: the client
/// closes first, so its ports wait in TIME_WAIT; it may reuse them, from a wide range.
pub fn prepare_client(netns: &Path) -> anyhow::Result<()> {
    netns::run_in(netns, || -> anyhow::Result<()> {
        seam_linux::sysctl::write("net/ipv4/tcp_tw_reuse", "1")?;
        seam_linux::sysctl::write("net/ipv4/ip_local_port_range", "1024 65000")?;
        Ok(())
    })?
    .with_context(|| format!("TCP port reuse in {}", netns.display()))
}

/// Connects to `to` from inside `netns` and closes at once, one connection after another, for
/// `duration`.
pub fn connect_rate(
    netns: &Path,
    to: SocketAddr,
    duration: Duration,
) -> anyhow::Result<RateSample> {
    let (completed, failed, elapsed) = netns::run_in(netns, || {
        let started = Instant::now();
        let end = started + duration;
        let (mut completed, mut failed) = (0u64, 0u64);
        while Instant::now() < end {
            match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
                Ok(s) => {
                    drop(s);
                    completed += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (completed, failed, started.elapsed())
    })?;
    Ok(sample(completed, failed, elapsed))
}

/// The rate over the time actually spent (the last connect may end after the deadline).
fn sample(completed: u64, failed: u64, elapsed: Duration) -> RateSample {
    let secs = elapsed.as_secs_f64();
    RateSample {
        per_second: if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        },
        completed,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_time_spent() {
        let s = sample(5000, 2, Duration::from_millis(2500));
        assert_eq!(s.per_second, 2000.0);
        assert_eq!((s.completed, s.failed), (5000, 2));
        assert_eq!(sample(0, 0, Duration::ZERO).per_second, 0.0);
    }
}
