//! Traffic for Services: backends that say who they are and whom they see, and clients that
//! count which backend answered.
//!
//! A backend ([`serve`]) answers every TCP connection and every UDP datagram with
//! `<its name> <the client's address as it sees it>` ([`Reply`]): the name shows how a
//! Service spread its connections, the address whether a NAT on the way replaced the client's
//! own. Clients: [`connect_many`] opens N connections (TCP) or sends N datagrams from N sockets
//! (UDP, so each is a new flow the Service balances anew) and returns a [`Tally`];
//! [`UdpStream`] keeps sending from one socket (one flow) and records which backend answered
//! each datagram, to see a flow move on when its backend goes away.
//!
//! Everything runs in this process: sockets are made inside the namespace
//! (`seam_linux::netns::run_in`) and served from ordinary threads, as [`crate::probe`] does; a
//! server runs until the process exits.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::probe::Outcome;

/// The transport a backend serves or a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// TCP: one answer per connection.
    Tcp,
    /// UDP: one answer per datagram.
    Udp,
}

/// What a backend answered: its name and the client address it saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reply {
    /// The backend's name.
    pub backend: String,
    /// The client's address as the backend saw it.
    pub client: Ipv4Addr,
}

impl Reply {
    /// Reads `<backend> <client address>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Reply> {
        let mut words = text.split_whitespace();
        let backend = words.next()?.to_string();
        let client = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Reply { backend, client })
    }

    /// The answer text for `backend` seeing a client at `peer`.
    fn text(backend: &str, peer: SocketAddr) -> String {
        format!("{backend} {}", peer.ip())
    }
}

fn io_error(netns: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: netns.to_path_buf(),
        source,
    }
}

