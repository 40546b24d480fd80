//! `seam conformance netpol`: the Kubernetes NetworkPolicy and AdminNetworkPolicy conformance
//! cases (the format of `crates/seam-policy/test_data/netpol/`, see its README) checked against
//! the engine.
//!
//! Two shapes of case, told apart per case: NetworkPolicy cases (`probe` + `expected`, a full
//! matrix over the x/y/z × a/b/c model, plus `additional_probes`) and ANP cases (`probes`, single
//! probes over the model's `anp_model`). Symbolic addresses (`{{ip:x/b}}`, `{{net:x/a/4}}`) are
//! replaced with the model's reference IP plan. This is the harness of seam-policy's
//! `tests/it/conformance.rs`, without panics: a malformed file is a [`ConformanceError`], a
//! failing case is a line in the [`Report`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{
    evaluate, ContainerPort, Endpoint, EndpointKind, Flow, FlowEnd, Inventory, Namespace,
    PolicySet, Protocol,
};
use serde_json::Value;

use crate::error::ConformanceError;

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Cases whose every probe matched.
    pub passed: usize,
    /// One line per failing case: `FAIL <id>: …`.
    pub failures: Vec<String>,
    /// Self-pair (x/a → x/a) mismatches not counted because upstream does not enforce them.
    pub ignored_self: usize,
}

impl Report {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The closing line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed());
        if self.ignored_self > 0 {
            s.push_str(&format!(
                " ({} self-pair mismatches ignored where upstream ignores them)",
                self.ignored_self
            ));
        }
        s
    }
}

/// Reads JSON values with paths in errors.
struct Doc {
    file: &'static str,
}

impl Doc {
    fn err(&self, path: &str, message: impl Into<String>) -> ConformanceError {
        ConformanceError::Malformed {
            file: self.file,
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn get<'a>(&self, v: &'a Value, path: &str, key: &str) -> Result<&'a Value, ConformanceError> {
        v.get(key)
            .ok_or_else(|| self.err(&format!("{path}.{key}"), "is missing"))
    }

    fn str<'a>(&self, v: &'a Value, path: &str) -> Result<&'a str, ConformanceError> {
        v.as_str()
            .ok_or_else(|| self.err(path, "expected a string"))
    }

    fn array<'a>(&self, v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ConformanceError> {
        v.as_array()
            .ok_or_else(|| self.err(path, "expected a list"))
    }

    fn bool(&self, v: &Value, path: &str) -> Result<bool, ConformanceError> {
        v.as_bool()
            .ok_or_else(|| self.err(path, "expected true or false"))
    }

    fn u16(&self, v: &Value, path: &str) -> Result<u16, ConformanceError> {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| self.err(path, "expected a port number"))
    }

    fn protocol(&self, v: &Value, path: &str) -> Result<Protocol, ConformanceError> {
        self.str(v, path)?
            .parse()
            .map_err(|_| self.err(path, "expected TCP, UDP or SCTP"))
    }

    fn labels(&self, v: &Value, path: &str) -> Result<BTreeMap<String, String>, ConformanceError> {
        let map = v
            .as_object()
            .ok_or_else(|| self.err(path, "expected a map of labels"))?;
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.str(v, &format!("{path}.{k}"))?.to_string())))
            .collect()
    }

    fn ip_plan(
        &self,
        v: &Value,
        path: &str,
    ) -> Result<BTreeMap<String, Ipv4Addr>, ConformanceError> {
        let map = v
            .as_object()
            .ok_or_else(|| self.err(path, "expected a map of pod addresses"))?;
        map.iter()
            .map(|(k, v)| {
                let p = format!("{path}.{k}");
                let addr = self
                    .str(v, &p)?
                    .parse()
                    .map_err(|_| self.err(&p, "expected an IPv4 address"))?;
                Ok((k.clone(), addr))
            })
            .collect()
    }
}

const MODEL: Doc = Doc { file: "model" };
const CASES: Doc = Doc { file: "cases" };

