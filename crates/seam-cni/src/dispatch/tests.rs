use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use seam_model::agent_rpc::AgentError;

use super::*;
use crate::error::code;

/// Records requests and answers each with the queued reply.
struct FakeAgent {
    requests: RefCell<Vec<AgentRequest>>,
    reply: fn() -> Result<AgentReply>,
}

impl FakeAgent {
    fn new(reply: fn() -> Result<AgentReply>) -> Self {
        FakeAgent {
            requests: RefCell::new(Vec::new()),
            reply,
        }
    }
}

impl AgentTransport for FakeAgent {
    fn call(&self, _: &Path, _: Duration, request: &AgentRequest) -> Result<AgentReply> {
        self.requests.borrow_mut().push(request.clone());
        (self.reply)()
    }
}

fn attached_reply() -> Result<AgentReply> {
    Ok(AgentReply::Attached(AttachResult {
        host_ifname: "seamabc".into(),
        host_mac: "0a:58:0a:01:00:01"
            .parse()
            .map_err(|_| Error::AgentNoReply { path: "/".into() })?,
        container_ifname: "eth0".into(),
        container_mac: "0a:58:0a:01:00:05"
            .parse()
            .map_err(|_| Error::AgentNoReply { path: "/".into() })?,
        sandbox: "/".into(),
        address: "10.1.0.5/24"
            .parse()
            .map_err(|_| Error::AgentNoReply { path: "/".into() })?,
        gateway: std::net::Ipv4Addr::new(10, 1, 0, 1),
        mtu: 1450,
        segment: "web".into(),
    }))
}

fn done_reply() -> Result<AgentReply> {
    Ok(AgentReply::Done)
}

fn down() -> Result<AgentReply> {
    Err(Error::AgentUnreachable {
        path: "/run/seam/seamd.sock".into(),
        source: io::Error::from(io::ErrorKind::ConnectionRefused),
    })
}

fn env(command: &str) -> EnvVars {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(version: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"seam","type":"seam-cni","labels":{{"a":"b"}}}}"#)
}

fn error_code(outcome: &Outcome) -> u32 {
    assert_eq!(outcome.exit_code, 1, "{outcome:?}");
    let v: Value = serde_json::from_str(&outcome.stdout).unwrap();
    u32::try_from(v["code"].as_u64().unwrap()).unwrap()
}

#[test]
fn add_sends_the_attachment_and_prints_the_result() {
    let agent = FakeAgent::new(attached_reply);
    let out = run_with(&env("ADD"), config("1.1.0").as_bytes(), &agent);
    assert_eq!(out.exit_code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["ips"][0]["address"], "10.1.0.5/24");
    let requests = agent.requests.borrow();
    assert_eq!(
        requests.as_slice(),
        [AgentRequest {
            protocol: PROTOCOL_VERSION,
            op: AgentOp::Add(Attachment {
                network: "seam".into(),
                key: AttachmentKey {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                netns: "/".into(),
                namespace: "shop".into(),
                pod_name: Some("web-0".into()),
                segment: None,
                labels: [("a".to_string(), "b".to_string())].into_iter().collect(),
                ports: Vec::new(),
            }),
        }]
    );
}

#[test]
fn agent_errors_pass_through() {
    let agent = FakeAgent::new(|| {
        Ok(AgentReply::Error(AgentError {
            code: 105,
            msg: "segment web is full".into(),
            details: "block 10.1.0.0/24 exhausted".into(),
        }))
    });
    let out = run_with(&env("ADD"), config("1.0.0").as_bytes(), &agent);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({"cniVersion":"1.0.0","code":105,"msg":"segment web is full","details":"block 10.1.0.0/24 exhausted"})
    );
    assert_eq!(out.exit_code, 1);
}

#[test]
fn agent_down_is_11_for_add_and_del_and_50_for_status() {
    let agent = FakeAgent::new(down);
    assert_eq!(
        error_code(&run_with(&env("ADD"), config("1.1.0").as_bytes(), &agent)),
        11
    );
    assert_eq!(
        error_code(&run_with(&env("DEL"), config("1.1.0").as_bytes(), &agent)),
        11
    );
    assert_eq!(
        error_code(&run_with(
            &env("STATUS"),
            config("1.1.0").as_bytes(),
            &agent
        )),
        50
    );
}

#[test]
fn unexpected_reply_is_internal() {
    let agent = FakeAgent::new(done_reply);
    assert_eq!(
        error_code(&run_with(&env("ADD"), config("1.1.0").as_bytes(), &agent)),
        999
    );
}

#[test]
fn version_gates() {
    let agent = FakeAgent::new(done_reply);
    for (command, version) in [("GC", "1.0.0"), ("STATUS", "0.4.0"), ("CHECK", "0.3.1")] {
        let out = run_with(&env(command), config(version).as_bytes(), &agent);
        assert_eq!(error_code(&out), 1, "{command} {version}");
        assert!(
            out.stdout.contains(&format!(
                "{command} is not supported for cniVersion {version}"
            )),
            "{}",
            out.stdout
        );
    }
    assert!(agent.requests.borrow().is_empty());
}

