//! Black-box tests of the `seam-cni` binary, run exactly as a container runtime runs it: env
//! vars plus the network config on stdin, against a fake agent on a Unix socket in a temp dir.
//! No root needed.

// Test helpers outside `#[test]` functions: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_agent;

use std::io::Write;
use std::process::{Command, Stdio};

use fake_agent::FakeAgent;
use seam_model::agent_rpc::{
    AgentError, AgentOp, AgentReply, AgentRequest, AttachResult, Attachment, AttachmentId,
    AttachmentKey, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

/// What the binary printed and how it exited.
struct Run {
    stdout: String,
    stderr: String,
    status: i32,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs the binary with only `env` in its environment and `stdin` on stdin.
fn seam_cni(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seam-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

fn config(version: &str, agent: &FakeAgent) -> String {
    json!({
        "cniVersion": version,
        "name": "pods",
        "type": "seam-cni",
        "agentSocket": agent.socket_str(),
        "segment": "web",
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        "labels": {"team": "shop"},
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
    .to_string()
}

/// The env of an ADD/DEL/CHECK for container `c1`, with the temp dir as a stand-in netns.
fn attach_env<'a>(command: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1",
        ),
    ]
}

fn attached(sandbox: &str) -> AttachResult {
    AttachResult {
        host_ifname: "seam0c1e0".into(),
        host_mac: "0a:58:0a:01:00:01".parse().unwrap(),
        container_ifname: "eth0".into(),
        container_mac: "0a:58:0a:01:00:05".parse().unwrap(),
        sandbox: sandbox.into(),
        address: "10.1.0.5/24".parse().unwrap(),
        gateway: "10.1.0.1".parse().unwrap(),
        mtu: 1450,
        segment: "web".into(),
    }
}

fn expected_add(netns: &str) -> AgentRequest {
    AgentRequest {
        protocol: PROTOCOL_VERSION,
        op: AgentOp::Add(Attachment {
            network: "pods".into(),
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: netns.into(),
            namespace: "shop".into(),
            pod_name: Some("web-0".into()),
            segment: Some("web".into()),
            labels: [("team".to_string(), "shop".to_string())].into(),
            ports: vec![seam_model::ContainerPort {
                name: "http".into(),
                port: 8080,
                protocol: seam_model::PortProtocol::Tcp,
            }],
        }),
    }
}

#[test]
fn version_lists_supported_versions() {
    let run = seam_cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(run.status, 0);
    assert_eq!(
        run.json(),
        json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
}

#[test]
fn add_1_1_0_prints_the_result_with_mtu() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve(AgentReply::Attached(attached(&netns)));
    let run = seam_cni(&attach_env("ADD", &netns), &config("1.1.0", &agent));
    assert_eq!(run.status, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(server.request(), expected_add(&netns));
    assert_eq!(
        run.json(),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "seam0c1e0", "mac": "0a:58:0a:01:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:01:00:05", "mtu": 1450, "sandbox": netns}
            ],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    );
    assert!(
        run.stderr.is_empty(),
        "no log unless SEAM_CNI_LOG=debug: {}",
        run.stderr
    );
}

#[test]
fn add_1_0_0_prints_the_result_without_mtu() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve(AgentReply::Attached(attached(&netns)));
    let run = seam_cni(&attach_env("ADD", &netns), &config("1.0.0", &agent));
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(server.request(), expected_add(&netns));
    let v = run.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["interfaces"][1],
        json!({"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": netns})
    );
    assert_eq!(
        v["ips"],
        json!([{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}])
    );
}

#[test]
fn add_0_4_0_prints_ip_versions() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve(AgentReply::Attached(attached(&netns)));
    let run = seam_cni(&attach_env("ADD", &netns), &config("0.4.0", &agent));
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(server.request(), expected_add(&netns));
    let v = run.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["ips"],
        json!([{"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}])
    );
    assert_eq!(v["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]));
}

#[test]
fn agent_errors_pass_through_with_nonzero_exit() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve(AgentReply::Error(AgentError {
        code: 11,
        msg: "no address block for this node yet".into(),
        details: "controller has not assigned a block to node n1".into(),
    }));
    let run = seam_cni(&attach_env("ADD", &netns), &config("1.1.0", &agent));
    assert_ne!(run.status, 0);
    server.request();
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.1.0", "code": 11, "msg": "no address block for this node yet",
               "details": "controller has not assigned a block to node n1"})
    );
}

