use super::*;

const MINIMAL: &str = r#"{"cniVersion":"1.1.0","name":"seam","type":"seam-cni"}"#;

/// Parses `input` and returns the CNI code plus the message, or panics if it parsed.
fn rejects(input: &str) -> (u32, String) {
    match NetConf::parse(input.as_bytes()) {
        Ok(conf) => panic!("{input} was accepted: {conf:?}"),
        Err(e) => (e.code(), e.message()),
    }
}

/// Parses `input` with the field `key` set to the JSON `value` added to a minimal config.
fn with_field(key: &str, value: &str) -> String {
    format!(r#"{{"cniVersion":"1.1.0","name":"seam","type":"seam-cni",{key:?}:{value}}}"#)
}

#[test]
fn minimal_config_gets_defaults() {
    let conf = NetConf::parse(MINIMAL.as_bytes()).unwrap();
    assert_eq!(conf.cni_version, CniVersion::V1_1_0);
    assert_eq!(conf.name, "seam");
    assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
    assert_eq!(conf.default_namespace, "default");
    assert_eq!(conf.segment, None);
    assert_eq!(conf.dns, None);
    assert!(conf.labels.is_empty());
    assert!(conf.ports.is_empty());
    assert!(conf.prev_result.is_none());
    assert!(conf.valid_attachments.is_none());
    assert!(!conf.disable_check && !conf.disable_gc);
}

#[test]
fn full_config_is_accepted() {
    let input = r#"{
        "cniVersion": "0.4.0", "name": "pods.v1", "type": "seam-cni",
        "agentSocket": "/tmp/seamd.sock", "segment": "web", "defaultNamespace": "apps",
        "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                "search": ["svc.cluster.local"], "options": ["ndots:5"]},
        "labels": {"tier": "web"},
        "ports": [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"},
                  {"name": "dns", "port": 53, "protocol": "UDP"},
                  {"name": "sig", "port": 65535, "protocol": "SCTP"}],
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": []},
        "args": {"cni": {"x": 1}},
        "prevResult": {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                       "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 0}]},
        "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}],
        "disableCheck": true, "disableGC": false
    }"#;
    let conf = NetConf::parse(input.as_bytes()).unwrap();
    assert_eq!(conf.cni_version, CniVersion::V0_4_0);
    assert_eq!(conf.agent_socket, PathBuf::from("/tmp/seamd.sock"));
    assert_eq!(conf.segment.as_deref(), Some("web"));
    assert_eq!(conf.default_namespace, "apps");
    let dns = conf.dns.unwrap();
    assert_eq!(dns.nameservers, vec!["10.96.0.10"]);
    assert_eq!(dns.domain.as_deref(), Some("cluster.local"));
    assert_eq!(conf.labels.get("tier").map(String::as_str), Some("web"));
    let ports: Vec<(&str, u16, &str)> = conf
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("serve-80-tcp", 80, "TCP"),
            ("dns", 53, "UDP"),
            ("sig", 65535, "SCTP")
        ]
    );
    assert_eq!(conf.capabilities.get("portMappings"), Some(&true));
    let prev = conf.prev_result.unwrap();
    assert_eq!(prev.interfaces[0].name, "eth0");
    assert_eq!(prev.ips[0].address.to_string(), "10.1.0.5/24");
    assert_eq!(
        conf.valid_attachments.unwrap(),
        vec![AttachmentKey {
            container_id: "abc".into(),
            ifname: "eth0".into()
        }]
    );
    assert!(conf.disable_check);
}