#[test]
fn check_needs_prev_result_and_compares_it() {
    let agent = FakeAgent::new(attached_reply);
    let out = run_with(&env("CHECK"), config("1.0.0").as_bytes(), &agent);
    assert_eq!(error_code(&out), 7);
    assert!(out.stdout.contains("prevResult"), "{}", out.stdout);

    let prev = |addr: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"seam","type":"seam-cni","prevResult":{{"interfaces":[{{"name":"eth0","sandbox":"/"}}],"ips":[{{"address":"{addr}","interface":0}}]}}}}"#
        )
    };
    let ok = run_with(&env("CHECK"), prev("10.1.0.5/24").as_bytes(), &agent);
    assert_eq!(
        ok,
        Outcome {
            stdout: String::new(),
            exit_code: 0,
            log: vec![]
        }
    );
    let bad = run_with(&env("CHECK"), prev("10.1.0.6/24").as_bytes(), &agent);
    assert_eq!(error_code(&bad), 7);
    assert!(
        bad.stdout.contains("holds address 10.1.0.5/24"),
        "{}",
        bad.stdout
    );
}

#[test]
fn gc_requires_and_sends_valid_attachments() {
    let agent = FakeAgent::new(done_reply);
    let out = run_with(&env("GC"), config("1.1.0").as_bytes(), &agent);
    assert_eq!(error_code(&out), 7);
    let gc = r#"{"cniVersion":"1.1.0","name":"seam","type":"seam-cni","cni.dev/valid-attachments":[{"containerID":"c9","ifname":"eth0"}]}"#;
    let out = run_with(&env("GC"), gc.as_bytes(), &agent);
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(
        agent.requests.borrow().last().map(|r| r.op.clone()),
        Some(AgentOp::Gc {
            network: "seam".into(),
            valid: vec![AttachmentKey {
                container_id: "c9".into(),
                ifname: "eth0".into()
            }]
        })
    );
}

#[test]
fn disable_flags_skip_the_agent() {
    let agent = FakeAgent::new(down);
    let gc = r#"{"cniVersion":"1.1.0","name":"seam","type":"seam-cni","disableGC":true}"#;
    assert_eq!(run_with(&env("GC"), gc.as_bytes(), &agent).exit_code, 0);
    let check = r#"{"cniVersion":"1.1.0","name":"seam","type":"seam-cni","disableCheck":true,"prevResult":{}}"#;
    assert_eq!(
        run_with(&env("CHECK"), check.as_bytes(), &agent).exit_code,
        0
    );
    assert!(agent.requests.borrow().is_empty());
}

