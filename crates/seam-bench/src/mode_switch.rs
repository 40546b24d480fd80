//! `seam-bench mode-switch`: what switching a node between VXLAN and routed segments costs
//! traffic already flowing. A TCP flow (iperf3 at a fixed rate, 0.5 s intervals) and a 50 Hz
//! ping run from a pod on n1 to a pod on n2; one node (n2 in even rounds, n1 in odd ones) starts
//! on `--segment-encap always`, and in one window of the round its agent is restarted with
//! `cross-subnet` (VXLAN -> routed), in the next with `always` again (routed -> VXLAN). The
//! baseline, in the same round, is a window in which the agent is restarted with its mode
//! unchanged (what a restart alone costs). Reported per window: TCP retransmits (iperf3's, and
//! the client namespace's counters: how many the receiver got twice, D-SACK, so were not needed),
//! lost echoes, the longest stall, the time until the agent was ready and until both nodes'
//! routes showed the new path. Target (issue 14): no loss beyond one retransmit per switch: at
//! most one needed retransmit and one lost echo.
//!
//! Needs routed segments (`Topology::set_segment_encap`); without them it stops at the first
//! switch and says so.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use seam_lab::traffic::{Iperf, Pinger};

use crate::cleanup::LabGuard;
use crate::encap::{self, Pair, PathKind, ALWAYS, DEFAULT_MODE};
use crate::stats::{ms, verdict};
use crate::tcpstat::{self, TcpDelta};
use crate::util;

const PORT: u16 = 5201;
/// iperf3's reporting interval.
const INTERVAL: Duration = Duration::from_millis(500);
/// Traffic before the switch.
const LEAD: Duration = Duration::from_secs(1);

/// Options of `seam-bench mode-switch`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModeSwitchOpts {
    /// Seconds of traffic per window (one switch or restart each, 1 s after the traffic starts).
    #[arg(long, default_value_t = 8)]
    pub window: u64,
    /// Rounds; each has a restart window and two switch windows.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The TCP flow's rate (iperf3 -b).
    #[arg(long, default_value = "1G")]
    pub rate: String,
    /// Milliseconds between echo requests.
    #[arg(long, default_value_t = 20)]
    pub ping_ms: u64,
}

impl ModeSwitchOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "mode-switch --window {} --rounds {} --rate {} --ping-ms {}",
            self.window, self.rounds, self.rate, self.ping_ms
        )
    }
}

/// What happens in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The agent restarted on `always` again (the baseline).
    Restart,
    /// `always` -> `cross-subnet`.
    ToRouted,
    /// `cross-subnet` -> `always`.
    ToVxlan,
}

impl Action {
    /// The mode the agent restarts with.
    fn mode(self) -> &'static str {
        match self {
            Action::Restart | Action::ToVxlan => ALWAYS,
            Action::ToRouted => DEFAULT_MODE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Action::Restart => "restart, mode kept (always)",
            Action::ToRouted => "always -> cross-subnet",
            Action::ToVxlan => "cross-subnet -> always",
        }
    }
}

/// The windows of round `round`: the baseline first in even rounds, last in odd ones; the two
/// switches always in this order (the node starts the round on `always` and ends it there).
pub fn windows(round: usize) -> [Action; 3] {
    if round.is_multiple_of(2) {
        [Action::Restart, Action::ToRouted, Action::ToVxlan]
    } else {
        [Action::ToRouted, Action::ToVxlan, Action::Restart]
    }
}

/// One window's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Round, from 1.
    pub round: usize,
    /// The node switched.
    pub node: &'static str,
    /// What happened.
    pub action: Action,
    /// From the switch until the agent was ready, ms.
    pub ready_ms: f64,
    /// From the switch until both nodes' routes showed the expected path, ms (`None`: not
    /// within the window, or a restart window).
    pub path_ms: Option<f64>,
    /// TCP retransmits over the window (iperf3's count).
    pub retransmits: u64,
    /// The client namespace's TCP counters over the window: D-SACKs received (retransmits that
    /// were not needed: reordering, not loss) and reordering detected.
    pub tcp: TcpDelta,
    /// Echo requests without a reply.
    pub lost: u32,
    /// Echo requests sent.
    pub sent: u32,
    /// Longest run of intervals without throughput, s.
    pub stall_s: f64,
    /// Why the TCP flow failed, when it did (e.g. the connection broke).
    pub broken: Option<String>,
}

impl Window {
    /// A switch window that kept within the target: the path changed, at most one needed
    /// retransmit (one the receiver did not get twice: a loss), at most one lost echo, the flow
    /// intact. Restart windows are the baseline, not judged.
    pub fn ok(&self) -> bool {
        self.action == Action::Restart
            || (self.path_ms.is_some()
                && self.tcp.needed() <= 1
                && self.lost <= 1
                && self.broken.is_none())
    }
}

/// Every switch window kept within the target, and there was at least one.
pub fn all_ok(windows: &[Window]) -> bool {
    windows.iter().any(|w| w.action != Action::Restart) && windows.iter().all(Window::ok)
}

