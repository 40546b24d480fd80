//! `seam lab demo`: pods in two namespaces on two nodes, a VM and a bare-metal server, and what
//! really gets through before and after one contract; then a Service in front of the web pods,
//! which bm1 reaches through its LoadBalancer address and the VM through its ClusterIP, with the
//! spread over the backends and the client addresses the pods saw.
//!
//! The demo prints as it goes (it is a show, run by `seam lab demo`). It reads its policy
//! manifests as `seam apply` does ([`seam_model::manifest`]) and explains verdicts as
//! `seam explain` does ([`seam_firewall::explain`]).

use std::path::PathBuf;
use std::time::Duration;

use seam_firewall::explain;
use seam_model::manifest::{self, Manifest};

use crate::error::DemoError;
use crate::state::Lab;
use crate::topology::{down, up, LabSpec};
use crate::{balance, probe};

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// A failed check of the scenario, with the demo's message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(DemoError::Check(format!($($fmt)+)));
        }
    };
}

const PORT: u16 = 8080;
/// The bare-metal server behind the gateway.
const SERVER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 10);
/// The port the server listens on (pods probe it).
const SERVER_PORT: u16 = 9000;

/// Runs the demo on a fresh lab `name` (removed afterwards unless `keep`), printing each step.
pub fn run(name: &str, keep: bool, bin_dir: PathBuf) -> Result<()> {
    let _ = down(name);
    println!("== building lab {name}: 2 nodes, per-namespace segments");
    let mut lab = up(&LabSpec {
        name: name.into(),
        nodes: 2,
        segment_mode: "namespace".into(),
        controller_args: Vec::new(),
        one_process: false,
        store: crate::LabStore::Embedded,
        controllers: 1,
        flows: true,
        bin_dir,
    })?;
    let result = scenario(&mut lab);
    if keep {
        println!("== lab kept: `seam lab status --name {name}`, remove with `seam lab down --name {name}`");
    } else {
        down(name)?;
        println!("== lab removed");
    }
    result
}

fn scenario(lab: &mut Lab) -> Result<()> {
    let layout = [
        ("blue", "web-1", "n1"),
        ("blue", "web-2", "n2"),
        ("green", "db-1", "n1"),
        ("green", "db-2", "n2"),
    ];
    for (ns, pod, node) in layout {
        // The web pods carry app=web, as a Deployment's pods would: the Service selects them.
        let labels = if ns == "blue" {
            web_labels()
        } else {
            Default::default()
        };
        let p = lab
            .workloads()
            .add_pod_with_labels(node, ns, pod, &labels)?;
        for port in [80, PORT] {
            probe::serve_tcp(&p.netns_path, port, format!("{ns}/{pod}"))?;
        }
        for port in [443, 22] {
            probe::serve_tcp_peer(&p.netns_path, port, format!("{ns}/{pod}"))?;
        }
        println!("   pod {ns}/{pod:<6} on {node}  {}", p.ip);
    }
    let server = add_external_server(lab)?;
    let vm = add_client_vm(lab)?;
    let clients = [
        Client {
            name: "bm1",
            netns_path: server.netns_path.clone(),
            ip: SERVER_IP,
        },
        Client {
            name: "vm1",
            netns_path: vm.netns_path.clone(),
            ip: vm.ip,
        },
    ];
    // Give the agents a moment to install the remote entries they learn from the controller.
    std::thread::sleep(Duration::from_millis(300));
    let open = matrix(lab, "no policy yet")?;
    ensure!(
        open.iter().all(|row| row.iter().all(|c| *c == [true; 3])),
        "some pairs failed without any policy; see the agent logs under {}",
        lab.dir.display()
    );
    println!("   all {} pairs connected", lab.pods.len().pow(2));
    for c in &clients {
        client_checks(lab, c, false)?;
    }
    policy_example(lab)?;
    for c in &clients {
        client_checks(lab, c, true)?;
    }
    service_example(lab, &clients)?;
    Ok(())
}

/// A client outside the pods: the bare-metal server behind the gateway, or the VM.
struct Client {
    name: &'static str,
    netns_path: PathBuf,
    ip: std::net::Ipv4Addr,
}