/// Replaces `{{ip:NS/POD}}` with the pod's address and `{{net:NS/POD/N}}` with the canonical /N
/// network holding it.
pub fn substitute(text: &str, plan: &BTreeMap<String, Ipv4Addr>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| e + start)
            .ok_or("unterminated {{")?;
        let token = &rest[start + 2..end];
        let (what, arg) = token
            .split_once(':')
            .ok_or_else(|| format!("bad symbol {token:?}"))?;
        let addr = |pod: &str| {
            plan.get(pod)
                .copied()
                .ok_or_else(|| format!("symbol {token:?} names unknown pod {pod:?}"))
        };
        match what {
            "ip" => out.push_str(&addr(arg)?.to_string()),
            "net" => {
                let (pod, len) = arg
                    .rsplit_once('/')
                    .ok_or_else(|| format!("bad symbol {token:?}"))?;
                let len: u8 = len
                    .parse()
                    .map_err(|_| format!("bad prefix in {token:?}"))?;
                let net = ipnet::Ipv4Net::new(addr(pod)?, len)
                    .map_err(|_| format!("bad prefix in {token:?}"))?
                    .trunc();
                out.push_str(&net.to_string());
            }
            other => return Err(format!("unknown symbol kind {other:?}")),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn policy_set(policies: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> Result<PolicySet, String> {
    let text = substitute(&policies.to_string(), plan)?;
    let objects = seam_policy::parse_json(&text).map_err(|e| e.to_string())?;
    PolicySet::from_objects(objects).map_err(|e| e.to_string())
}

fn container_ports(list: &Value, path: &str) -> Result<Vec<ContainerPort>, ConformanceError> {
    MODEL
        .array(list, path)?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("{path}[{i}]");
            Ok(ContainerPort {
                name: Some(MODEL.str(MODEL.get(p, &path, "name")?, &path)?.to_string()),
                port: MODEL.u16(MODEL.get(p, &path, "containerPort")?, &path)?,
                protocol: MODEL.protocol(MODEL.get(p, &path, "protocol")?, &path)?,
            })
        })
        .collect()
}

/// The x/y/z × a/b/c inventory for one case (its label overrides applied).
fn xyz_inventory(
    model: &Value,
    case: &Value,
    plan: &BTreeMap<String, Ipv4Addr>,
) -> Result<Inventory, ConformanceError> {
    let mut inv = Inventory::default();
    for (i, ns) in MODEL
        .array(MODEL.get(model, "", "namespaces")?, "namespaces")?
        .iter()
        .enumerate()
    {
        let path = format!("namespaces[{i}]");
        let name = MODEL.str(MODEL.get(ns, &path, "name")?, &path)?;
        let labels = match case.get("namespace_labels").and_then(|l| l.get(name)) {
            Some(l) => CASES.labels(l, &format!("namespace_labels.{name}"))?,
            None => MODEL.labels(MODEL.get(ns, &path, "labels")?, &path)?,
        };
        inv.namespaces.insert(
            name.to_string(),
            Namespace {
                labels,
                tenant: None,
            },
        );
    }
    for (i, pod) in MODEL
        .array(MODEL.get(model, "", "pods")?, "pods")?
        .iter()
        .enumerate()
    {
        let path = format!("pods[{i}]");
        let reference = MODEL.str(MODEL.get(pod, &path, "ref")?, &path)?;
        let labels = match case.get("pod_labels").and_then(|l| l.get(reference)) {
            Some(l) => CASES.labels(l, &format!("pod_labels.{reference}"))?,
            None => MODEL.labels(MODEL.get(pod, &path, "labels")?, &path)?,
        };
        let addr = plan
            .get(reference)
            .copied()
            .ok_or_else(|| MODEL.err(&path, "pod missing from reference_ip_plan.pods"))?;
        inv.endpoints.push(Endpoint {
            name: MODEL
                .str(MODEL.get(pod, &path, "name")?, &path)?
                .to_string(),
            namespace: MODEL
                .str(MODEL.get(pod, &path, "namespace")?, &path)?
                .to_string(),
            kind: EndpointKind::Pod,
            labels,
            addresses: vec![addr],
            ports: container_ports(
                MODEL.get(pod, &path, "container_ports")?,
                &format!("{path}.container_ports"),
            )?,
        });
    }
    Ok(inv)
}