/// Starts backend `name` on `port` (`transport`) inside the namespace at `netns` (a pod's, a
/// VM's or a server's): every connection or datagram is answered with
/// `<name> <client address>`. It runs until the process exits.
pub fn serve(netns: &Path, name: &str, transport: Transport, port: u16) -> Result<()> {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let name = name.to_string();
    match transport {
        Transport::Tcp => {
            let listener = seam_linux::netns::run_in(netns, || TcpListener::bind(any))?
                .map_err(io_error(netns))?;
            std::thread::spawn(move || {
                for mut conn in listener.incoming().flatten() {
                    if let Ok(peer) = conn.peer_addr() {
                        let _ = conn.write_all(Reply::text(&name, peer).as_bytes());
                    }
                }
            });
        }
        Transport::Udp => {
            let socket = seam_linux::netns::run_in(netns, || UdpSocket::bind(any))?
                .map_err(io_error(netns))?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((_, peer)) => {
                            let _ = socket.send_to(Reply::text(&name, peer).as_bytes(), peer);
                        }
                        // An ICMP error queued for an earlier answer surfaces here.
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
    }
    Ok(())
}

/// One connection (TCP) or one datagram from a fresh socket (UDP) to `ip:port`: the backend's
/// answer, or how the attempt failed.
fn attempt(
    transport: Transport,
    ip: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> std::result::Result<Reply, Outcome> {
    let to = SocketAddr::from((ip, port));
    let answer = match transport {
        Transport::Tcp => (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })(),
        Transport::Udp => (|| -> std::io::Result<String> {
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            socket.connect(to)?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(b"seam-balance")?;
            let mut buf = [0u8; 256];
            let n = socket.recv(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })(),
    };
    match answer {
        Ok(text) => Reply::parse(&text)
            .ok_or_else(|| Outcome::Failed(format!("unexpected answer {text:?}"))),
        Err(e) => Err(outcome_of(&e)),
    }
}

fn outcome_of(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::TimedOut,
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => Outcome::Refused,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// What [`connect_many`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answered attempts per backend name.
    pub per_backend: BTreeMap<String, u32>,
    /// The client addresses the backends saw.
    pub clients_seen: BTreeSet<Ipv4Addr>,
    /// The client addresses each backend saw.
    pub seen_by: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Failed attempts, by how they failed.
    pub failed: BTreeMap<String, u32>,
    /// Refused attempts (TCP reset, ICMP port unreachable), also counted in `failed`.
    pub refused: u32,
    /// How long the slowest attempt took (a refusal should be immediate, not a time-out).
    pub slowest: Duration,
}

impl Tally {
    /// Attempts a backend answered.
    pub fn answered(&self) -> u32 {
        self.per_backend.values().sum()
    }

    /// Attempts that failed.
    pub fn failures(&self) -> u32 {
        self.failed.values().sum()
    }

    /// The largest relative distance of a backend's share from an even share over `backends`
    /// backends (0.0 = perfectly even; 0.2 = some backend got 20 % more or less than
    /// `answered / backends`). A backend that never answered counts as 0.
    pub fn imbalance(&self, backends: usize) -> f64 {
        let answered = f64::from(self.answered());
        if backends == 0 || answered == 0.0 {
            return 0.0;
        }
        let even = answered / backends as f64;
        let mut counts: Vec<f64> = self.per_backend.values().map(|c| f64::from(*c)).collect();
        counts.resize(backends.max(counts.len()), 0.0);
        counts
            .iter()
            .map(|c| (c - even).abs() / even)
            .fold(0.0, f64::max)
    }

    /// One line: `web-1 341, web-2 330, web-3 329; clients seen 10.240.0.5`
    /// (`no answer; failed: 3 refused` when nothing answered).
    pub fn summary(&self) -> String {
        let spread: Vec<String> = self
            .per_backend
            .iter()
            .map(|(b, n)| format!("{b} {n}"))
            .collect();
        let seen: Vec<String> = self.clients_seen.iter().map(Ipv4Addr::to_string).collect();
        let mut line = if spread.is_empty() {
            "no answer".to_string()
        } else {
            format!("{}; clients seen {}", spread.join(", "), seen.join(", "))
        };
        if !self.failed.is_empty() {
            let failed: Vec<String> = self
                .failed
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            line.push_str(&format!("; failed: {}", failed.join(", ")));
        }
        line
    }

    fn record(&mut self, result: std::result::Result<Reply, Outcome>, took: Duration) {
        self.slowest = self.slowest.max(took);
        match result {
            Ok(reply) => {
                self.clients_seen.insert(reply.client);
                self.seen_by
                    .entry(reply.backend.clone())
                    .or_default()
                    .insert(reply.client);
                *self.per_backend.entry(reply.backend).or_default() += 1;
            }
            Err(outcome) => {
                if outcome == Outcome::Refused {
                    self.refused += 1;
                }
                let why = match outcome {
                    Outcome::Failed(e) => e,
                    Outcome::Refused => "refused".to_string(),
                    Outcome::TimedOut => "timed out".to_string(),
                    Outcome::Connected => "answered without a reply".to_string(),
                };
                *self.failed.entry(why).or_default() += 1;
            }
        }
    }
}

/// Makes `count` attempts from inside `netns` to `ip:port`, one after the other: TCP
/// connections, or UDP datagrams each from a new socket (a new flow each). Each waits up to
/// `timeout`.
pub fn connect_many(
    netns: &Path,
    transport: Transport,
    ip: Ipv4Addr,
    port: u16,
    count: u32,
    timeout: Duration,
) -> Result<Tally> {
    Ok(seam_linux::netns::run_in(netns, || {
        let mut tally = Tally::default();
        for _ in 0..count {
            let started = Instant::now();
            let result = attempt(transport, ip, port, timeout);
            tally.record(result, started.elapsed());
        }
        tally
    })?)
}

/// One attempt from inside `netns` ([`connect_many`] with a count of one): the answer, or how
/// it failed.
pub fn connect_once(
    netns: &Path,
    transport: Transport,
    ip: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<std::result::Result<Reply, Outcome>> {
    Ok(seam_linux::netns::run_in(netns, || {
        attempt(transport, ip, port, timeout)
    })?)
}

/// One UDP flow that keeps sending: a datagram every interval from one socket, each answer (or
/// its absence) recorded in order.
pub struct UdpStream {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Option<String>>>>,
    sender: Option<JoinHandle<()>>,
}

impl UdpStream {
    /// Starts sending from inside `netns` to `ip:port` every `interval`; a datagram without an
    /// answer within the interval is recorded as `None`.
    pub fn start(netns: &Path, ip: Ipv4Addr, port: u16, interval: Duration) -> Result<UdpStream> {
        let socket = seam_linux::netns::run_in(netns, || -> std::io::Result<UdpSocket> {
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            socket.connect(SocketAddr::from((ip, port)))?;
            socket.set_read_timeout(Some(interval))?;
            Ok(socket)
        })?
        .map_err(io_error(netns))?;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let sender = {
            let stop = Arc::clone(&stop);
            let answers = Arc::clone(&answers);
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = socket
                        .send(b"seam-stream")
                        .and_then(|_| socket.recv(&mut buf));
                    let answer = answer
                        .ok()
                        .and_then(|n| Reply::parse(&String::from_utf8_lossy(&buf[..n])))
                        .map(|r| r.backend);
                    if let Ok(mut a) = answers.lock() {
                        a.push(answer);
                    }
                    // Keep the pace when the answer came early.
                    if let Some(rest) = interval.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        };
        Ok(UdpStream {
            stop,
            answers,
            sender: Some(sender),
        })
    }

    /// The answers so far, one per datagram sent: the backend's name, or `None`.
    pub fn answers(&self) -> Vec<Option<String>> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Stops sending and returns every answer.
    pub fn stop(mut self) -> Vec<Option<String>> {
        self.halt();
        self.answers()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_a_name_and_an_address() {
        assert_eq!(
            Reply::parse("web-1 10.240.0.5"),
            Some(Reply {
                backend: "web-1".into(),
                client: Ipv4Addr::new(10, 240, 0, 5)
            })
        );
        for bad in ["", "web-1", "web-1 nowhere", "web-1 10.0.0.1 more"] {
            assert_eq!(Reply::parse(bad), None, "{bad}");
        }
        let peer = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 10), 40000));
        assert_eq!(
            Reply::parse(&Reply::text("bm1", peer)).map(|r| r.client),
            Some(Ipv4Addr::new(203, 0, 113, 10))
        );
    }

    #[test]
    fn the_imbalance_is_the_largest_distance_from_an_even_share() {
        let mut t = Tally::default();
        let ok = |b: &str| {
            Ok(Reply {
                backend: b.into(),
                client: Ipv4Addr::LOCALHOST,
            })
        };
        for _ in 0..110 {
            t.record(ok("a"), Duration::ZERO);
        }
        for _ in 0..90 {
            t.record(ok("b"), Duration::ZERO);
        }
        t.record(Err(Outcome::Refused), Duration::from_millis(3));
        assert_eq!(t.answered(), 200);
        assert_eq!((t.failures(), t.refused), (1, 1));
        assert!((t.imbalance(2) - 0.1).abs() < 1e-9);
        // A third backend that never answered is 100 % off.
        assert!((t.imbalance(3) - 1.0).abs() < 1e-9);
        assert_eq!(t.slowest, Duration::from_millis(3));
        assert!(t
            .summary()
            .starts_with("a 110, b 90; clients seen 127.0.0.1; failed: 1 refused"));
    }
}
