//! What the benchmarks of issue 14 share: a client pod on n1 and a server pod on n2 (the lab's
//! nodes share one underlay subnet), the nodes' segment encapsulation (`seamd --segment-encap`,
//! set through `seam_lab::gateway::Topology::set_segment_encap`, which restarts the agent), and
//! which path the traffic between two endpoints takes: routed to the peer's underlay address
//! without encapsulation, or VXLAN.
//!
//! The path is read from the nodes' routes, mechanism-agnostic as far as the pinned design goes:
//! a node reaches a remote endpoint routed when it has a route `ADDR[/32] via PEER_UNDERLAY` (in
//! any table); without one, the endpoint is reached through the segment's bridge and VXLAN device.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_lab::{probe, Lab, LabGuard, NodeInfo, PodInfo};

use crate::util;

/// The lab's default mode (`seam lab up --segment-encap`, and seamd's default): routed between
/// nodes of one underlay subnet.
pub const DEFAULT_MODE: &str = "cross-subnet";
/// VXLAN with every peer.
pub const ALWAYS: &str = "always";

/// How long a switch of both nodes may take to show in their routes.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a path that is not routed yet may take to become routed after the pods first reach
/// each other.
const SETTLE: Duration = Duration::from_secs(5);

/// A client pod on n1 and a server pod on n2 of a 2-node lab that reach each other.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The pod on n1.
    pub client: PodInfo,
    /// The pod on n2.
    pub server: PodInfo,
    /// Node n1.
    pub n1: NodeInfo,
    /// Node n2.
    pub n2: NodeInfo,
}

impl Pair {
    /// The path between the two pods now.
    pub fn path(&self) -> anyhow::Result<PathKind> {
        path(&self.n1, self.client.ip, &self.n2, self.server.ip)
    }
}

/// Adds pods `client` (n1) and `server` (n2) in `namespace` and waits until they reach each
/// other.
pub fn pod_pair(guard: &mut LabGuard, namespace: &str) -> anyhow::Result<Pair> {
    let client = guard.lab.workloads().add_pod("n1", namespace, "client")?;
    let server = guard.lab.workloads().add_pod("n2", namespace, "server")?;
    let lab = &guard.lab;
    wait_reachable(lab, &client.netns_path, server.ip, "pod on n1")?;
    Ok(Pair {
        client,
        server,
        n1: lab.node("n1")?.clone(),
        n2: lab.node("n2")?.clone(),
    })
}

/// Waits up to 15 s until `from` (named `who` in the error) gets an echo reply from `to`: the
/// agents learn each other's endpoints through the controller.
pub fn wait_reachable(lab: &Lab, from: &Path, to: Ipv4Addr, who: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe::ping(from, to, 1)? {
        if Instant::now() > deadline {
            bail!("{who} cannot reach {to} (see {})", lab.dir.display());
        }
    }
    Ok(())
}

/// The path between two endpoints on two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Each node routes the other's endpoint to the peer's underlay address.
    Routed,
    /// Neither does: the segment's VXLAN.
    Vxlan,
    /// One node routes, the other encapsulates (the two ends disagree, e.g. mid-switch).
    Mixed,
}

impl PathKind {
    /// From whether each direction is routed.
    pub fn of(there: bool, back: bool) -> PathKind {
        match (there, back) {
            (true, true) => PathKind::Routed,
            (false, false) => PathKind::Vxlan,
            _ => PathKind::Mixed,
        }
    }
}

impl PathKind {
    /// One word for tables: `routed`, `VXLAN` or `mixed`.
    pub fn short(self) -> &'static str {
        match self {
            PathKind::Routed => "routed",
            PathKind::Vxlan => "VXLAN",
            PathKind::Mixed => "mixed",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Routed => "routed (no encapsulation)",
            PathKind::Vxlan => "VXLAN",
            PathKind::Mixed => "mixed (one direction routed, the other VXLAN)",
        })
    }
}

