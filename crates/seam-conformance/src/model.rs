//! `model.json`: the clusters the cases run on. NetworkPolicy cases use the x/y/z × a/b/c model
//! (nine pods, a full matrix per probe), AdminNetworkPolicy cases the `anp_model`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{ContainerPort, Endpoint, EndpointKind, Inventory, Namespace, Protocol};
use serde_json::Value;

use crate::case::Case;
use crate::json::{Labels, CASES, MODEL};
use crate::ConformanceError;

/// A pod of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// How cases name it (`namespace/name`).
    pub reference: String,
    /// The model's labels (cases may override them).
    pub labels: Labels,
    /// Its container ports, named or not (the endpoint publishes them).
    pub ports: Vec<ContainerPort>,
}

impl ModelPod {
    /// The named container ports, as a CNI config carries them.
    pub fn named_ports(&self) -> Vec<(String, u16, Protocol)> {
        self.ports
            .iter()
            .filter_map(|p| Some((p.name.clone()?, p.port, p.protocol)))
            .collect()
    }
}

/// One of the two models: namespaces, pods, what the pods serve and the reference address plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Namespaces with the model's labels, in the model's order.
    pub namespaces: Vec<(String, Labels)>,
    /// Pods, in the model's order (host-network pods of the ANP model left out: only node-peer
    /// tests use them, and the cases hold none).
    pub pods: Vec<ModelPod>,
    /// The ports every pod serves; `None` where the model does not say (the x/y/z model's
    /// `servers` are only needed to serve real packets).
    pub serves: Option<Vec<(u16, Protocol)>>,
    /// The model's reference addresses by pod reference (what the symbolic addresses of the
    /// policies stand for when no real pods exist).
    pub reference_plan: BTreeMap<String, Ipv4Addr>,
}