fn anp_inventory(
    model: &Value,
    plan: &BTreeMap<String, Ipv4Addr>,
) -> Result<Inventory, ConformanceError> {
    let anp = MODEL.get(model, "", "anp_model")?;
    let mut inv = Inventory::default();
    for (i, ns) in MODEL
        .array(
            MODEL.get(anp, "anp_model", "namespaces")?,
            "anp_model.namespaces",
        )?
        .iter()
        .enumerate()
    {
        let path = format!("anp_model.namespaces[{i}]");
        inv.namespaces.insert(
            MODEL.str(MODEL.get(ns, &path, "name")?, &path)?.to_string(),
            Namespace {
                labels: MODEL.labels(MODEL.get(ns, &path, "labels")?, &path)?,
                tenant: None,
            },
        );
    }
    let mut ports = Vec::new();
    for (i, s) in MODEL
        .array(MODEL.get(anp, "anp_model", "servers")?, "anp_model.servers")?
        .iter()
        .enumerate()
    {
        let path = format!("anp_model.servers[{i}]");
        ports.push(ContainerPort {
            name: s
                .get("container_port_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            port: MODEL.u16(MODEL.get(s, &path, "port")?, &path)?,
            protocol: MODEL.protocol(MODEL.get(s, &path, "protocol")?, &path)?,
        });
    }
    for (i, pod) in MODEL
        .array(MODEL.get(anp, "anp_model", "pods")?, "anp_model.pods")?
        .iter()
        .enumerate()
    {
        let path = format!("anp_model.pods[{i}]");
        // Host-network pods are only used by node-peer tests, which the cases do not hold.
        if pod.get("host_network").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let ns = MODEL.str(MODEL.get(pod, &path, "namespace")?, &path)?;
        let name = MODEL.str(MODEL.get(pod, &path, "name")?, &path)?;
        let addr = plan
            .get(&format!("{ns}/{name}"))
            .copied()
            .ok_or_else(|| MODEL.err(&path, "pod missing from reference_ip_plan.anp_pods"))?;
        inv.endpoints.push(Endpoint {
            name: name.to_string(),
            namespace: ns.to_string(),
            kind: EndpointKind::Pod,
            labels: MODEL.labels(MODEL.get(pod, &path, "labels")?, &path)?,
            addresses: vec![addr],
            ports: ports.clone(),
        });
    }
    Ok(inv)
}

fn flow(src: &str, dst: &str, probe: &Value, path: &str) -> Result<Flow, ConformanceError> {
    Ok(Flow {
        src: FlowEnd::Endpoint(src.to_string()),
        dst: FlowEnd::Endpoint(dst.to_string()),
        protocol: CASES.protocol(CASES.get(probe, path, "protocol")?, path)?,
        port: CASES.u16(CASES.get(probe, path, "port")?, path)?,
    })
}

/// Whether a case is an ANP case (single `probes`) rather than a NetworkPolicy matrix case.
pub fn is_anp_case(case: &Value) -> bool {
    case.get("probes").is_some_and(Value::is_array)
}

/// Runs every case of `cases` (a list of either shape) against the engine, with `model`
/// (model.json). Returns the report; fails only on malformed input.
pub fn run(cases: &Value, model: &Value) -> Result<Report, ConformanceError> {
    let mut report = Report::default();
    let cases = CASES.array(cases, "")?;
    let needs_xyz = cases.iter().any(|c| !is_anp_case(c));
    let needs_anp = cases.iter().any(is_anp_case);
    let plans = MODEL.get(model, "", "reference_ip_plan")?;
    let (plan, order) = if needs_xyz {
        let plan = MODEL.ip_plan(
            MODEL.get(plans, "reference_ip_plan", "pods")?,
            "reference_ip_plan.pods",
        )?;
        let order = MODEL
            .array(MODEL.get(model, "", "pods_order")?, "pods_order")?
            .iter()
            .map(|v| MODEL.str(v, "pods_order").map(str::to_string))
            .collect::<Result<Vec<_>, _>>()?;
        (plan, order)
    } else {
        (BTreeMap::new(), Vec::new())
    };
    let (anp_plan, anp_inv) = if needs_anp {
        let plan = MODEL.ip_plan(
            MODEL.get(plans, "reference_ip_plan", "anp_pods")?,
            "reference_ip_plan.anp_pods",
        )?;
        let inv = anp_inventory(model, &plan)?;
        (plan, inv)
    } else {
        (BTreeMap::new(), Inventory::default())
    };

    for (i, case) in cases.iter().enumerate() {
        let path = format!("[{i}]");
        let id = CASES.str(CASES.get(case, &path, "id")?, &format!("{path}.id"))?;
        let policies = CASES.get(case, &path, "policies")?;
        let bad = if is_anp_case(case) {
            match policy_set(policies, &anp_plan) {
                Ok(set) => anp_case(&set, &anp_inv, case, &path)?,
                Err(e) => vec![format!("policies rejected: {e}")],
            }
        } else {
            let inv = xyz_inventory(model, case, &plan)?;
            match policy_set(policies, &plan) {
                Ok(set) => xyz_case(&set, &inv, &order, case, &path, &mut report.ignored_self)?,
                Err(e) => vec![format!("policies rejected: {e}")],
            }
        };
        match bad.first() {
            None => report.passed += 1,
            Some(first) => report.failures.push(format!(
                "FAIL {id}: {} mismatch(es); first: {first}",
                bad.len()
            )),
        }
    }
    Ok(report)
}

fn eval_line(
    set: &PolicySet,
    inv: &Inventory,
    f: &Flow,
    want: bool,
) -> Result<Option<String>, ConformanceError> {
    let verdict = evaluate(set, inv, f).map_err(|e| CASES.err("probe", e.to_string()))?;
    if verdict.allowed() == want {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}->{} {}/{}: want {}, got egress {} ({}) ingress {} ({})",
        f.src,
        f.dst,
        f.port,
        f.protocol.as_str(),
        if want { "allow" } else { "deny" },
        if verdict.egress.allowed() {
            "allow"
        } else {
            "deny"
        },
        crate::explain::reason_text(&verdict.egress.reason),
        if verdict.ingress.allowed() {
            "allow"
        } else {
            "deny"
        },
        crate::explain::reason_text(&verdict.ingress.reason),
    )))
}