/// n2 becomes a hypervisor host and runs VM vm1 (a namespace behind a `tv…` port, attached with
/// `seam vm attach`), labelled role=client: EPG-Client selects it by that label, as it selects bm1.
fn add_client_vm(lab: &mut Lab) -> Result<crate::vm::VmInfo> {
    println!(
        "
== n2 becomes a hypervisor host; VM vm1 joins segment ns-green (role=client)"
    );
    lab.topology().make_hypervisor("n2")?;
    let options = crate::vm::VmOptions {
        labels: [("role".to_string(), "client".to_string())].into(),
        namespace: Some("vms".into()),
        ..crate::vm::VmOptions::default()
    };
    let vm = lab.workloads().add_vm("vm1", "n2", "ns-green", &options)?;
    probe::serve_tcp_peer(&vm.netns_path, SERVER_PORT, "vm1".into())?;
    println!(
        "   vm vm1 {} on n2 (endpoint vms/vm1, port {}, MAC {})",
        vm.ip, vm.port, vm.mac
    );
    Ok(vm)
}

/// Gateway gw1 on the underlay and the external network, bare-metal server bm1 behind it, and
/// bm1 registered as an external endpoint labelled role=client.
///
fn add_external_server(lab: &mut Lab) -> Result<crate::gateway::ServerInfo> {
    println!("\n== gateway gw1 joins the overlay to the external network 203.0.113.0/24 (routes, no NAT)");
    let gw = lab.topology().add_gateway("gw1")?;
    let pool = crate::gateway::DEFAULT_POOL;
    let server = lab
        .workloads()
        .add_server("bm1", SERVER_IP, "gw1", &[pool])?;
    probe::serve_tcp_peer(&server.netns_path, SERVER_PORT, "bm1".into())?;
    let external = seam_model::External {
        name: "bm1".into(),
        namespace: seam_model::EXTERNAL_NAMESPACE.into(),
        gateway: "gw1".into(),
        addresses: vec![SERVER_IP],
        labels: [("role".to_string(), "client".to_string())].into(),
    };
    let client = lab.client()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client.put_external(&external))?;
    println!(
        "   gateway gw1: underlay {}, external {}",
        gw.underlay_ip, gw.external_ip
    );
    println!("   server bm1 {SERVER_IP} (external endpoint external/bm1, role=client); its static route: ip route add {pool} via {}", gw.external_ip);
    println!("   the nodes share gw1's underlay subnet: their pods' traffic with bm1 is routed without encapsulation both ways (seamd --transit-encap cross-subnet)");
    Ok(server)
}

/// What a client (bm1, vm1) gets through to the blue pods (TCP 80, 443, 22, {PORT}, ICMP) and
/// whether the pods can open connections to it; before the policy also which addresses each side
/// sees.
fn client_checks(lab: &Lab, client: &Client, policy: bool) -> Result<()> {
    let name = client.name;
    let timeout = Duration::from_millis(800);
    let webs: Vec<_> = lab.pods.iter().filter(|p| p.namespace == "blue").collect();
    // The transit routes reach the workers asynchronously.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe::tcp(&webs[0].netns_path, client.ip, SERVER_PORT, timeout)?.is_none() && !policy {
        ensure!(
            std::time::Instant::now() < deadline,
            "blue/web-1 does not reach {name}; see {}",
            lab.dir.display()
        );
    }
    let title = if policy {
        "after Contract-Web"
    } else {
        "no policy yet"
    };
    let path = if name == "bm1" {
        "bare metal <-> pods through gw1"
    } else {
        "VM <-> pods over the overlay"
    };
    println!("\n== {path}, {title}: TCP 80, 443, 22, {PORT}, ICMP (Y answered, - dropped)");
    for web in &webs {
        let mut marks = Vec::new();
        let mut got = Vec::new();
        for port in [80, 443, 22, PORT] {
            let ok = probe::tcp(&client.netns_path, web.ip, port, timeout)?.is_some();
            got.push(ok);
            marks.push(if ok { "Y" } else { "-" });
        }
        let ping = probe::ping(&client.netns_path, web.ip, 1)?;
        got.push(ping);
        marks.push(if ping { "Y" } else { "-" });
        let back = probe::tcp(&web.netns_path, client.ip, SERVER_PORT, timeout)?;
        println!(
            "   {name} -> blue/{:<6} {}    blue/{} -> {name}:{SERVER_PORT} {}",
            web.name,
            marks.join(" "),
            web.name,
            if back.is_some() { "Y" } else { "-" }
        );
        if !policy {
            let seen = probe::tcp(&client.netns_path, web.ip, 443, timeout)?.unwrap_or_default();
            println!(
                "      the pod answers \"{seen}\" ({name}'s own address); {name} answers \"{}\" (the pod's own address)",
                back.clone().unwrap_or_default()
            );
            ensure!(
                got.iter().all(|g| *g) && back.is_some(),
                "{name} <-> {} failed without any policy",
                web.name
            );
        } else {
            ensure!(
                got == [true, true, false, false, false] && back.is_none(),
                "{name} <-> {}: got {got:?}, pods -> {name} {}; expected only TCP 80 and 443 from {name}",
                web.name,
                back.is_some()
            );
        }
    }
    if policy {
        println!("   as Contract-Web says: {name} reaches the web pods on TCP 80 and 443 only; the pods cannot open connections to {name}");
    }
    Ok(())
}

