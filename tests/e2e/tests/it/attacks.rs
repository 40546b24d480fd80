//! Issue 11's attacks, replayed as an attacker would: plain `curl` against a lab's API, with no
//! client certificate and with a node's own certificate. Each is refused with a status and a
//! reason, nothing changes, and the cluster keeps working. And a node whose clock is far off
//! (`faketime`) says so in its log instead of failing silently, without touching the cluster.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use seam_e2e::{LabGuard, TestLab};
use seam_lab::{node_cert_dir, probe, LabUser, PodInfo};

/// The controller's API in an embedded-store lab.
const API: &str = "https://198.18.0.1:7440";

/// Who is calling: curl's TLS flags.
struct Caller {
    name: &'static str,
    args: Vec<String>,
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Caller {
    /// Trusts the lab's CA and presents no certificate.
    fn anonymous(ca: &Path) -> Caller {
        Caller {
            name: "no certificate",
            args: vec!["--cacert".into(), path_str(ca)],
        }
    }

    /// Presents `cert` and `key`.
    fn with_cert(name: &'static str, ca: &Path, cert: &Path, key: &Path) -> Caller {
        Caller {
            name,
            args: vec![
                "--cacert".into(),
                path_str(ca),
                "--cert".into(),
                path_str(cert),
                "--key".into(),
                path_str(key),
            ],
        }
    }
}

/// `curl -X method API+path` from `netns` as `caller`, with a JSON `body`: (HTTP status, 0 when
/// there was no HTTP answer; the body as JSON, or as a string when it is not JSON).
fn curl(
    netns: &Path,
    caller: &Caller,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .args(&caller.args);
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(body.to_string());
    }
    cmd.arg(format!("{API}{path}"));
    let out = seam_linux::netns::run_in(netns, || cmd.output())
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (code.trim().parse().unwrap_or(0), body)
}

/// What an administrator sees of the objects an attacker went for.
const WATCHED: [&str; 5] = [
    "/v1/nodes",
    "/v1/segments",
    "/v1/blocks",
    "/v1/endpoints",
    "/v1/policies",
];

fn admin_view(netns: &Path, admin: &Caller) -> Vec<(&'static str, Value)> {
    WATCHED
        .iter()
        .map(|path| {
            let (code, body) = curl(netns, admin, "GET", path, None);
            assert_eq!(code, 200, "admin GET {path}: {body}");
            (*path, body)
        })
        .collect()
}

