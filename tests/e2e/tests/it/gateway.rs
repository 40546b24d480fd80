//! Bare metal behind a gateway node, without NAT: a server on the lab's external network reaches
//! pods on two nodes and pods reach it, each side seeing the other's own address; then the seed's
//! scenario (EPG-Client with the server and a VM on a hypervisor host, Contract-Web TCP 80/443,
//! EPG-Webserver with the pods of a web Deployment on two nodes) with real traffic and `seam
//! explain`; and bad input refused with nothing changed. Driven with the `seam` binary as a user
//! would.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use seam_e2e::{bin_dir, controller, LabGuard, TestLab};
use seam_lab::probe::{self, Outcome};
use seam_lab::PodInfo;
use serde_json::json;

const SERVER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 10);

pub(crate) fn seam(lab: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("seam"))
        .args(args)
        .args(["--lab", lab])
        .output()
        .unwrap()
}

pub(crate) fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "seam failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `secs` for `cond` (agents apply changes asynchronously).
pub(crate) fn within(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Strict reverse-path filtering on `nodes`, as on distributions that default to it: the
/// routed transit has to set what it needs itself.
pub(crate) fn strict_rp_filter(lab: &seam_lab::Lab, nodes: &[&str]) {
    for node in nodes {
        sysctl(
            &format!("{}-{node}", lab.name),
            &[
                "net.ipv4.conf.all.rp_filter=1",
                "net.ipv4.conf.default.rp_filter=1",
            ],
        );
    }
}

/// `sysctl -w` of each `key=value` of `settings` in the lab namespace `netns`.
pub(crate) fn sysctl(netns: &str, settings: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sysctl", "-qw"])
        .args(settings)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sysctl {settings:?} in {netns}: {out:?}"
    );
}

/// `seam external add bm1 --gateway gw1 --address ADDRESS` plus `extra` arguments.
pub(crate) fn add_bm1(lab: &str, address: std::net::Ipv4Addr, extra: &[&str]) {
    let address = address.to_string();
    let mut args = vec![
        "external",
        "add",
        "bm1",
        "--gateway",
        "gw1",
        "--address",
        &address,
    ];
    args.extend_from_slice(extra);
    ok(&seam(lab, &args));
}

struct Setup {
    g: LabGuard,
    server: seam_lab::gateway::ServerInfo,
    webs: Vec<PodInfo>,
}

/// 2 worker nodes, gateway gw1, server bm1 (203.0.113.10) registered as an external endpoint
/// with role=client, and the web Deployment's pods (app=web) on n1 and n2.
fn setup(name: &str) -> Setup {
    let mut g = LabGuard::up(name, 2, &[]);
    g.lab.topology().add_gateway("gw1").unwrap();
    strict_rp_filter(&g.lab, &["n1", "n2", "gw1"]);
    let server = g
        .lab
        .workloads()
        .add_server("bm1", SERVER_IP, "gw1", &[seam_lab::gateway::DEFAULT_POOL])
        .unwrap();
    let web_labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    let webs: Vec<PodInfo> = ["n1", "n2"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            g.lab
                .workloads()
                .add_pod_with_labels(node, "web", &format!("web-{}", i + 1), &web_labels)
                .unwrap()
        })
        .collect();
    add_bm1(&g.lab.name, SERVER_IP, &["--labels", "role=client"]);
    for p in &webs {
        for port in [80, 443, 22, 8080] {
            probe::serve_tcp_peer(&p.netns_path, port, p.name.clone()).unwrap();
        }
    }
    probe::serve_tcp_peer(&server.netns_path, 9000, "bm1".into()).unwrap();
    Setup { g, server, webs }
}

fn said(netns: &std::path::Path, ip: std::net::Ipv4Addr, port: u16) -> Option<String> {
    probe::tcp(netns, ip, port, Duration::from_millis(800)).unwrap()
}