/// Probes every ordered pair at once (TCP 80, TCP {PORT}, ICMP) and prints the matrix.
fn matrix(lab: &Lab, title: &str) -> Result<Vec<Vec<[bool; 3]>>> {
    let pods = &lab.pods;
    let cells: Vec<Vec<Result<[bool; 3]>>> = std::thread::scope(|scope| {
        let rows: Vec<Vec<_>> = pods
            .iter()
            .map(|src| {
                pods.iter()
                    .map(|dst| {
                        scope.spawn(move || -> Result<[bool; 3]> {
                            let expect = format!("{}/{}", dst.namespace, dst.name);
                            let tcp = |port| -> Result<bool> {
                                Ok(probe::tcp(
                                    &src.netns_path,
                                    dst.ip,
                                    port,
                                    Duration::from_millis(800),
                                )?
                                .as_deref()
                                    == Some(expect.as_str()))
                            };
                            Ok([
                                tcp(80)?,
                                tcp(PORT)?,
                                probe::ping(&src.netns_path, dst.ip, 1)?,
                            ])
                        })
                    })
                    .collect()
            })
            .collect();
        rows.into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(DemoError::Check("probe thread panicked".into()))
                        })
                    })
                    .collect()
            })
            .collect()
    });
    println!("\n== connectivity, {title}: rows = client; cell = TCP 80, TCP {PORT}, ICMP (Y answered, - dropped)");
    print!("{:>12}", "");
    for dst in pods {
        print!(" {:>12}", format!("{}/{}", dst.namespace, dst.name));
    }
    println!();
    let mut out = Vec::new();
    for (src, row) in pods.iter().zip(cells) {
        print!("{:>12}", format!("{}/{}", src.namespace, src.name));
        let mut results = Vec::new();
        for cell in row {
            let c = cell?;
            let mark = |b: bool| if b { "Y" } else { "-" };
            print!(
                " {:>12}",
                format!("{} {} {}", mark(c[0]), mark(c[1]), mark(c[2]))
            );
            results.push(c);
        }
        println!();
        out.push(results);
    }
    Ok(out)
}

/// The seed's example: clients (namespace green) reach web servers (namespace blue) on TCP 80
/// and 443 through one contract.
const SEED_EXAMPLE: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{namespaces: [green]}, {labels: {matchLabels: {role: client}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{namespaces: [blue]}]}
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
# Nothing is enforced at an external end, so the web pods' own egress is isolated: they cannot
# open connections to the clients (or anything else) unless a contract allows it.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-no-egress, namespace: blue}
spec: {podSelector: {}, policyTypes: [Egress]}
"#;

