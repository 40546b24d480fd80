//! Checks of the install manifests in `deploy/`, as someone installing Seam would check them
//! without a cluster (`kubectl` is not available here):
//!
//! - every YAML document parses and names its apiVersion, kind and metadata.name;
//! - the CRDs are structural and closed, cover every Seam kind, and their schemas accept the
//!   examples in `deploy/examples/` and reject broken objects; seam's own parsers (`seam apply`,
//!   seam-policy) agree on every one of them;
//! - the CNI network config the agents install parses with seam-cni's parser and names the
//!   socket seamd listens on;
//! - every flag in the containers' arguments exists in the binary it is given to, with a value
//!   the binary's own parsers accept where those are public (flags are read from the clap
//!   definitions in the binaries' sources: their argument structs are private to `main.rs`,
//!   and `CARGO_BIN_EXE_*` only exists for a package's own binaries; the ignored test at the end
//!   runs the built binaries' `--help` instead);
//! - `deploy/CONFIG.md` lists every flag with its default and every network config field;
//! - nothing needs kube-proxy (issue 12: Seam serves Services): no kube-proxy DaemonSet, no
//!   Service environment variable, the agents' controller endpoints and the controller's store
//!   are node addresses outside the Service range, the adapter reaches the API server at its
//!   node's address, and the README says to create the cluster without kube-proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// Reading deploy/

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// `.yaml` files in `dir`, sorted, optionally with subdirectories.
fn yaml_files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                out.extend(yaml_files(&path, true));
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The documents of a YAML file (empty documents skipped), parsed with serde-saphyr.
fn documents(path: &Path) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// What `kubectl apply -f deploy/` applies: the top-level files, in order.
fn install_set() -> Vec<(PathBuf, Value)> {
    yaml_files(&deploy_dir(), false)
        .into_iter()
        .flat_map(|p| documents(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn object<'s>(set: &'s [(PathBuf, Value)], kind: &str, name: &str) -> &'s Value {
    set.iter()
        .map(|(_, d)| d)
        .find(|d| str_at(d, "/kind") == Some(kind) && str_at(d, "/metadata/name") == Some(name))
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"))
}

fn items<'v>(v: &'v Value, pointer: &str) -> &'v [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn container<'v>(workload: &'v Value, name: &str, init: bool) -> &'v Value {
    let list = if init {
        "/spec/template/spec/initContainers"
    } else {
        "/spec/template/spec/containers"
    };
    items(workload, list)
        .iter()
        .find(|c| str_at(c, "/name") == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn config_data(set: &[(PathBuf, Value)]) -> BTreeMap<String, String> {
    let cm = object(set, "ConfigMap", "seam-config");
    cm["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Every document

#[test]
fn every_yaml_document_parses_and_names_itself() {
    let files = yaml_files(&deploy_dir(), true);
    assert!(
        files.len() >= 9,
        "deploy/ holds too few YAML files: {files:?}"
    );
    for path in &files {
        let docs = documents(path);
        assert!(!docs.is_empty(), "{} has no document", path.display());
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{} document {}", path.display(), i + 1);
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                assert!(
                    str_at(doc, field).is_some_and(|s| !s.is_empty()),
                    "{at}: {field} is missing or not a string"
                );
            }
        }
    }
}

#[test]
fn install_set_is_complete_and_lives_in_seam_system() {
    let set = install_set();
    let mut seen = BTreeSet::new();
    for (path, doc) in &set {
        let key = (
            str_at(doc, "/kind").unwrap_or_default().to_string(),
            str_at(doc, "/metadata/namespace")
                .unwrap_or_default()
                .to_string(),
            str_at(doc, "/metadata/name")
                .unwrap_or_default()
                .to_string(),
        );
        assert!(
            seen.insert(key.clone()),
            "{}: {key:?} twice",
            path.display()
        );
        if let Some(ns) = str_at(doc, "/metadata/namespace") {
            assert_eq!(ns, "seam-system", "{}: {key:?}", path.display());
        }
    }
    for (kind, name) in [
        ("Namespace", "seam-system"),
        ("CustomResourceDefinition", "endpointgroups.seam.dev"),
        ("CustomResourceDefinition", "contracts.seam.dev"),
        ("CustomResourceDefinition", "tenants.seam.dev"),
        ("ServiceAccount", "seam-controller"),
        ("ServiceAccount", "seam-agent"),
        ("ClusterRole", "seam-controller"),
        ("ClusterRoleBinding", "seam-controller"),
        ("ConfigMap", "seam-config"),
        ("Service", "seam-etcd"),
        ("Service", "seam-controller"),
        ("Deployment", "seam-controller"),
        ("DaemonSet", "seam-agent"),
    ] {
        object(&set, kind, name);
    }
    // Namespace first, CRDs before anything that could use them.
    assert_eq!(str_at(&set[0].1, "/kind"), Some("Namespace"));
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// The (apiGroup, resource) pairs a ClusterRole grants `verb` on.
fn granted(role: &Value, verb: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for rule in items(role, "/rules") {
        let verbs: Vec<&str> = items(rule, "/verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !verbs.contains(&verb) && !verbs.contains(&"*") {
            continue;
        }
        for g in items(rule, "/apiGroups").iter().filter_map(Value::as_str) {
            for r in items(rule, "/resources").iter().filter_map(Value::as_str) {
                out.insert((g.to_string(), r.to_string()));
            }
        }
    }
    out
}

#[test]
fn controller_may_watch_what_the_adapter_reads_and_nothing_more_broadly() {
    let set = install_set();
    let role = object(&set, "ClusterRole", "seam-controller");
    let needed = [
        ("", "namespaces"),
        ("", "pods"),
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy.networking.k8s.io", "adminnetworkpolicies"),
        ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
        ("seam.dev", "endpointgroups"),
        ("seam.dev", "contracts"),
        ("seam.dev", "tenants"),
    ];
    for verb in ["get", "list", "watch"] {
        let g = granted(role, verb);
        for (group, resource) in needed {
            assert!(
                g.contains(&(group.to_string(), resource.to_string())),
                "seam-controller may not {verb} {resource}.{group}"
            );
        }
    }
    // Seam's own objects' status: their Ready condition (realized on every node).
    for resource in [
        "endpointgroups/status",
        "contracts/status",
        "tenants/status",
    ] {
        assert!(
            granted(role, "patch").contains(&("seam.dev".to_string(), resource.to_string())),
            "seam-controller may not patch {resource}.seam.dev"
        );
    }
    // Services' status: the LoadBalancer address Seam allocates, written back (a merge patch).
    assert!(
        granted(role, "patch").contains(&(String::new(), "services/status".to_string())),
        "seam-controller may not patch services/status"
    );
    // Read-only on everything but events and Services' status: no write verb on any watched
    // resource (a Service's spec included), no wildcard.
    for verb in [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ] {
        for (group, resource) in granted(role, verb) {
            let seam_status = [
                "endpointgroups/status",
                "contracts/status",
                "tenants/status",
            ];
            let allowed = resource == "events"
                || (group.is_empty() && resource == "services/status" && verb == "patch")
                || (group == "seam.dev"
                    && seam_status.contains(&resource.as_str())
                    && verb == "patch");
            assert!(allowed, "seam-controller may {verb} {resource}.{group}");
        }
    }
    let binding = object(&set, "ClusterRoleBinding", "seam-controller");
    assert_eq!(str_at(binding, "/roleRef/name"), Some("seam-controller"));
    assert_eq!(str_at(binding, "/subjects/0/name"), Some("seam-controller"));
    let deployment = object(&set, "Deployment", "seam-controller");
    assert_eq!(
        str_at(deployment, "/spec/template/spec/serviceAccountName"),
        Some("seam-controller")
    );
}

#[test]
fn agent_gets_no_kubernetes_credentials() {
    let set = install_set();
    let daemonset = object(&set, "DaemonSet", "seam-agent");
    assert_eq!(
        str_at(daemonset, "/spec/template/spec/serviceAccountName"),
        Some("seam-agent")
    );
    assert_eq!(
        daemonset.pointer("/spec/template/spec/automountServiceAccountToken"),
        Some(&Value::Bool(false))
    );
    for (_, doc) in &set {
        if matches!(
            str_at(doc, "/kind"),
            Some("ClusterRoleBinding" | "RoleBinding")
        ) {
            for s in items(doc, "/subjects") {
                assert_ne!(
                    str_at(s, "/name"),
                    Some("seam-agent"),
                    "seam-agent is bound"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

#[test]
fn controller_runs_two_replicas_on_the_host_network_with_etcd() {
    let set = install_set();
    let d = object(&set, "Deployment", "seam-controller");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(2)));
    assert_eq!(
        d.pointer("/spec/template/spec/hostNetwork"),
        Some(&json!(true))
    );
    let controller = container(d, "seam-controller", false);
    let env = container_env(&set, controller);
    let store = expand(&flag_values(controller)["--store"][0], &env);
    assert!(
        store.starts_with("etcd:https://"),
        "the controller's store is {store}: etcd is reached over TLS"
    );
    // The local administrator's socket stays in the pod.
    assert!(
        items(controller, "/volumeMounts")
            .iter()
            .any(|m| str_at(m, "/mountPath") == Some("/run/seam")),
        "the controller does not mount /run/seam"
    );
    // The adapter is a TLS client of its own: the seam:adapter certificate, not the socket.
    let adapter = container(d, "seam-k8s", false);
    let adapter_flags = flag_values(adapter);
    assert!(
        adapter_flags["--controller"][0].starts_with("https://"),
        "{:?}",
        adapter_flags["--controller"]
    );
    for flag in ["--ca", "--cert", "--key"] {
        assert!(adapter_flags.contains_key(flag), "seam-k8s lacks {flag}");
    }
    assert!(
        !items(adapter, "/volumeMounts")
            .iter()
            .any(|m| str_at(m, "/mountPath") == Some("/run/seam")),
        "the adapter must not reach the administrator's socket"
    );
    // The Service's port is the one the controller listens on.
    let service = object(&set, "Service", "seam-controller");
    let port = service
        .pointer("/spec/ports/0/port")
        .and_then(Value::as_u64);
    assert!(flag_values(controller)["--listen"]
        .iter()
        .any(|l| l.ends_with(&format!(":{}", port.unwrap_or_default()))));
}

/// Issue 11: the API is TLS with client certificates, etcd demands client certificates, and
/// the certificates come from cert-manager; an agent sees the CA certificate, never a key.
#[test]
fn the_api_and_etcd_speak_mutual_tls_with_certificates_from_cert_manager() {
    let set = install_set();
    for (kind, name) in [
        ("Issuer", "seam-selfsigned"),
        ("Certificate", "seam-ca"),
        ("Issuer", "seam-ca"),
        ("Certificate", "seam-controller-tls"),
        ("Certificate", "seam-adapter"),
        ("Certificate", "seam-admin"),
        ("Certificate", "seam-etcd-server"),
        ("Certificate", "seam-etcd-client"),
    ] {
        object(&set, kind, name);
    }
    let organization = |name: &str| {
        object(&set, "Certificate", name)
            .pointer("/spec/subject/organizations/0")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    assert_eq!(
        organization("seam-adapter").as_deref(),
        Some(seam_model::identity::ADAPTER_GROUP)
    );
    assert_eq!(
        organization("seam-admin").as_deref(),
        Some(seam_model::identity::ADMINS_GROUP)
    );
    assert_eq!(
        organization("seam-controller-tls").as_deref(),
        Some(seam_model::identity::CONTROLLERS_GROUP)
    );

    let d = object(&set, "Deployment", "seam-controller");
    let flags = flag_values(container(d, "seam-controller", false));
    for flag in [
        "--tls-cert",
        "--tls-key",
        "--ca",
        "--ca-key",
        "--etcd-ca",
        "--etcd-cert",
        "--etcd-key",
    ] {
        assert!(flags.contains_key(flag), "seam-controller lacks {flag}");
    }
    assert!(
        !flags.contains_key("--insecure-plain-tcp"),
        "the deploy never serves plain TCP"
    );

    let etcd = container(object(&set, "StatefulSet", "seam-etcd"), "etcd", false);
    let args: Vec<&str> = items(etcd, "/command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for wanted in ["--client-cert-auth=true", "--peer-client-cert-auth=true"] {
        assert!(args.contains(&wanted), "etcd lacks {wanted}");
    }
    assert!(args
        .iter()
        .filter(|a| a.starts_with("--listen-client-urls="))
        .all(|a| !a.contains("http://")));

    let ds = object(&set, "DaemonSet", "seam-agent");
    let volumes = items(&ds["spec"]["template"]["spec"], "/volumes");
    for v in volumes {
        if let Some(secret) = str_at(v, "/secret/secretName") {
            let keys: Vec<&str> = items(v, "/secret/items")
                .iter()
                .filter_map(|i| str_at(i, "/key"))
                .collect();
            match secret {
                "seam-join-token" => {}
                _ => assert_eq!(keys, ["ca.crt"], "the agent mounts {secret} beyond ca.crt"),
            }
        }
    }
    let seamd = flag_values(container(ds, "seamd", false));
    for flag in [
        "--ca",
        "--cert-dir",
        "--join-token-file",
        "--tls-server-name",
    ] {
        assert!(seamd.contains_key(flag), "seamd lacks {flag}");
    }
}

#[test]
fn agent_daemonset_mounts_what_seamd_and_the_cni_need() {
    let set = install_set();
    let ds = object(&set, "DaemonSet", "seam-agent");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], json!(true));
    assert_ne!(spec["hostPID"], json!(true), "hostPID is not needed");
    let host_paths: BTreeMap<&str, &str> = items(spec, "/volumes")
        .iter()
        .filter_map(|v| Some((str_at(v, "/name")?, str_at(v, "/hostPath/path")?)))
        .collect();
    let seamd = container(ds, "seamd", false);
    assert_eq!(seamd["securityContext"]["privileged"], json!(true));
    let mounted: BTreeMap<&str, &str> = items(seamd, "/volumeMounts")
        .iter()
        .filter_map(|m| {
            let host = host_paths.get(str_at(m, "/name")?)?;
            Some((*host, str_at(m, "/mountPath")?))
        })
        .collect();
    for path in ["/run/netns", "/var/run/netns", "/var/lib/seam", "/run/seam"] {
        assert_eq!(
            mounted.get(path),
            Some(&path),
            "seamd must see the host's {path} at the same path"
        );
    }
    for m in items(seamd, "/volumeMounts") {
        if str_at(m, "/mountPath").is_some_and(|p| p.ends_with("/netns")) {
            assert_eq!(
                str_at(m, "/mountPropagation"),
                Some("HostToContainer"),
                "pod namespaces created later must appear in the agent"
            );
        }
    }
    // seamd's files live in the host directories.
    let flags = flag_values(seamd);
    assert!(flags["--state"][0].starts_with("/var/lib/seam/"));
    assert!(flags["--socket"][0].starts_with("/run/seam/"));
    let install = container(ds, "install-cni", true);
    let targets: BTreeSet<&str> = items(install, "/volumeMounts")
        .iter()
        .filter_map(|m| host_paths.get(str_at(m, "/name")?).copied())
        .collect();
    assert!(targets.contains("/opt/cni/bin") && targets.contains("/etc/cni/net.d"));
}

// ---------------------------------------------------------------------------------------------
// The CNI network config

#[test]
fn conflist_parses_with_seam_cni_and_names_seamds_socket() -> TestResult {
    let set = install_set();
    let data = config_data(&set);
    let text = data
        .get("10-seam.conflist")
        .ok_or("seam-config has no 10-seam.conflist")?;
    let list: Value = serde_json::from_str(text)?;
    let version = str_at(&list, "/cniVersion").ok_or("no cniVersion")?;
    assert!(
        seam_cni::CniVersion::parse(version).is_some(),
        "seam-cni does not speak cniVersion {version}"
    );
    let plugins = items(&list, "/plugins");
    assert_eq!(
        str_at(&plugins[0], "/type"),
        Some("seam-cni"),
        "seam-cni must come first (portmap and bandwidth chain after it)"
    );
    // The runtime hands each plug-in its entry with the list's name and cniVersion.
    let mut conf = plugins[0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    let parsed = seam_cni::netconf::NetConf::from_value(&conf)
        .map_err(|e| format!("seam-cni rejects the conflist: {e}"))?;
    let ds = object(&set, "DaemonSet", "seam-agent");
    let socket = &flag_values(container(ds, "seamd", false))["--socket"][0];
    assert_eq!(parsed.agent_socket, PathBuf::from(socket));

    // The init container installs every plug-in the list names and the list itself.
    let install = container(ds, "install-cni", true);
    let script = items(install, "/command")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    for p in plugins {
        let t = str_at(p, "/type").ok_or("plugin without type")?;
        assert!(script.contains(t), "install-cni does not install {t}");
    }
    assert!(script.contains("/host/etc/cni/net.d/10-seam.conflist"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CRDs

fn crds() -> Vec<Value> {
    install_set()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| str_at(d, "/kind") == Some("CustomResourceDefinition"))
        .collect()
}

/// The v1alpha1 openAPIV3Schema of the CRD for `kind`.
fn crd_schema(kind: &str) -> Value {
    crds()
        .into_iter()
        .find(|c| str_at(c, "/spec/names/kind") == Some(kind))
        .and_then(|c| {
            items(&c, "/spec/versions")
                .iter()
                .find(|v| str_at(v, "/name") == Some("v1alpha1"))
                .and_then(|v| v.pointer("/schema/openAPIV3Schema").cloned())
        })
        .unwrap_or_else(|| panic!("no v1alpha1 CRD for {kind}"))
}

#[test]
fn crds_cover_every_seam_kind() {
    let mut expected: BTreeSet<String> = seam_policy::PolicyKind::ALL
        .into_iter()
        .filter(|k| k.api_version().starts_with("seam.dev/"))
        .map(|k| k.as_str().to_string())
        .collect();
    // Tenant is read by `seam apply` (`seam_model::manifest`), not by seam-policy.
    expected.insert("Tenant".to_string());
    let mut found = BTreeSet::new();
    for crd in crds() {
        let group = str_at(&crd, "/spec/group").unwrap_or_default();
        let plural = str_at(&crd, "/spec/names/plural").unwrap_or_default();
        let kind = str_at(&crd, "/spec/names/kind").unwrap_or_default();
        assert_eq!(group, "seam.dev");
        assert_eq!(
            str_at(&crd, "/metadata/name"),
            Some(format!("{plural}.{group}").as_str())
        );
        assert_eq!(str_at(&crd, "/spec/scope"), Some("Cluster"), "{kind}");
        if let Ok(k) = seam_policy::PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or(())
        {
            assert_eq!(plural, k.plural());
            assert!(!k.is_namespaced());
        }
        let versions = items(&crd, "/spec/versions");
        assert_eq!(versions.len(), 1, "{kind}");
        assert_eq!(str_at(&versions[0], "/name"), Some("v1alpha1"));
        assert_eq!(versions[0]["storage"], json!(true));
        // The adapter writes the Ready condition through the status subresource.
        assert_eq!(versions[0]["subresources"]["status"], json!({}), "{kind}");
        let conditions = &versions[0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["type"], "array", "{kind}");
        found.insert(kind.to_string());
    }
    assert_eq!(found, expected);
}

/// Keywords Kubernetes forbids inside allOf/anyOf/oneOf/not.
const NOT_IN_JUNCTORS: [&str; 5] = [
    "type",
    "description",
    "default",
    "additionalProperties",
    "nullable",
];

/// Checks Kubernetes' structural-schema rules and Seam's "closed objects" rule; returns every
/// problem as `path: message`.
fn structural_problems(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for key in map.keys() {
        if key == "x-kubernetes-preserve-unknown-fields" || key == "x-kubernetes-embedded-resource"
        {
            out.push(format!("{path}: {key} opens the object to anything"));
        }
        if in_junctor && NOT_IN_JUNCTORS.contains(&key.as_str()) {
            out.push(format!("{path}: {key} is not allowed inside a junctor"));
        }
    }
    if !in_junctor && !map.contains_key("type") {
        out.push(format!("{path}: no type"));
    }
    if map.get("uniqueItems") == Some(&json!(true)) {
        out.push(format!("{path}: uniqueItems is forbidden"));
    }
    if let Some(ap) = map.get("additionalProperties") {
        if map.contains_key("properties") {
            out.push(format!(
                "{path}: additionalProperties and properties are mutually exclusive"
            ));
        }
        if ap == &json!(false) {
            out.push(format!("{path}: additionalProperties: false is forbidden"));
        }
    }
    if map.contains_key("properties") && !in_junctor && map.get("type") != Some(&json!("object")) {
        out.push(format!("{path}: properties on a non-object"));
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_problems(v, &format!("{path}.{k}"), in_junctor, out);
        }
    }
    if let Some(items) = map.get("items") {
        structural_problems(items, &format!("{path}[]"), in_junctor, out);
    }
    if let Some(ap) = map.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(ap, &format!("{path}{{*}}"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in map
            .get(junctor)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .enumerate()
        {
            if !in_junctor {
                check_junctor_fields(sub, map, &format!("{path}.{junctor}[{i}]"), out);
            }
            structural_problems(sub, &format!("{path}.{junctor}[{i}]"), true, out);
        }
    }
    if let Some(sub) = map.get("not") {
        if !in_junctor {
            check_junctor_fields(sub, map, &format!("{path}.not"), out);
        }
        structural_problems(sub, &format!("{path}.not"), true, out);
    }
}

/// Fields a junctor names at its own level (also through nested junctors).
fn junctor_fields(sub: &Value, out: &mut Vec<String>) {
    if let Some(props) = sub.get("properties").and_then(Value::as_object) {
        out.extend(props.keys().cloned());
    }
    out.extend(
        items(sub, "/required")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string),
    );
    if let Some(not) = sub.get("not") {
        junctor_fields(not, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for s in items(sub, &format!("/{junctor}")) {
            junctor_fields(s, out);
        }
    }
}

/// A junctor may only speak of fields the structural part of the schema declares.
fn check_junctor_fields(
    sub: &Value,
    outer: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let declared = outer.get("properties").and_then(Value::as_object);
    let mut mentioned = Vec::new();
    junctor_fields(sub, &mut mentioned);
    for field in mentioned {
        if !declared.is_some_and(|d| d.contains_key(&field)) {
            out.push(format!(
                "{path}: names {field}, which the schema does not declare"
            ));
        }
    }
}

#[test]
fn crd_schemas_are_structural_and_closed() {
    for crd in crds() {
        let kind = str_at(&crd, "/spec/names/kind")
            .unwrap_or_default()
            .to_string();
        let schema = crd_schema(&kind);
        let mut problems = Vec::new();
        structural_problems(&schema, &kind, false, &mut problems);
        // metadata: Kubernetes validates it itself and allows no schema beyond the type here.
        assert_eq!(
            schema["properties"]["metadata"],
            json!({"type": "object"}),
            "{kind}"
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// The CRD schema as a JSON Schema that behaves like the API server with strict field
/// validation: objects with declared properties reject undeclared ones (Kubernetes reports
/// them as unknown fields instead of a schema error; `additionalProperties: false` is not
/// allowed in a CRD, so the test adds it). CEL rules (`x-kubernetes-validations`) are dropped:
/// no CEL evaluator here; seam-policy's checks of the same rules are tested below.
fn to_json_schema(node: &Value, in_junctor: bool) -> Value {
    let Some(map) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        if k.starts_with("x-kubernetes-") {
            continue;
        }
        let v = match k.as_str() {
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), to_json_schema(s, in_junctor)))
                    .collect(),
            ),
            "items" | "additionalProperties" => to_json_schema(v, in_junctor),
            "not" => to_json_schema(v, true),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| to_json_schema(s, true))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if !in_junctor && map.contains_key("properties") && !map.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Validates `object` against the CRD of its kind; `Err` holds every error with its path.
fn schema_check(object: &Value) -> Result<(), Vec<String>> {
    let kind = str_at(object, "/kind").unwrap_or_default();
    let schema = to_json_schema(&crd_schema(kind), false);
    let validator = jsonschema::draft4::new(&schema)
        .unwrap_or_else(|e| panic!("the {kind} schema is not a valid JSON Schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What the API server stores: the object with the schema's defaults filled in.
fn with_defaults(schema: &Value, value: &mut Value) {
    let Some(obj) = value.as_object_mut() else {
        if let (Some(item_schema), Some(arr)) = (schema.get("items"), value.as_array_mut()) {
            for item in arr {
                with_defaults(item_schema, item);
            }
        }
        return;
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if !obj.contains_key(name) {
                if let Some(d) = prop.get("default") {
                    obj.insert(name.clone(), d.clone());
                }
            }
            if let Some(child) = obj.get_mut(name) {
                with_defaults(prop, child);
            }
        }
    }
}

/// Parses one document as `seam apply` does (every Seam kind, Tenant included), and as
/// seam-policy does for policy kinds; `Err` tells who rejected it and why.
fn seam_check(object: &Value) -> Result<(), String> {
    let text = serde_json::to_string(object).map_err(|e| e.to_string())?;
    seam_model::manifest::parse_manifests(&text).map_err(|e| format!("seam apply: {e}"))?;
    if str_at(object, "/kind") != Some("Tenant") {
        seam_policy::parse_json(&text).map_err(|e| format!("seam-policy: {e}"))?;
    }
    Ok(())
}

fn example_documents() -> Vec<(String, Value)> {
    yaml_files(&deploy_dir().join("examples"), true)
        .into_iter()
        .flat_map(|p| {
            let file = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            documents(&p)
                .into_iter()
                .map(move |d| (format!("{file} {}", d["metadata"]["name"]), d))
        })
        .collect()
}

#[test]
fn examples_are_accepted_by_the_crds_and_by_seam() {
    let examples = example_documents();
    let kinds: BTreeSet<&str> = examples
        .iter()
        .filter_map(|(_, d)| str_at(d, "/kind"))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Contract", "EndpointGroup", "Tenant"]),
        "the examples should show every Seam kind"
    );
    for (name, doc) in &examples {
        if let Err(e) = schema_check(doc) {
            panic!("the CRD rejects example {name}: {e:#?}");
        }
        if let Err(e) = seam_check(doc) {
            panic!("seam rejects example {name}: {e}");
        }
        // As the API server stores it: defaults filled in, server metadata added.
        let mut stored = doc.clone();
        with_defaults(
            &crd_schema(str_at(doc, "/kind").unwrap_or_default()),
            &mut stored,
        );
        stored["metadata"]["uid"] = json!("6f1c1d8e-0000-4000-8000-000000000001");
        stored["metadata"]["resourceVersion"] = json!("12345");
        if let Err(e) = schema_check(&stored) {
            panic!("the CRD rejects stored example {name}: {e:#?}");
        }
        // seam-k8s keeps only name, labels and annotations of the metadata.
        let meta = stored["metadata"].as_object_mut().map(|m| {
            m.retain(|k, _| matches!(k.as_str(), "name" | "labels" | "annotations"));
        });
        assert!(meta.is_some());
        if let Err(e) = seam_check(&stored) {
            panic!("seam rejects stored example {name} with defaults: {e}");
        }
    }
    // The seed's scenario: EPG-Client -> Contract-Web (TCP 80, 443) -> EPG-Webserver.
    let contract = examples
        .iter()
        .map(|(_, d)| d)
        .find(|d| str_at(d, "/metadata/name") == Some("contract-web"))
        .unwrap_or_else(|| panic!("no contract-web example"));
    assert_eq!(contract["spec"]["consumers"], json!(["epg-client"]));
    assert_eq!(contract["spec"]["providers"], json!(["epg-webserver"]));
    assert_eq!(
        contract["spec"]["subjects"][0]["filters"][0],
        json!({"protocol": "TCP", "ports": [80, 443]})
    );
}

const SEED_CLIENT: &str =
    "apiVersion: seam.dev/v1alpha1\nkind: EndpointGroup\nmetadata: {name: epg-client}\n";
const CONTRACT: &str =
    "apiVersion: seam.dev/v1alpha1\nkind: Contract\nmetadata: {name: contract-web}\n";
const TENANT: &str = "apiVersion: seam.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop}\n";

/// Broken objects: (what is wrong, the object). Each must be rejected by the CRD schema and by
/// seam.
fn bad_objects() -> Vec<(&'static str, String)> {
    let epg = |spec: &str| format!("{SEED_CLIENT}spec: {spec}\n");
    let contract = |spec: &str| format!("{CONTRACT}spec: {spec}\n");
    let web = "consumers: [epg-client], providers: [epg-webserver]";
    let tcp = "subjects: [{filters: [{protocol: TCP, ports: [80, 443]}]}]";
    vec![
        ("EndpointGroup without spec", SEED_CLIENT.to_string()),
        ("unknown field in spec", epg("{selectors: [{namespaces: [green]}], colour: red}")),
        ("misspelt selector field", epg("{selectors: [{namespace: [green]}]}")),
        ("no selector", epg("{selectors: []}")),
        ("selector that sets nothing", epg("{selectors: [{}]}")),
        ("unknown endpoint kind", epg("{selectors: [{kinds: [container]}]}")),
        ("namespaces not a list", epg("{selectors: [{namespaces: green}]}")),
        ("bad namespace name", epg("{selectors: [{namespaces: [Green_NS]}]}")),
        ("cidr not a network", epg("{selectors: [{cidrs: [10.0.0.0]}]}")),
        ("IPv6 cidr", epg("{selectors: [{cidrs: ['fd00::/8']}]}")),
        ("unknown selector operator", epg("{selectors: [{labels: {matchExpressions: [{key: app, operator: Equals, values: [web]}]}}]}")),
        ("In without values", epg("{selectors: [{labels: {matchExpressions: [{key: app, operator: In}]}}]}")),
        ("Exists with values", epg("{selectors: [{labels: {matchExpressions: [{key: app, operator: Exists, values: [web]}]}}]}")),
        ("label value not a string", epg("{selectors: [{labels: {matchLabels: {app: [web]}}}]}")),
        ("bad label value", epg("{selectors: [{labels: {matchLabels: {app: 'web server'}}}]}")),
        ("Contract without action", contract(&format!("{{{web}, {tcp}}}"))),
        ("Contract without providers", contract(&format!("{{consumers: [epg-client], {tcp}, action: allow}}"))),
        ("unknown action", contract(&format!("{{{web}, {tcp}, action: permit}}"))),
        ("unknown tier", contract(&format!("{{{web}, {tcp}, action: allow, tier: cluster}}"))),
        ("unknown scope", contract(&format!("{{{web}, {tcp}, action: allow, scope: world}}"))),
        ("log not a boolean", contract(&format!("{{{web}, {tcp}, action: allow, log: 'yes'}}"))),
        ("admin tier without priority", contract(&format!("{{{web}, {tcp}, action: allow, tier: admin}}"))),
        ("priority out of range", contract(&format!("{{{web}, {tcp}, action: allow, priority: 2000}}"))),
        ("no consumer", contract(&format!("{{consumers: [], providers: [epg-webserver], {tcp}, action: allow}}"))),
        ("bad group name", contract(&format!("{{consumers: [EPG_Client], providers: [epg-webserver], {tcp}, action: allow}}"))),
        ("no subject", contract(&format!("{{{web}, subjects: [], action: allow}}"))),
        ("subject without filters", contract(&format!("{{{web}, subjects: [{{name: web}}], action: allow}}"))),
        ("unknown protocol", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: HTTP}}]}}], action: allow}}"))),
        ("port as a string", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: TCP, ports: ['80']}}]}}], action: allow}}"))),
        ("port out of range", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: TCP, ports: [70000]}}]}}], action: allow}}"))),
        ("misspelt filter field", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: TCP, port: 80}}]}}], action: allow}}"))),
        ("port range without to", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: TCP, portRanges: [{{from: 80}}]}}]}}], action: allow}}"))),
        ("ICMP with ports", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: ICMP, ports: [80]}}]}}], action: allow}}"))),
        ("icmpType with TCP", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: TCP, icmpType: 8}}]}}], action: allow}}"))),
        ("icmpType out of range", contract(&format!("{{{web}, subjects: [{{filters: [{{protocol: ICMP, icmpType: 300}}]}}], action: allow}}"))),
        ("unknown isolation", format!("{TENANT}spec: {{isolation: subnet}}\n")),
        ("unknown Tenant field", format!("{TENANT}spec: {{mode: flat}}\n")),
        ("global not a boolean", format!("{TENANT}spec: {{global: 'true'}}\n")),
        ("unknown top-level field", format!("{TENANT}data: {{}}\n")),
    ]
}

