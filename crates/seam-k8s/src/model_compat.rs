//! TEMPORARY: decodes a Kubernetes-form Service or EndpointSlice document into Seam's types
//! until `seam_model::manifest::parse_value` (issue 12, helper MODEL) is on this branch; then
//! `services.rs` calls that instead and this module goes. Strict like the manifest code: unknown
//! fields are refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Meta {
    name: String,
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Meta,
    spec: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliceDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Meta,
    #[allow(dead_code)]
    address_type: String,
    #[serde(default)]
    endpoints: Vec<Value>,
    #[serde(default)]
    ports: Vec<Value>,
}

pub(crate) fn service(doc: Value) -> Result<seam_model::Service, String> {
    let doc: ServiceDoc = serde_json::from_value(doc).map_err(|e| e.to_string())?;
    let Value::Object(mut spec) = doc.spec else {
        return Err("spec: expected an object".into());
    };
    let cluster_ip = match spec.remove("clusterIP") {
        None => seam_model::ClusterIp::Auto,
        Some(Value::String(s)) if s == "None" => seam_model::ClusterIp::Headless,
        Some(Value::String(s)) if s.is_empty() => seam_model::ClusterIp::Auto,
        Some(Value::String(s)) => seam_model::ClusterIp::Address(
            s.parse()
                .map_err(|e| format!("spec.clusterIP {s:?}: {e}"))?,
        ),
        Some(_) => return Err("spec.clusterIP: expected a string".into()),
    };
    let affinity = spec.remove("sessionAffinity");
    let config = spec.remove("sessionAffinityConfig");
    let session_affinity = match affinity.as_ref().and_then(Value::as_str) {
        Some("ClientIP") => seam_model::SessionAffinity::ClientIp {
            timeout_seconds: config
                .as_ref()
                .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(seam_model::DEFAULT_AFFINITY_TIMEOUT_SECONDS),
        },
        _ => seam_model::SessionAffinity::None,
    };
    // Serialised with the fields Seam's struct knows; the enums above put back in its form.
    spec.insert(
        "clusterIp".into(),
        serde_json::to_value(cluster_ip).map_err(|e| e.to_string())?,
    );
    spec.insert(
        "sessionAffinity".into(),
        serde_json::to_value(session_affinity).map_err(|e| e.to_string())?,
    );
    if let Some(ips) = spec.remove("externalIPs") {
        spec.insert("externalIps".into(), ips);
    }
    if let Some(ip) = spec.remove("loadBalancerIP") {
        spec.insert("loadBalancerIp".into(), ip);
    }
    let spec: seam_model::ServiceSpec =
        serde_json::from_value(Value::Object(spec)).map_err(|e| format!("spec: {e}"))?;
    Ok(seam_model::Service {
        name: doc.metadata.name,
        namespace: doc.metadata.namespace,
        labels: doc.metadata.labels,
        annotations: doc.metadata.annotations,
        spec,
        status: seam_model::ServiceStatus::default(),
    })
}

pub(crate) fn endpoint_slice(doc: Value) -> Result<seam_model::EndpointSlice, String> {
    let doc: SliceDoc = serde_json::from_value(doc).map_err(|e| e.to_string())?;
    let service = doc
        .metadata
        .labels
        .get(seam_model::SERVICE_NAME_LABEL)
        .cloned()
        .ok_or("metadata.labels: no kubernetes.io/service-name")?;
    let endpoints = doc
        .endpoints
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("endpoints: {e}"))?;
    let ports = doc
        .ports
        .into_iter()
        .filter(|p| p.get("port").is_some())
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ports: {e}"))?;
    Ok(seam_model::EndpointSlice {
        name: doc.metadata.name,
        namespace: doc.metadata.namespace,
        service,
        labels: doc.metadata.labels,
        endpoints,
        ports,
    })
}