#[test]
fn agent_down_is_try_again_for_add_and_not_available_for_status() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    // Nothing listens: the socket path does not exist.
    let conf = json!({"cniVersion": "1.1.0", "name": "pods", "type": "seam-cni",
                      "agentSocket": format!("{netns}/missing.sock")})
    .to_string();

    let add = seam_cni(&attach_env("ADD", &netns), &conf);
    assert_ne!(add.status, 0);
    let v = add.json();
    assert_eq!(v["code"], 11);
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "seam agent is not reachable at {netns}/missing.sock: "
        )),
        "{msg}"
    );

    let status = seam_cni(&[("CNI_COMMAND", "STATUS")], &conf);
    assert_ne!(status.status, 0);
    assert_eq!(status.json()["code"], 50);

    let del = seam_cni(&attach_env("DEL", ""), &conf);
    assert_ne!(del.status, 0);
    assert_eq!(del.json()["code"], 11);
}

#[test]
fn del_succeeds_silently_even_without_netns() {
    let agent = FakeAgent::start();
    let server = agent.serve(AgentReply::Done);
    let run = seam_cni(&attach_env("DEL", ""), &config("1.1.0", &agent));
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(run.stdout, "");
    assert_eq!(
        server.request(),
        AgentRequest {
            protocol: PROTOCOL_VERSION,
            op: AgentOp::Del(AttachmentId {
                network: "pods".into(),
                key: AttachmentKey {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                netns: String::new(),
            }),
        }
    );
}

#[test]
fn check_succeeds_when_prev_result_matches() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve(AgentReply::Attached(attached(&netns)));
    let conf = json!({"cniVersion": "1.0.0", "name": "pods", "type": "seam-cni",
        "agentSocket": agent.socket_str(),
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "seam0c1e0"}, {"name": "eth0", "sandbox": netns}],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}]}})
    .to_string();
    let run = seam_cni(&attach_env("CHECK", &netns), &conf);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(run.stdout, "");
    assert!(matches!(server.request().op, AgentOp::Check(_)));
}

#[test]
fn gc_sends_the_valid_attachments() {
    let agent = FakeAgent::start();
    let server = agent.serve(AgentReply::Done);
    let conf = json!({"cniVersion": "1.1.0", "name": "pods", "type": "seam-cni",
    "agentSocket": agent.socket_str(),
    "cni.dev/valid-attachments": [
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c2", "ifname": "net1"}
    ]})
    .to_string();
    let run = seam_cni(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf,
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(run.stdout, "");
    assert_eq!(
        server.request().op,
        AgentOp::Gc {
            network: "pods".into(),
            valid: vec![
                AttachmentKey {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                AttachmentKey {
                    container_id: "c2".into(),
                    ifname: "net1".into()
                },
            ],
        }
    );
}

#[test]
fn status_succeeds_when_the_agent_is_ready() {
    let agent = FakeAgent::start();
    let server = agent.serve(AgentReply::Done);
    let run = seam_cni(&[("CNI_COMMAND", "STATUS")], &config("1.1.0", &agent));
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(
        server.request().op,
        AgentOp::Status {
            network: "pods".into()
        }
    );
}

#[test]
fn unknown_field_is_rejected_before_the_agent_is_called() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let mut conf: Value = serde_json::from_str(&config("1.1.0", &agent)).unwrap();
    conf["segmnet"] = json!("db");
    let run = seam_cni(&attach_env("ADD", &netns), &conf.to_string());
    assert_ne!(run.status, 0);
    let v = run.json();
    assert_eq!(v["code"], 7);
    assert!(v["msg"].as_str().unwrap().contains("`segmnet`"), "{v}");
    assert!(agent.no_connection(), "the agent must not be called");
}

#[test]
fn a_config_over_1_mib_is_a_permanent_error_before_the_agent_is_called() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let mut conf: Value = serde_json::from_str(&config("1.1.0", &agent)).unwrap();
    // Valid labels, 1.3 MiB of them: before, the agent stopped reading at 1 MiB, the plug-in's
    // write broke and the runtime was told to try again (11) for ever.
    let labels: serde_json::Map<String, Value> = (0..20_000)
        .map(|i| (format!("k{i}"), json!("v".repeat(60))))
        .collect();
    conf["labels"] = Value::Object(labels);
    let stdin = conf.to_string();
    assert!(stdin.len() > 1 << 20);
    let run = seam_cni(&attach_env("ADD", &netns), &stdin);
    assert_ne!(run.status, 0);
    let v = run.json();
    assert_eq!(v["code"], 7, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("at most 1048576"),
        "{v}"
    );
    assert!(agent.no_connection(), "the agent must not be called");
}

