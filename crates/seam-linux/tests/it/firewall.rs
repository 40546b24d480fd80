//! The compiled firewall with real packets: a "node" namespace with a Linux bridge (br_netfilter on,
//! so bridged IPv4 traverses the inet forward hook) and one "pod" namespace per endpoint on it, with
//! TCP servers and UDP echo servers. For each case the policies are compiled for the node, rendered,
//! applied with `nft -f` in the node namespace, and every pair is probed: allowed flows must connect,
//! denied ones must time out (dropped, never refused), exactly as `seam_policy::evaluate` says; and the
//! counter of every rule the engine names as deciding a probed flow must have gone up. The kernel is also
//! a decider of the conformance harness (seam-conformance): the cases' own expectations, every pair, with
//! real packets.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use seam_conformance::{
    check, CaseInput, ConformanceError, Decider, Judging, Model, Observed, Probe, Suite, TEST_DATA,
};
use seam_firewall::render::table;
use seam_firewall::NodeRuleset;
use seam_firewall::{compile, nft_comment, verdict_rule_id};
use seam_linux::nft::list_table_text;
use seam_linux::{
    apply_delta, apply_ruleset, delete_table, netns, read_counters, sysctl, NftError,
};
use seam_policy::{evaluate, Decision, Flow, FlowEnd, Inventory, PolicySet, Protocol};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_millis(800);

pub(crate) fn require_root() {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert!(
        euid == "0",
        "privileged test: must run as root (cargo test -p seam-linux -- --ignored as root)"
    );
}

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces that are deleted on drop, servers stopped first.
pub(crate) struct Lab {
    node: String,
    pods: Vec<(String, Ipv4Addr)>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        for (p, _) in &self.pods {
            let _ = netns::delete(p);
        }
        let _ = netns::delete(&self.node);
    }
}

impl Lab {
    /// A node namespace with bridge `br0` and one pod namespace per address, serving `tcp` and
    /// `udp` ports.
    pub(crate) fn build(tag: &str, addrs: &[Ipv4Addr], tcp: &[u16], udp: &[u16]) -> Lab {
        require_root();
        let base = format!("sfw{}{tag}", std::process::id());
        let mut lab = Lab {
            node: format!("{base}n"),
            pods: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        netns::create(&lab.node).unwrap();
        let node = lab.node.clone();
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &node, "link", "set", "br0", "up"]);
        // br_netfilter: bridged IPv4 must go through the inet forward hook, in this namespace.
        let key = "net/bridge/bridge-nf-call-iptables";
        netns::run_in(&netns::path_of(&node), || {
            assert!(
                std::path::Path::new(&format!("/proc/sys/{key}")).exists(),
                "br_netfilter is not available in this kernel (no /proc/sys/{key}): bridged traffic would bypass nftables; load it with `modprobe br_netfilter`"
            );
            sysctl::write(key, "1").unwrap();
            assert_eq!(std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap().trim(), "1");
        })
        .unwrap();
        for (i, addr) in addrs.iter().enumerate() {
            let pod = format!("{base}p{i}");
            netns::create(&pod).unwrap();
            lab.pods.push((pod.clone(), *addr));
            let host = format!("h{i}");
            ip(&[
                "-n", &node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ]);
            ip(&["-n", &node, "link", "set", &host, "master", "br0", "up"]);
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &pod, "link", "set", "eth0", "up"]);
            ip(&["-n", &pod, "link", "set", "lo", "up"]);
            for &port in tcp {
                let l = netns::run_in(&netns::path_of(&pod), || {
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                })
                .unwrap()
                .unwrap();
                l.set_nonblocking(true).unwrap();
                let stop = lab.stop.clone();
                lab.servers.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match l.accept() {
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                }));
            }
            for &port in udp {
                let s = netns::run_in(&netns::path_of(&pod), || {
                    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
                })
                .unwrap()
                .unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let stop = lab.stop.clone();
                lab.servers.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(&buf[..n], from);
                        }
                    }
                }));
            }
        }
        lab
    }

    pub(crate) fn node_path(&self) -> PathBuf {
        netns::path_of(&self.node)
    }

    /// The name of the namespace of the pod with address `addr`.
    pub(crate) fn pod_name(&self, addr: Ipv4Addr) -> String {
        let (name, _) = self.pods.iter().find(|(_, a)| *a == addr).unwrap();
        name.clone()
    }

    pub(crate) fn pod_path(&self, addr: Ipv4Addr) -> PathBuf {
        let (name, _) = self.pods.iter().find(|(_, a)| *a == addr).unwrap();
        netns::path_of(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Connected,
    TimedOut,
    Refused,
    Error,
}

/// UDP source ports handed out in turn (20000..60000) so that no two probes of a run share one.
fn next_udp_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 40_000;
    20_000 + u16::try_from(n).unwrap()
}

