//! Services with real traffic (issue 12): Seam's own L4 load balancer on a lab, driven as a user
//! would (`seam apply -f` of Kubernetes YAML, `seam get services`, `seam lab pod-add --labels`).
//! Backends are `seam_lab::balance` servers that answer `<name> <client address they see>`, so
//! every test reads both the spread over backends and whether a NAT replaced the client's own
//! address.
//!
//! The lab: web pods `web/web-1` (n1), `web/web-2` (n2), `web/web-3` (n1) labelled `app=web` and
//! `pod=<name>`, each serving TCP 8080 and UDP 5353; a client pod `client/c1` on n2. Tests that
//! need the external network add gateway gw1 (and gw2), the server bm1 (203.0.113.10, an
//! external endpoint) with routes to the pods and the nodes via gw1, and the address pool
//! `external` (203.0.113.200/29).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use seam_e2e::{controller, LabGuard, TestLab};
use seam_lab::balance::{self, Reply, Tally, Transport, UdpStream};
use seam_lab::probe::Outcome;
use seam_lab::PodInfo;
use seam_model::{ClusterIp, Service};

use crate::gateway::{ok, seam, within};

const BM1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const BM2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const WWW1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const WEB_PORT: u16 = 8080;
const DNS_PORT: u16 = 5353;
const SHORT: Duration = Duration::from_millis(500);

/// The web pods and the client of a Services lab.
struct Setup {
    g: LabGuard,
    webs: Vec<PodInfo>,
    client: PodInfo,
}

impl Setup {
    fn web(&self, name: &str) -> &PodInfo {
        self.webs.iter().find(|w| w.name == name).unwrap()
    }
}

/// A lab of `nodes` nodes with the web pods (`web-1` n1, `web-2` n2, `web-3` n1) and the client
/// pod `client/c1` on n2, made with `seam lab pod-add --labels` as a user would.
fn setup(name: &str, nodes: usize) -> Setup {
    setup_in(LabGuard::up(name, nodes, &[]))
}

/// [`setup`] on a lab that is up.
fn setup_in(g: LabGuard) -> Setup {
    let mut webs = Vec::new();
    for (pod, node) in [("web-1", "n1"), ("web-2", "n2"), ("web-3", "n1")] {
        let labels = format!("app=web,pod={pod}");
        let out = ok(&seam_lab_cmd(&[
            "pod-add",
            "--name",
            &g.lab.name,
            "--node",
            node,
            "--namespace",
            "web",
            "--pod",
            pod,
            "--labels",
            &labels,
            "--port",
            "http=8080",
        ]));
        let info: PodInfo = serde_json::from_str(&out).unwrap();
        balance::serve(&info.netns_path, pod, Transport::Tcp, WEB_PORT).unwrap();
        balance::serve(&info.netns_path, pod, Transport::Udp, DNS_PORT).unwrap();
        webs.push(info);
    }
    let mut g = g;
    // `seam lab pod-add` ran in another process: read the pods back.
    g.lab = seam_lab::Lab::load(&g.lab.name).unwrap();
    let client = g.lab.workloads().add_pod("n2", "client", "c1").unwrap();
    // The other node learns of the new client asynchronously (its FDB and neighbour entries):
    // until then a web pod there cannot answer it. Every test starts from a converged lab.
    for web in &webs {
        reaches(&client.netns_path, Transport::Tcp, web.ip, WEB_PORT);
    }
    Setup { g, webs, client }
}

/// Adds gateway gw1 and the server bm1 (an external endpoint, routed to the pods and to the
/// nodes' underlay via gw1), and the address pool `external`.
fn external_network(s: &mut Setup) -> seam_lab::gateway::ServerInfo {
    s.g.lab.topology().add_gateway("gw1").unwrap();
    let bm1 =
        s.g.lab
            .workloads()
            .add_server(
                "bm1",
                BM1,
                "gw1",
                &[seam_lab::gateway::DEFAULT_POOL, "198.18.0.0/15"],
            )
            .unwrap();
    crate::gateway::add_bm1(&s.g.lab.name, BM1, &["--labels", "role=client"]);
    apply(
        &s.g,
        "pool",
        "apiVersion: seam.dev/v1alpha1
kind: AddressPool
metadata: {name: external}
spec: {addresses: [203.0.113.200/29]}
",
    );
    bm1
}