fn yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("bad test YAML {text}: {e}"))
}

#[test]
fn broken_objects_are_rejected_by_the_crds_and_by_seam() {
    for (what, text) in bad_objects() {
        let doc = yaml_value(&text);
        assert!(
            schema_check(&doc).is_err(),
            "the CRD accepts an object with {what}:\n{text}"
        );
        assert!(
            seam_check(&doc).is_err(),
            "seam accepts an object with {what}:\n{text}"
        );
    }
}

#[test]
fn rules_only_cel_can_express_are_in_the_crds_and_enforced_by_seam() {
    // Accepted by the JSON Schema part, rejected by seam and by the CRD's CEL rule.
    let cases = [
        (
            "EndpointGroup",
            "self.metadata.name != 'cluster'",
            "apiVersion: seam.dev/v1alpha1\nkind: EndpointGroup\nmetadata: {name: cluster}\nspec: {selectors: [{namespaces: [green]}]}\n".to_string(),
        ),
        (
            "Contract",
            "self.to >= self.from",
            format!("{CONTRACT}spec: {{consumers: [a], providers: [b], subjects: [{{filters: [{{protocol: TCP, portRanges: [{{from: 90, to: 80}}]}}]}}], action: allow}}\n"),
        ),
        (
            "Tenant",
            "size(self.metadata.name) <= 63",
            format!("apiVersion: seam.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {}}}\n", "t".repeat(64)),
        ),
    ];
    for (kind, rule, text) in cases {
        let doc = yaml_value(&text);
        assert!(schema_check(&doc).is_ok(), "{kind}: {text}");
        assert!(seam_check(&doc).is_err(), "seam accepts {text}");
        let schema = serde_json::to_string(&crd_schema(kind)).unwrap_or_default();
        assert!(
            schema.contains(rule),
            "the {kind} CRD lacks the rule {rule}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Flags

/// One `#[arg(long …)]` field of a clap derive struct.
#[derive(Debug, Clone)]
struct Flag {
    long: String,
    default: Option<String>,
    env: Option<String>,
}

/// Splits `a, b = "x, y", c` at top-level commas (outside quotes and brackets).
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The long flags of the `#[derive(Parser)]` struct in a binary's source.
fn clap_flags(source: &str) -> Vec<Flag> {
    let Some(start) = source.find("#[derive(").and_then(|i| {
        source[i..]
            .find("struct ")
            .map(|j| i + j)
            .filter(|_| source.contains("Parser"))
    }) else {
        return Vec::new();
    };
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let mut flags = Vec::new();
    let mut pending: Option<String> = None;
    let mut attr = String::new();
    let mut in_attr = false;
    for line in body.lines().map(str::trim) {
        if in_attr || line.starts_with("#[arg(") {
            in_attr = true;
            attr.push_str(line);
            attr.push(' ');
            if line.ends_with(")]") {
                in_attr = false;
                let inner = attr.trim().trim_start_matches("#[arg(");
                let inner = inner.trim_end().trim_end_matches(")]");
                pending = Some(inner.to_string());
                attr.clear();
            }
            continue;
        }
        if let (Some(a), Some((field, _))) = (&pending, line.split_once(':')) {
            if line.starts_with("//") || line.starts_with('#') {
                continue;
            }
            let field = field.trim().trim_start_matches("pub ").trim();
            let mut flag = Flag {
                long: String::new(),
                default: None,
                env: None,
            };
            let mut is_long = false;
            for part in split_top(a) {
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
                    None => (part.trim(), None),
                };
                match (key, value) {
                    ("long", None) => {
                        is_long = true;
                        flag.long = format!("--{}", field.replace('_', "-"));
                    }
                    ("long", Some(v)) => {
                        is_long = true;
                        flag.long = format!("--{v}");
                    }
                    ("default_value", Some(v)) => flag.default = Some(v),
                    ("default_value_t", Some(v)) => flag.default = Some(v.replace('_', "")),
                    ("env", Some(v)) => flag.env = Some(v),
                    _ => {}
                }
            }
            if is_long {
                flags.push(flag);
            }
            pending = None;
        }
    }
    flags
}

/// The source of each binary the manifests run, by the name used as the container's command.
fn binary_sources() -> BTreeMap<&'static str, PathBuf> {
    let root = repo_root();
    BTreeMap::from([
        ("seamd", root.join("crates/seamd/src/main.rs")),
        (
            "seam-controller",
            root.join("crates/seam-controller/src/main.rs"),
        ),
        ("seam-k8s", root.join("crates/seam-k8s/src/bin/seam-k8s.rs")),
    ])
}

/// `--flag=value` and `--flag value` arguments of a container, by flag.
fn flag_values(c: &Value) -> BTreeMap<String, Vec<String>> {
    let args: Vec<&str> = items(c, "/args").iter().filter_map(Value::as_str).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if let Some((flag, value)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            out.entry(flag.to_string())
                .or_default()
                .push(value.to_string());
        } else if a.starts_with("--") {
            let value = args.get(i + 1).filter(|v| !v.starts_with("--"));
            out.entry(a.to_string())
                .or_default()
                .push(value.map(|v| v.to_string()).unwrap_or_default());
            if value.is_some() {
                i += 1;
            }
        }
        i += 1;
    }
    out
}