#[test]
fn rejection_cases() {
    let cases: Vec<(String, u32, &str)> = vec![
        ("".into(), 6, "not valid JSON: EOF while parsing"),
        ("{".into(), 6, "not valid JSON"),
        ("\u{1}".into(), 6, "not valid JSON"),
        ("[1]".into(), 7, "the config has the wrong type: expected a JSON object, found an array"),
        (
            r#"{"cniVersion":"9.9.9","name":"seam","type":"seam-cni"}"#.into(),
            1,
            "cniVersion \"9.9.9\" is not supported; supported versions are 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
        ),
        (
            r#"{"name":"seam","type":"seam-cni"}"#.into(),
            7,
            "field `cniVersion` is required",
        ),
        (
            r#"{"cniVersion":1,"name":"seam","type":"seam-cni"}"#.into(),
            7,
            "field `cniVersion` has the wrong type: expected a string, found a number",
        ),
        (
            r#"{"cniVersion":"1.1.0","type":"seam-cni"}"#.into(),
            7,
            "field `name` is required",
        ),
        (
            r#"{"cniVersion":"1.1.0","name":"-x","type":"seam-cni"}"#.into(),
            7,
            "\"-x\" is not a valid network name",
        ),
        (
            r#"{"cniVersion":"1.1.0","name":"seam","type":"bridge"}"#.into(),
            7,
            "field `type` must be \"seam-cni\", found \"bridge\"",
        ),
        (
            with_field("ipam", r#"{"type":"host-local"}"#),
            7,
            "field `ipam` is not supported: seam-cni has its own IPAM; remove the ipam section",
        ),
        (
            with_field("segmnet", r#""web""#),
            7,
            "field `segmnet` is not a seam-cni config field",
        ),
        (
            with_field("agentSocket", r#""run/seamd.sock""#),
            7,
            "field `agentSocket` must be an absolute path, found \"run/seamd.sock\"",
        ),
        (with_field("agentSocket", "7"), 7, "field `agentSocket` has the wrong type: expected a string, found a number"),
        (with_field("segment", r#""""#), 7, "field `segment` must not be empty"),
        (with_field("disableGC", r#""yes""#), 7, "field `disableGC` has the wrong type: expected a boolean, found a string"),
        (with_field("labels", r#"{"a":1}"#), 7, "field `labels.a` has the wrong type: expected a string, found a number"),
        (with_field("labels", "[]"), 7, "field `labels` has the wrong type: expected an object, found an array"),
        (with_field("ports", "{}"), 7, "field `ports` has the wrong type: expected an array of objects, found an object"),
        (with_field("ports", "[1]"), 7, "field `ports[0]` has the wrong type: expected an object, found a number"),
        (with_field("ports", r#"[{"name":"http","port":80}]"#), 7, "field `ports[0].protocol` is required"),
        (with_field("ports", r#"[{"name":"http","port":80,"protocol":"tcp"}]"#), 7, "field `ports[0].protocol` \"tcp\" is not a port protocol: use \"TCP\", \"UDP\" or \"SCTP\""),
        (with_field("ports", r#"[{"name":"http","port":0,"protocol":"TCP"}]"#), 7, "field `ports[0].port` 0 is not a port number: use 1 to 65535"),
        (with_field("ports", r#"[{"name":"http","port":65536,"protocol":"TCP"}]"#), 7, "field `ports[0].port` 65536 is not a port number"),
        (with_field("ports", r#"[{"name":"http","port":-1,"protocol":"TCP"}]"#), 7, "field `ports[0].port` -1 is not a port number"),
        (with_field("ports", r#"[{"name":"http","port":"80","protocol":"TCP"}]"#), 7, "field `ports[0].port` has the wrong type: expected a number, found a string"),
        (with_field("ports", r#"[{"name":"serve-80-tcp-long","port":80,"protocol":"TCP"}]"#), 7, "field `ports[0].name` \"serve-80-tcp-long\" is not a valid port name"),
        (with_field("ports", r#"[{"name":"80","port":80,"protocol":"TCP"}]"#), 7, "field `ports[0].name` \"80\" is not a valid port name"),
        (with_field("ports", r#"[{"name":"Web","port":80,"protocol":"TCP"}]"#), 7, "is not a valid port name"),
        (with_field("ports", r#"[{"name":"a--b","port":80,"protocol":"TCP"}]"#), 7, "is not a valid port name"),
        (with_field("ports", r#"[{"name":"web","port":80,"protocol":"TCP"},{"name":"web","port":81,"protocol":"UDP"}]"#), 7, "field `ports[1].name` \"web\" names another port already"),
        (with_field("ports", r#"[{"name":"web","port":80,"protocol":"TCP","hostPort":8080}]"#), 7, "field `ports[0].hostPort` is not a seam-cni config field"),
        (with_field("capabilities", r#"{"portMappings":"yes"}"#), 7, "field `capabilities.portMappings` has the wrong type: expected a boolean"),
        (with_field("runtimeConfig", "null"), 7, "field `runtimeConfig` has the wrong type: expected an object, found null"),
        (with_field("dns", r#"{"nameservers":"8.8.8.8"}"#), 7, "field `dns.nameservers` has the wrong type: expected an array of strings, found a string"),
        (with_field("dns", r#"{"nameservers":["a",2]}"#), 7, "field `dns.nameservers[1]` has the wrong type: expected a string, found a number"),
        (with_field("dns", r#"{"nameserver":[]}"#), 7, "field `dns.nameserver` is not a seam-cni config field"),
        (with_field("prevResult", r#"{"ips":[{"address":"nope"}]}"#), 7, "field `prevResult` is not a CNI result: invalid IP address syntax"),
        (with_field("prevResult", "[]"), 7, "field `prevResult` has the wrong type: expected an object, found an array"),
        (
            with_field("cni.dev/valid-attachments", r#"[{"containerID":"a b","ifname":"eth0"},{"ifname":"x","extra":1}]"#),
            7,
            "field `cni.dev/valid-attachments[0].containerID` \"a b\" is not a valid container id: use only letters, digits, '_', '.' and '-'; field `cni.dev/valid-attachments[1].extra` is not a seam-cni config field; remove it or fix its spelling; field `cni.dev/valid-attachments[1].containerID` is required",
        ),
        (
            with_field("cni.dev/valid-attachments", r#"[{"containerID":"a","ifname":"0123456789abcdef"}]"#),
            7,
            "field `cni.dev/valid-attachments[0].ifname` \"0123456789abcdef\" is not a valid interface name",
        ),
    ];
    for (input, code, needle) in cases {
        let (got_code, msg) = rejects(&input);
        assert_eq!(got_code, code, "{input}: {msg}");
        assert!(
            msg.contains(needle),
            "{input}:\n  got  {msg}\n  want {needle}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let input = r#"{"cniVersion":"1.0.0","type":"x","ipam":{},"foo":1,"labels":{"a":true}}"#;
    let Err(Error::InvalidConfig(problems)) = NetConf::parse(input.as_bytes()) else {
        panic!("expected an invalid config");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["name", "type", "foo", "ipam", "labels.a"]);
}

#[test]
fn requested_version_reads_only_supported_versions() {
    let v = |s: &str| requested_version(&serde_json::from_str(s).unwrap());
    assert_eq!(v(r#"{"cniVersion":"0.3.1"}"#), Some(CniVersion::V0_3_1));
    assert_eq!(v(r#"{"cniVersion":"2.0.0"}"#), None);
    assert_eq!(v(r#"{"cniVersion":1}"#), None);
    assert_eq!(v("[]"), None);
}
