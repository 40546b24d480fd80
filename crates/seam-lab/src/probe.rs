//! Real traffic between lab namespaces: TCP servers and connects, UDP echo servers and
//! probes, ICMP via `ping`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};

/// Starts a TCP server on `port` inside the namespace at `netns`; it answers every connection
/// with `reply` and runs until the process exits.
pub fn serve_tcp(netns: &Path, port: u16, reply: String) -> Result<()> {
    let listener = seam_linux::netns::run_in(netns, || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    })?
    .map_err(|source| LabError::Io {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    Ok(())
}

/// Starts a TCP server on `port` inside the namespace at `netns` that answers every connection
/// with `<reply> <peer address>`: the address the connection came from, as this end sees it (a
/// NAT on the way would show here).
pub fn serve_tcp_peer(netns: &Path, port: u16, reply: String) -> Result<()> {
    let listener = seam_linux::netns::run_in(netns, || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    })?
    .map_err(|source| LabError::Io {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = conn.write_all(format!("{reply} {peer}").as_bytes());
        }
    });
    Ok(())
}

/// Connects from inside `netns` to `ip:port` and returns what the server said, or `None` when
/// the connection failed or timed out.
pub fn tcp(netns: &Path, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<Option<String>> {
    Ok(seam_linux::netns::run_in(netns, || {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = String::new();
        stream.read_to_string(&mut buf).ok()?;
        Some(buf)
    })?)
}

/// Sends one ICMP echo from inside `netns` (`ping -c 1 -W secs`) and says whether it was answered.
pub fn ping(netns: &Path, ip: Ipv4Addr, timeout_secs: u32) -> Result<bool> {
    let status = seam_linux::netns::run_in(netns, || {
        Command::new("ping")
            .args([
                "-c",
                "1",
                "-W",
                &timeout_secs.to_string(),
                "-q",
                &ip.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    })?
    .map_err(|source| LabError::Io {
        path: PathBuf::from("ping"),
        source,
    })?;
    Ok(status.success())
}

/// How one connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: the handshake completed; UDP: the echo came back.
    Connected,
    /// Refused: a TCP RST, or an ICMP port unreachable for UDP (a reject, not a drop).
    Refused,
    /// Nothing came back within the timeout (what a dropping firewall looks like).
    TimedOut,
    /// Another error (e.g. ICMP host unreachable), with the OS's message.
    Failed(String),
}

impl Outcome {
    /// True for [`Outcome::Connected`].
    pub fn connected(&self) -> bool {
        *self == Outcome::Connected
    }

    fn from_error(e: &std::io::Error) -> Outcome {
        match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::TimedOut,
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => Outcome::Refused,
            _ => Outcome::Failed(e.to_string()),
        }
    }
}

/// Opens a TCP connection from inside `netns` to `ip:port` and says how it went (the
/// connection is closed at once; nothing is read).
pub fn tcp_connect(netns: &Path, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<Outcome> {
    Ok(seam_linux::netns::run_in(
        netns,
        || match TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout) {
            Ok(_) => Outcome::Connected,
            Err(e) => Outcome::from_error(&e),
        },
    )?)
}

/// Starts a UDP echo server on `port` inside the namespace at `netns`: every datagram is sent
/// back to its sender. It runs until the process exits.
pub fn serve_udp(netns: &Path, port: u16) -> Result<()> {
    let socket = seam_linux::netns::run_in(netns, || {
        UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    })?
    .map_err(|source| LabError::Io {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from);
                }
                // An ICMP error queued for an earlier reply surfaces here; keep serving.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Ok(())
}

/// Sends one datagram from inside `netns` to `ip:port` and waits up to `timeout` for the echo
/// ([`serve_udp`]).
pub fn udp(netns: &Path, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<Outcome> {
    Ok(seam_linux::netns::run_in(netns, || {
        let attempt = || -> std::io::Result<Outcome> {
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            socket.connect(SocketAddr::from((ip, port)))?;
            socket.set_read_timeout(Some(timeout))?;
            let probe = b"seam-probe";
            socket.send(probe)?;
            let mut buf = [0u8; 64];
            let n = socket.recv(&mut buf)?;
            Ok(if &buf[..n] == probe {
                Outcome::Connected
            } else {
                Outcome::Failed(format!("unexpected reply of {n} bytes"))
            })
        };
        attempt().unwrap_or_else(|e| Outcome::from_error(&e))
    })?)
}