impl Cluster {
    /// The inventory of one case: the model with the case's label overrides, pods at `addresses`.
    pub fn inventory(
        &self,
        case: &Case,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Inventory, ConformanceError> {
        self.inventory_with(&case.namespace_labels, &case.pod_labels, addresses)
    }

    /// The inventory of the model as it is (no case's labels), pods at `addresses`.
    pub fn base_inventory(
        &self,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Inventory, ConformanceError> {
        self.inventory_with(&BTreeMap::new(), &BTreeMap::new(), addresses)
    }

    fn inventory_with(
        &self,
        namespace_labels: &BTreeMap<String, Labels>,
        pod_labels: &BTreeMap<String, Labels>,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Inventory, ConformanceError> {
        let mut inv = Inventory::default();
        for (name, labels) in &self.namespaces {
            let labels = namespace_labels.get(name).unwrap_or(labels);
            inv.namespaces.insert(
                name.clone(),
                Namespace {
                    labels: labels.clone(),
                    tenant: None,
                },
            );
        }
        for pod in &self.pods {
            let addr = addresses.get(&pod.reference).copied().ok_or_else(|| {
                MODEL.err(
                    &format!("pods.{}", pod.reference),
                    "has no address in the plan",
                )
            })?;
            inv.endpoints.push(Endpoint {
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                kind: EndpointKind::Pod,
                labels: pod_labels
                    .get(&pod.reference)
                    .unwrap_or(&pod.labels)
                    .clone(),
                addresses: vec![addr],
                ports: pod.ports.clone(),
            });
        }
        Ok(inv)
    }

    /// The servers, or the error a runner that serves real packets reports without them.
    pub fn serves(&self) -> Result<&[(u16, Protocol)], ConformanceError> {
        self.serves
            .as_deref()
            .ok_or_else(|| MODEL.err(".servers", "is missing"))
    }
}

/// `model.json`, with the parts the cases need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// The x/y/z × a/b/c model, for NetworkPolicy cases.
    pub xyz: Option<Cluster>,
    /// `pods_order`: the rows and columns of a NetworkPolicy case's matrix.
    pub order: Vec<String>,
    /// The AdminNetworkPolicy model.
    pub anp: Option<Cluster>,
}

impl Model {
    /// Reads the x/y/z model if `xyz`, the ANP model if `anp`.
    pub fn from_json(model: &Value, xyz: bool, anp: bool) -> Result<Model, ConformanceError> {
        let mut out = Model::default();
        let plans = MODEL.get(model, "", "reference_ip_plan")?;
        if xyz {
            let plan = MODEL.ip_plan(
                MODEL.get(plans, "reference_ip_plan", "pods")?,
                "reference_ip_plan.pods",
            )?;
            out.order = MODEL
                .array(MODEL.get(model, "", "pods_order")?, "pods_order")?
                .iter()
                .map(|v| MODEL.str(v, "pods_order").map(str::to_string))
                .collect::<Result<Vec<_>, _>>()?;
            out.xyz = Some(xyz_model(model, plan)?);
        }
        if anp {
            let plan = MODEL.ip_plan(
                MODEL.get(plans, "reference_ip_plan", "anp_pods")?,
                "reference_ip_plan.anp_pods",
            )?;
            out.anp = Some(anp_model(model, plan)?);
        }
        Ok(out)
    }

    /// The model a case runs on.
    pub fn cluster(&self, case: &Case) -> Option<&Cluster> {
        if case.is_anp() {
            self.anp.as_ref()
        } else {
            self.xyz.as_ref()
        }
    }
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

fn xyz_model(model: &Value, plan: BTreeMap<String, Ipv4Addr>) -> Result<Cluster, ConformanceError> {
    let mut out = Cluster::default();
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
        let reference = MODEL.str(MODEL.get(pod, &path, "ref")?, &path)?;
        let labels = MODEL.labels(MODEL.get(pod, &path, "labels")?, &path)?;
        if !plan.contains_key(reference) {
            return Err(MODEL.err(&path, "pod missing from reference_ip_plan.pods"));
        }
        out.pods.push(ModelPod {
            name: MODEL
                .str(MODEL.get(pod, &path, "name")?, &path)?
                .to_string(),
            namespace: MODEL
                .str(MODEL.get(pod, &path, "namespace")?, &path)?
                .to_string(),
            reference: reference.to_string(),
            labels,
            ports: container_ports(
                MODEL.get(pod, &path, "container_ports")?,
                &format!("{path}.container_ports"),
            )?,
        });
    }
    out.serves = match model.get("servers") {
        Some(list) => Some(servers(list, "servers")?),
        None => None,
    };
    out.reference_plan = plan;
    Ok(out)
}

fn anp_model(model: &Value, plan: BTreeMap<String, Ipv4Addr>) -> Result<Cluster, ConformanceError> {
    let anp = MODEL.get(model, "", "anp_model")?;
    let mut out = Cluster::default();
    for (i, ns) in MODEL
        .array(
            MODEL.get(anp, "anp_model", "namespaces")?,
            "anp_model.namespaces",
        )?
        .iter()
        .enumerate()
    {
        let path = format!("anp_model.namespaces[{i}]");
        out.namespaces.push((
            MODEL.str(MODEL.get(ns, &path, "name")?, &path)?.to_string(),
            MODEL.labels(MODEL.get(ns, &path, "labels")?, &path)?,
        ));
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
        let reference = format!("{ns}/{name}");
        if !plan.contains_key(&reference) {
            return Err(MODEL.err(&path, "pod missing from reference_ip_plan.anp_pods"));
        }
        out.pods.push(ModelPod {
            namespace: ns.to_string(),
            name: name.to_string(),
            reference,
            labels: MODEL.labels(MODEL.get(pod, &path, "labels")?, &path)?,
            ports: ports.clone(),
        });
    }
    out.serves = Some(
        ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect::<Vec<_>>(),
    );
    out.reference_plan = plan;
    Ok(out)
}

/// Label sets of a case (`namespace_labels`, `pod_labels`): full sets that replace the model's.
pub(crate) fn label_overrides(
    case: &Value,
    key: &str,
) -> Result<BTreeMap<String, Labels>, ConformanceError> {
    let Some(map) = case.get(key).and_then(Value::as_object) else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), CASES.labels(v, &format!("{key}.{k}"))?)))
        .collect()
}