/// One probe from inside the source pod's namespace.
fn probe(src_ns: &Path, dst: Ipv4Addr, port: u16, protocol: Protocol) -> Outcome {
    netns::run_in(src_ns, || {
        let to = SocketAddr::from((dst, port));
        match protocol {
            Protocol::Tcp => match TcpStream::connect_timeout(&to, TIMEOUT) {
                Ok(_) => Outcome::Connected,
                Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                    Outcome::TimedOut
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
                Err(_) => Outcome::Error,
            },
            Protocol::Udp => {
                // A fresh source port per probe: a reused one would match the conntrack entry of an
                // earlier case's allowed probe and pass as established, whatever the new policy says.
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, next_udp_port())).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                if s.send_to(b"seam", to).is_err() {
                    return Outcome::Error;
                }
                let mut buf = [0u8; 16];
                match s.recv_from(&mut buf) {
                    Ok(_) => Outcome::Connected,
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut =>
                    {
                        Outcome::TimedOut
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
                    Err(_) => Outcome::Error,
                }
            }
            _ => Outcome::Error,
        }
    })
    .unwrap()
}

/// Compiles `set` for every endpoint of `inv` on the node and loads it into the node's namespace.
fn apply(lab: &Lab, id: &str, set: &PolicySet, inv: &Inventory) -> NodeRuleset {
    let names: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let ruleset = compile(set, inv, &names).unwrap();
    // As the agent does: change the table the kernel holds in place (read back, diffed, applied as
    // netlink batches), or write it whole when there is none.
    let model = table::model(&ruleset);
    netns::run_in(&lab.node_path(), || -> Result<(), NftError> {
        match list_table_text()?.and_then(|t| seam_nft::table::from_nft_json(&t)) {
            Some(old) => apply_delta(&seam_nft::table::delta(&old, &model)),
            None => apply_ruleset(&seam_nft::table::full_text(&model)),
        }
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{id}: apply: {e}"));
    ruleset
}

/// Compiles, applies and probes one case; returns the failures.
pub(crate) fn run_case(
    lab: &Lab,
    id: &str,
    set: &PolicySet,
    inv: &Inventory,
    probes: &[(u16, Protocol)],
) -> Vec<String> {
    let ruleset = apply(lab, id, set, inv);

    // Every ordered pair of distinct pods (traffic to oneself never crosses the bridge) and probe,
    // all in parallel.
    let mut jobs = Vec::new();
    for s in &inv.endpoints {
        for d in &inv.endpoints {
            if s.reference() == d.reference() {
                continue;
            }
            for &(port, protocol) in probes {
                jobs.push((s, d, port, protocol));
            }
        }
    }
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(s, d, port, protocol)| {
                let src_ns = lab.pod_path(s.addresses[0]);
                let dst = d.addresses[0];
                let (port, protocol) = (*port, *protocol);
                scope.spawn(move || probe(&src_ns, dst, port, protocol))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut bad = Vec::new();
    let mut deciding = BTreeSet::new();
    for ((s, d, port, protocol), got) in jobs.iter().zip(outcomes) {
        let flow = Flow {
            src: FlowEnd::Endpoint(s.reference()),
            dst: FlowEnd::Endpoint(d.reference()),
            protocol: *protocol,
            port: *port,
        };
        let v = evaluate(set, inv, &flow).unwrap();
        deciding.extend(verdict_rule_id(&v.egress));
        if v.egress.decision == Decision::Allow {
            deciding.extend(verdict_rule_id(&v.ingress));
        }
        let want = if v.allowed() {
            Outcome::Connected
        } else {
            Outcome::TimedOut
        };
        if got != want {
            bad.push(format!(
                "{id}: {} -> {} {port}/{protocol}: engine wants {want:?}, got {got:?}",
                s.reference(),
                d.reference()
            ));
        }
    }
    let counters = netns::run_in(&lab.node_path(), read_counters)
        .unwrap()
        .unwrap_or_else(|e| panic!("{id}: read counters: {e}"));
    let known = seam_firewall::render::comments(&ruleset);
    for comment in counters.keys() {
        if !known.contains_key(comment) {
            bad.push(format!(
                "{id}: kernel rule comment {comment:?} is no rule id of the ruleset"
            ));
        }
    }
    for rule in deciding {
        let seen = counters.get(&nft_comment(&rule)).map_or(0, |c| c.packets);
        if seen == 0 {
            bad.push(format!("{id}: deciding rule {rule} has counter 0"));
        }
    }
    bad
}

// ---- the kernel as the harness's decider -------------------------------------------------------

/// Each case's policies compiled for the node and applied as the agent applies them, every probe made with
/// real packets from the client pod's namespace (SCTP is not served: skipped, never passed).
pub(crate) struct Kernel<'a> {
    lab: &'a Lab,
    addresses: BTreeMap<String, Ipv4Addr>,
}

impl Decider for Kernel<'_> {
    type Error = ConformanceError;

    fn judging(&self) -> Judging {
        Judging::Packets
    }

    fn addresses(&self) -> Option<&BTreeMap<String, Ipv4Addr>> {
        Some(&self.addresses)
    }

    fn decide(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, ConformanceError> {
        apply(self.lab, &input.case.id, &input.policies, &input.inventory);
        Ok(std::thread::scope(|scope| {
            let handles: Vec<_> = probes
                .iter()
                .map(|p| {
                    let src_ns = self.lab.pod_path(self.addresses[&p.from]);
                    let dst = self.addresses[&p.to];
                    scope.spawn(move || match p.protocol {
                        Protocol::Tcp | Protocol::Udp => {
                            match probe(&src_ns, dst, p.port, p.protocol) {
                                Outcome::Connected => Observed::Connected,
                                Outcome::TimedOut => Observed::TimedOut,
                                Outcome::Refused => Observed::Refused,
                                Outcome::Error => Observed::Failed("probe error".into()),
                            }
                        }
                        _ => Observed::Skipped,
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        }))
    }
}

/// Runs `suite` through the kernel of `lab` (pods at `addresses`); returns the failing cases' lines.
fn kernel_check(lab: &Lab, suite: &Suite, addresses: &BTreeMap<String, Ipv4Addr>) -> Vec<String> {
    let mut kernel = Kernel {
        lab,
        addresses: addresses.clone(),
    };
    let report = check(suite, &mut kernel).unwrap();
    println!("kernel as the harness's decider: {}", report.summary());
    assert!(report.passed > 0, "{}", report.summary());
    report.failures
}

// ---- the x/y/z × a/b/c model -------------------------------------------------------------------

/// A file of the case data, as text.
fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{TEST_DATA}/{name}")).unwrap()
}

/// A file of the case data, as JSON (for the tests that pick cases or read the model themselves).
pub(crate) fn load(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap()
}

/// A case file with `model.json`, read by the harness.
pub(crate) fn suite(name: &str) -> Suite {
    Suite::from_texts(&read(name), &read("model.json")).unwrap()
}

/// The lab's address plan: pod `i` of the model gets 10.77.0.(11 + i).
pub(crate) fn plan(refs: &[String]) -> BTreeMap<String, Ipv4Addr> {
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.clone(),
                Ipv4Addr::new(10, 77, 0, 11 + u8::try_from(i).unwrap()),
            )
        })
        .collect()
}

/// The policies of a case (symbolic addresses from `plan`) as the engine's set; panics when refused.
pub(crate) fn policies(v: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> PolicySet {
    seam_conformance::policy_set(v, plan).unwrap()
}

/// The x/y/z inventory with the label changes of `case` (a case of cases.json, or null for none).
pub(crate) fn xyz_inventory(
    model: &Value,
    case: &Value,
    plan: &BTreeMap<String, Ipv4Addr>,
) -> Inventory {
    let xyz = Model::from_json(model, true, false).unwrap().xyz.unwrap();
    if case.is_null() {
        return xyz.base_inventory(plan).unwrap();
    }
    let suite = Suite::from_json(&json!([case]), model).unwrap();
    xyz.inventory(&suite.cases[0], plan).unwrap()
}

fn case_probes(case: &seam_conformance::Case, extra: &[(u16, Protocol)]) -> Vec<(u16, Protocol)> {
    let mut out: Vec<(u16, Protocol)> = extra.to_vec();
    for probe in case.ports() {
        // SCTP is left to the conformance runner (issue 3 item 5); TCP and UDP are probed here.
        if matches!(probe.1, Protocol::Tcp | Protocol::Udp) && !out.contains(&probe) {
            out.push(probe);
        }
    }
    out
}

/// An endPort case (the upstream data has none): x admits y on TCP 81..=90 only.
const END_PORT_CASE: &str = r#"[{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "y-to-81-90", "namespace": "x"},
  "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
    "ports": [{"protocol": "TCP", "port": 81, "endPort": 90}]}]}}]"#;