fn xyz_case(
    set: &PolicySet,
    inv: &Inventory,
    order: &[String],
    case: &Value,
    path: &str,
    ignored_self: &mut usize,
) -> Result<Vec<String>, ConformanceError> {
    let self_enforced = case
        .get("self_probes_enforced_upstream")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut probes = vec![(
        CASES.get(case, path, "probe")?,
        CASES.get(case, path, "expected")?,
    )];
    if let Some(extra) = case.get("additional_probes").and_then(Value::as_array) {
        for (j, p) in extra.iter().enumerate() {
            let p_path = format!("{path}.additional_probes[{j}]");
            probes.push((
                CASES.get(p, &p_path, "probe")?,
                CASES.get(p, &p_path, "expected")?,
            ));
        }
    }
    let mut bad = Vec::new();
    for (probe, expected) in probes {
        for src in order {
            for dst in order {
                let e_path = format!("{path}.expected.{src}.{dst}");
                let want = CASES.bool(
                    expected
                        .get(src)
                        .and_then(|row| row.get(dst))
                        .ok_or_else(|| CASES.err(&e_path, "is missing"))?,
                    &e_path,
                )?;
                let f = flow(src, dst, probe, &format!("{path}.probe"))?;
                if let Some(line) = eval_line(set, inv, &f, want)? {
                    if src == dst && !self_enforced {
                        *ignored_self += 1;
                    } else {
                        bad.push(line);
                    }
                }
            }
        }
    }
    Ok(bad)
}

fn anp_case(
    set: &PolicySet,
    inv: &Inventory,
    case: &Value,
    path: &str,
) -> Result<Vec<String>, ConformanceError> {
    let mut bad = Vec::new();
    for (j, probe) in CASES
        .array(CASES.get(case, path, "probes")?, path)?
        .iter()
        .enumerate()
    {
        let p = format!("{path}.probes[{j}]");
        let src = CASES.str(CASES.get(probe, &p, "from")?, &p)?;
        let dst = CASES.str(CASES.get(probe, &p, "to")?, &p)?;
        let want = CASES.bool(CASES.get(probe, &p, "expected")?, &p)?;
        if let Some(line) = eval_line(set, inv, &flow(src, dst, probe, &p)?, want)? {
            bad.push(line);
        }
    }
    Ok(bad)
}

// ---------------------------------------------------------------------------------------------
// The dataplane runner's pure half: what to build, what to apply and probe per case, and how a
// probe's outcome is judged. `seam conformance netpol --dataplane` (the binary) does the I/O.

/// A pod the dataplane runner creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The model's labels (cases may override them).
    pub labels: BTreeMap<String, String>,
    /// Named container ports (published with the endpoint).
    pub named_ports: Vec<(String, u16, Protocol)>,
    /// What it serves.
    pub serves: Vec<(u16, Protocol)>,
}

impl ModelPod {
    /// `namespace/name`, as cases write pods.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The cluster a case file needs: the x/y/z model for NetworkPolicy cases, the ANP model for
/// ANP cases, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneModel {
    /// Namespaces with the model's labels.
    pub namespaces: Vec<(String, BTreeMap<String, String>)>,
    /// Pods.
    pub pods: Vec<ModelPod>,
}

/// One probe of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Client pod (`ns/pod`).
    pub from: String,
    /// Server pod (`ns/pod`).
    pub to: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Whether the connection must succeed.
    pub expected: bool,
}

/// One case, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCase {
    /// The case id.
    pub id: String,
    /// ANP case: a denied probe must time out (a refusal fails it).
    pub anp: bool,
    /// Whether upstream fails a case on a self pair (x/a → x/a).
    pub self_enforced: bool,
    /// Namespace labels that differ from the model at this step (full label sets).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Pod labels that differ from the model at this step, by `ns/pod` (full label sets).
    pub pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The policy objects, with symbolic addresses still in them ([`policy_documents`]).
    pub policies: Value,
    /// Every probe.
    pub probes: Vec<PlannedProbe>,
}