/// Every Seam container of the install set: (workload, container).
fn seam_containers(set: &[(PathBuf, Value)]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (_, doc) in set {
        if !matches!(str_at(doc, "/kind"), Some("Deployment" | "DaemonSet")) {
            continue;
        }
        let name = str_at(doc, "/metadata/name").unwrap_or_default();
        for list in [
            "/spec/template/spec/containers",
            "/spec/template/spec/initContainers",
        ] {
            for c in items(doc, list) {
                out.push((name.to_string(), c.clone()));
            }
        }
    }
    out
}

/// The container's environment as the kubelet builds it, with sample values for what only a
/// cluster knows (Service addresses, the pod's IP, the node's name).
fn container_env(set: &[(PathBuf, Value)], c: &Value) -> BTreeMap<String, String> {
    let data = config_data(set);
    // No Service environment variables (`SEAM_CONTROLLER_SERVICE_HOST`, …): they hold
    // ClusterIPs, which only work once Seam serves them, so a `$(…)` naming one is unresolved.
    let mut env = BTreeMap::new();
    for e in items(c, "/env") {
        let name = str_at(e, "/name").unwrap_or_default().to_string();
        let value = if let Some(v) = str_at(e, "/value") {
            expand(v, &env)
        } else if let Some(key) = str_at(e, "/valueFrom/configMapKeyRef/key") {
            assert_eq!(
                str_at(e, "/valueFrom/configMapKeyRef/name"),
                Some("seam-config")
            );
            data.get(key)
                .unwrap_or_else(|| panic!("seam-config has no key {key}"))
                .clone()
        } else {
            match str_at(e, "/valueFrom/fieldRef/fieldPath") {
                // Host network: the pod's address is the node's.
                Some("status.podIP" | "status.hostIP") => "192.0.2.10".to_string(),
                Some("spec.nodeName") => "node-1".to_string(),
                other => panic!("unexpected env source {other:?}"),
            }
        };
        env.insert(name, value);
    }
    env
}