fn policy_example(lab: &Lab) -> Result<()> {
    println!(
        "\n== policy: EPG-Client (green, bm1, vm1) -> Contract-Web (TCP 80, 443) -> EPG-Webserver (blue)"
    );
    let objects = manifest::parse_manifests(SEED_EXAMPLE)?;
    let client = lab.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = rt.block_on(async {
        for object in &objects {
            let Manifest::Policy(p) = object else {
                continue;
            };
            let key = p.key();
            client
                .put_policy(
                    key.kind.as_str(),
                    key.namespace.as_deref(),
                    &key.name,
                    &p.to_value(),
                )
                .await?;
            println!("   {} applied", object.describe());
        }
        client.snapshot().await
    })?;
    // Wait until the nodes enforce it: green -> blue on a port outside the contract is dropped.
    let db1 = lab
        .pods
        .iter()
        .find(|p| p.name == "db-1")
        .ok_or_else(|| DemoError::Check("no db-1".into()))?;
    let web1 = lab
        .pods
        .iter()
        .find(|p| p.name == "web-1")
        .ok_or_else(|| DemoError::Check("no web-1".into()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe::tcp(&db1.netns_path, web1.ip, PORT, Duration::from_millis(300))?.is_some() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the contract was not enforced within 10 s"
        );
    }
    let after = matrix(lab, "after Contract-Web")?;
    let ns_of = |i: usize| lab.pods[i].namespace.as_str();
    for (i, row) in after.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            // Expected: green -> blue only TCP 80; blue (the providers) admits nothing else;
            // green is not isolated.
            let want = match (ns_of(i), ns_of(j)) {
                _ if i == j => *c, // a pod talking to itself never crosses the firewall
                ("green", "blue") => [true, false, false],
                (_, "blue") => [false, false, false],
                // blue's egress is isolated (web-no-egress): the servers open no connections.
                ("blue", _) => [false, false, false],
                _ => [true, true, true],
            };
            ensure!(
                *c == want,
                "{} -> {}: got {c:?}, expected {want:?}",
                lab.pods[i].name,
                lab.pods[j].name
            );
        }
    }
    println!("   matrix as the contract says (intra-EPG traffic in blue is isolated too: providers admit only consumers; blue opens nothing: web-no-egress)");
    let read = |node: &str| lab.rule_counters(node).map_err(|e| e.to_string());
    for (src, dst, port, what) in [
        ("green/db-1", "blue/web-1", 80, "allowed by the contract"),
        ("green/db-1", "blue/web-1", PORT, "not in the contract"),
        (
            "external/bm1",
            "blue/web-2",
            443,
            "bare metal, allowed by the contract",
        ),
        (
            "external/bm1",
            "blue/web-2",
            22,
            "bare metal, SSH: not in the contract",
        ),
        (
            "blue/web-1",
            "external/bm1",
            SERVER_PORT,
            "a web pod opening a connection to the client",
        ),
        (
            "vms/vm1",
            "blue/web-1",
            80,
            "the VM, allowed by the contract",
        ),
        (
            "vms/vm1",
            "blue/web-1",
            22,
            "the VM, SSH: not in the contract",
        ),
    ] {
        println!("\n$ seam explain {src} {dst} {port}/tcp   # {what}");
        let flow = seam_policy::Flow {
            src: explain::parse_end(src)?,
            dst: explain::parse_end(dst)?,
            protocol: seam_policy::Protocol::Tcp,
            port,
        };
        let x = explain::explain(&snapshot, flow, Some(&read))?;
        print!("{}", explain::render_text(&x));
    }
    Ok(())
}

/// The web pods' Service, as it would be written for Kubernetes: a LoadBalancer in front of
/// every pod labelled app=web (the blue pods), its address from the pool `external` (a part of
/// the external network no host uses), ports 443 (allowed by Contract-Web) and 22 (not).
const SERVICE_EXAMPLE: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: AddressPool
metadata: {name: external}
spec: {addresses: [203.0.113.200/29]}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: blue
  annotations: {seam.dev/address-pool: external}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: https, protocol: TCP, port: 443, targetPort: 443}
  - {name: ssh, protocol: TCP, port: 22, targetPort: 22}
"#;

/// The labels of the web pods, which the Service selects.
fn web_labels() -> std::collections::BTreeMap<String, String> {
    [("app".to_string(), "web".to_string())].into()
}