/// What a case file asks of the dataplane: the model to build and the cases in order.
pub fn dataplane_plan(
    cases: &Value,
    model: &Value,
) -> Result<(DataplaneModel, Vec<PlannedCase>), ConformanceError> {
    let list = CASES.array(cases, "")?;
    let mut out = DataplaneModel::default();
    if list.iter().any(|c| !is_anp_case(c)) {
        let servers = servers(MODEL.get(model, "", "servers")?, "servers")?;
        for (i, ns) in MODEL
            .array(MODEL.get(model, "", "namespaces")?, "namespaces")?
            .iter()
            .enumerate()
        {
            let path = format!("namespaces[{i}]");
            out.namespaces.push((
                MODEL.str(MODEL.get(ns, &path, "name")?, &path)?.to_string(),
                MODEL.labels(MODEL.get(ns, &path, "labels")?, &path)?,
            ));
        }
        for (i, pod) in MODEL
            .array(MODEL.get(model, "", "pods")?, "pods")?
            .iter()
            .enumerate()
        {
            let path = format!("pods[{i}]");
            let ports = container_ports(
                MODEL.get(pod, &path, "container_ports")?,
                &format!("{path}.container_ports"),
            )?;
            out.pods.push(ModelPod {
                namespace: MODEL
                    .str(MODEL.get(pod, &path, "namespace")?, &path)?
                    .to_string(),
                name: MODEL
                    .str(MODEL.get(pod, &path, "name")?, &path)?
                    .to_string(),
                labels: MODEL.labels(MODEL.get(pod, &path, "labels")?, &path)?,
                named_ports: ports
                    .into_iter()
                    .filter_map(|p| Some((p.name?, p.port, p.protocol)))
                    .collect(),
                serves: servers.clone(),
            });
        }
    }
    if list.iter().any(is_anp_case) {
        let anp = MODEL.get(model, "", "anp_model")?;
        let inv = anp_inventory(model, &anp_plan_placeholder(model)?)?;
        let serves = servers(MODEL.get(anp, "anp_model", "servers")?, "anp_model.servers")?;
        for (name, ns) in &inv.namespaces {
            out.namespaces.push((name.clone(), ns.labels.clone()));
        }
        for e in inv.endpoints {
            out.pods.push(ModelPod {
                namespace: e.namespace,
                name: e.name,
                labels: e.labels,
                named_ports: e
                    .ports
                    .into_iter()
                    .filter_map(|p| Some((p.name?, p.port, p.protocol)))
                    .collect(),
                serves: serves.clone(),
            });
        }
    }
    let mut planned = Vec::new();
    for (i, case) in list.iter().enumerate() {
        let path = format!("[{i}]");
        let id = CASES.str(CASES.get(case, &path, "id")?, &format!("{path}.id"))?;
        let anp = is_anp_case(case);
        let mut probes = Vec::new();
        if anp {
            for (j, probe) in CASES
                .array(CASES.get(case, &path, "probes")?, &path)?
                .iter()
                .enumerate()
            {
                let p = format!("{path}.probes[{j}]");
                probes.push(PlannedProbe {
                    from: CASES.str(CASES.get(probe, &p, "from")?, &p)?.to_string(),
                    to: CASES.str(CASES.get(probe, &p, "to")?, &p)?.to_string(),
                    port: CASES.u16(CASES.get(probe, &p, "port")?, &p)?,
                    protocol: CASES.protocol(CASES.get(probe, &p, "protocol")?, &p)?,
                    expected: CASES.bool(CASES.get(probe, &p, "expected")?, &p)?,
                });
            }
        } else {
            let order = MODEL
                .array(MODEL.get(model, "", "pods_order")?, "pods_order")?
                .iter()
                .map(|v| MODEL.str(v, "pods_order"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut matrices = vec![(
                CASES.get(case, &path, "probe")?,
                CASES.get(case, &path, "expected")?,
            )];
            if let Some(extra) = case.get("additional_probes").and_then(Value::as_array) {
                for (j, p) in extra.iter().enumerate() {
                    let p_path = format!("{path}.additional_probes[{j}]");
                    matrices.push((
                        CASES.get(p, &p_path, "probe")?,
                        CASES.get(p, &p_path, "expected")?,
                    ));
                }
            }
            for (probe, expected) in matrices {
                let p_path = format!("{path}.probe");
                let port = CASES.u16(CASES.get(probe, &p_path, "port")?, &p_path)?;
                let protocol = CASES.protocol(CASES.get(probe, &p_path, "protocol")?, &p_path)?;
                for src in &order {
                    for dst in &order {
                        let e_path = format!("{path}.expected.{src}.{dst}");
                        let want = CASES.bool(
                            expected
                                .get(*src)
                                .and_then(|row| row.get(*dst))
                                .ok_or_else(|| CASES.err(&e_path, "is missing"))?,
                            &e_path,
                        )?;
                        probes.push(PlannedProbe {
                            from: src.to_string(),
                            to: dst.to_string(),
                            port,
                            protocol,
                            expected: want,
                        });
                    }
                }
            }
        }
        let label_sets =
            |key: &str| -> Result<BTreeMap<String, BTreeMap<String, String>>, ConformanceError> {
                let Some(map) = case.get(key).and_then(Value::as_object) else {
                    return Ok(BTreeMap::new());
                };
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), CASES.labels(v, &format!("{path}.{key}.{k}"))?)))
                    .collect()
            };
        planned.push(PlannedCase {
            id: id.to_string(),
            anp,
            self_enforced: case
                .get("self_probes_enforced_upstream")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            namespace_labels: label_sets("namespace_labels")?,
            pod_labels: label_sets("pod_labels")?,
            policies: CASES.get(case, &path, "policies")?.clone(),
            probes,
        });
    }
    Ok((out, planned))
}

