//! Long-running traffic between lab pods, to show what a fault does to flows already running: a
//! continuous `ping` (lost echoes counted) and an `iperf3` TCP flow (throughput and
//! retransmits per interval). Both run inside the pods' namespaces (`ip netns exec`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{LabError, Result};

fn netns_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Io {
            path: PathBuf::from(format!("{cmd:?}")),
            source,
        })
}

fn finish(child: Child, what: &str) -> Result<(bool, String, String)> {
    let out = child.wait_with_output().map_err(|source| LabError::Io {
        path: PathBuf::from(what),
        source,
    })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A continuous ping from one namespace to an address: `count` echoes, one every `interval`.
pub struct Pinger {
    child: Option<Child>,
    count: u32,
}

/// What a [`Pinger`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// ping's summary lines.
    pub summary: String,
}

impl PingReport {
    /// Requests without a reply.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }
}

impl Pinger {
    /// Starts `ping -c count -i interval -W 1` from inside `netns` to `ip` (intervals under
    /// 200 ms need root, as the lab does anyway).
    pub fn start(netns: &Path, ip: Ipv4Addr, interval: Duration, count: u32) -> Result<Pinger> {
        let child = spawn(
            Command::new("ip")
                .args(["netns", "exec", &netns_name(netns), "ping", "-q", "-W", "1"])
                .args(["-c", &count.to_string()])
                .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
                .arg(ip.to_string()),
        )?;
        Ok(Pinger {
            child: Some(child),
            count,
        })
    }

    /// Waits until every echo was sent and answered or timed out.
    pub fn finish(mut self) -> Result<PingReport> {
        let Some(child) = self.child.take() else {
            return Err(LabError::Invalid("ping already finished".into()));
        };
        let (_, stdout, stderr) = finish(child, "ping")?;
        // "200 packets transmitted, 200 received, 0% packet loss, time 4013ms"
        let line = stdout
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default();
        let number_before = |word: &str| -> Option<u32> {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let at = words.iter().position(|w| *w == word)?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        };
        match (number_before("packets"), number_before("received")) {
            (Some(sent), Some(received)) => Ok(PingReport {
                sent,
                received,
                summary: stdout.trim().to_string(),
            }),
            _ => Err(LabError::Command {
                what: format!("ping -c {}", self.count),
                detail: format!("no summary in its output: {stdout} {stderr}"),
            }),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An iperf3 TCP flow from a client namespace to a server namespace.
pub struct Iperf {
    server: Option<Child>,
    client: Option<Child>,
}

/// One iperf3 reporting interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfInterval {
    /// Start of the interval, seconds since the flow began.
    pub start: f64,
    /// Sender throughput in bit/s.
    pub bits_per_second: f64,
    /// TCP retransmits in the interval.
    pub retransmits: u64,
}

/// What an [`Iperf`] flow did.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfReport {
    /// Per-interval figures.
    pub intervals: Vec<IperfInterval>,
    /// Total retransmits.
    pub retransmits: u64,
    /// Bytes the receiver got.
    pub bytes_received: u64,
}

impl IperfReport {
    /// The longest run of consecutive intervals with (almost) no throughput (< 1 % of the
    /// median interval), in seconds.
    pub fn longest_stall(&self, interval: Duration) -> f64 {
        let mut rates: Vec<f64> = self.intervals.iter().map(|i| i.bits_per_second).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
        let mut longest = 0usize;
        let mut run = 0usize;
        for i in &self.intervals {
            if i.bits_per_second < median / 100.0 {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        longest as f64 * interval.as_secs_f64()
    }
}

impl Iperf {
    /// Starts a one-off `iperf3 -s` in `server_ns` on `port` and, once it listens, a client in
    /// `client_ns` sending to `ip` for `seconds` at `rate` (e.g. `100M`), reporting every
    /// `interval`.
    pub fn start(
        server_ns: &Path,
        client_ns: &Path,
        ip: Ipv4Addr,
        port: u16,
        seconds: u64,
        rate: &str,
        interval: Duration,
    ) -> Result<Iperf> {
        let server = spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns_name(server_ns),
                    "iperf3",
                    "-s",
                    "-1",
                ])
                .args(["-p", &port.to_string()]),
        )?;
        let mut flow = Iperf {
            server: Some(server),
            client: None,
        };
        // The server needs a moment to listen; a refused client would fail at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let listening = Command::new("ip")
                .args(["netns", "exec", &netns_name(server_ns), "ss", "-Htln"])
                .arg(format!("sport = :{port}"))
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if listening {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(LabError::Timeout(format!("iperf3 -s on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        flow.client = Some(spawn(
            Command::new("ip")
                .args(["netns", "exec", &netns_name(client_ns), "iperf3", "-J"])
                .args(["-c", &ip.to_string(), "-p", &port.to_string()])
                .args(["-t", &seconds.to_string(), "-b", rate])
                .args(["-i", &format!("{:.3}", interval.as_secs_f64())]),
        )?);
        Ok(flow)
    }

    /// Waits for the flow to end and reads its report; an error when iperf3 failed (e.g. the
    /// connection broke).
    pub fn finish(mut self) -> Result<IperfReport> {
        let Some(client) = self.client.take() else {
            return Err(LabError::Invalid("iperf3 already finished".into()));
        };
        let (ok, stdout, stderr) = finish(client, "iperf3 -c")?;
        let json: serde_json::Value =
            serde_json::from_str(&stdout).map_err(|source| LabError::State {
                path: PathBuf::from("iperf3 -J output"),
                source,
            })?;
        if !ok || json.get("error").is_some() {
            return Err(LabError::Command {
                what: "iperf3 -c".into(),
                detail: format!("{} {stderr}", json["error"]),
            });
        }
        let intervals = json["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| IperfInterval {
                        start: i["sum"]["start"].as_f64().unwrap_or(0.0),
                        bits_per_second: i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0),
                        retransmits: i["sum"]["retransmits"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(IperfReport {
            intervals,
            retransmits: json["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            bytes_received: json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0),
        })
    }
}

impl Drop for Iperf {
    fn drop(&mut self) {
        for child in [self.client.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_a_run_of_empty_intervals() {
        let i = |start: f64, bits_per_second: f64| IperfInterval {
            start,
            bits_per_second,
            retransmits: 0,
        };
        let report = IperfReport {
            intervals: vec![
                i(0.0, 1e8),
                i(0.5, 0.0),
                i(1.0, 0.0),
                i(1.5, 1e8),
                i(2.0, 1e8),
            ],
            retransmits: 0,
            bytes_received: 0,
        };
        assert_eq!(report.longest_stall(Duration::from_millis(500)), 1.0);
    }
}