/// Kubernetes' `$(VAR)` expansion.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unresolved variable in {s}");
    out
}

#[test]
fn container_flags_exist_in_the_binaries() {
    let set = install_set();
    let sources = binary_sources();
    let mut checked = BTreeSet::new();
    for (workload, c) in seam_containers(&set) {
        let command = items(&c, "/command")
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default();
        if command.starts_with('/') || command == "etcd" {
            continue; // a shell script (install-cni) or etcd
        }
        let path = sources
            .get(command)
            .unwrap_or_else(|| panic!("{workload}: unknown binary {command}"));
        let known = clap_flags(&read(path));
        for flag in flag_values(&c).keys() {
            assert!(
                known.iter().any(|k| &k.long == flag),
                "{workload}/{}: {command} has no flag {flag} (its flags: {:?})",
                c["name"],
                known.iter().map(|k| &k.long).collect::<Vec<_>>()
            );
        }
        // Flags taken from the environment instead.
        for e in items(&c, "/env").iter().filter_map(|e| str_at(e, "/name")) {
            if let Some(flag) = known.iter().find(|k| k.env.as_deref() == Some(e)) {
                checked.insert(format!("{command} {} (env {e})", flag.long));
            }
        }
        checked.insert(command.to_string());
    }
    assert_eq!(
        checked
            .iter()
            .filter(|c| !c.contains(' '))
            .collect::<Vec<_>>(),
        ["seam-controller", "seam-k8s", "seamd"]
    );
    // seamd's required --node and --controller come from the environment.
    assert!(
        checked.contains("seamd --node (env SEAM_NODE)"),
        "{checked:?}"
    );
    assert!(
        checked.contains("seamd --controller (env SEAM_CONTROLLER)"),
        "{checked:?}"
    );
}