/// Whether `ip route show table all` output `routes` has a route for `dst` (as `dst` or
/// `dst/32`) via `via`.
pub fn has_route_via(routes: &str, dst: Ipv4Addr, via: Ipv4Addr) -> bool {
    let (dst, via) = (dst.to_string(), via.to_string());
    routes.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else {
            return false;
        };
        first.strip_suffix("/32").unwrap_or(first) == dst
            && words.windows(2).any(|w| w[0] == "via" && w[1] == via)
    })
}

/// Whether the node in namespace `node_netns` routes `dst` via `via`.
pub fn routes_via(node_netns: &str, dst: Ipv4Addr, via: Ipv4Addr) -> anyhow::Result<bool> {
    let routes = util::ip(node_netns, &["-4", "route", "show", "table", "all"])?;
    Ok(has_route_via(&routes, dst, via))
}

/// The path between endpoint `a` on node `na` and endpoint `b` on node `nb`.
pub fn path(na: &NodeInfo, a: Ipv4Addr, nb: &NodeInfo, b: Ipv4Addr) -> anyhow::Result<PathKind> {
    Ok(PathKind::of(
        routes_via(&na.netns, b, nb.underlay_ip)?,
        routes_via(&nb.netns, a, na.underlay_ip)?,
    ))
}