/// The objects of a list answer (a JSON array, or an object holding one).
fn items(list: &Value) -> Vec<Value> {
    match list {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map
            .values()
            .find_map(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `cidr`'s address at `offset` (`"10.240.0.64/26"`, 5 → 10.240.0.69).
fn address_in(cidr: &str, offset: u32) -> Ipv4Addr {
    let (net, _) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    Ipv4Addr::from(u32::from(net) + offset)
}

/// Asserts `got` is `status` with `reason` in the API's JSON error body.
fn assert_refused(what: &str, caller: &Caller, got: &(u16, Value), status: u16, reason: &str) {
    let (code, body) = got;
    assert_eq!(
        (*code, body["reason"].as_str()),
        (status, Some(reason)),
        "{what} with {}: {body}",
        caller.name
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what} with {}: no message in {body}",
        caller.name
    );
}

/// A new pod on `node` gets an address and reaches `target` (serving its name on 8080).
fn new_pod_reaches(g: &mut LabGuard, node: &str, name: &str, target: &PodInfo) -> PodInfo {
    let pod = g
        .lab
        .workloads()
        .add_pod(node, "blue", name)
        .unwrap_or_else(|e| panic!("a pod on {node}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = probe::tcp(&pod.netns_path, target.ip, 8080, Duration::from_secs(2)).unwrap();
        if got.as_deref() == Some(target.name.as_str()) {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "{} on {node} does not reach {} at {}: {got:?}",
            pod.name,
            target.name,
            target.ip
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "privileged: netns"]
fn the_first_paragraph_of_issue_11_replayed_with_curl_is_refused_and_changes_nothing() {
    let mut g = LabGuard::up("e2e-attack", 2, &[]);
    let pki = g.lab.pki.clone().expect("the lab has a PKI");
    let n1 = g.node("n1");
    let netns = n1.netns_path.clone();
    let (cert, key) = pki.user(LabUser::Admin);
    let admin = Caller::with_cert("the admin", &pki.ca_cert, &cert, &key);
    let n1_dir = node_cert_dir(&n1);
    let attackers = [
        Caller::anonymous(&pki.ca_cert),
        Caller::with_cert(
            "n1's certificate",
            &pki.ca_cert,
            &n1_dir.join("node.crt"),
            &n1_dir.join("node.key"),
        ),
    ];

    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    probe::serve_tcp(&a.netns_path, 8080, a.name.clone()).unwrap();

    let before = admin_view(&netns, &admin);
    let view = |path: &str| before.iter().find(|(p, _)| *p == path).unwrap().1.clone();
    let node = |name: &str| {
        items(&view("/v1/nodes"))
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("node {name} in {:#}", view("/v1/nodes")))
    };
    let n2_node = node("n2");
    let n2_endpoint = items(&view("/v1/endpoints"))
        .into_iter()
        .find(|e| e["node"] == "n2" && e["ip"] == b.ip.to_string())
        .unwrap_or_else(|| panic!("b's endpoint in {:#}", view("/v1/endpoints")));
    let segment = n2_endpoint["segment"].as_str().unwrap().to_string();
    let n2_block = items(&view("/v1/blocks"))
        .into_iter()
        .find(|bl| bl["node"] == "n2" && bl["segment"] == segment.as_str())
        .unwrap_or_else(|| panic!("n2's block of {segment} in {:#}", view("/v1/blocks")));
    let n2_cidr = n2_block["cidr"].as_str().unwrap().to_string();
    let block_key = format!(
        "{segment}/{}",
        n2_cidr.replace('/', "-") // seam_model::block_key: <segment>/<network>-<prefix>
    );
    let endpoint_name = n2_endpoint["name"].as_str().unwrap().to_string();

    // The attacker's objects.
    let deny_all = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "blue"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    });
    let allow_all = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": "allow-all"},
        "spec": {
            "priority": 0,
            "subject": {"namespaces": {}},
            "ingress": [{"name": "all", "action": "Allow", "from": [{"namespaces": {}}]}],
            "egress": [{"name": "all", "action": "Allow", "to": [{"namespaces": {}}]}]
        }
    });
    let mut moved_n2 = n2_node.clone();
    moved_n2["underlayIp"] = json!("198.18.0.99");
    let mut n1_as_n2 = node("n1");
    n1_as_n2["underlayIp"] = n2_node["underlayIp"].clone();
    // An endpoint of n1 with an address of n2's block (b is at an offset of its own; the one
    // before the last is free in a block of any size the lab uses).
    let size = 1u32 << (32 - n2_cidr.split_once('/').unwrap().1.parse::<u32>().unwrap());
    let stolen = address_in(&n2_cidr, size - 2);
    assert_ne!(stolen, b.ip);
    let mut squatter = n2_endpoint.clone();
    let squatter_name = format!("{endpoint_name}-squat");
    squatter["name"] = json!(squatter_name);
    squatter["node"] = json!("n1");
    squatter["ip"] = json!(stolen.to_string());
    squatter["mac"] = json!("02:00:00:00:66:66");
    squatter["containerId"] = json!("squatter");
    let mut as_n2 = squatter.clone();
    as_n2["node"] = json!("n2");

    for (i, caller) in attackers.iter().enumerate() {
        let anonymous = i == 0;
        // What an authorization refusal is for this caller.
        let (no, why) = if anonymous {
            (401, "Unauthenticated")
        } else {
            (403, "Forbidden")
        };
        let put = |path: &str, body: &Value| curl(&netns, caller, "PUT", path, Some(body));
        let del = |path: &str| curl(&netns, caller, "DELETE", path, None);

        let got = put("/v1/policies/NetworkPolicy/blue/deny-all", &deny_all);
        assert_refused("a deny-all NetworkPolicy", caller, &got, no, why);
        let got = put("/v1/policies/AdminNetworkPolicy/allow-all", &allow_all);
        assert_refused(
            "an allow-all AdminNetworkPolicy at priority 0",
            caller,
            &got,
            no,
            why,
        );
        let got = put("/v1/nodes/n2", &moved_n2);
        assert_refused(
            "PUT /v1/nodes/n2 with another underlayIp",
            caller,
            &got,
            no,
            why,
        );
        let got = put(&format!("/v1/endpoints/{squatter_name}"), &as_n2);
        assert_refused("an endpoint of n2 in n2's block", caller, &got, no, why);
        let got = del(&format!("/v1/endpoints/{endpoint_name}"));
        assert_refused("deleting n2's endpoint", caller, &got, no, why);
        let got = del(&format!("/v1/blocks/{block_key}?node=n2"));
        assert_refused("releasing n2's block", caller, &got, no, why);
        // Without naming the holder, a node releases as itself: n2's block is not n1's.
        let got = del(&format!("/v1/blocks/{block_key}"));
        assert_refused("releasing n2's block as oneself", caller, &got, no, why);
        if anonymous {
            let got = put(&format!("/v1/endpoints/{squatter_name}"), &squatter);
            assert_refused("an endpoint in n2's block", caller, &got, 401, why);
            let got = put("/v1/nodes/n1", &n1_as_n2);
            assert_refused(
                "PUT /v1/nodes/n1 with n2's underlayIp",
                caller,
                &got,
                401,
                why,
            );
        } else {
            // n1 may write its own endpoints and Node, but not with what belongs to n2: the
            // ownership rules refuse them, whoever asks.
            let got = put(&format!("/v1/endpoints/{squatter_name}"), &squatter);
            assert_refused(
                "an endpoint of n1 in n2's block",
                caller,
                &got,
                409,
                "Conflict",
            );
            assert!(
                got.1["message"]
                    .as_str()
                    .unwrap()
                    .contains(&stolen.to_string()),
                "{}",
                got.1
            );
            let got = put("/v1/nodes/n1", &n1_as_n2);
            assert_refused(
                "PUT /v1/nodes/n1 with n2's underlayIp",
                caller,
                &got,
                409,
                "Conflict",
            );
        }
    }
    assert_eq!(
        admin_view(&netns, &admin),
        before,
        "the refused requests changed the controller's state"
    );

    // 64 block claims for n1 in one segment: nobody gets none, n1 gets at most two blocks'
    // worth of spare addresses, and the rest are refused with BlockQuota.
    let claim = json!({"segment": segment, "node": "n1"});
    let got = curl(
        &netns,
        &attackers[0],
        "POST",
        "/v1/claim-block",
        Some(&claim),
    );
    assert_refused("a block claim", &attackers[0], &got, 401, "Unauthenticated");
    let mut granted = 0;
    for i in 0..64 {
        let got = curl(
            &netns,
            &attackers[1],
            "POST",
            "/v1/claim-block",
            Some(&claim),
        );
        if got.0 == 201 {
            granted += 1;
            assert!(
                granted <= 2,
                "claim {i} granted: n1 holds {granted} more blocks"
            );
            continue;
        }
        assert_refused(
            "the 64 block claims",
            &attackers[1],
            &got,
            409,
            "BlockQuota",
        );
    }
    assert!(granted <= 2, "{granted} claims granted");
    let after = admin_view(&netns, &admin);
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        if *path == "/v1/blocks" {
            let (was, is) = (items(was), items(is));
            assert!(was.iter().all(|b| is.contains(b)), "a block went: {is:#?}");
            let new: Vec<_> = is.iter().filter(|b| !was.contains(b)).collect();
            assert!(
                new.len() <= 2 && new.iter().all(|b| b["node"] == "n1"),
                "new blocks: {new:#?}"
            );
        } else {
            assert_eq!(was, is, "{path} changed");
        }
    }

    // The cluster still works: a new pod on n2 gets an address no one else has and reaches a
    // pod on n1.
    let c = new_pod_reaches(&mut g, "n2", "c", &a);
    assert!(c.ip != a.ip && c.ip != b.ip && c.ip != stolen, "{}", c.ip);
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