#[test]
#[ignore = "privileged: netns"]
fn a_server_behind_the_gateway_and_pods_see_each_others_own_addresses() {
    let mut s = setup("e2e-gw");
    // The gateway's routes to the pods here are the routed transit's alone: its segments keep
    // the VXLAN (routed segments would route the same pods the same way, see `routed`).
    s.g.lab
        .topology()
        .set_segment_encap("gw1", "always")
        .unwrap();
    let both_ways_with_own_addresses = |s: &Setup| {
        for web in &s.webs {
            // Server -> pod: the pod sees the server's address.
            let want = format!("{} {SERVER_IP}", web.name);
            within(10, &format!("bm1 reaches {}", web.name), || {
                said(&s.server.netns_path, web.ip, 80).as_deref() == Some(want.as_str())
            });
            // Pod -> server: the server sees the pod's address (no SNAT on the gateway).
            within(5, &format!("{} reaches bm1", web.name), || {
                said(&web.netns_path, SERVER_IP, 9000).as_deref()
                    == Some(format!("bm1 {}", web.ip).as_str())
            });
            assert!(probe::ping(&s.server.netns_path, web.ip, 1).unwrap());
        }
    };
    both_ways_with_own_addresses(&s);
    // The gateway shares the workers' underlay subnet and runs with the default
    // `--transit-encap cross-subnet`: the worker routes the server over the underlay, without
    // the transit device.
    let n1 = s.g.node("n1").netns.clone();
    let server_routes = |n1: &str| -> Vec<serde_json::Value> {
        seam_e2e::ip_json(n1, &["route", "show", &format!("{SERVER_IP}/32")])
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let server_route = |n1: &str| server_routes(n1).first().cloned().unwrap_or_default();
    let route = server_route(&n1);
    assert_eq!(route["gateway"], "198.18.1.1", "{route}");
    assert_eq!(route["dev"], "eth0", "{route}");
    assert_eq!(route["protocol"], "83", "{route}");
    assert!(
        !seam_e2e::ip_json(&n1, &["link", "show"])
            .as_array()
            .is_some_and(|l| l.iter().any(|link| link["ifname"] == "seam-xt")),
        "n1 needs no transit device"
    );
    // The way back is routed the same way: the gateway routes each web pod to its node.
    let gw1 = format!("{}-gw1", s.g.lab.name);
    let routed_back = |gw1: &str| -> BTreeMap<String, String> {
        seam_e2e::ip_json(gw1, &["route", "show", "proto", "83"])
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or_default().to_string(),
                    r["gateway"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let want: BTreeMap<String, String> = s
        .webs
        .iter()
        .zip(["n1", "n2"])
        .map(|(web, node)| (web.ip.to_string(), s.g.node(node).underlay_ip.to_string()))
        .collect();
    within(5, "gw1 routes the web pods to their nodes", || {
        routed_back(&gw1) == want
    });
    // The gateway switched to `always`: the route moves into the transit VXLAN device and the
    // traffic still flows.
    s.g.lab
        .topology()
        .set_transit_encap("gw1", "always")
        .unwrap();
    within(5, "the route moves into the transit device", || {
        server_route(&n1)["dev"] == "seam-xt"
    });
    let route = server_route(&n1);
    assert_eq!(route["gateway"], "198.18.1.1", "{route}");
    assert_eq!(server_routes(&n1).len(), 1, "one route to the server");
    within(
        5,
        "gw1 sends the way back through the segments again",
        || routed_back(&gw1).is_empty(),
    );
    both_ways_with_own_addresses(&s);
    // And back to the routed transit: the route leaves the device again, in place.
    s.g.lab
        .topology()
        .set_transit_encap("gw1", "cross-subnet")
        .unwrap();
    within(5, "the route is routed again", || {
        server_route(&n1)["protocol"] == "83"
    });
    within(5, "gw1 routes the web pods to their nodes again", || {
        routed_back(&gw1) == want
    });
    assert_eq!(server_routes(&n1).len(), 1, "one route to the server");
    both_ways_with_own_addresses(&s);
    // Removing the external endpoint removes the routes on the workers.
    ok(&seam(&s.g.lab.name, &["external", "del", "bm1"]));
    within(5, "the route goes with the endpoint", || {
        server_routes(&n1).is_empty()
    });
    assert_eq!(said(&s.webs[0].netns_path, SERVER_IP, 9000), None);
}

/// The seed's scenario. The web pods' egress is isolated (a NetworkPolicy with no egress rule),
/// since nothing is enforced at an external end: that is what keeps the pods from opening
/// connections to the clients unless a contract allows it.
const SCENARIO: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{labels: {matchLabels: {role: client}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{labels: {matchLabels: {app: web}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  subjects: [{name: web, filters: [{protocol: TCP, ports: [80, 443]}]}]
  action: allow
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-no-egress, namespace: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
"#;

#[test]
#[ignore = "privileged: netns"]
fn contract_web_from_a_bare_metal_server_and_a_vm_to_the_web_pods() {
    let mut s = setup("e2e-gwc");
    // The VM client: on hypervisor host n2, in a segment of its own (namespace clients), so its
    // traffic to the web pods is routed between segments, on its host and across to n1.
    s.g.lab.topology().make_hypervisor("n2").unwrap();
    controller(&s.g.lab, async |c| c.ensure_segment("clients").await);
    let vm_options = seam_lab::vm::VmOptions {
        labels: [("role".to_string(), "client".to_string())].into(),
        ..Default::default()
    };
    let vm =
        s.g.lab
            .workloads()
            .add_vm("vm1", "n2", "ns-clients", &vm_options)
            .unwrap();
    probe::serve_tcp_peer(&vm.netns_path, 9000, "vm1".into()).unwrap();
    // (netns, address, endpoint name) of each client in EPG-Client.
    let clients = [
        (
            s.server.netns_path.clone(),
            SERVER_IP,
            "external/bm1".to_string(),
        ),
        (
            vm.netns_path.clone(),
            vm.ip,
            format!("{}/vm1", vm.namespace),
        ),
    ];
    let web1 = &s.webs[0];
    for (netns, _, name) in &clients {
        within(
            10,
            &format!("{name} reaches web-1 before any policy"),
            || said(netns, web1.ip, 22).is_some(),
        );
    }
    let file = s.g.lab.dir.join("scenario.yaml");
    std::fs::write(&file, SCENARIO).unwrap();
    ok(&seam(
        &s.g.lab.name,
        &["apply", "-f", file.to_str().unwrap()],
    ));
    for (netns, _, name) in &clients {
        within(10, &format!("the contract is enforced for {name}"), || {
            said(netns, web1.ip, 22).is_none()
        });
    }
    let dropped = |from: &std::path::Path, ip, port| {
        probe::tcp_connect(from, ip, port, Duration::from_millis(700)).unwrap() == Outcome::TimedOut
    };
    for (netns, client_ip, name) in &clients {
        for web in &s.webs {
            for port in [80, 443] {
                assert_eq!(
                    said(netns, web.ip, port),
                    Some(format!("{} {client_ip}", web.name)),
                    "{name} -> {}:{port} is allowed by contract-web",
                    web.name
                );
            }
            for port in [22, 8080] {
                assert!(
                    dropped(netns, web.ip, port),
                    "{name} -> {}:{port} is dropped",
                    web.name
                );
            }
            assert!(
                !probe::ping(netns, web.ip, 1).unwrap(),
                "ICMP from {name} to {} is dropped",
                web.name
            );
            assert!(
                dropped(&web.netns_path, *client_ip, 9000),
                "{} cannot open a connection to {name}",
                web.name
            );
        }
    }
    let explain =
        |src: &str, dst: &str, port: &str| ok(&seam(&s.g.lab.name, &["explain", src, dst, port]));
    for (_, _, name) in &clients {
        let allowed = explain(name, "web/web-1", "80/tcp");
        assert!(allowed.contains("contract-web"), "{allowed}");
        let https = explain(name, "web/web-2", "443/tcp");
        assert!(https.contains("contract-web"), "{https}");
        let ssh = explain(name, "web/web-2", "22/tcp");
        assert!(ssh.contains("contract-web"), "{ssh}");
        let reverse = explain("web/web-1", name, "9000/tcp");
        assert!(reverse.contains("web-no-egress"), "{reverse}");
    }
}

#[test]
#[ignore = "privileged: netns"]
fn bad_external_endpoints_are_refused_and_nothing_changes() {
    let mut g = LabGuard::up("e2e-gwbad", 1, &[]);
    g.lab.topology().add_gateway("gw1").unwrap();
    let pod = g.lab.workloads().add_pod("n1", "web", "web-1").unwrap();
    let lab = g.lab.name.clone();
    add_bm1(&lab, SERVER_IP, &[]);
    let before = controller(&g.lab, async |c| c.list_endpoints().await);
    let leased = pod.ip.to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--gateway", "gw1", "--address", &leased],
            "inside segment",
        ),
        (
            &["--gateway", "gw1", "--address", "203.0.113.20,10.250.0.9"],
            "inside the controller's pool",
        ),
        (
            &["--gateway", "gw1", "--address", "203.0.113.10"],
            "already held by endpoint \"external/bm1\"",
        ),
        (
            &["--gateway", "n1", "--address", "203.0.113.21"],
            "not gateway",
        ),
        (
            &["--gateway", "gw9", "--address", "203.0.113.21"],
            "not found",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["external", "add", "bad"];
        all.extend_from_slice(args);
        let out = seam(&lab, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("nothing changed"), "{err}");
    }
    let after = controller(&g.lab, async |c| c.list_endpoints().await);
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap(),
        "a refused external endpoint changed nothing"
    );
    // A segment over an external endpoint's address is refused too.
    let seg = json!({"name": "over", "tenant": "t", "subnet": "203.0.113.0/24",
        "gateway": "203.0.113.1", "vni": 9999, "blockPrefix": 26});
    let client = g.lab.client().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(client.put_segment(&serde_json::from_value(seg).unwrap()));
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("external/bm1"), "{err}");
}