/// Polls `probe` every 50 ms until it says `want` or `timeout` passed; how long it took, or
/// `None` on timeout.
pub fn wait_path(
    want: PathKind,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<PathKind>,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    loop {
        if probe()? == want {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pods' path once it has settled: routed as soon as both nodes route (the routes may follow
/// the first echo reply by a reconcile pass), else what it is after [`SETTLE`].
pub fn settled_path(pair: &Pair) -> anyhow::Result<PathKind> {
    settled_path_of(
        &pair.n1,
        pair.client.ip,
        &pair.n2,
        pair.server.ip,
        PathKind::Routed,
    )
}

/// The path between `a` on `na` and `b` on `nb` once it is `want`, or what it is after
/// [`SETTLE`]: a newly attached endpoint's routes may follow its first echo reply by a
/// reconcile pass, and a mode switch moves each endpoint's routes on its own pass.
pub fn settled_path_of(
    na: &NodeInfo,
    a: Ipv4Addr,
    nb: &NodeInfo,
    b: Ipv4Addr,
    want: PathKind,
) -> anyhow::Result<PathKind> {
    match wait_path(want, SETTLE, || path(na, a, nb, b))? {
        Some(_) => Ok(want),
        None => path(na, a, nb, b),
    }
}

/// Restarts node `node`'s agent with `--segment-encap MODE`; the error says what it needs.
pub fn set_mode(lab: &mut Lab, node: &str, mode: &str) -> anyhow::Result<()> {
    lab.topology()
        .set_segment_encap(node, mode)
        .with_context(|| {
            format!(
                "set node {node}'s segment encapsulation to {mode} (`seamd --segment-encap`; this \
                 needs a build with routed segments)"
            )
        })
}

/// One measurement block of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Pod paths with both nodes in the lab's default mode.
    Default,
    /// Node to node on the underlay.
    Underlay,
    /// Pod paths with both nodes on `always` (VXLAN).
    Always,
}

/// The order of round `round`'s blocks: the underlay between the modes, the modes' order
/// alternating so each is first as often as last. With `compare_encap`, even rounds start on
/// `always`: a build without routed segments fails before anything is measured, and consecutive
/// rounds share the mode at their boundary (one switch per round).
pub fn schedule(round: usize, compare_encap: bool) -> Vec<Block> {
    let mut blocks = if compare_encap {
        vec![Block::Always, Block::Underlay, Block::Default]
    } else {
        vec![Block::Default, Block::Underlay]
    };
    if round % 2 == 1 {
        blocks.reverse();
    }
    blocks
}

/// Both nodes of a [`Pair`] in the default mode or on `always`, switched on demand.
#[derive(Debug)]
pub struct Modes {
    always: bool,
    default_path: PathKind,
}

impl Modes {
    /// The lab as it came up: the default mode, with the path it gives (see [`settled_path`]).
    pub fn new(pair: &Pair) -> anyhow::Result<Modes> {
        Ok(Modes {
            always: false,
            default_path: settled_path(pair)?,
        })
    }

    /// The path between the pods in the default mode.
    pub fn default_path(&self) -> PathKind {
        self.default_path
    }

    /// Puts both nodes on `always` (or back in the default mode) unless they are already, waits
    /// until the pods' path shows it and every `(from, to)` of `reach` gets an echo reply again.
    pub fn enter(
        &mut self,
        lab: &mut Lab,
        pair: &Pair,
        always: bool,
        reach: &[(&Path, Ipv4Addr)],
    ) -> anyhow::Result<()> {
        if self.always == always {
            return Ok(());
        }
        let (mode, want) = if always {
            (ALWAYS, PathKind::Vxlan)
        } else {
            (DEFAULT_MODE, self.default_path)
        };
        for node in ["n1", "n2"] {
            set_mode(lab, node, mode)?;
        }
        self.always = always;
        if wait_path(want, SWITCH_TIMEOUT, || pair.path())?.is_none() {
            bail!(
                "{} s after both nodes switched to {mode}, the path between the pods is {}, not {want}",
                SWITCH_TIMEOUT.as_secs(),
                pair.path()?
            );
        }
        wait_reachable(lab, &pair.client.netns_path, pair.server.ip, "pod on n1")?;
        for (from, to) in reach {
            wait_reachable(lab, from, *to, &from.display().to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_via_the_peer_is_found_in_any_table() {
        let routes = "default via 198.18.0.1 dev eth0\n\
                      10.240.0.0/24 dev br-ns-a proto kernel scope link src 10.240.0.1\n\
                      10.240.1.5 via 198.18.0.12 dev eth0 table 83 proto 83\n\
                      local 10.240.0.1 dev br-ns-a table local proto kernel scope host\n";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(has_route_via(routes, ip("10.240.1.5"), ip("198.18.0.12")));
        assert!(has_route_via(
            "10.240.1.5/32 via 198.18.0.12 dev eth0 proto 83",
            ip("10.240.1.5"),
            ip("198.18.0.12")
        ));
        // Another peer, another address, or a connected route: not routed to the peer.
        assert!(!has_route_via(routes, ip("10.240.1.5"), ip("198.18.0.13")));
        assert!(!has_route_via(routes, ip("10.240.1.50"), ip("198.18.0.12")));
        assert!(!has_route_via(routes, ip("10.240.0.0"), ip("198.18.0.12")));
        assert!(!has_route_via("", ip("10.240.1.5"), ip("198.18.0.12")));
    }

    #[test]
    fn both_directions_decide_the_path() {
        assert_eq!(PathKind::of(true, true), PathKind::Routed);
        assert_eq!(PathKind::of(false, false), PathKind::Vxlan);
        assert_eq!(PathKind::of(true, false), PathKind::Mixed);
        assert_eq!(PathKind::of(false, true), PathKind::Mixed);
    }

    #[test]
    fn rounds_alternate_and_share_the_mode_at_their_boundary() {
        use Block::*;
        assert_eq!(schedule(0, false), vec![Default, Underlay]);
        assert_eq!(schedule(1, false), vec![Underlay, Default]);
        assert_eq!(schedule(0, true), vec![Always, Underlay, Default]);
        assert_eq!(schedule(1, true), vec![Default, Underlay, Always]);
        for r in 0..5 {
            let (this, next) = (schedule(r, true), schedule(r + 1, true));
            assert_eq!(this.last(), next.first());
        }
    }
}
