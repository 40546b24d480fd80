//! `seam get KIND`: a table, JSON or YAML of one kind of object.

use anyhow::Context;
use seam_model::manifest;
use seam_policy::PolicyKind;
use serde_json::Value;

use crate::cli::{Output, Target};
use crate::commands::realization;
use crate::controller::{block_on, client};

fn policy_row(p: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    vec![
        s(&p["kind"]),
        p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("-")
            .to_string(),
        s(&p["metadata"]["name"]),
    ]
}

fn labels_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

fn table(kind: &str, items: &[Value]) -> Vec<Vec<String>> {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        "nodes" => (
            vec!["NAME", "UNDERLAY", "ROLE"],
            items
                .iter()
                .map(|o| vec![s(&o["name"]), s(&o["underlayIp"]), s(&o["role"])])
                .collect(),
        ),
        "segments" => (
            vec!["NAME", "SUBNET", "VNI", "TENANT", "NAMESPACE", "SNAT"],
            items
                .iter()
                .map(|o| {
                    vec![
                        s(&o["name"]),
                        s(&o["subnet"]),
                        s(&o["vni"]),
                        s(&o["tenant"]),
                        s(&o["namespace"]),
                        if o["snat"] == Value::Bool(true) {
                            "on"
                        } else {
                            "off"
                        }
                        .to_string(),
                    ]
                })
                .collect(),
        ),
        "blocks" => (
            vec!["SEGMENT", "CIDR", "NODE"],
            items
                .iter()
                .map(|o| vec![s(&o["segment"]), s(&o["cidr"]), s(&o["node"])])
                .collect(),
        ),
        "endpoints" => (
            vec!["NAME", "KIND", "IP", "NODE", "SEGMENT", "LABELS"],
            items
                .iter()
                .map(|o| {
                    vec![
                        s(&o["name"]),
                        s(&o["kind"]),
                        s(&o["ip"]),
                        s(&o["node"]),
                        s(&o["segment"]),
                        labels_text(&o["labels"]),
                    ]
                })
                .collect(),
        ),
        "namespaces" => (
            vec!["NAME", "TENANT", "LABELS"],
            items
                .iter()
                .map(|o| vec![s(&o["name"]), s(&o["tenant"]), labels_text(&o["labels"])])
                .collect(),
        ),
        "tenants" => (
            vec!["NAME", "ISOLATION", "GLOBAL"],
            items
                .iter()
                .map(|o| vec![s(&o["name"]), s(&o["isolation"]), s(&o["global"])])
                .collect(),
        ),
        _ => (
            vec!["KIND", "NAMESPACE", "NAME"],
            items.iter().map(policy_row).collect(),
        ),
    };
    let mut out = vec![header.into_iter().map(str::to_string).collect()];
    out.extend(rows);
    out
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Whether `item` (listed as `plural`) is the object `name` (`name`, or `namespace/name`).
fn named(plural: &str, item: &Value, name: &str) -> bool {
    if !matches!(
        plural,
        "nodes" | "segments" | "namespaces" | "tenants" | "endpoints" | "blocks"
    ) {
        let meta = &item["metadata"];
        let own = meta["name"].as_str();
        return match (name.split_once('/'), meta["namespace"].as_str()) {
            (Some((ns, n)), Some(item_ns)) => ns == item_ns && own == Some(n),
            (Some(_), None) => false,
            (None, _) => own == Some(name),
        };
    }
    let key = if plural == "blocks" { "cidr" } else { "name" };
    item[key].as_str() == Some(name)
}

