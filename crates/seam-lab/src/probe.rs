//! Real traffic between lab namespaces: TCP servers and connects, ICMP via `ping`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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
