//! A namespace's TCP counters (`/proc/net/snmp` and `/proc/net/netstat` as seen from inside it),
//! to tell retransmits caused by loss from those caused by reordering: a retransmit the receiver
//! reports as a duplicate (D-SACK) was not needed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

/// Counters by `Group.Name` (`Tcp.RetransSegs`, `TcpExt.TCPDSACKRecv`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpCounters(BTreeMap<String, u64>);

impl TcpCounters {
    /// Counter `name` (`Group.Name`), 0 when the kernel has none of that name.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// What happened between `before` and `self`, for the counters this tool reports.
    pub fn since(&self, before: &TcpCounters) -> TcpDelta {
        let d = |name: &str| self.get(name).saturating_sub(before.get(name));
        TcpDelta {
            retransmitted: d("Tcp.RetransSegs"),
            dsack: d("TcpExt.TCPDSACKRecvSegs").max(d("TcpExt.TCPDSACKRecv")),
            reorder: d("TcpExt.TCPSACKReorder")
                + d("TcpExt.TCPTSReorder")
                + d("TcpExt.TCPRenoReorder"),
            loss_probes: d("TcpExt.TCPLossProbes"),
        }
    }
}

/// TCP counters over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpDelta {
    /// Segments retransmitted.
    pub retransmitted: u64,
    /// Segments the peer reported received twice (D-SACK): retransmits that were not needed.
    pub dsack: u64,
    /// Times the sender detected reordering.
    pub reorder: u64,
    /// Tail loss probes sent (a retransmit of the last segment when its ACK is late).
    pub loss_probes: u64,
}

impl TcpDelta {
    /// Retransmits that were needed: those the receiver did not report as duplicates. A
    /// retransmit the receiver got twice was sent because an ACK or the first copy came late,
    /// not because something was lost.
    pub fn needed(&self) -> u64 {
        self.retransmitted.saturating_sub(self.dsack)
    }
}

/// Parses the `Group: names…` / `Group: values…` line pairs of `/proc/net/snmp` or
/// `/proc/net/netstat` into `counters`.
fn parse_into(text: &str, counters: &mut BTreeMap<String, u64>) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((group, names)), Some((group2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if group != group2 {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Some fields are signed (`Tcp.MaxConn` is -1): not counters, skipped.
            if let Ok(v) = value.parse::<u64>() {
                counters.insert(format!("{group}.{name}"), v);
            }
        }
    }
}

/// Parses the texts of `/proc/net/snmp` and `/proc/net/netstat`.
pub fn parse(texts: &[&str]) -> TcpCounters {
    let mut counters = BTreeMap::new();
    for t in texts {
        parse_into(t, &mut counters);
    }
    TcpCounters(counters)
}

/// Reads namespace `netns`'s counters.
pub fn read(netns: &Path) -> anyhow::Result<TcpCounters> {
    let (snmp, netstat) = seam_linux::netns::run_in(netns, || {
        (
            std::fs::read_to_string("/proc/thread-self/net/snmp"),
            std::fs::read_to_string("/proc/thread-self/net/netstat"),
        )
    })?;
    let snmp = snmp.with_context(|| format!("read /proc/net/snmp in {}", netns.display()))?;
    let netstat =
        netstat.with_context(|| format!("read /proc/net/netstat in {}", netns.display()))?;
    Ok(parse(&[&snmp, &netstat]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_both_files_and_their_difference() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 12\n";
        let netstat =
            "TcpExt: TCPSACKReorder TCPDSACKRecv TCPDSACKRecvSegs TCPLossProbes\nTcpExt: 3 4 5 0\n\
                       IpExt: InOctets\nIpExt: 100\n";
        let before = parse(&[snmp, netstat]);
        assert_eq!(before.get("Tcp.RetransSegs"), 12);
        assert_eq!(before.get("TcpExt.TCPDSACKRecvSegs"), 5);
        assert_eq!(before.get("Tcp.MaxConn"), 0);
        assert_eq!(before.get("Nope.Nothing"), 0);
        let after = parse(&[
            "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 47\n",
            "TcpExt: TCPSACKReorder TCPDSACKRecv TCPDSACKRecvSegs TCPLossProbes\nTcpExt: 5 30 34 7\n",
        ]);
        let d = after.since(&before);
        assert_eq!(
            d,
            TcpDelta {
                retransmitted: 35,
                dsack: 29,
                reorder: 2,
                loss_probes: 7,
            }
        );
        assert_eq!(d.needed(), 6);
        // A counter that went backwards (another namespace's file) is no negative delta.
        assert_eq!(before.since(&after).retransmitted, 0);
    }
}
