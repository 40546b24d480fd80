//! The API commands: apply, get, delete, explain, conformance. Each reads its input, talks to the
//! controller and prints; the logic lives in the `seam` library.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use seam_client::ControllerClient;
use seam_lab::Lab;
use seam_policy::{Flow, PolicyKind};
use serde_json::Value;

use seam::explain;
use seam::manifest;

use crate::{Output, Target};

pub(crate) fn client(target: &Target) -> anyhow::Result<ControllerClient> {
    let endpoint = match &target.controller {
        Some(c) => c.clone(),
        None => {
            Lab::load(&target.lab)
                .with_context(|| {
                    format!(
                        "find the controller of lab {:?} (or pass --controller)",
                        target.lab
                    )
                })?
                .controller
        }
    };
    Ok(ControllerClient::new(&endpoint)?)
}

pub(crate) fn block_on<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?
        .block_on(fut)
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))
    }
}

/// `seam apply -f FILE`: validate every document, then write them all in one transaction on the
/// controller (all applied or none).
pub fn apply(file: &str, target: &Target) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let objects =
        manifest::parse_manifests(&text).with_context(|| format!("{file}: nothing applied"))?;
    let request =
        manifest::apply_request(&objects).with_context(|| format!("{file}: nothing applied"))?;
    let client = client(target)?;
    block_on(async {
        client.apply(&request.objects).await.map_err(|e| {
            // A controller older than the route answers every unknown path with this.
            let hint = if e.is_not_found() && e.to_string().ends_with("no such route") {
                " (the controller predates POST /v1/apply: upgrade it)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("apply {file}: nothing applied{hint}"))
        })?;
        for object in &objects {
            println!("{} applied", object.describe());
        }
        // Warn about what the whole set says (groups no EndpointGroup defines).
        let snapshot = client.snapshot().await?;
        for w in explain::policy_set(&snapshot).1 {
            eprintln!("warning: {w}");
        }
        Ok(())
    })
}

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

fn print_table(rows: &[Vec<String>]) {
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

/// `seam get KIND`.
pub fn get(kind: &str, output: Output, target: &Target) -> anyhow::Result<()> {
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
             nodes, segments, blocks or endpoints"
        ),
    };
    let client = client(target)?;
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
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => print!(
            "{}",
            serde_saphyr::to_string_multiple(&items).context("render YAML")?
        ),
        Output::Table => print_table(&table(plural, &items)),
    }
    Ok(())
}

/// `seam delete KIND NAME [-n NS]`.
pub fn delete(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    target: &Target,
) -> anyhow::Result<()> {
    let client = client(target)?;
    if matches!(kind, "namespace" | "namespaces" | "ns") {
        anyhow::ensure!(namespace.is_none(), "a namespace is not in a namespace");
        block_on(async { Ok(client.delete_namespace(name).await?) })?;
        println!("Namespace {name} deleted");
        return Ok(());
    }
    if matches!(kind, "tenant" | "tenants") {
        anyhow::ensure!(namespace.is_none(), "a tenant is not in a namespace");
        block_on(async { Ok(client.delete_tenant(name).await?) })?;
        println!("Tenant {name} deleted");
        return Ok(());
    }
    let k = manifest::policy_kind_by_name(kind).with_context(|| {
        format!("unknown kind {kind:?}: use a policy kind (networkpolicy, adminnetworkpolicy, baselineadminnetworkpolicy, endpointgroup, contract), namespace or tenant")
    })?;
    match (manifest::is_namespaced(k), namespace) {
        (true, None) => anyhow::bail!("{k} is namespaced: give its namespace with -n"),
        (false, Some(_)) => anyhow::bail!("{k} is cluster-scoped: drop -n"),
        _ => {}
    }
    block_on(async { Ok(client.delete_policy(k.as_str(), namespace, name).await?) })?;
    match namespace {
        Some(ns) => println!("{k} {ns}/{name} deleted"),
        None => println!("{k} {name} deleted"),
    }
    Ok(())
}