/// The results of `seam-bench mode-switch`.
#[derive(Debug, Clone)]
pub struct ModeSwitchSummary {
    /// The pods' path with both nodes on `cross-subnet`.
    pub routed: PathKind,
    /// Every window, in order.
    pub windows: Vec<Window>,
}

impl ModeSwitchSummary {
    /// A switch between VXLAN and routed was measured, and each kept within the target.
    pub fn ok(&self) -> bool {
        self.routed == PathKind::Routed && all_ok(&self.windows)
    }
}

/// Runs the benchmark on a fresh 2-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &ModeSwitchOpts) -> anyhow::Result<ModeSwitchSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    if opts.window < 3 {
        bail!("--window must be at least 3 s (1 s of traffic before the switch, time after it)");
    }
    let mut guard = crate::cleanup::lab_up("bmsw", 2, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let summary = result?;
    down?;
    Ok(summary)
}

fn bench(guard: &mut LabGuard, opts: &ModeSwitchOpts) -> anyhow::Result<ModeSwitchSummary> {
    let pair = encap::pod_pair(guard, "bmsw")?;
    let routed = encap::settled_path(&pair)?;
    println!(
        "   pod {} (n1) -> pod {} (n2): iperf3 TCP at {} and a ping every {} ms; path with both nodes on {DEFAULT_MODE}: {routed}",
        pair.client.ip, pair.server.ip, opts.rate, opts.ping_ms
    );
    let mut out = Vec::new();
    for round in 0..opts.rounds.max(1) {
        let node = if round.is_multiple_of(2) { "n2" } else { "n1" };
        // Unmeasured: the round's node onto VXLAN.
        encap::set_mode(&mut guard.lab, node, ALWAYS)?;
        settle(
            guard,
            &pair,
            PathKind::Vxlan,
            &format!("{node} on {ALWAYS}"),
        )?;
        for action in windows(round) {
            let want = match action {
                Action::Restart | Action::ToVxlan => PathKind::Vxlan,
                Action::ToRouted => routed,
            };
            out.push(window(guard, &pair, opts, round, node, action, want)?);
        }
        encap::set_mode(&mut guard.lab, node, DEFAULT_MODE)?;
        settle(
            guard,
            &pair,
            routed,
            &format!("{node} back on {DEFAULT_MODE}"),
        )?;
    }
    let summary = ModeSwitchSummary {
        routed,
        windows: out,
    };
    print(&summary);
    Ok(summary)
}

/// Waits until the path is `want` and the pods reach each other.
fn settle(guard: &LabGuard, pair: &Pair, want: PathKind, what: &str) -> anyhow::Result<()> {
    if encap::wait_path(want, Duration::from_secs(20), || pair.path())?.is_none() {
        bail!(
            "{what}: the path between the pods is {}, not {want}",
            pair.path()?
        );
    }
    encap::wait_reachable(
        &guard.lab,
        &pair.client.netns_path,
        pair.server.ip,
        "pod on n1",
    )
}

fn window(
    guard: &mut LabGuard,
    pair: &Pair,
    opts: &ModeSwitchOpts,
    round: usize,
    node: &'static str,
    action: Action,
    want: PathKind,
) -> anyhow::Result<Window> {
    let counters = tcpstat::read(&pair.client.netns_path)?;
    let flow = Iperf::start(
        &pair.server.netns_path,
        &pair.client.netns_path,
        pair.server.ip,
        PORT,
        opts.window,
        &opts.rate,
        INTERVAL,
    )?;
    let interval = Duration::from_millis(opts.ping_ms.max(1));
    let count =
        u32::try_from(opts.window * 1000 / interval.as_millis().max(1) as u64).unwrap_or(u32::MAX);
    let pinger = Pinger::start(&pair.client.netns_path, pair.server.ip, interval, count)?;
    let started = Instant::now();
    std::thread::sleep(LEAD);
    let switched = Instant::now();
    encap::set_mode(&mut guard.lab, node, action.mode())?;
    let ready_ms = ms(switched.elapsed());
    // Until shortly before the flow ends: the path must change while traffic still flows.
    let left = Duration::from_secs(opts.window)
        .saturating_sub(started.elapsed())
        .saturating_sub(Duration::from_millis(500));
    let path_ms = if action == Action::Restart {
        None
    } else {
        encap::wait_path(want, left, || pair.path())?.map(|_| ms(switched.elapsed()))
    };
    let pings = pinger.finish()?;
    let (retransmits, stall_s, broken) = match flow.finish() {
        Ok(r) => (r.retransmits, r.longest_stall(INTERVAL), None),
        Err(e) => (0, 0.0, Some(e.to_string())),
    };
    let tcp = tcpstat::read(&pair.client.netns_path)?.since(&counters);
    Ok(Window {
        round: round + 1,
        node,
        action,
        ready_ms,
        path_ms,
        retransmits,
        tcp,
        lost: pings.lost(),
        sent: pings.sent,
        stall_s,
        broken,
    })
}

