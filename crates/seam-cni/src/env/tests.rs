use super::*;

fn vars(pairs: &[(&str, &str)]) -> EnvVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `attachment_env` and returns the problems as (variable, problem) pairs.
fn problems(command: Command, pairs: &[(&str, &str)]) -> Vec<(&'static str, EnvProblem)> {
    match attachment_env(command, &vars(pairs)) {
        Ok(_) => Vec::new(),
        Err(Error::InvalidEnv(errors)) => errors.into_iter().map(|e| (e.name, e.problem)).collect(),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

const GOOD: [(&str, &str); 3] = [
    (CNI_CONTAINERID, "abc_1.2-3"),
    (CNI_NETNS, "/"),
    (CNI_IFNAME, "eth0"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<_> = GOOD
        .iter()
        .copied()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    out.extend(overrides.iter().copied().filter(|(_, v)| *v != "<unset>"));
    out
}

#[test]
fn commands_parse_and_unknown_or_missing_is_code_4() {
    for (raw, want) in [
        ("ADD", Command::Add),
        ("DEL", Command::Del),
        ("CHECK", Command::Check),
        ("GC", Command::Gc),
        ("STATUS", Command::Status),
        ("VERSION", Command::Version),
    ] {
        assert_eq!(command(&vars(&[(CNI_COMMAND, raw)])).unwrap(), want);
    }
    for bad in [vec![(CNI_COMMAND, "add")], vec![(CNI_COMMAND, "")], vec![]] {
        let e = command(&vars(&bad)).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_COMMAND"), "{e}");
    }
}

#[test]
fn good_environment_is_accepted() {
    let env = attachment_env(Command::Add, &vars(&GOOD)).unwrap();
    assert_eq!(env.container_id, "abc_1.2-3");
    assert_eq!(env.ifname, "eth0");
    assert_eq!(env.netns, "/");
    assert_eq!(env.args, CniArgs::default());
}

/// (command, environment, expected problems).
type Case = (
    Command,
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, EnvProblem)>,
);

#[test]
fn environment_cases() {
    use EnvProblem::*;
    let cases: Vec<Case> = vec![
        (
            Command::Add,
            with(&[(CNI_IFNAME, "a23456789012345")]),
            vec![],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "a234567890123456")]),
            vec![(CNI_IFNAME, IfnameTooLong { len: 16 })],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "")]),
            vec![(CNI_IFNAME, Empty)],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "..")]),
            vec![(CNI_IFNAME, IfnameReserved)],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, ".")]),
            vec![(CNI_IFNAME, IfnameReserved)],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "a/b")]),
            vec![(CNI_IFNAME, IfnameChar { ch: '/' })],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "a:b")]),
            vec![(CNI_IFNAME, IfnameChar { ch: ':' })],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "a b")]),
            vec![(CNI_IFNAME, IfnameChar { ch: ' ' })],
        ),
        (
            Command::Add,
            with(&[(CNI_IFNAME, "<unset>")]),
            vec![(CNI_IFNAME, Missing)],
        ),
        (
            Command::Add,
            with(&[(CNI_CONTAINERID, "")]),
            vec![(CNI_CONTAINERID, Empty)],
        ),
        (
            Command::Add,
            with(&[(CNI_CONTAINERID, "a b")]),
            vec![(CNI_CONTAINERID, ContainerIdChar { ch: ' ' })],
        ),
        (
            Command::Del,
            with(&[(CNI_CONTAINERID, "x/y")]),
            vec![(CNI_CONTAINERID, ContainerIdChar { ch: '/' })],
        ),
        (
            Command::Add,
            with(&[(CNI_NETNS, "<unset>")]),
            vec![(CNI_NETNS, Missing)],
        ),
        (
            Command::Add,
            with(&[(CNI_NETNS, "")]),
            vec![(CNI_NETNS, Empty)],
        ),
        (
            Command::Check,
            with(&[(CNI_NETNS, "")]),
            vec![(CNI_NETNS, Empty)],
        ),
        (
            Command::Add,
            with(&[(CNI_NETNS, "var/run/netns/x")]),
            vec![(CNI_NETNS, NetnsNotAbsolute)],
        ),
        (
            Command::Add,
            with(&[(CNI_NETNS, "/nonexistent/seam-cni/netns")]),
            vec![(CNI_NETNS, NetnsNotFound)],
        ),
        // DEL: the namespace may already be gone, or never have been passed.
        (Command::Del, with(&[(CNI_NETNS, "")]), vec![]),
        (Command::Del, with(&[(CNI_NETNS, "<unset>")]), vec![]),
        (
            Command::Del,
            with(&[(CNI_NETNS, "/nonexistent/seam-cni/netns")]),
            vec![],
        ),
        (
            Command::Del,
            with(&[(CNI_NETNS, "relative")]),
            vec![(CNI_NETNS, NetnsNotAbsolute)],
        ),
        // Every problem is reported at once.
        (
            Command::Add,
            vec![(CNI_ARGS, "bogus")],
            vec![
                (CNI_CONTAINERID, Missing),
                (CNI_IFNAME, Missing),
                (CNI_NETNS, Missing),
                (
                    CNI_ARGS,
                    ArgMalformed {
                        entry: "bogus".into(),
                    },
                ),
            ],
        ),
    ];
    for (command, env, want) in cases {
        assert_eq!(problems(command, &env), want, "{command} {env:?}");
    }
}