/// A tenant operation of `seam tenant`.
#[derive(Debug, Clone)]
pub enum TenantOp {
    /// `seam tenant join NS INTO`: NS joins the tenant of INTO.
    Join {
        /// The namespace that moves.
        namespace: String,
        /// The namespace whose tenant it joins.
        into: String,
    },
    /// `seam tenant isolate NS`.
    Isolate(String),
    /// `seam tenant make-global NS`.
    MakeGlobal(String),
}

/// `seam tenant join|isolate|make-global`: prints where the namespace is now.
pub fn tenant(op: TenantOp, target: &Target) -> anyhow::Result<()> {
    let client = client(target)?;
    let change = block_on(async {
        Ok(match &op {
            TenantOp::Join { namespace, into } => client.join_tenant(namespace, into).await?,
            TenantOp::Isolate(ns) => client.isolate_namespace(ns).await?,
            TenantOp::MakeGlobal(ns) => client.make_namespace_global(ns).await?,
        })
    })?;
    let t = &change.tenant;
    println!(
        "Namespace {} is in tenant {} (isolation {}{})",
        change.namespace.name,
        t.name,
        t.isolation.as_str(),
        if t.global { ", global" } else { "" }
    );
    Ok(())
}

/// `seam explain SRC DST PORT/PROTO`.
pub fn explain(
    src: &str,
    dst: &str,
    port: &str,
    json: bool,
    target: &Target,
) -> anyhow::Result<()> {
    let (port, protocol) = explain::parse_port_protocol(port)?;
    let flow = Flow {
        src: explain::parse_end(src)?,
        dst: explain::parse_end(dst)?,
        protocol,
        port,
    };
    let client = client(target)?;
    let snapshot = block_on(async { Ok(client.snapshot().await?) })?;
    // Inside a lab the nodes' tables can be read directly from their namespaces; a real
    // cluster will ask each agent instead.
    let lab = if target.controller.is_none() {
        Lab::load(&target.lab).ok()
    } else {
        None
    };
    let read = |node: &str| -> Result<std::collections::BTreeMap<String, (u64, u64)>, String> {
        let lab = lab.as_ref().ok_or("no lab")?;
        let info = lab.node(node).map_err(|e| e.to_string())?;
        let table = seam_linux::netns::run_in(&info.netns_path, seam_linux::nft::read_counters)
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(table
            .into_iter()
            .map(|(k, c)| (k, (c.packets, c.bytes)))
            .collect())
    };
    let x = explain::explain(
        &snapshot,
        flow,
        lab.as_ref().map(|_| &read as explain::CounterReader<'_>),
    )?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explain::render_json(&x))?
        );
    } else {
        print!("{}", explain::render_text(&x));
    }
    Ok(())
}

/// `seam conformance netpol --cases FILE`: exit status 1 when a case fails.
pub fn conformance(
    cases: &Path,
    model: Option<&Path>,
    dataplane: Option<&seam_lab::conformance::Options>,
) -> anyhow::Result<ExitCode> {
    let model_path = match model {
        Some(m) => m.to_path_buf(),
        None => cases.parent().unwrap_or(Path::new(".")).join("model.json"),
    };
    let read = |p: &Path| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {} as JSON", p.display()))
    };
    let (cases_doc, model_doc) = (read(cases)?, read(&model_path)?);
    let suite = seam_conformance::Suite::from_json(&cases_doc, &model_doc);
    let (failed, summary) = match dataplane {
        Some(opts) => {
            // Malformed cases fail before anything is built.
            let report = (|| -> anyhow::Result<_> {
                let suite = suite?;
                seam_lab::conformance::pods_to_build(&suite)?;
                Ok(seam_lab::conformance::run(&suite, opts, crate::bin_dir()?)?)
            })()
            .with_context(|| format!("run {} through the dataplane", cases.display()))?;
            (report.failed(), report.summary())
        }
        None => {
            let mut engine = seam_conformance::Engine::explained_by(explain::reason_text);
            let report = suite
                .and_then(|suite| seam_conformance::check(&suite, &mut engine))
                .with_context(|| format!("run {}", cases.display()))?;
            for line in &report.failures {
                println!("{line}");
            }
            (report.failed(), report.summary())
        }
    };
    println!("{summary}");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