#[test]
#[ignore = "privileged: netns"]
fn netpol_cases_with_real_packets() {
    let mut suite = suite("cases.json");
    let refs = suite.model.order.clone();
    let plan = plan(&refs);
    let addrs: Vec<Ipv4Addr> = refs.iter().map(|r| plan[r]).collect();
    let lab = Lab::build("x", &addrs, &[80, 81], &[80, 81]);
    let chosen = [
        "e2e-default-deny-ingress",
        "e2e-allow-only-from-other-ns-nsselector",
        "e2e-ip-in-cidr-and-except-s1",
        "e2e-egress-cidr-except",
        "e2e-ingress-named-port-s1",
        "e2e-egress-named-port-s1",
        "e2e-udp-ports",
        "cyc-ports-ingress-two-ports-any-tcp-and-any-udp",
        "e2e-deny-egress-namespace",
    ];
    let xyz = suite.model.xyz.clone().unwrap();
    let mut bad = Vec::new();
    let tcp = [(80, Protocol::Tcp), (81, Protocol::Tcp)];
    for id in chosen {
        let case = suite.case(id).unwrap_or_else(|| panic!("no case {id}"));
        let inv = xyz.inventory(case, &plan).unwrap();
        bad.extend(run_case(
            &lab,
            id,
            &policies(&case.policies, &plan),
            &inv,
            &case_probes(case, &tcp),
        ));
    }
    let inv = xyz.base_inventory(&plan).unwrap();
    let set = policies(&serde_json::from_str(END_PORT_CASE).unwrap(), &plan);
    bad.extend(run_case(&lab, "endport-81-90", &set, &inv, &tcp));
    // The same cases against their own expectations, every pair and probe.
    suite.cases.retain(|c| chosen.contains(&c.id.as_str()));
    assert_eq!(suite.cases.len(), chosen.len());
    bad.extend(kernel_check(&lab, &suite, &plan));
    netns::run_in(&lab.node_path(), delete_table)
        .unwrap()
        .unwrap();
    assert!(
        bad.is_empty(),
        "{} failure(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
#[ignore = "privileged: netns"]
fn anp_cases_with_real_packets() {
    let suite = suite("anp_cases.json");
    let anp = suite.model.anp.clone().unwrap();
    let refs: Vec<String> = anp.pods.iter().map(|p| p.reference.clone()).collect();
    let plan = plan(&refs);
    let inv = anp.base_inventory(&plan).unwrap();
    let addrs: Vec<Ipv4Addr> = refs.iter().map(|r| plan[r]).collect();
    let lab = Lab::build("a", &addrs, &[80, 8080], &[53, 5353]);
    let mut bad = Vec::new();
    let mut ran = 0;
    for case in &suite.cases {
        let probes = case_probes(case, &[]);
        if probes.is_empty() {
            continue;
        }
        ran += 1;
        bad.extend(run_case(
            &lab,
            &case.id,
            &policies(&case.policies, &plan),
            &inv,
            &probes,
        ));
    }
    assert!(ran >= 10, "only {ran} ANP cases had TCP/UDP probes");
    // The cases against their own expectations: a denial must be a drop.
    bad.extend(kernel_check(&lab, &suite, &plan));
    assert!(
        bad.is_empty(),
        "{} failure(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
#[ignore = "privileged: netns"]
fn apply_reports_the_offending_line_and_changes_nothing() {
    require_root();
    let name = format!("sfw{}e", std::process::id());
    netns::create(&name).unwrap();
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = netns::delete(&self.0);
        }
    }
    let _guard = Guard(name.clone());
    let path = netns::path_of(&name);
    let good = "table inet seam {}\ndelete table inet seam\ntable inet seam {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tcounter accept comment \"default/egress\"\n\t}\n}\n";
    netns::run_in(&path, || apply_ruleset(good))
        .unwrap()
        .unwrap();
    let bad = good.replace("counter accept", "counter bogus-verdict");
    let err = netns::run_in(&path, || apply_ruleset(&bad))
        .unwrap()
        .unwrap_err();
    match &err {
        NftError::Rejected {
            line: Some((n, text)),
            ..
        } => {
            assert_eq!(*n, 6, "{err}");
            assert!(text.contains("bogus-verdict"), "{err}");
        }
        other => panic!("unexpected error {other}"),
    }
    // The failed batch changed nothing: the good table is still there.
    let counters = netns::run_in(&path, read_counters).unwrap().unwrap();
    assert!(counters.contains_key("default/egress"), "{counters:?}");
    netns::run_in(&path, delete_table).unwrap().unwrap();
    netns::run_in(&path, delete_table).unwrap().unwrap();
    assert!(matches!(
        netns::run_in(&path, read_counters).unwrap(),
        Err(NftError::NoTable)
    ));
}