#[test]
fn controller_flag_values_are_accepted_by_its_parsers() {
    let set = install_set();
    let d = object(&set, "Deployment", "seam-controller");
    let c = container(d, "seam-controller", false);
    let env = container_env(&set, c);
    let flags = flag_values(c);
    let one = |f: &str| expand(&flags[f][0], &env);
    for l in &flags["--listen"] {
        let l = expand(l, &env);
        assert!(
            l.parse::<seam_controller::Listener>().is_ok(),
            "--listen={l} is not a listener"
        );
    }
    let config = seam_controller::ControllerConfig {
        segment_mode: one("--segment-mode")
            .parse()
            .unwrap_or_else(|e| panic!("--segment-mode: {e}")),
        pool: one("--pool")
            .parse()
            .unwrap_or_else(|e| panic!("--pool: {e}")),
        segment_prefix: one("--segment-prefix")
            .parse()
            .unwrap_or_else(|e| panic!("--segment-prefix: {e}")),
        block_prefix: one("--block-prefix")
            .parse()
            .unwrap_or_else(|e| panic!("--block-prefix: {e}")),
        vni_base: one("--vni-base")
            .parse()
            .unwrap_or_else(|e| panic!("--vni-base: {e}")),
        service_cidr: one("--service-cidr")
            .parse()
            .unwrap_or_else(|e| panic!("--service-cidr: {e}")),
        node_port_range: one("--node-port-range")
            .parse()
            .unwrap_or_else(|e| panic!("--node-port-range: {e}")),
    };
    assert_eq!(config.validate(), Ok(()));
    assert!(matches!(one("--log-format").as_str(), "text" | "json"));
    // etcd:https://host:port, as seam-client writes endpoints.
    let store = one("--store");
    let authority = store
        .strip_prefix("etcd:https://")
        .unwrap_or_else(|| panic!("--store={store}"));
    assert!(authority.parse::<std::net::SocketAddr>().is_ok(), "{store}");

    // The agents' controller endpoints: the ConfigMap's list of control-plane node addresses.
    let ds = object(&set, "DaemonSet", "seam-agent");
    let agent_env = container_env(&set, container(ds, "seamd", false));
    assert_eq!(
        agent_env["SEAM_CONTROLLER"],
        config_data(&set)["controller"]
    );
    assert_eq!(agent_env["SEAM_NODE"], "node-1");
}