/// `seam apply -f FILE` with `yaml` (the file kept in the lab's directory for a look afterwards).
fn apply(g: &LabGuard, what: &str, yaml: &str) {
    let file = g.lab.dir.join(format!("{what}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    ok(&seam(&g.lab.name, &["apply", "-f", file.to_str().unwrap()]));
}

/// A Service `name` in namespace web in front of `selector`, ports http (TCP 80 → 8080) and dns
/// (UDP 53 → 5353), with `spec` lines added (indented as under `spec:`).
fn service_yaml(name: &str, selector: &str, spec: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: web
  annotations: {{{annotations}}}
spec:
  selector: {{{selector}}}
  ports:
  - {{name: http, protocol: TCP, port: 80, targetPort: http}}
  - {{name: dns, protocol: UDP, port: 53, targetPort: 5353}}
{spec}"
    )
}

/// The Service `web/name` as the controller stores it.
fn service(g: &LabGuard, name: &str) -> Option<Service> {
    let snapshot = controller(&g.lab, async |c| c.snapshot().await);
    snapshot
        .services
        .into_iter()
        .find(|s| s.namespace == "web" && s.name == name)
}

/// The allocated ClusterIP of `web/name`.
fn cluster_ip(g: &LabGuard, name: &str) -> Ipv4Addr {
    match service(g, name).map(|s| s.spec.cluster_ip) {
        Some(ClusterIp::Address(ip)) => ip,
        other => panic!("service web/{name} has no ClusterIP: {other:?}"),
    }
}

/// The LoadBalancer address of `web/name`, once allocated.
fn lb_address(g: &LabGuard, name: &str) -> Ipv4Addr {
    wait_for(
        10,
        &format!("web/{name} gets a LoadBalancer address"),
        || service(g, name).and_then(|s| s.status.load_balancer.ingress.first().map(|i| i.ip)),
    )
}

/// The NodePort of `web/name`'s port `port`.
fn node_port(g: &LabGuard, name: &str, port: u16) -> u16 {
    service(g, name)
        .and_then(|s| s.spec.ports.iter().find(|p| p.port == port)?.node_port)
        .unwrap_or_else(|| panic!("web/{name} port {port} has no NodePort"))
}

/// Waits up to `secs` for `f` to give something.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `netns` gets an answer from `ip:port` (the agents apply Services
/// asynchronously), then returns it.
fn reaches(netns: &Path, transport: Transport, ip: Ipv4Addr, port: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match balance::connect_once(netns, transport, ip, port, SHORT).unwrap() {
            Ok(reply) => return reply,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{} does not reach {ip}:{port} ({transport:?}): {e:?}",
                netns.display()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `netns` is refused at once by `ip:port` (a TCP reset, an ICMP port unreachable),
/// and says what it got instead when that does not come.
fn refused(netns: &Path, transport: Transport, ip: Ipv4Addr, port: u16, what: &str) {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let got = balance::connect_once(netns, transport, ip, port, SHORT).unwrap();
        if got == Err(Outcome::Refused) {
            return;
        }
        last = Some(got);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: {ip}:{port} ({transport:?}) is not refused; last attempt: {last:?}");
}

fn many(netns: &Path, transport: Transport, ip: Ipv4Addr, port: u16, n: u32) -> Tally {
    balance::connect_many(netns, transport, ip, port, n, SHORT).unwrap()
}

fn names(t: &Tally) -> BTreeSet<&str> {
    t.per_backend.keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[test]
#[ignore = "privileged: netns"]
fn lab_pods_carry_their_labels_and_ports_to_their_endpoint_and_the_test_backends_answer() {
    let s = setup("e2e-svl", 2);
    let snapshot = controller(&s.g.lab, async |c| c.snapshot().await);
    for web in &s.webs {
        let ep = snapshot
            .endpoints
            .iter()
            .find(|e| e.name == format!("web/{}", web.name))
            .unwrap_or_else(|| panic!("no endpoint web/{}", web.name));
        let want: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("pod".to_string(), web.name.clone()),
        ]
        .into();
        assert_eq!(ep.labels, want, "{}", web.name);
        assert_eq!(web.labels, want, "lab.json keeps them");
        assert_eq!(
            ep.ports
                .iter()
                .map(|p| (p.name.as_str(), p.port))
                .collect::<Vec<_>>(),
            [("http", 8080)]
        );
    }
    // The backends answer directly, and see the client's own address.
    let web1 = s.web("web-1");
    let t = many(&s.client.netns_path, Transport::Tcp, web1.ip, WEB_PORT, 20);
    assert_eq!(t.per_backend.get("web-1"), Some(&20), "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([s.client.ip]));
    let t = many(&s.client.netns_path, Transport::Udp, web1.ip, DNS_PORT, 20);
    assert_eq!(t.per_backend.get("web-1"), Some(&20), "{}", t.summary());
    // The same by hand: `ip netns exec <pod> seam lab connect ADDRESS PORT`.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &seam_e2e::netns_name(&s.client.netns_path)])
        .arg(seam_e2e::bin_dir().join("seam"))
        .args([
            "lab",
            "connect",
            &web1.ip.to_string(),
            "8080",
            "--count",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    let tally: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(tally["perBackend"]["web-1"], 5, "{tally}");
    assert_eq!(tally["clientsSeen"][0], s.client.ip.to_string(), "{tally}");
    // Nothing listens on 9: refused at once.
    let t = many(&s.client.netns_path, Transport::Tcp, web1.ip, 9, 1);
    assert_eq!(t.refused, 1, "{}", t.summary());
    // Invalid labels are refused and leave no pod behind.
    let out = seam(
        &s.g.lab.name,
        &[
            "lab",
            "pod-add",
            "--name",
            &s.g.lab.name,
            "--node",
            "n1",
            "--namespace",
            "web",
            "--pod",
            "bad",
            "--labels",
            "app=we b",
        ],
    );
    assert!(!out.status.success(), "a label with a space is refused");
    let lab = seam_lab::Lab::load(&s.g.lab.name).unwrap();
    assert!(!lab.pods.iter().any(|p| p.name == "bad"));
}

#[test]
#[ignore = "privileged: netns"]
fn connections_spread_over_the_backends_and_each_sees_the_clients_own_address() {
    let s = setup("e2e-sv1", 2);
    apply(&s.g, "web", &service_yaml("web", "app: web", "", ""));
    let vip = cluster_ip(&s.g, "web");
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 1000);
    println!("TCP over 1,000 connections: {}", t.summary());
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(names(&t), set(&["web-1", "web-2", "web-3"]));
    assert!(
        t.imbalance(3) < 0.2,
        "each backend within 20 % of an even share: {}",
        t.summary()
    );
    assert_eq!(
        t.clients_seen,
        BTreeSet::from([s.client.ip]),
        "no SNAT inside the cluster"
    );
    // UDP: each datagram from a new socket is a new flow.
    reaches(&s.client.netns_path, Transport::Udp, vip, 53);
    let t = many(&s.client.netns_path, Transport::Udp, vip, 53, 300);
    println!("UDP over 300 flows: {}", t.summary());
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert!(t.imbalance(3) < 0.35, "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([s.client.ip]));
    // `seam get services` shows it with its three ready endpoints.
    let table = ok(&seam(&s.g.lab.name, &["get", "services"]));
    let row = table
        .lines()
        .find(|l| l.contains(&vip.to_string()))
        .unwrap_or_else(|| panic!("no row with {vip}: {table}"));
    assert!(row.contains("80/TCP") && row.contains("53/UDP"), "{row}");
    let json = ok(&seam(&s.g.lab.name, &["get", "services", "-o", "json"]));
    assert!(json.contains(&vip.to_string()), "{json}");
}

#[test]
#[ignore = "privileged: netns"]
fn client_ip_affinity_holds_and_expires() {
    let s = setup("e2e-sv2", 2);
    let spec = "  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 3}}
";
    apply(
        &s.g,
        "sticky",
        &service_yaml("sticky", "app: web", spec, ""),
    );
    let vip = cluster_ip(&s.g, "sticky");
    let first = reaches(&s.client.netns_path, Transport::Tcp, vip, 80).backend;
    // Holds: every connection within the timeout goes to the same backend.
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 100);
    assert_eq!(names(&t), set(&[first.as_str()]), "{}", t.summary());
    // Expires: after 3 s of silence a new connection picks again. A pick may land on the same
    // backend (1 in 3), so try a few times: 8 picks all alike would happen 1 in 6,561.
    let mut seen = BTreeSet::from([first.clone()]);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(4000));
        let r = reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
        seen.insert(r.backend);
        if seen.len() > 1 {
            break;
        }
    }
    assert!(
        seen.len() > 1,
        "after the timeout, new connections pick again: {seen:?}"
    );
    // And the new pick holds again.
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 50);
    assert_eq!(t.per_backend.len(), 1, "{}", t.summary());
}

#[test]
#[ignore = "privileged: netns"]
fn traffic_policy_local_keeps_to_the_nodes_backends_and_nodeports_work_from_bm1() {
    let mut s = setup("e2e-sv3", 2);
    let bm1 = external_network(&mut s);
    // internalTrafficPolicy: Local — the client on n2 reaches only web-2.
    apply(
        &s.g,
        "itp",
        &service_yaml("itp", "app: web", "  internalTrafficPolicy: Local\n", ""),
    );
    let vip = cluster_ip(&s.g, "itp");
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 60);
    assert_eq!(names(&t), set(&["web-2"]), "{}", t.summary());

    // NodePort, externalTrafficPolicy Local: bm1 reaches each node's own backends, which see
    // bm1's own address.
    apply(
        &s.g,
        "etp",
        &service_yaml(
            "etp",
            "app: web",
            "  type: NodePort\n  externalTrafficPolicy: Local\n",
            "",
        ),
    );
    let np = node_port(&s.g, "etp", 80);
    assert!((30000..=32767).contains(&np), "{np}");
    let n1 = s.g.node("n1").underlay_ip;
    let n2 = s.g.node("n2").underlay_ip;
    reaches(&bm1.netns_path, Transport::Tcp, n1, np);
    let t = many(&bm1.netns_path, Transport::Tcp, n1, np, 100);
    assert_eq!(names(&t), set(&["web-1", "web-3"]), "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([BM1]), "{}", t.summary());
    let t = many(&bm1.netns_path, Transport::Tcp, n2, np, 30);
    assert_eq!(names(&t), set(&["web-2"]), "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([BM1]));

    // NodePort, externalTrafficPolicy Cluster: any node reaches every backend; remote ones see
    // the node's address (masqueraded so that their replies come back through it).
    apply(
        &s.g,
        "np",
        &service_yaml("np", "app: web", "  type: NodePort\n", ""),
    );
    let np = node_port(&s.g, "np", 80);
    reaches(&bm1.netns_path, Transport::Tcp, n2, np);
    let t = many(&bm1.netns_path, Transport::Tcp, n2, np, 150);
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(
        names(&t),
        set(&["web-1", "web-2", "web-3"]),
        "{}",
        t.summary()
    );
    // UDP NodePort too.
    let unp = node_port(&s.g, "np", 53);
    reaches(&bm1.netns_path, Transport::Udp, n1, unp);
}

/// Which gateway holds `address` on its external interface.
fn holder(g: &LabGuard, gateways: &[&str], address: Ipv4Addr) -> Option<String> {
    gateways
        .iter()
        .find(|gw| {
            seam_e2e::ip_json(
                &format!("{}-{gw}", g.lab.name),
                &["addr", "show", "dev", "eth1"],
            )
            .to_string()
            .contains(&format!("\"{address}\""))
        })
        .map(|gw| gw.to_string())
}

#[test]
#[ignore = "privileged: netns"]
fn bm1_reaches_the_loadbalancer_address_with_its_own_address_and_a_gateway_takes_over() {
    let mut s = setup("e2e-sv4", 2);
    let bm1 = external_network(&mut s);
    s.g.lab.topology().add_gateway("gw2").unwrap();
    apply(
        &s.g,
        "lb",
        &service_yaml(
            "lb",
            "app: web",
            "  type: LoadBalancer\n",
            "seam.dev/address-pool: external",
        ),
    );
    let lb = lb_address(&s.g, "lb");
    assert!(
        "203.0.113.200/29"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&lb),
        "{lb}"
    );
    reaches(&bm1.netns_path, Transport::Tcp, lb, 80);
    let t = many(&bm1.netns_path, Transport::Tcp, lb, 80, 300);
    println!("bm1 -> {lb}:80: {}", t.summary());
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(names(&t), set(&["web-1", "web-2", "web-3"]));
    assert_eq!(
        t.clients_seen,
        BTreeSet::from([BM1]),
        "every backend sees bm1's own address, not only node-local ones"
    );
    reaches(&bm1.netns_path, Transport::Udp, lb, 53);
    // Exactly one gateway holds the address; a port the Service does not have is not served.
    let gateways = ["gw1", "gw2"];
    let owner = wait_for(10, "one gateway holds the LoadBalancer address", || {
        holder(&s.g, &gateways, lb)
    });
    let other = gateways.iter().find(|g| **g != owner).unwrap().to_string();
    assert!(
        holder(&s.g, &[&other], lb).is_none(),
        "only {owner} holds {lb}"
    );
    let t = many(&bm1.netns_path, Transport::Tcp, lb, 22, 1);
    assert_eq!(t.answered(), 0, "{}", t.summary());

    // The owner goes down (agent killed, its links down): the other gateway takes the address
    // over and bm1 reaches the Service again.
    crash_gateway(&mut s.g, &owner);
    let started = Instant::now();
    within(20, &format!("{other} takes {lb} over"), || {
        holder(&s.g, &[&other], lb).is_some()
    });
    let r = reaches(&bm1.netns_path, Transport::Tcp, lb, 80);
    println!(
        "{other} took {lb} over; bm1 reached the Service again after {:?}",
        started.elapsed()
    );
    assert_eq!(r.client, BM1);
    let t = many(&bm1.netns_path, Transport::Tcp, lb, 80, 60);
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([BM1]));
}

/// The slots of Seam's reply rules in node `node`'s namespace (`ip -j rule show`, priority
/// 0x5e9f: `fwmark SLOT<<24/0xff000000 lookup 0x5ea100+SLOT`).
fn reply_rules(g: &LabGuard, node: &str) -> Vec<String> {
    let rules = seam_e2e::ip_json(&format!("{}-{node}", g.lab.name), &["rule", "show"]);
    rules
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["priority"].as_u64() == Some(0x5e9f))
        .map(|r| format!("fwmark {} lookup {}", r["fwmark"], r["table"]))
        .collect()
}