#[test]
fn ipam_section_is_rejected() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let mut conf: Value = serde_json::from_str(&config("1.1.0", &agent)).unwrap();
    conf["ipam"] = json!({"type": "host-local"});
    let run = seam_cni(&attach_env("ADD", &netns), &conf.to_string());
    assert_eq!(run.json()["code"], 7);
    assert!(run
        .stdout
        .contains("seam-cni has its own IPAM; remove the ipam section"));
    assert!(agent.no_connection());
}

#[test]
fn invalid_environment_is_code_4_and_names_the_variable() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let mut env = attach_env("ADD", &netns);
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", "eth0-much-too-long"));
    let run = seam_cni(&env, &config("1.1.0", &agent));
    assert_ne!(run.status, 0);
    let v = run.json();
    assert_eq!(v["code"], 4);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("CNI_IFNAME=\"eth0-much-too-long\""),
        "{v}"
    );
    assert!(agent.no_connection());
}

#[test]
fn non_utf8_environment_and_garbage_stdin_do_not_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_seam-cni"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_IFNAME", OsStr::from_bytes(b"eth\xff"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 4);

    let run = seam_cni(&[("CNI_COMMAND", "ADD")], "\u{0}\u{7f}{{{");
    assert_eq!(run.status, 1);
    assert_eq!(run.json()["code"], 6);
}

#[test]
fn debug_log_goes_to_stderr_only() {
    let agent = FakeAgent::start();
    let server = agent.serve(AgentReply::Done);
    let mut env = attach_env("DEL", "");
    env.push(("SEAM_CNI_LOG", "debug"));
    let run = seam_cni(&env, &config("1.1.0", &agent));
    server.request();
    assert_eq!(run.status, 0);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("calling seam agent"), "{}", run.stderr);
}

#[test]
fn silent_agent_times_out_with_try_again_and_status_not_available() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve_raw(None);
    let mut env = attach_env("ADD", &netns);
    env.push(("SEAM_CNI_TIMEOUT_MS", "200"));
    let run = seam_cni(&env, &config("1.1.0", &agent));
    assert_ne!(run.status, 0);
    let v = run.json();
    assert_eq!(v["code"], 11);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("did not answer within 200 ms"),
        "{v}"
    );
    server.request();

    let server = agent.serve_raw(None);
    let run = seam_cni(
        &[("CNI_COMMAND", "STATUS"), ("SEAM_CNI_TIMEOUT_MS", "200")],
        &config("1.1.0", &agent),
    );
    let v = run.json();
    assert_eq!(v["code"], 50);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .starts_with("seam-cni is not available: seam agent at "),
        "{v}"
    );
    server.request();
}

#[test]
fn garbage_reply_is_internal_error() {
    let agent = FakeAgent::start();
    let netns = agent.dir_str();
    let server = agent.serve_raw(Some("{\"attached\":42}\n".into()));
    let run = seam_cni(&attach_env("ADD", &netns), &config("1.1.0", &agent));
    assert_ne!(run.status, 0);
    let v = run.json();
    assert_eq!(v["code"], 999);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("sent an unreadable reply"),
        "{v}"
    );
    server.request();
}