#[test]
fn configmap_values_are_the_binaries_defaults() {
    let set = install_set();
    let data = config_data(&set);
    let mut flags: BTreeMap<String, Flag> = BTreeMap::new();
    for path in binary_sources().values() {
        for f in clap_flags(&read(path)) {
            flags.insert(f.long.clone(), f);
        }
    }
    for (key, value) in &data {
        if key.ends_with(".conflist") {
            continue;
        }
        let flag = flags
            .get(&format!("--{key}"))
            .unwrap_or_else(|| panic!("seam-config key {key} is no flag of a Seam binary"));
        if CLUSTER_KEYS.contains(&key.as_str()) {
            // The cluster's own addresses, not a default (checked by
            // `nothing_needs_kube_proxy_or_a_cluster_ip`).
            continue;
        }
        assert_eq!(
            flag.default.as_deref(),
            Some(value.as_str()),
            "seam-config {key}"
        );
    }
}

/// seam-config keys that hold the cluster's own addresses rather than a binary's default.
const CLUSTER_KEYS: [&str; 2] = ["controller", "store"];

/// Whether `ip` is in `cidr` (`a.b.c.d/len`): the Service range of seam-config (which must be
/// kube-apiserver's `--service-cluster-ip-range`).
fn in_cidr(cidr: &str, ip: std::net::Ipv4Addr) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or_else(|| panic!("{cidr}"));
    let net: std::net::Ipv4Addr = net.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
    let len: u32 = len.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// `scheme://IPv4:port` → the address, which must be a literal IPv4 address (no name: cluster
