//! The CNI protocol against the real binary and agent.

use seam_e2e::{eventually, host_ports, ip_json, LabGuard, TestLab};
use seam_lab::CniCall;
use serde_json::{json, Value};

fn call(g: &LabGuard, command: &str, container: &str, netns: &str) -> CniCall {
    g.lab
        .cni_call(
            &g.node("n1"),
            command,
            container,
            netns,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=t;K8S_POD_NAME=p",
        )
        .unwrap()
}

fn run(g: &LabGuard, c: &CniCall) -> (i32, Value) {
    let out = c.run_in(&g.node("n1").netns_path).unwrap();
    let v = if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out.stdout).unwrap()
    };
    (out.status, v)
}

struct Netns(String);
impl Netns {
    fn new(name: &str) -> Netns {
        let _ = seam_linux::netns::delete(name);
        seam_linux::netns::create(name).unwrap();
        Netns(name.to_string())
    }
    fn path(&self) -> String {
        seam_linux::netns::path_of(&self.0).display().to_string()
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = seam_linux::netns::delete(&self.0);
    }
}

#[test]
#[ignore = "privileged: netns"]
fn add_check_del_gc_follow_the_spec() {
    let g = LabGuard::up("e2e-cni", 1, &[]);
    let ns = Netns::new("e2e-cni-p1");
    let version = run(&g, &call(&g, "VERSION", "", ""));
    assert_eq!(
        version.1["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let add = call(&g, "ADD", "c1", &ns.path());
    let (status, result) = run(&g, &add);
    assert_eq!(status, 0, "{result}");
    assert_eq!(result["cniVersion"], "1.1.0");
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(result["interfaces"][1]["sandbox"], ns.path());
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    // A repeated ADD returns the same address.
    let (status, again) = run(&g, &add);
    assert_eq!(
        (status, again["ips"][0]["address"].as_str()),
        (0, Some(address.as_str()))
    );

    // CHECK passes, then fails with a clear message once the address is removed by hand.
    let mut check = call(&g, "CHECK", "c1", &ns.path());
    check.config["prevResult"] = result.clone();
    assert_eq!(run(&g, &check).0, 0);
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.0, "addr", "del", &address, "dev", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (status, err) = run(&g, &check);
    assert_ne!(status, 0);
    assert!(err["msg"].as_str().unwrap().contains("missing"), "{err}");

    // DEL is idempotent: twice, with an empty netns, for an unknown container.
    let del = call(&g, "DEL", "c1", &ns.path());
    assert_eq!(run(&g, &del).0, 0);
    assert_eq!(run(&g, &del).0, 0);
    assert_eq!(run(&g, &call(&g, "DEL", "c1", "")).0, 0);
    assert_eq!(run(&g, &call(&g, "DEL", "never-added", "")).0, 0);
    eventually("host veth removed after DEL", || {
        host_ports(&g.node("n1")).is_empty()
    });
    eventually("only lo is left in the sandbox", || {
        ip_json(&ns.0, &["link", "show"])
            .as_array()
            .map(|a| a.len())
            == Some(1)
    });

    // GC releases every attachment not listed as valid.
    let nss: Vec<Netns> = (0..3)
        .map(|i| Netns::new(&format!("e2e-cni-gc{i}")))
        .collect();
    for (i, n) in nss.iter().enumerate() {
        assert_eq!(run(&g, &call(&g, "ADD", &format!("gc{i}"), &n.path())).0, 0);
    }
    let mut gc = call(&g, "GC", "", "");
    gc.config["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    assert_eq!(run(&g, &gc).0, 0, "{:?}", run(&g, &gc));
    eventually("GC removed the two stale veths", || {
        host_ports(&g.node("n1")).len() == 1
    });
    eventually("GC emptied the stale sandbox", || {
        ip_json(&nss[0].0, &["link", "show"])
            .as_array()
            .map(|a| a.len())
            == Some(1)
    });
    assert_eq!(
        ip_json(&nss[1].0, &["link", "show"])
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );
}

#[test]
#[ignore = "privileged: netns"]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let g = LabGuard::up("e2e-badin", 1, &[]);
    let ns = Netns::new("e2e-badin-p");
    let mut cases: Vec<(&str, CniCall, u64)> = Vec::new();
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.config = json!("{not json");
    cases.push(("config that is a JSON string", c, 7));
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.config["cniVersion"] = json!("9.9.9");
    cases.push(("unknown cniVersion", c, 1));
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.config["bridge"] = json!("br0");
    cases.push(("unknown field", c, 7));
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.ifname = "a-very-long-ifname0".into();
    cases.push(("too-long CNI_IFNAME", c, 4));
    cases.push(("missing CNI_NETNS", call(&g, "ADD", "b1", ""), 4));
    cases.push((
        "nonexistent CNI_NETNS",
        call(&g, "ADD", "b1", "/run/netns/does-not-exist"),
        4,
    ));
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.config["segment"] = json!("no-such-segment");
    cases.push(("segment that does not exist", c, 7));
    for (what, c, code) in cases {
        let (status, err) = run(&g, &c);
        assert_ne!(status, 0, "{what}");
        assert_eq!(err["code"], code, "{what}: {err}");
        assert!(
            !err["msg"].as_str().unwrap_or_default().is_empty(),
            "{what}: {err}"
        );
        assert!(host_ports(&g.node("n1")).is_empty(), "{what} left a veth");
    }
    // Invalid JSON on stdin, exactly as a broken runtime would send it.
    let mut c = call(&g, "ADD", "b1", &ns.path());
    c.config = Value::Null;
    let out = seam_linux::netns::run_in(&g.node("n1").netns_path, || {
        use std::io::Write;
        let mut child = std::process::Command::new(&c.plugin)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "b1")
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"cniVersion\": ")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 6, "{err}");
    assert!(host_ports(&g.node("n1")).is_empty());
    assert_eq!(
        ip_json(&ns.0, &["link", "show"])
            .as_array()
            .map(|a| a.len()),
        Some(1),
        "sandbox untouched"
    );
    // And the agent still serves a good ADD afterwards.
    assert_eq!(run(&g, &call(&g, "ADD", "b1", &ns.path())).0, 0);
}

#[test]
#[ignore = "privileged: netns"]
fn an_exhausted_segment_fails_add_cleanly() {
    // Segments of 16 addresses in blocks of 8: 13 usable (network, broadcast and gateway excluded).
    let g = LabGuard::up(
        "e2e-exhaust",
        1,
        &[
            "--pool",
            "10.250.0.0/24",
            "--segment-prefix",
            "28",
            "--block-prefix",
            "29",
        ],
    );
    let nss: Vec<Netns> = (0..14)
        .map(|i| Netns::new(&format!("e2e-exh-{i}")))
        .collect();
    let mut ips = Vec::new();
    for (i, n) in nss.iter().enumerate().take(13) {
        let (status, r) = run(&g, &call(&g, "ADD", &format!("x{i}"), &n.path()));
        assert_eq!(status, 0, "ADD {i}: {r}");
        ips.push(r["ips"][0]["address"].as_str().unwrap().to_string());
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 13);
    let (status, err) = run(&g, &call(&g, "ADD", "x13", &nss[13].path()));
    assert_ne!(status, 0);
    assert_eq!(err["code"], 11, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("block"), "{err}");
    assert_eq!(
        host_ports(&g.node("n1")).len(),
        13,
        "the failed ADD left no veth"
    );
    assert_eq!(
        ip_json(&nss[13].0, &["link", "show"])
            .as_array()
            .map(|a| a.len()),
        Some(1)
    );
}

#[test]
#[ignore = "privileged: netns"]
fn status_is_50_and_add_fails_cleanly_while_the_agent_is_down() {
    let mut g = LabGuard::up("e2e-down", 1, &[]);
    let ns = Netns::new("e2e-down-p");
    g.lab.processes().kill_agent("n1", "KILL").unwrap();
    let (status, err) = run(&g, &call(&g, "STATUS", "", ""));
    assert_ne!(status, 0);
    assert_eq!(err["code"], 50, "{err}");
    let (status, err) = run(&g, &call(&g, "ADD", "d1", &ns.path()));
    assert_ne!(status, 0);
    assert_eq!(err["code"], 11, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("not reachable"),
        "{err}"
    );
    assert!(host_ports(&g.node("n1")).is_empty());
    g.lab.processes().start_agent("n1").unwrap();
    assert_eq!(run(&g, &call(&g, "STATUS", "", "")).0, 0);
    assert_eq!(run(&g, &call(&g, "ADD", "d1", &ns.path())).0, 0);
}