#[test]
fn version_echoes_a_supported_config_version() {
    let agent = FakeAgent::new(down);
    let mut vars = EnvVars::new();
    vars.insert("CNI_COMMAND".into(), "VERSION".into());
    let v = |stdin: &str| -> Value {
        serde_json::from_str(&run_with(&vars, stdin.as_bytes(), &agent).stdout).unwrap()
    };
    let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    assert_eq!(
        v(r#"{"cniVersion":"0.4.0"}"#),
        json!({"cniVersion":"0.4.0","supportedVersions":all})
    );
    assert_eq!(v(r#"{"cniVersion":"7.0.0"}"#)["cniVersion"], "1.1.0");
    assert_eq!(v("")["cniVersion"], "1.1.0");
}

#[test]
fn errors_use_the_config_version_when_supported() {
    let agent = FakeAgent::new(down);
    let out = run_with(&env("ADD"), br#"{"cniVersion":"0.3.1","bogus":1}"#, &agent);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["code"], 7);
}

#[test]
fn debug_log_only_when_asked() {
    let agent = FakeAgent::new(done_reply);
    let out = run_with(&env("DEL"), config("1.1.0").as_bytes(), &agent);
    assert!(out.log.is_empty());
    let mut vars = env("DEL");
    vars.insert("SEAM_CNI_LOG".into(), "debug".into());
    let out = run_with(&vars, config("1.1.0").as_bytes(), &agent);
    assert!(
        out.log.iter().any(|l| l.contains("calling seam agent")),
        "{:?}",
        out.log
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn run_process_reports_stdin_failures_as_io() {
    let out = run_process(Vec::new(), Err(io::Error::other("boom")));
    assert_eq!(error_code(&out), 5);
}

// ---- fuzzing: never panic, always a success or a well-formed CNI error ----

/// Checks the invariant of every outcome: exit 0 with empty stdout or a JSON object, or exit
/// 1 with an error object whose code is one seam-cni emits (or the fake agent's).
fn assert_well_formed(out: &Outcome, extra_codes: &[u32]) {
    if out.exit_code == 0 {
        if !out.stdout.is_empty() {
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            assert!(v.get("cniVersion").is_some_and(Value::is_string), "{v}");
        }
        return;
    }
    assert_eq!(out.exit_code, 1);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let obj = v.as_object().unwrap();
    let c = u32::try_from(obj["code"].as_u64().unwrap()).unwrap();
    assert!(
        code::ALL.contains(&c) || extra_codes.contains(&c),
        "code {c}: {v}"
    );
    assert!(CniVersion::parse(obj["cniVersion"].as_str().unwrap()).is_some());
    assert!(!obj["msg"].as_str().unwrap().is_empty());
    assert!(obj
        .keys()
        .all(|k| ["cniVersion", "code", "msg", "details"].contains(&k.as_str())));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-z0-9./:-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("1.1.0"),
            Just("0.4.0"),
            Just("0.3.1"),
            Just("seam-cni"),
            Just("10.1.0.5/24"),
            Just("/run/x.sock"),
            Just("eth0")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "cniVersion",
            "name",
            "type",
            "agentSocket",
            "segment",
            "defaultNamespace",
            "dns",
            "labels",
            "capabilities",
            "runtimeConfig",
            "args",
            "prevResult",
            "cni.dev/valid-attachments",
            "disableCheck",
            "disableGC",
            "ipam",
            "interfaces",
            "ips",
            "routes",
            "address",
            "gateway",
            "interface",
            "containerID",
            "ifname",
            "nameservers",
            "version",
            "dst",
            "gw",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z]{1,6}",
    ]
}

/// A valid config with one field replaced by an arbitrary value.
fn arb_mutated_config() -> impl Strategy<Value = Value> {
    (
        arb_key(),
        arb_json(),
        prop::sample::select(vec!["0.3.0", "0.4.0", "1.0.0", "1.1.0"]),
    )
        .prop_map(|(key, value, version)| {
            let mut base = json!({"cniVersion": version, "name": "seam", "type": "seam-cni",
                "cni.dev/valid-attachments": [], "prevResult": {"ips": [{"address": "10.1.0.5/24"}],
                "interfaces": [{"name": "eth0", "sandbox": "/"}]}});
            base[key.as_str()] = value;
            base
        })
}

fn arb_env() -> impl Strategy<Value = EnvVars> {
    let value = prop_oneof![
        ".{0,20}",
        prop::sample::select(vec![
            "ADD",
            "DEL",
            "CHECK",
            "GC",
            "STATUS",
            "VERSION",
            "/",
            "eth0",
            "c1",
            "",
            "K8S_POD_NAME=a;IgnoreUnknown=1",
            "250"
        ])
        .prop_map(str::to_string),
    ];
    let name = prop::sample::select(vec![
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
        "SEAM_CNI_TIMEOUT_MS",
        "SEAM_CNI_LOG",
    ]);
    prop::collection::btree_map(name.prop_map(str::to_string), value, 0..8)
}

fn arb_reply() -> impl Strategy<Value = u8> {
    0u8..5
}

fn reply_for(n: u8) -> fn() -> Result<AgentReply> {
    match n {
        0 => attached_reply,
        1 => done_reply,
        2 => down,
        3 => || {
            Ok(AgentReply::Error(AgentError {
                code: 0,
                msg: String::new(),
                details: String::new(),
            }))
        },
        _ => || {
            Err(Error::AgentTimeout {
                path: "/x".into(),
                timeout_ms: 1,
            })
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = NetConf::parse(&bytes);
    }

    #[test]
    fn parser_never_panics_on_json(v in arb_json()) {
        match NetConf::from_value(&v) {
            Ok(_) => {}
            Err(e) => prop_assert!([1, 7].contains(&e.code()), "{e}"),
        }
    }

    #[test]
    fn run_is_well_formed_on_arbitrary_bytes(
        vars in arb_env(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        reply in arb_reply(),
    ) {
        let out = run_with(&vars, &bytes, &FakeAgent::new(reply_for(reply)));
        assert_well_formed(&out, &[]);
    }

    #[test]
    fn run_is_well_formed_on_mutated_configs(
        vars in arb_env(),
        config in arb_mutated_config(),
        reply in arb_reply(),
    ) {
        let stdin = serde_json::to_vec(&config).unwrap_or_default();
        let out = run_with(&vars, &stdin, &FakeAgent::new(reply_for(reply)));
        assert_well_formed(&out, &[]);
    }

    #[test]
    fn run_with_real_env_shape_is_well_formed(
        command in prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS"]),
        config in arb_mutated_config(),
        reply in arb_reply(),
    ) {
        let stdin = serde_json::to_vec(&config).unwrap_or_default();
        let out = run_with(&env(command), &stdin, &FakeAgent::new(reply_for(reply)));
        assert_well_formed(&out, &[]);
    }

    #[test]
    fn run_over_a_missing_socket_is_well_formed(vars in arb_env(), config in arb_mutated_config()) {
        let mut config = config;
        if config.is_object() {
            config["agentSocket"] = json!("/nonexistent/seam-cni-test.sock");
        }
        let stdin = serde_json::to_vec(&config).unwrap_or_default();
        assert_well_formed(&run(&vars, &stdin), &[]);
    }
}