/// `seam get KIND [NAME]`.
pub(crate) fn run(
    kind: &str,
    name: Option<&str>,
    output: Output,
    target: &Target,
) -> anyhow::Result<()> {
    if let Some(plural) = crate::commands::services::kind(kind) {
        if let Some(name) = name {
            anyhow::bail!("seam get {plural} lists them all; {name:?}: no NAME for this kind");
        }
        return crate::commands::services::get(plural, output, target);
    }
    let policy_kind: Option<PolicyKind> = manifest::policy_kind_by_name(kind);
    let plural = match (kind, policy_kind) {
        ("policies" | "policy", _) => "policies",
        (_, Some(k)) => manifest::policy_plural(k),
        ("nodes" | "node", _) => "nodes",
        ("segments" | "segment", _) => "segments",
        ("blocks" | "block", _) => "blocks",
        ("endpoints" | "endpoint", _) => "endpoints",
        ("namespaces" | "namespace" | "ns", _) => "namespaces",
        ("tenants" | "tenant", _) => "tenants",
        (other, None) => anyhow::bail!(
            "unknown kind {other:?}: use policies, networkpolicies, adminnetworkpolicies, \
             baselineadminnetworkpolicies, endpointgroups, contracts, namespaces, tenants, \
             nodes, segments, blocks, endpoints, services, endpointslices or addresspools"
        ),
    };
    let client = client(target)?;
    // Policy objects and tenants: how many nodes enforce each. Best effort: the objects are
    // listed even when the status cannot be read.
    let enforced = plural == "tenants" || plural == "policies" || policy_kind.is_some();
    let status = match enforced {
        true => block_on(realization::status(&client)).unwrap_or_else(|e| {
            eprintln!("warning: no realization status: {e:#}");
            None
        }),
        false => None,
    };
    let items: Vec<Value> = block_on(async {
        Ok(match plural {
            "nodes" => serde_json::to_value(client.list_nodes().await?)?,
            "segments" => serde_json::to_value(client.list_segments().await?)?,
            "blocks" => serde_json::to_value(client.list_blocks().await?)?,
            "endpoints" => serde_json::to_value(client.list_endpoints().await?)?,
            "namespaces" => serde_json::to_value(client.list_namespaces().await?)?,
            "tenants" => serde_json::to_value(client.list_tenants().await?)?,
            _ => Value::Array(client.list_policies().await?),
        })
    })
    .map(|v| match v {
        Value::Array(items) => items,
        other => vec![other],
    })?;
    let items: Vec<Value> = match policy_kind {
        Some(k) if plural != "policies" => items
            .into_iter()
            .filter(|p| p["kind"].as_str() == Some(k.as_str()))
            .collect(),
        _ => items,
    };
    let mut items: Vec<Value> = match name {
        Some(name) => items
            .into_iter()
            .filter(|i| named(plural, i, name))
            .collect(),
        None => items,
    };
    if let (Some(name), true) = (name, items.is_empty()) {
        anyhow::bail!("no {kind} named {name:?}");
    }
    // One object asked for by name: its realization status with it (the nodes behind, their
    // errors), as a Kubernetes object's status comes with it.
    if let (Some(_), Some(status)) = (name, &status) {
        for item in items.iter_mut() {
            let object = realization::listed_name(plural, item).and_then(|n| status.object(&n));
            if let (Some(object), Some(map)) = (object, item.as_object_mut()) {
                map.insert(
                    "status".to_string(),
                    serde_json::json!({"realization": realization::status_value(object)}),
                );
            }
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => print!(
            "{}",
            serde_saphyr::to_string_multiple(&items).context("render YAML")?
        ),
        Output::Table | Output::Wide => {
            let mut rows = table(plural, &items);
            if let Some(status) = &status {
                realization::add_columns(&mut rows, plural, &items, status, output == Output::Wide);
            }
            if output == Output::Wide && !NOT_POLICIES.contains(&plural) {
                rows = with_hits(rows, &items, &client, target);
            }
            print_table(&rows)
        }
    }
    Ok(())
}

/// The kinds `seam get` lists that are not policy objects.
const NOT_POLICIES: [&str; 6] = [
    "nodes",
    "segments",
    "blocks",
    "endpoints",
    "namespaces",
    "tenants",
];

/// `rows` (a header, then one row per item) with a HITS column: the packets the kernel
/// counted for each policy object's rules, summed over the nodes (read from their agents). A
/// node that could not be read is named on stderr; with none read, HITS is `-`.
fn with_hits(
    mut rows: Vec<Vec<String>>,
    items: &[Value],
    client: &seam_client::ControllerClient,
    target: &Target,
) -> Vec<Vec<String>> {
    let read = crate::agents::Counters::for_target(target).and_then(|counters| {
        let Some(counters) = counters else {
            anyhow::bail!("--ca, --cert and --key (a reader's or an admin's) are needed to read the nodes' agents");
        };
        block_on(async {
            let nodes = client.list_nodes().await?;
            Ok(counters.read_all(&nodes).await)
        })
    });
    let read = match read {
        Ok(read) => {
            if let Some(warning) = read.warning() {
                eprintln!("seam: {warning}");
            }
            Some(read).filter(|r| !r.nodes.is_empty())
        }
        Err(e) => {
            eprintln!("seam: no hit counters: {e:#}");
            None
        }
    };
    if let Some(header) = rows.first_mut() {
        header.push("HITS".to_string());
    }
    for (row, item) in rows.iter_mut().skip(1).zip(items) {
        let hits = read
            .as_ref()
            .and_then(|r| crate::agents::policy_hits(item, r));
        row.push(hits.map_or_else(|| "-".to_string(), |h| h.to_string()));
    }
    rows
}