/// DNS is behind a ClusterIP too).
fn endpoint_address(endpoint: &str, scheme: &str) -> std::net::SocketAddrV4 {
    let authority = endpoint
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("{endpoint} does not start with {scheme}"));
    authority
        .parse()
        .unwrap_or_else(|e| panic!("{endpoint}: not an IPv4 address and port ({e})"))
}

/// Issue 12: Seam serves Services, so the cluster runs without kube-proxy, and nothing Seam needs
/// before it runs may be a ClusterIP (nor a DNS name: CoreDNS is behind one).
#[test]
fn nothing_needs_kube_proxy_or_a_cluster_ip() {
    let set = install_set();
    // No kube-proxy among the manifests, and the README says to create the cluster without it.
    for (path, doc) in &set {
        let name = str_at(doc, "/metadata/name").unwrap_or_default();
        assert!(!name.contains("kube-proxy"), "{}: {name}", path.display());
    }
    let readme = read(&deploy_dir().join("README.md"));
    assert!(
        readme.contains("--skip-phases=addon/kube-proxy"),
        "README.md must say to create the cluster without kube-proxy"
    );
    // No Service environment variable anywhere (their values are ClusterIPs).
    for (workload, c) in seam_containers(&set) {
        let text = serde_json::to_string(&c).unwrap();
        for var in ["_SERVICE_HOST)", "_SERVICE_PORT)"] {
            assert!(
                !text.contains(var),
                "{workload}/{}: uses a Service environment variable ({var})",
                c["name"]
            );
        }
    }

    // The agents: several controller replicas at node addresses, outside the Service range.
    let data = config_data(&set);
    let services = data["service-cidr"].as_str();
    let in_service_cidr = |ip| in_cidr(services, ip);
    let endpoints: Vec<&str> = data["controller"].split(',').collect();
    assert!(
        endpoints.len() >= 2,
        "one controller endpoint: no fail-over"
    );
    let d = object(&set, "Deployment", "seam-controller");
    let controller = container(d, "seam-controller", false);
    let listen_port = flag_values(controller)["--listen"]
        .iter()
        .find_map(|l| l.strip_prefix("tcp:$(POD_IP):"))
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the controller listens on its node's address");
    for endpoint in &endpoints {
        let addr = endpoint_address(endpoint, "https://");
        assert!(
            !in_service_cidr(*addr.ip()),
            "{endpoint} is in the Service range: a ClusterIP"
        );
        assert_eq!(addr.port(), listen_port, "{endpoint}");
    }
    // ... which are the nodes the replicas run on, with the host's address.
    assert_eq!(
        d.pointer("/spec/template/spec/nodeSelector/node-role.kubernetes.io~1control-plane"),
        Some(&json!("")),
        "the controller replicas must run where `controller` points: the control-plane nodes"
    );
    assert_eq!(
        d.pointer("/spec/template/spec/hostNetwork"),
        Some(&json!(true))
    );

    // The controller's store: etcd at a node address (on the node etcd is pinned to).
    let store = expand(
        &flag_values(controller)["--store"][0],
        &container_env(&set, controller),
    );
    assert_eq!(store, data["store"]);
    let etcd = endpoint_address(&store, "etcd:https://");
    assert!(
        !in_service_cidr(*etcd.ip()),
        "--store={store} is a ClusterIP"
    );
    let sts = object(&set, "StatefulSet", "seam-etcd");
    assert_eq!(
        sts.pointer("/spec/template/spec/hostNetwork"),
        Some(&json!(true))
    );
    assert!(
        sts.pointer("/spec/template/spec/nodeSelector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty()),
        "the bundled etcd must be pinned to the node `store` names"
    );
    assert!(items(container(sts, "etcd", false), "/command")
        .iter()
        .filter_map(Value::as_str)
        .any(|a| a.starts_with("--listen-client-urls=")
            && a.contains(&format!("$(POD_IP):{}", etcd.port()))));

    // The adapter: the API server at its node's own address, not the `kubernetes` ClusterIP the
    // kubelet would put in KUBERNETES_SERVICE_HOST.
    let adapter = container(d, "seam-k8s", false);
    let by_name = |name: &str| {
        items(adapter, "/env")
            .iter()
            .find(|e| str_at(e, "/name") == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("seam-k8s does not set {name}"))
    };
    assert_eq!(
        str_at(
            &by_name("KUBERNETES_SERVICE_HOST"),
            "/valueFrom/fieldRef/fieldPath"
        ),
        Some("status.hostIP")
    );
    assert_eq!(
        str_at(&by_name("KUBERNETES_SERVICE_PORT"), "/value"),
        Some("6443")
    );
}

// ---------------------------------------------------------------------------------------------
// CONFIG.md

/// The keys seam-cni's network config parser accepts (the arms of its field match).
fn netconf_fields() -> Vec<String> {
    let src = read(&repo_root().join("crates/seam-cni/src/netconf.rs"));
    let start = src
        .find("for (key, value) in obj {")
        .unwrap_or_else(|| panic!("netconf.rs changed shape: update this test"));
    let end = start
        + src[start..]
            .find("FieldProblem::Unknown")
            .unwrap_or_else(|| panic!("netconf.rs changed shape: update this test"));
    let mut fields = Vec::new();
    for line in src[start..end].lines().map(str::trim) {
        let Some((arms, _)) = line.split_once("=>") else {
            continue;
        };
        for arm in arms.split('|').map(str::trim) {
            if let Some(name) = arm.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
                fields.push(name.to_string());
            } else if arm == "VALID_ATTACHMENTS" {
                fields.push(seam_cni::netconf::VALID_ATTACHMENTS.to_string());
            }
        }
    }
    fields
}