/// The ANP model's pods need some address to build their inventory; the runner only reads
/// names, labels and ports from it.
fn anp_plan_placeholder(model: &Value) -> Result<BTreeMap<String, Ipv4Addr>, ConformanceError> {
    let plans = MODEL.get(model, "", "reference_ip_plan")?;
    MODEL.ip_plan(
        MODEL.get(plans, "reference_ip_plan", "anp_pods")?,
        "reference_ip_plan.anp_pods",
    )
}

fn servers(list: &Value, path: &str) -> Result<Vec<(u16, Protocol)>, ConformanceError> {
    MODEL
        .array(list, path)?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = format!("{path}[{i}]");
            Ok((
                MODEL.u16(MODEL.get(s, &p, "port")?, &p)?,
                MODEL.protocol(MODEL.get(s, &p, "protocol")?, &p)?,
            ))
        })
        .collect()
}

/// The case's policy objects with the lab's real addresses substituted, each checked by the
/// engine's parser (a rejected object fails the case before anything is applied).
pub fn policy_documents(
    policies: &Value,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> Result<Vec<Value>, String> {
    let text = substitute(&policies.to_string(), addresses)?;
    let docs: Vec<Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    seam_policy::parse_json(&text).map_err(|e| e.to_string())?;
    Ok(docs)
}

/// How one probe ended, as the runner observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Connected (TCP handshake, UDP echo).
    Connected,
    /// Refused (RST, ICMP port unreachable).
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Another failure.
    Failed(String),
    /// Not probed: the protocol cannot be probed here (SCTP without kernel support).
    Skipped,
}

/// The verdicts of one case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseOutcome {
    /// Probes whose outcome disagrees with the expectation.
    pub mismatches: Vec<String>,
    /// Probes that were checked and agree.
    pub checked: usize,
    /// Probes not made (see [`Observed::Skipped`]).
    pub skipped: usize,
    /// Self-pair mismatches not counted because upstream does not enforce them.
    pub ignored_self: usize,
    /// Self pairs expected denied where upstream enforces them: a pod probing its own address
    /// never leaves its namespace (upstream probes through a Service, i.e. hairpin), so no
    /// firewall can be checked; neither passed nor failed.
    pub uncheckable_self: usize,
}

/// Judges one probe: a NetworkPolicy probe is blocked by any failure; an ANP probe expected
/// denied must time out (a refusal means the packet was rejected, not dropped).
pub fn judge(case: &PlannedCase, probe: &PlannedProbe, observed: &Observed, out: &mut CaseOutcome) {
    if *observed == Observed::Skipped {
        out.skipped += 1;
        return;
    }
    let connected = *observed == Observed::Connected;
    let self_pair = probe.from == probe.to;
    if self_pair && !probe.expected && !connected {
        out.checked += 1;
        return;
    }
    if self_pair && !probe.expected {
        if case.self_enforced {
            out.uncheckable_self += 1;
        } else {
            out.ignored_self += 1;
        }
        return;
    }
    let bad = if probe.expected {
        !connected
    } else {
        connected || (case.anp && *observed == Observed::Refused)
    };
    if bad {
        out.mismatches.push(format!(
            "{}->{} {}/{}: want {}, got {}",
            probe.from,
            probe.to,
            probe.port,
            probe.protocol.as_str(),
            if probe.expected {
                "connect"
            } else if case.anp {
                "drop (timeout)"
            } else {
                "blocked"
            },
            match observed {
                Observed::Connected => "connected".to_string(),
                Observed::Refused => "refused".to_string(),
                Observed::TimedOut => "timeout".to_string(),
                Observed::Failed(e) => format!("error: {e}"),
                Observed::Skipped => "skipped".to_string(),
            }
        ));
    } else {
        out.checked += 1;
    }
}