/// The Service in front of the web pods: bm1 through its LoadBalancer address, vm1 through its
/// ClusterIP; the spread over the backends, the addresses the pods saw, and Contract-Web still
/// deciding (SSH through the Service gets nowhere).
fn service_example(lab: &Lab, clients: &[Client]) -> Result<()> {
    println!(
        "\n== Service blue/web: a LoadBalancer in front of the web pods (app=web), TCP 443 and 22, its address from pool external (203.0.113.200/29) on the external network"
    );
    let objects = manifest::parse_manifests(SERVICE_EXAMPLE)?;
    let client = lab.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let apply: Vec<_> = objects.iter().map(Manifest::to_apply).collect();
    rt.block_on(client.apply(&apply))?;
    for object in &objects {
        println!("   {} applied", object.describe());
    }
    // The controller allocates the ClusterIP at once and the pool's address with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (cluster_ip, lb) = loop {
        let stored = rt
            .block_on(client.snapshot())?
            .services
            .into_iter()
            .find(|s| s.namespace == "blue" && s.name == "web");
        if let Some(s) = stored {
            let ingress = s.status.load_balancer.ingress.first().map(|i| i.ip);
            if let (seam_model::ClusterIp::Address(ip), Some(lb)) = (s.spec.cluster_ip, ingress) {
                break (ip, lb);
            }
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "Service blue/web got no ClusterIP or LoadBalancer address within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("   ClusterIP {cluster_ip}, LoadBalancer address {lb} (gw1 answers ARP for it on the external network and translates)");
    let backends: Vec<&crate::PodInfo> =
        lab.pods.iter().filter(|p| p.namespace == "blue").collect();
    for c in clients {
        let (address, how) = if c.name == "bm1" {
            (lb, "its LoadBalancer address")
        } else {
            (cluster_ip, "its ClusterIP")
        };
        wait_for_service(&c.netns_path, address, 443, c.name)?;
        let tally = balance::connect_many(
            &c.netns_path,
            balance::Transport::Tcp,
            address,
            443,
            SERVICE_CONNECTIONS,
            Duration::from_millis(800),
        )?;
        println!(
            "   {} -> {address}:443 ({how}), {SERVICE_CONNECTIONS} connections: {}",
            c.name,
            tally.summary()
        );
        ensure!(
            tally.failures() == 0 && tally.per_backend.len() == backends.len(),
            "{} through the Service: {}",
            c.name,
            tally.summary()
        );
        ensure!(
            tally.clients_seen == std::collections::BTreeSet::from([c.ip]),
            "the web pods saw {:?}, not {}'s own address {}",
            tally.clients_seen,
            c.name,
            c.ip
        );
        println!(
            "      spread {:.0} % from even at most; the web pods saw {} ({}'s own address: no SNAT)",
            tally.imbalance(backends.len()) * 100.0,
            c.ip,
            c.name
        );
        let ssh = balance::connect_many(
            &c.netns_path,
            balance::Transport::Tcp,
            address,
            22,
            3,
            Duration::from_millis(500),
        )?;
        ensure!(
            ssh.answered() == 0,
            "{} reached SSH through the Service: {}",
            c.name,
            ssh.summary()
        );
        println!(
            "   {} -> {address}:22: nothing answers (Contract-Web allows TCP 80 and 443 only; policy sees the translated destination)",
            c.name
        );
    }
    Ok(())
}

/// Connections through the Service through [`service_example`].
const SERVICE_CONNECTIONS: u32 = 300;

/// Waits until `netns` reaches `address:port` (the agents install a Service asynchronously).
fn wait_for_service(
    netns: &std::path::Path,
    address: std::net::Ipv4Addr,
    port: u16,
    who: &str,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = balance::connect_once(
            netns,
            balance::Transport::Tcp,
            address,
            port,
            Duration::from_millis(500),
        )?;
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) => ensure!(
                std::time::Instant::now() < deadline,
                "{who} does not reach the Service at {address}:{port} within 15 s ({e:?})"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_read_as_seam_apply_reads_them() {
        for text in [SEED_EXAMPLE, SERVICE_EXAMPLE] {
            if let Err(e) = manifest::parse_manifests(text) {
                panic!("{e}");
            }
        }
        let objects = manifest::parse_manifests(SERVICE_EXAMPLE).unwrap_or_default();
        let Some(Manifest::Service(web)) = objects.get(1) else {
            panic!("the second object is the Service: {objects:?}");
        };
        assert_eq!(web.spec.selector, Some(web_labels()));
    }
}