#[test]
fn config_reference_lists_every_flag_field_and_key_with_its_default() {
    let doc = read(&deploy_dir().join("CONFIG.md"));
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with('|')).collect();
    for (bin, path) in binary_sources() {
        let flags = clap_flags(&read(&path));
        assert!(flags.len() >= 6, "{bin}: found only {flags:?}");
        for f in flags {
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("`{}`", f.long)))
                .unwrap_or_else(|| panic!("CONFIG.md does not list {bin} {}", f.long));
            if let Some(default) = &f.default {
                let shown = if default.is_empty() {
                    "| empty |".to_string()
                } else {
                    format!("`{default}`")
                };
                assert!(
                    row.contains(&shown),
                    "CONFIG.md: {bin} {} should say its default `{default}`: {row}",
                    f.long
                );
            }
            if let Some(env) = &f.env {
                assert!(row.contains(env), "CONFIG.md: {bin} {} reads {env}", f.long);
            }
        }
    }
    let fields = netconf_fields();
    assert!(fields.len() >= 10, "{fields:?}");
    for field in fields
        .iter()
        .chain(&["cniVersion".into(), "name".into(), "type".into()])
    {
        assert!(
            rows.iter().any(|r| r.contains(&format!("`{field}`"))),
            "CONFIG.md does not list the network config field {field}"
        );
    }
    for key in config_data(&install_set()).keys() {
        assert!(
            rows.iter().any(|r| r.contains(&format!("`{key}`"))),
            "CONFIG.md does not list the seam-config key {key}"
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.contains(&format!("`{}`", seam_cni::netconf::DEFAULT_AGENT_SOCKET))));
}

// ---------------------------------------------------------------------------------------------
// The built binaries (privileged tier: scripts/test.sh builds them and sets SEAM_BIN_DIR)

#[test]
#[ignore = "runs the built binaries: cargo build --bins, then SEAM_BIN_DIR=target/debug"]
fn built_binaries_accept_the_container_flags() {
    let bin_dir = std::env::var_os("SEAM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let set = install_set();
    let sources = binary_sources();
    for (workload, c) in seam_containers(&set) {
        let command = items(&c, "/command")
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !sources.contains_key(command) {
            continue;
        }
        let exe = bin_dir.join(command);
        let out = std::process::Command::new(&exe)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("run {} --help: {e}", exe.display()));
        assert!(out.status.success(), "{} --help failed", exe.display());
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flag_values(&c).keys() {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}=")),
                "{workload}: `{command} --help` does not show {flag}:\n{help}"
            );
        }
    }
}

/// The probes that test something: each Seam daemon is alive while it serves `/healthz` and
/// ready only when its own `/readyz` says so, on a port the container declares, with the
/// scheme its server speaks (the agent and the controller serve TLS only; the adapter plain
/// HTTP), and the port is where the binary is told to listen.
#[test]
fn daemons_probe_healthz_for_liveness_and_readyz_for_readiness() {
    let set = install_set();
    for (workload, kind, name, scheme, port, listen_flag) in [
        (
            "seam-agent",
            "DaemonSet",
            "seamd",
            "HTTPS",
            9473,
            "--api-listen",
        ),
        (
            "seam-controller",
            "Deployment",
            "seam-controller",
            "HTTPS",
            7440,
            "--listen",
        ),
        (
            "seam-controller",
            "Deployment",
            "seam-k8s",
            "HTTP",
            9474,
            "--metrics-listen",
        ),
    ] {
        let c = container(object(&set, kind, workload), name, false);
        let port_name = |probe: &str| {
            let p = c
                .pointer(&format!("/{probe}/httpGet"))
                .unwrap_or_else(|| panic!("{name}: no httpGet {probe}"));
            assert_eq!(
                p.get("scheme").and_then(Value::as_str).unwrap_or("HTTP"),
                scheme,
                "{name} {probe}"
            );
            (
                str_at(p, "/path").unwrap_or_default().to_string(),
                str_at(p, "/port").unwrap_or_default().to_string(),
            )
        };
        let (live_path, live_port) = port_name("livenessProbe");
        let (ready_path, ready_port) = port_name("readinessProbe");
        assert_eq!(live_path, "/healthz", "{name}");
        assert_eq!(ready_path, "/readyz", "{name}");
        assert_eq!(live_port, ready_port, "{name}");
        let declared = items(c, "/ports")
            .iter()
            .find(|p| str_at(p, "/name") == Some(live_port.as_str()))
            .and_then(|p| p.pointer("/containerPort"))
            .and_then(Value::as_u64);
        assert_eq!(declared, Some(port), "{name}: port {live_port}");
        let flags = flag_values(c);
        assert!(
            flags
                .get(listen_flag)
                .is_some_and(|v| v.iter().any(|l| l.ends_with(&format!(":{port}")))),
            "{name}: {listen_flag} on port {port}: {flags:?}"
        );
    }
}