/// Whether the certificate in `pem` expires within `within` (`openssl x509 -checkend`).
fn expires_within(pem: &Path, within: Duration) -> bool {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg(within.as_secs().to_string())
        .arg("-in")
        .arg(pem)
        .output()
        .unwrap();
    !out.status.success()
}

#[test]
#[ignore = "privileged: netns"]
fn an_agent_with_a_skewed_clock_names_the_clock_and_changes_nothing() {
    let mut g = LabGuard::up("e2e-skew", 2, &[]);
    let pki = g.lab.pki.clone().expect("the lab has a PKI");
    let (cert, key) = pki.user(LabUser::Admin);
    let admin = Caller::with_cert("the admin", &pki.ca_cert, &cert, &key);
    let netns = g.node("n1").netns_path.clone();
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    probe::serve_tcp(&a.netns_path, 8080, a.name.clone()).unwrap();
    let n2 = g.node("n2");
    let n2_cert: PathBuf = node_cert_dir(&n2).join("node.crt");

    // 400 days ahead is past every certificate of the lab (its CA and the controller's are
    // issued for a year, n2's own for the controller's node validity); 400 days back is before
    // any was issued.
    let ahead = Duration::from_secs(400 * 86_400);
    for pem in [&pki.ca_cert, &pki.controller_cert, &n2_cert] {
        assert!(
            expires_within(pem, ahead),
            "{} outlives the skew",
            pem.display()
        );
    }
    let before = admin_view(&netns, &admin);

    for skew in ["+400d", "-400d"] {
        g.lab.processes().kill_agent("n2", "TERM").unwrap();
        let pid = g
            .lab
            .processes()
            .start_agent_wrapped("n2", &["faketime", "-f", skew])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !exited(pid) {
            assert!(
                Instant::now() < deadline,
                "the agent with its clock at {skew} keeps running: {}",
                std::fs::read_to_string(&n2.agent_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&n2.agent_log).unwrap();
        // It fails loudly, naming its certificate and the clock, and never says it is ready.
        assert!(log.contains("clock"), "{skew}: {log}");
        assert!(log.contains(&path_str(&n2_cert)), "{skew}: {log}");
        let wording = if skew.starts_with('+') {
            "expired"
        } else {
            "not valid until"
        };
        assert!(log.contains(wording), "{skew}: {log}");
        assert!(!log.contains("node certificate ready"), "{skew}: {log}");
        // Nothing it had is gone: its Node, its endpoint, n1's; nor its certificate.
        assert_eq!(
            admin_view(&netns, &admin),
            before,
            "{skew} changed the cluster"
        );
        assert!(n2_cert.exists());
    }

    // With its clock right again it starts with the certificate it has (no token) and works.
    g.lab.processes().start_agent("n2").unwrap();
    let log = std::fs::read_to_string(&n2.agent_log).unwrap();
    assert!(log.contains("node certificate ready"), "{log}");
    let c = new_pod_reaches(&mut g, "n2", "c", &a);
    assert!(c.ip != b.ip, "{}", c.ip);
}