/// Takes gateway `gw` down as a crash would: its agent killed, its links down.
fn crash_gateway(g: &mut LabGuard, gw: &str) {
    g.lab.processes().kill_agent(gw, "KILL").unwrap();
    let netns = format!("{}-{gw}", g.lab.name);
    for dev in ["eth1", "eth0"] {
        let out = std::process::Command::new("ip")
            .args(["-n", &netns, "link", "set", dev, "down"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
#[ignore = "privileged: netns"]
fn with_two_live_gateways_every_loadbalancer_address_answers_clients_behind_either() {
    let mut s = setup("e2e-svrp", 2);
    let bm1 = external_network(&mut s);
    s.g.lab.topology().add_gateway("gw2").unwrap();
    let bm2 =
        s.g.lab
            .workloads()
            .add_server(
                "bm2",
                BM2,
                "gw2",
                &[seam_lab::gateway::DEFAULT_POOL, "198.18.0.0/15"],
            )
            .unwrap();
    let lab = s.g.lab.name.clone();
    let bm2_address = BM2.to_string();
    ok(&seam(
        &lab,
        &[
            "external",
            "add",
            "bm2",
            "--gateway",
            "gw2",
            "--address",
            &bm2_address,
            "--labels",
            "role=client",
        ],
    ));
    // And a host on the "internet", behind the router on the external network: an address Seam
    // does not know, which no node has a route to.
    let www1 = s.g.lab.workloads().add_internet_host("www1", WWW1).unwrap();
    let clients = [
        ("bm1 (behind gw1)", bm1.netns_path.clone(), BM1),
        ("bm2 (behind gw2)", bm2.netns_path.clone(), BM2),
        ("www1 (unknown)", www1.netns_path.clone(), WWW1),
    ];
    // Four Services, four addresses of the pool: rendezvous hashing gives each gateway some
    // (203.0.113.200 and .201 go to gw1, .202 and .203 to gw2).
    let gateways = ["gw1", "gw2"];
    let mut owners = BTreeMap::new();
    for i in 1..=4 {
        let name = format!("lb{i}");
        apply(
            &s.g,
            &name,
            &service_yaml(
                &name,
                "app: web",
                "  type: LoadBalancer\n",
                "seam.dev/address-pool: external",
            ),
        );
        let lb = lb_address(&s.g, &name);
        let owner = wait_for(10, &format!("a gateway holds {lb}"), || {
            holder(&s.g, &gateways, lb)
        });
        owners.insert(lb, owner);
    }
    println!("owners: {owners:?}");
    for gw in gateways {
        assert!(
            owners.values().any(|o| o == gw),
            "{gw} holds none of the addresses: {owners:?}"
        );
    }
    // Every node routes replies back by the gateway a connection came through: one rule (and
    // table) per other gateway; a gateway has one for the other.
    for (node, count) in [("n1", 2), ("n2", 2), ("gw1", 1), ("gw2", 1)] {
        within(10, &format!("{node} holds {count} reply rules"), || {
            reply_rules(&s.g, node).len() == count
        });
    }
    // Each client reaches every address, whichever gateway holds it; every backend sees the
    // client's own address.
    for (lb, owner) in &owners {
        for (client, netns, address) in &clients {
            let what = format!("{client} -> {lb}:80 (held by {owner})");
            reaches(netns, Transport::Tcp, *lb, 80);
            let t = many(netns, Transport::Tcp, *lb, 80, 60);
            println!("{what}: {}", t.summary());
            assert_eq!(t.failures(), 0, "{what}: {}", t.summary());
            assert_eq!(names(&t), set(&["web-1", "web-2", "web-3"]), "{what}");
            assert_eq!(t.clients_seen, BTreeSet::from([*address]), "{what}");
            let r = reaches(netns, Transport::Udp, *lb, 53);
            assert_eq!(r.client, *address, "{what}, UDP");
        }
    }

    // With snat on for the web pods' segment, the nodes send that segment's traffic for unknown
    // destinations (www1) to the egress gateway, which would masquerade it (policy rules after
    // the reply rules): replies still go back through the gateway that translated, untranslated.
    ok(&seam(&lab, &["segment", "snat", "ns-web", "on"]));
    within(10, "n1 routes ns-web's egress to a gateway", || {
        seam_e2e::ip_json(&format!("{lab}-n1"), &["rule", "show"])
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["priority"].as_u64() == Some(0x5ea1)))
    });
    for (lb, owner) in &owners {
        for (client, netns, address) in &clients {
            let t = many(netns, Transport::Tcp, *lb, 80, 30);
            let what = format!("{client} -> {lb} (held by {owner}) with snat on");
            assert_eq!(t.failures(), 0, "{what}: {}", t.summary());
            assert_eq!(t.clients_seen, BTreeSet::from([*address]), "{what}");
        }
    }
    ok(&seam(&lab, &["segment", "snat", "ns-web", "off"]));

    // gw2 goes down: gw1 takes every address over, the nodes drop their way back through gw2
    // (its rule and table), and bm1 still reaches every address.
    crash_gateway(&mut s.g, "gw2");
    within(20, "gw1 holds every address", || {
        owners
            .keys()
            .all(|lb| holder(&s.g, &["gw1"], *lb).is_some())
    });
    for node in ["n1", "n2"] {
        within(
            20,
            &format!("{node} keeps only its way back through gw1"),
            || reply_rules(&s.g, node).len() == 1,
        );
    }
    for lb in owners.keys() {
        reaches(&bm1.netns_path, Transport::Tcp, *lb, 80);
        let t = many(&bm1.netns_path, Transport::Tcp, *lb, 80, 30);
        assert_eq!(
            t.failures(),
            0,
            "bm1 -> {lb} after gw2 went: {}",
            t.summary()
        );
        assert_eq!(t.clients_seen, BTreeSet::from([BM1]));
    }
}

#[test]
#[ignore = "privileged: netns"]
fn a_udp_client_moves_on_when_its_backend_goes_away() {
    let mut s = setup("e2e-sv5", 2);
    apply(&s.g, "dns", &service_yaml("dns", "app: web", "", ""));
    let vip = cluster_ip(&s.g, "dns");
    reaches(&s.client.netns_path, Transport::Udp, vip, 53);
    let stream =
        UdpStream::start(&s.client.netns_path, vip, 53, Duration::from_millis(50)).unwrap();
    let first = wait_for(5, "the stream is answered", || {
        stream.answers().into_iter().flatten().last()
    });
    // One flow, one backend.
    std::thread::sleep(Duration::from_millis(500));
    let so_far: Vec<String> = stream.answers().into_iter().flatten().collect();
    assert!(so_far.iter().all(|b| *b == first), "{so_far:?}");
    let sent_before = stream.answers().len();
    s.g.lab.workloads().del_pod("web", &first).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved_to = loop {
        let after: Vec<Option<String>> = stream.answers().split_off(sent_before);
        let tail: Vec<&Option<String>> = after.iter().rev().take(5).collect();
        if tail.len() == 5 && tail.iter().all(|a| a.as_ref().is_some_and(|b| *b != first)) {
            break tail[0].clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the flow did not move on from {first}: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let answers = stream.stop();
    let lost = answers[sent_before..]
        .iter()
        .filter(|a| a.is_none())
        .count();
    println!(
        "the UDP flow moved from {first} to {moved_to}; {lost} datagrams unanswered meanwhile"
    );
}

#[test]
#[ignore = "privileged: netns"]
fn a_service_without_endpoints_refuses_at_once() {
    let s = setup("e2e-sv6", 2);
    apply(&s.g, "none", &service_yaml("none", "app: nothing", "", ""));
    let vip = cluster_ip(&s.g, "none");
    refused(
        &s.client.netns_path,
        Transport::Tcp,
        vip,
        80,
        "the empty Service refuses",
    );
    let t = balance::connect_many(
        &s.client.netns_path,
        Transport::Tcp,
        vip,
        80,
        10,
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(t.refused, 10, "TCP: a reset each time: {}", t.summary());
    assert!(
        t.slowest < Duration::from_millis(500),
        "at once: {:?}",
        t.slowest
    );
    // Datagrams a second apart: the kernel rate-limits the ICMP errors it sends to one
    // destination (`net.ipv4.icmp_ratelimit`, one a second after a small burst, which the TCP
    // probes' neighbours may already have spent), for Seam's refusals as for kube-proxy's.
    for i in 0..3 {
        let started = Instant::now();
        let got =
            balance::connect_once(&s.client.netns_path, Transport::Udp, vip, 53, SHORT).unwrap();
        assert_eq!(
            got,
            Err(Outcome::Refused),
            "UDP datagram {i}: port unreachable"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "at once: {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    // A Service that loses its last backend refuses too.
    apply(&s.g, "solo", &service_yaml("solo", "pod: web-2", "", ""));
    let solo = cluster_ip(&s.g, "solo");
    reaches(&s.client.netns_path, Transport::Tcp, solo, 80);
    let mut lab = seam_lab::Lab::load(&s.g.lab.name).unwrap();
    lab.workloads().del_pod("web", "web-2").unwrap();
    refused(
        &s.client.netns_path,
        Transport::Tcp,
        solo,
        80,
        "the Service without its last backend refuses",
    );
}

#[test]
#[ignore = "privileged: netns"]
fn a_pod_reaches_itself_through_its_service() {
    let s = setup("e2e-sv7", 2);
    apply(&s.g, "self", &service_yaml("self", "pod: web-1", "", ""));
    apply(&s.g, "web", &service_yaml("web", "app: web", "", ""));
    let web1 = s.web("web-1");
    let solo = cluster_ip(&s.g, "self");
    let r = reaches(&web1.netns_path, Transport::Tcp, solo, 80);
    assert_eq!(r.backend, "web-1");
    let r = reaches(&web1.netns_path, Transport::Udp, solo, 53);
    assert_eq!(r.backend, "web-1");
    // Through a Service of three, a backend reaches the others and itself.
    let vip = cluster_ip(&s.g, "web");
    reaches(&web1.netns_path, Transport::Tcp, vip, 80);
    let t = many(&web1.netns_path, Transport::Tcp, vip, 80, 90);
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(
        names(&t),
        set(&["web-1", "web-2", "web-3"]),
        "{}",
        t.summary()
    );
}

#[test]
#[ignore = "privileged: netns"]
fn a_vm_and_an_external_server_are_backends_and_clients() {
    let mut s = setup("e2e-sv8", 2);
    let bm1 = external_network(&mut s);
    s.g.lab.topology().make_hypervisor("n2").unwrap();
    // vm1 joins the web pods' segment as a backend; vm2 the client's segment as a client.
    let vm1 =
        s.g.lab
            .workloads()
            .add_vm(
                "vm1",
                "n2",
                "ns-web",
                &seam_lab::vm::VmOptions {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                },
            )
            .unwrap();
    assert_eq!(vm1.namespace, "web");
    balance::serve(&vm1.netns_path, "vm1", Transport::Tcp, WEB_PORT).unwrap();
    balance::serve(&vm1.netns_path, "vm1", Transport::Udp, DNS_PORT).unwrap();
    let vm2 =
        s.g.lab
            .workloads()
            .add_vm("vm2", "n2", "ns-client", &Default::default())
            .unwrap();
    // bm2 on the external network, an external endpoint of namespace web labelled app=web.
    let bm2 =
        s.g.lab
            .workloads()
            .add_server("bm2", BM2, "gw1", &[seam_lab::gateway::DEFAULT_POOL])
            .unwrap();
    balance::serve(&bm2.netns_path, "bm2", Transport::Tcp, WEB_PORT).unwrap();
    balance::serve(&bm2.netns_path, "bm2", Transport::Udp, DNS_PORT).unwrap();
    ok(&seam(
        &s.g.lab.name,
        &[
            "external",
            "add",
            "bm2",
            "--gateway",
            "gw1",
            "--address",
            &BM2.to_string(),
            "-n",
            "web",
            "--labels",
            "app=web",
        ],
    ));
    // A numeric targetPort: the VM and bm2 publish no named ports.
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: web, annotations: {seam.dev/address-pool: external}}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080}
  - {name: dns, protocol: UDP, port: 53, targetPort: 5353}
";
    apply(&s.g, "mixed", yaml);
    let vip = cluster_ip(&s.g, "mixed");
    let all = set(&["web-1", "web-2", "web-3", "vm1", "bm2"]);
    // The nodes route bm2 (an external endpoint just registered) and vm1 once their agents
    // have the records: wait for both directly, so the spread below measures the Service.
    reaches(&s.client.netns_path, Transport::Tcp, BM2, WEB_PORT);
    reaches(&s.client.netns_path, Transport::Tcp, vm1.ip, WEB_PORT);
    // A pod as the client: pods, the VM and the server all answer, each seeing the pod.
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 300);
    println!("c1 -> {vip}:80: {}", t.summary());
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(names(&t), all, "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([s.client.ip]));
    let t = many(&s.client.netns_path, Transport::Udp, vip, 53, 150);
    assert_eq!(names(&t), all, "{}", t.summary());
    // The VM as the client, through the ClusterIP.
    reaches(&vm2.netns_path, Transport::Tcp, vip, 80);
    let t = many(&vm2.netns_path, Transport::Tcp, vip, 80, 300);
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(names(&t), all, "{}", t.summary());
    assert_eq!(t.clients_seen, BTreeSet::from([vm2.ip]));
    // The server bm1 as the client, through the LoadBalancer address.
    let lb = lb_address(&s.g, "mixed");
    reaches(&bm1.netns_path, Transport::Tcp, lb, 80);
    let t = many(&bm1.netns_path, Transport::Tcp, lb, 80, 300);
    assert_eq!(t.failures(), 0, "{}", t.summary());
    assert_eq!(names(&t), all, "{}", t.summary());
    // The pods and the VM see bm1's own address. bm2 sits on bm1's own network: its answer
    // would go straight to bm1, not back through the gateway, so that one connection may come
    // from the gateway's address.
    for backend in ["web-1", "web-2", "web-3", "vm1"] {
        assert_eq!(
            t.seen_by.get(backend),
            Some(&BTreeSet::from([BM1])),
            "{backend}: {}",
            t.summary()
        );
    }
}

/// The EndpointSlice of Service `web/sliced`: web-1 and web-2 with the given conditions.
fn slice_yaml(s: &Setup, web1: &str, web2: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sliced-1
  namespace: web
  labels: {{kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- {{addresses: [{}], nodeName: n1, conditions: {web1}}}
- {{addresses: [{}], nodeName: n2, conditions: {web2}}}
",
        s.web("web-1").ip,
        s.web("web-2").ip
    )
}

#[test]
#[ignore = "privileged: netns"]
fn terminating_endpoints_serve_only_when_nothing_else_does() {
    let s = setup("e2e-sv9", 2);
    let service = "apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: web}
spec:
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
";
    let ready = "{ready: true, serving: true, terminating: false}";
    let terminating = "{ready: false, serving: true, terminating: true}";
    let gone = "{ready: false, serving: false, terminating: true}";
    apply(&s.g, "sliced", service);
    apply(&s.g, "slice-1", &slice_yaml(&s, ready, terminating));
    let vip = cluster_ip(&s.g, "sliced");
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 60);
    assert_eq!(
        names(&t),
        set(&["web-1"]),
        "a terminating endpoint gets nothing while a ready one serves: {}",
        t.summary()
    );
    apply(&s.g, "slice-2", &slice_yaml(&s, gone, terminating));
    within(10, "the serving terminating endpoint takes over", || {
        names(&many(&s.client.netns_path, Transport::Tcp, vip, 80, 10)) == set(&["web-2"])
    });
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 60);
    assert_eq!(names(&t), set(&["web-2"]), "{}", t.summary());
    apply(&s.g, "slice-3", &slice_yaml(&s, gone, gone));
    refused(
        &s.client.netns_path,
        Transport::Tcp,
        vip,
        80,
        "nothing serving: refused",
    );
}

#[test]
#[ignore = "privileged: netns"]
fn policy_applies_to_the_translated_destination() {
    let s = setup("e2e-sva", 2);
    apply(&s.g, "web", &service_yaml("web", "app: web", "", ""));
    let vip = cluster_ip(&s.g, "web");
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    apply(
        &s.g,
        "deny-web-2",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web-2, namespace: web}
spec:
  podSelector: {matchLabels: {pod: web-2}}
  policyTypes: [Ingress]
",
    );
    let web2 = s.web("web-2").ip;
    within(10, "the policy isolates web-2", || {
        balance::connect_once(&s.client.netns_path, Transport::Tcp, web2, WEB_PORT, SHORT)
            .unwrap()
            .is_err()
    });
    let t = many(&s.client.netns_path, Transport::Tcp, vip, 80, 60);
    println!("through the ClusterIP with web-2 isolated: {}", t.summary());
    assert_eq!(
        names(&t),
        set(&["web-1", "web-3"]),
        "connections translated to web-2 are denied: {}",
        t.summary()
    );
    assert!(
        t.failures() > 0,
        "some connections picked web-2: {}",
        t.summary()
    );
}

#[test]
#[ignore = "privileged: netns"]
fn seam_explain_through_a_service_names_each_backend_with_its_verdict() {
    let s = setup("e2e-svb", 2);
    apply(&s.g, "web", &service_yaml("web", "app: web", "", ""));
    apply(
        &s.g,
        "deny-web-2",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web-2, namespace: web}
spec:
  podSelector: {matchLabels: {pod: web-2}}
  policyTypes: [Ingress]
",
    );
    let vip = cluster_ip(&s.g, "web");
    let out = seam(
        &s.g.lab.name,
        &["explain", "client/c1", &vip.to_string(), "80/tcp"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    for web in &s.webs {
        let line = text
            .lines()
            .find(|l| l.starts_with("backend") && l.contains(&format!(" {}:", web.ip)))
            .unwrap_or_else(|| panic!("{} ({}) in: {text}", web.name, web.ip));
        let denied = line.to_lowercase().contains("den") || line.to_lowercase().contains("drop");
        assert_eq!(denied, web.name == "web-2", "{line}\n{text}");
    }
}

/// With flow recording on (the lab's default), a connection of client/c1 (n2) to the ClusterIP
/// is recorded naming the Service and the address it used, though the policy saw the backend
/// (the agent asks conntrack when NFLOG does not say), and `seam explain` to the ClusterIP
/// lists those records.
#[test]
#[ignore = "privileged: netns"]
fn flow_records_of_service_connections_name_the_service_and_explain_lists_them() {
    seam_e2e::require_root();
    let g = LabGuard::new(&seam_lab::LabSpec {
        name: "e2e-svf".to_string(),
        nodes: 2,
        segment_mode: "namespace".to_string(),
        bin_dir: seam_e2e::bin_dir(),
        controller_args: Vec::new(),
        one_process: false,
        store: seam_lab::LabStore::Embedded,
        controllers: 1,
        flows: true,
    })
    .unwrap();
    let s = setup_in(g);
    apply(&s.g, "web", &service_yaml("web", "app: web", "", ""));
    let vip = cluster_ip(&s.g, "web");
    reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
    let webs: BTreeSet<Ipv4Addr> = s.webs.iter().map(|w| w.ip).collect();
    let lab = s.g.lab.name.clone();
    let records = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = seam(&lab, args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The client's node translated the connection: its egress record names the Service.
    let deadline = Instant::now() + Duration::from_secs(20);
    let named = loop {
        reaches(&s.client.netns_path, Transport::Tcp, vip, 80);
        let named = records(&["flows", "--to", &vip.to_string(), "-o", "json"]);
        if !named.is_empty() {
            break named;
        }
        assert!(
            Instant::now() < deadline,
            "no record of client/c1 through the ClusterIP names web/web: {:?}",
            records(&["flows", "-o", "json"])
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let r = &named[0];
    assert_eq!(r["service"]["service"], "web/web", "{r}");
    assert_eq!(r["service"]["ip"], vip.to_string(), "{r}");
    assert_eq!(r["service"]["port"], 80, "{r}");
    assert_eq!(r["node"], "n2", "{r}");
    assert_eq!(r["src"]["name"], "c1", "{r}");
    let backend: Ipv4Addr = r["dst"]["ip"].as_str().unwrap().parse().unwrap();
    assert!(
        webs.contains(&backend),
        "the backend, not the ClusterIP: {r}"
    );
    assert_eq!(r["dst"]["port"], WEB_PORT, "{r}");
    // `seam explain` to the ClusterIP lists them.
    let out = seam(&lab, &["explain", "client/c1", &vip.to_string(), "80/tcp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("to the Service's backends):")
            && text.contains(&format!("SERVICE web/web via {vip}:80")),
        "{text}"
    );
}

/// `seam lab ARGS…` (the lab verbs name their lab with `--name`).
fn seam_lab_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(seam_e2e::bin_dir().join("seam"))
        .arg("lab")
        .args(args)
        .output()
        .unwrap()
}