/// The outcome of a dataplane run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneReport {
    /// Cases whose every checked probe matched (and at least one probe was checked).
    pub passed: usize,
    /// One line per failing case: `FAIL <id>: …`.
    pub failures: Vec<String>,
    /// Cases with no probe that could be made (SCTP-only cases without SCTP).
    pub skipped_cases: Vec<String>,
    /// Probes not made.
    pub skipped_probes: usize,
    /// See [`CaseOutcome::ignored_self`].
    pub ignored_self: usize,
    /// See [`CaseOutcome::uncheckable_self`].
    pub uncheckable_self: usize,
}

impl DataplaneReport {
    /// Adds one case's outcome.
    pub fn record(&mut self, id: &str, outcome: CaseOutcome) {
        self.skipped_probes += outcome.skipped;
        self.ignored_self += outcome.ignored_self;
        self.uncheckable_self += outcome.uncheckable_self;
        if let Some(first) = outcome.mismatches.first() {
            self.failures.push(format!(
                "FAIL {id}: {} mismatch(es); first: {first}",
                outcome.mismatches.len()
            ));
        } else if outcome.checked == 0 {
            self.skipped_cases.push(id.to_string());
        } else {
            self.passed += 1;
        }
    }

    /// Records a case that could not be run (its policies were refused, the nodes never applied
    /// them, …) as failed.
    pub fn fail(&mut self, id: &str, why: &str) {
        self.failures.push(format!("FAIL {id}: {why}"));
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The closing line: `N passed, M failed`, then what was not checked.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed());
        let mut notes = Vec::new();
        if !self.skipped_cases.is_empty() {
            notes.push(format!(
                "{} case(s) skipped, every probe SCTP: {}",
                self.skipped_cases.len(),
                self.skipped_cases.join(", ")
            ));
        }
        if self.skipped_probes > 0 {
            notes.push(format!(
                "{} SCTP probe(s) skipped, not passed: this kernel has no SCTP sockets",
                self.skipped_probes
            ));
        }
        if self.uncheckable_self > 0 {
            notes.push(format!(
                "{} self-pair denials not checkable: a pod probing its own address never crosses the firewall",
                self.uncheckable_self
            ));
        }
        if self.ignored_self > 0 {
            notes.push(format!(
                "{} self-pair denials ignored where upstream ignores them",
                self.ignored_self
            ));
        }
        if !notes.is_empty() {
            s.push_str(&format!(" ({})", notes.join("; ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../seam-policy/test_data/netpol"
    );

    fn load(name: &str) -> Value {
        let text = std::fs::read_to_string(format!("{DATA}/{name}")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_case_passes() {
        let model = load("model.json");
        let report = run(&load("cases.json"), &model).unwrap();
        assert_eq!(
            (report.passed, report.failed()),
            (113, 0),
            "{:#?}",
            report.failures
        );
        let report = run(&load("anp_cases.json"), &model).unwrap();
        assert_eq!(
            (report.passed, report.failed()),
            (17, 0),
            "{:#?}",
            report.failures
        );
        assert_eq!(report.summary(), "17 passed, 0 failed");
    }

    #[test]
    fn a_wrong_expectation_fails_the_case() {
        let model = load("model.json");
        let mut cases = load("anp_cases.json");
        let probe = &mut cases[0]["probes"][0]["expected"];
        *probe = Value::Bool(!probe.as_bool().unwrap());
        let report = run(&cases, &model).unwrap();
        assert_eq!(report.failed(), 1);
        assert!(
            report.failures[0].starts_with("FAIL "),
            "{}",
            report.failures[0]
        );
    }

    #[test]
    fn malformed_input_names_the_place() {
        let model = load("model.json");
        let cases = serde_json::json!([{"id": "x", "policies": [], "probe": {"port": 80}}]);
        let err = run(&cases, &model).unwrap_err();
        assert!(err.to_string().starts_with("cases: "), "{err}");
    }

    #[test]
    fn the_dataplane_plan_holds_both_models_and_every_probe() {
        let model = load("model.json");
        let (xyz, cases) = dataplane_plan(&load("cases.json"), &model).unwrap();
        assert_eq!(xyz.namespaces.len(), 3);
        assert_eq!(xyz.pods.len(), 9);
        let xa = &xyz.pods[0];
        assert_eq!(xa.reference(), "x/a");
        assert!(xa
            .named_ports
            .contains(&("serve-81-udp".to_string(), 81, Protocol::Udp)));
        assert_eq!(xa.serves.len(), 6);
        assert_eq!(cases.len(), 113);
        let first = &cases[0];
        assert_eq!(first.probes.len(), 81);
        assert!(!first.self_enforced && !first.anp);
        let relabel = cases
            .iter()
            .find(|c| c.id == "e2e-ingress-from-updated-pod-s2")
            .unwrap();
        assert_eq!(relabel.pod_labels["x/b"]["pod2"], "updated");
        // cyclonus cases carry five more matrices.
        assert!(cases.iter().any(|c| c.probes.len() == 6 * 81));

        let (anp, cases) = dataplane_plan(&load("anp_cases.json"), &model).unwrap();
        assert_eq!(anp.pods.len(), 8, "host-network pods are not built");
        assert!(anp.pods[0]
            .named_ports
            .contains(&("web".to_string(), 80, Protocol::Tcp)));
        assert!(cases.iter().all(|c| c.anp));
    }

    #[test]
    fn policy_documents_use_the_real_addresses() {
        let plan = BTreeMap::from([("x/a".to_string(), Ipv4Addr::new(10, 240, 0, 2))]);
        let policies = serde_json::json!([{
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "{{net:x/a/4}}", "except": ["{{ip:x/a}}/32"]}}]}]}
        }]);
        let docs = policy_documents(&policies, &plan).unwrap();
        let block = &docs[0]["spec"]["egress"][0]["to"][0]["ipBlock"];
        assert_eq!(block["cidr"], "0.0.0.0/4");
        assert_eq!(block["except"][0], "10.240.0.2/32");
        assert!(policy_documents(&serde_json::json!([{"kind": "Nope"}]), &plan).is_err());
        let unknown = serde_json::json!([{"x": "{{ip:q/q}}"}]);
        assert!(policy_documents(&unknown, &plan)
            .unwrap_err()
            .contains("q/q"));
    }

    #[test]
    fn probes_are_judged_as_upstream_judges_them() {
        let case = |anp, self_enforced| PlannedCase {
            id: "c".into(),
            anp,
            self_enforced,
            namespace_labels: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            policies: Value::Null,
            probes: Vec::new(),
        };
        let probe = |from: &str, to: &str, expected| PlannedProbe {
            from: from.into(),
            to: to.into(),
            port: 80,
            protocol: Protocol::Tcp,
            expected,
        };
        let run = |c: &PlannedCase, p: &PlannedProbe, o: Observed| {
            let mut out = CaseOutcome::default();
            judge(c, p, &o, &mut out);
            out
        };
        let np = case(false, true);
        let anp = case(true, true);
        // Allowed must connect; denied may be refused or time out for NetworkPolicy.
        assert_eq!(
            run(&np, &probe("x/a", "x/b", true), Observed::Connected).checked,
            1
        );
        assert_eq!(
            run(&np, &probe("x/a", "x/b", true), Observed::TimedOut)
                .mismatches
                .len(),
            1
        );
        assert_eq!(
            run(&np, &probe("x/a", "x/b", false), Observed::Refused).checked,
            1
        );
        assert_eq!(
            run(&np, &probe("x/a", "x/b", false), Observed::Connected)
                .mismatches
                .len(),
            1
        );
        // ANP: a denial must be a drop.
        assert_eq!(
            run(&anp, &probe("a/0", "b/0", false), Observed::TimedOut).checked,
            1
        );
        let refused = run(&anp, &probe("a/0", "b/0", false), Observed::Refused);
        assert!(
            refused.mismatches[0].contains("want drop (timeout), got refused"),
            "{refused:?}"
        );
        // Self pairs never cross the firewall.
        assert_eq!(
            run(&np, &probe("x/a", "x/a", false), Observed::Connected).uncheckable_self,
            1
        );
        assert_eq!(
            run(
                &case(false, false),
                &probe("x/a", "x/a", false),
                Observed::Connected
            )
            .ignored_self,
            1
        );
        // Skipped probes are never passed.
        let mut sctp = probe("x/a", "x/b", true);
        sctp.protocol = Protocol::Sctp;
        let skipped = run(&np, &sctp, Observed::Skipped);
        assert_eq!((skipped.skipped, skipped.checked), (1, 0));
        let mut report = DataplaneReport::default();
        report.record("sctp-only", skipped);
        report.record(
            "ok",
            run(&np, &probe("x/a", "x/b", true), Observed::Connected),
        );
        report.record(
            "bad",
            run(&np, &probe("x/a", "x/b", true), Observed::TimedOut),
        );
        assert_eq!(report.passed, 1);
        assert_eq!(
            report.failures,
            vec!["FAIL bad: 1 mismatch(es); first: x/a->x/b 80/TCP: want connect, got timeout"]
        );
        assert!(report.summary().starts_with("1 passed, 1 failed (1 case(s) skipped, every probe SCTP: sctp-only; 1 SCTP probe(s) skipped"), "{}", report.summary());
    }
}