#[test]
fn env_error_message_names_the_variable_and_value() {
    let e = attachment_env(
        Command::Add,
        &vars(&with(&[(CNI_IFNAME, "a234567890123456")])),
    )
    .unwrap_err();
    assert_eq!(e.code(), 4);
    assert_eq!(
        e.to_string(),
        "invalid environment variables: CNI_IFNAME=\"a234567890123456\": is 16 bytes long; Linux interface names are at most 15 bytes"
    );
}

#[test]
fn cni_args_cases() {
    use EnvProblem::*;
    let ok = |raw: &str| CniArgs::parse(raw).unwrap();
    assert_eq!(ok(""), CniArgs::default());
    let full =
        ok("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c;K8S_POD_UID=u;");
    assert_eq!(full.pod_namespace.as_deref(), Some("ns"));
    assert_eq!(full.pod_name.as_deref(), Some("p"));
    assert_eq!(full.pod_infra_container_id.as_deref(), Some("c"));
    assert_eq!(full.pod_uid.as_deref(), Some("u"));
    // Empty values count as absent, so the config's defaultNamespace applies.
    assert_eq!(ok("K8S_POD_NAMESPACE=").pod_namespace, None);
    // Values may contain '='.
    assert_eq!(ok("K8S_POD_NAME=a=b").pod_name.as_deref(), Some("a=b"));
    // IgnoreUnknown anywhere in the string covers every unknown key.
    assert!(ok("Foo=1;IgnoreUnknown=1").ignore_unknown);
    assert!(ok("IgnoreUnknown=TRUE;Bar=2").ignore_unknown);

    let errs = |raw: &str| -> Vec<EnvProblem> {
        CniArgs::parse(raw)
            .unwrap_err()
            .into_iter()
            .map(|e| {
                assert_eq!(e.name, CNI_ARGS);
                assert_eq!(e.value, raw);
                e.problem
            })
            .collect()
    };
    assert_eq!(errs("Foo=1"), vec![ArgUnknown { key: "Foo".into() }]);
    assert_eq!(
        errs("Foo=1;IgnoreUnknown=0;Bar=2"),
        vec![
            ArgUnknown { key: "Foo".into() },
            ArgUnknown { key: "Bar".into() }
        ]
    );
    assert_eq!(errs("IgnoreUnknown=yes"), vec![ArgBadBool]);
    assert_eq!(errs("=x"), vec![ArgMalformed { entry: "=x".into() }]);
    assert_eq!(
        errs("novalue"),
        vec![ArgMalformed {
            entry: "novalue".into()
        }]
    );
    assert_eq!(
        errs("K8S_POD_NAME=a;K8S_POD_NAME=b"),
        vec![ArgDuplicate {
            key: "K8S_POD_NAME".into()
        }]
    );
}

#[test]
fn timeout_is_validated() {
    assert_eq!(timeout(&vars(&[])).unwrap(), DEFAULT_TIMEOUT);
    assert_eq!(
        timeout(&vars(&[(SEAM_CNI_TIMEOUT_MS, "250")])).unwrap(),
        Duration::from_millis(250)
    );
    for bad in ["0", "-1", "abc", "600001", ""] {
        let e = timeout(&vars(&[(SEAM_CNI_TIMEOUT_MS, bad)])).unwrap_err();
        assert_eq!(e.code(), 4, "{bad}");
    }
}

#[test]
fn non_utf8_cni_variables_are_rejected_and_others_ignored() {
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(vec![b'e', 0xff]);
    let out = collect_os_vars([
        (OsString::from("HOME"), bad.clone()),
        (OsString::from("CNI_COMMAND"), OsString::from("ADD")),
    ])
    .unwrap();
    assert_eq!(out, vars(&[(CNI_COMMAND, "ADD")]));
    let e = collect_os_vars([(OsString::from(CNI_IFNAME), bad)]).unwrap_err();
    assert_eq!(e.code(), 4);
    assert!(e.to_string().contains("CNI_IFNAME"), "{e}");
}