fn print(s: &ModeSwitchSummary) {
    let (windows, routed) = (&s.windows, s.routed);
    println!(
        "   {:<6}{:<6}{:<30}{:>12}{:>14}{:>9}{:>8}{:>8}{:>6}{:>9}{:>11}{:>8}",
        "round",
        "node",
        "window",
        "agent ready",
        "path changed",
        "retrans",
        "D-SACK",
        "needed",
        "TLP",
        "reorder",
        "lost/sent",
        "stall"
    );
    for w in windows {
        let path = match (w.action, w.path_ms) {
            (Action::Restart, _) => "-".to_string(),
            (_, Some(m)) => format!("{m:.0} ms"),
            (_, None) => "not seen".to_string(),
        };
        println!(
            "   {:<6}{:<6}{:<30}{:>9.0} ms{:>14}{:>9}{:>8}{:>8}{:>6}{:>9}{:>11}{:>6.1} s{}",
            w.round,
            w.node,
            w.action.label(),
            w.ready_ms,
            path,
            w.retransmits,
            w.tcp.dsack,
            w.tcp.needed(),
            w.tcp.loss_probes,
            w.tcp.reorder,
            format!("{}/{}", w.lost, w.sent),
            w.stall_s,
            w.broken
                .as_ref()
                .map(|b| format!("   flow broken: {b}"))
                .unwrap_or_default()
        );
    }
    let max = |restart: bool, f: &dyn Fn(&Window) -> u64| {
        windows
            .iter()
            .filter(|w| (w.action == Action::Restart) == restart)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    println!(
        "   per switch, at most: {} retransmits, {} of them needed, {} lost echoes (restart with the mode kept: {}, {} needed, {} lost)",
        max(false, &|w| w.retransmits),
        max(false, &|w| w.tcp.needed()),
        max(false, &|w| u64::from(w.lost)),
        max(true, &|w| w.retransmits),
        max(true, &|w| w.tcp.needed()),
        max(true, &|w| u64::from(w.lost)),
    );
    println!(
        "   target: every switch changes the path within its window with <= 1 needed retransmit and <= 1 lost echo: {}",
        verdict(s.ok())
    );
    println!(
        "   (retrans: iperf3's count; from the client namespace's TCP counters: D-SACK, retransmitted segments the receiver got twice (the first copy or its ACK was late, nothing lost); needed = retransmitted - D-SACK; TLP, tail loss probes sent; reorder, reordering the sender detected)"
    );
    if routed != PathKind::Routed {
        println!(
            "   note: with both nodes on {DEFAULT_MODE} the path is {routed}, not routed: no switch between VXLAN and routed was measured"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(action: Action, path_ms: Option<f64>, retransmits: u64, lost: u32) -> Window {
        Window {
            round: 1,
            node: "n2",
            action,
            ready_ms: 300.0,
            path_ms,
            retransmits,
            tcp: TcpDelta {
                retransmitted: retransmits,
                ..TcpDelta::default()
            },
            lost,
            sent: 400,
            stall_s: 0.0,
            broken: None,
        }
    }

    #[test]
    fn each_round_switches_there_and_back_with_the_baseline_alternating() {
        assert_eq!(
            windows(0),
            [Action::Restart, Action::ToRouted, Action::ToVxlan]
        );
        assert_eq!(
            windows(1),
            [Action::ToRouted, Action::ToVxlan, Action::Restart]
        );
        assert_eq!(Action::ToRouted.mode(), "cross-subnet");
        assert_eq!(Action::ToVxlan.mode(), "always");
        assert_eq!(Action::Restart.mode(), "always");
    }

    #[test]
    fn retransmits_the_receiver_got_twice_are_no_loss() {
        let mut late = w(Action::ToRouted, Some(400.0), 40, 0);
        late.tcp.dsack = 39;
        assert!(all_ok(&[late.clone()]));
        late.tcp.dsack = 38;
        assert!(!all_ok(&[late]));
    }

    #[test]
    fn a_switch_may_cost_one_retransmit_and_one_echo() {
        assert!(all_ok(&[
            w(Action::Restart, Some(1.0), 7, 3),
            w(Action::ToRouted, Some(400.0), 1, 1),
            w(Action::ToVxlan, Some(400.0), 0, 0),
        ]));
        assert!(!all_ok(&[w(Action::ToRouted, Some(400.0), 2, 0)]));
        assert!(!all_ok(&[w(Action::ToRouted, Some(400.0), 0, 2)]));
        // A switch that never showed in the routes measured nothing.
        assert!(!all_ok(&[w(Action::ToRouted, None, 0, 0)]));
        let mut broken = w(Action::ToVxlan, Some(1.0), 0, 0);
        broken.broken = Some("connection reset".into());
        assert!(!all_ok(&[broken]));
        // Restarts alone are no switch.
        assert!(!all_ok(&[w(Action::Restart, Some(1.0), 0, 0)]));
    }
}
