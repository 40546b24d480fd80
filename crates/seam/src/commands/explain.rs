//! `seam explain SRC DST PORT/PROTO`: the engine's verdict for a new connection (to a Service
//! address: the Service port and the verdict to each candidate backend), with the deciding
//! rules' counters read from the agent API of the nodes that enforce them
//! ([`crate::agents`]), and the pair's recent flow records (what the dataplane decided, from
//! `GET /v1/flows`; to a Service address, the records of connections sent to it, whose `dst` is
//! the backend they reached).

use seam_client::ControllerClient;
use seam_firewall::explain;
use seam_model::flow::{FlowFilter, FlowRecord, PeerFilter};
use seam_policy::Flow;

use crate::cli::Target;
use crate::controller::{block_on, client};

/// `seam explain SRC DST PORT/PROTO`.
pub(crate) fn run(
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
    let (snapshot, recent) = block_on(async {
        let snapshot = client.snapshot().await?;
        Ok((snapshot, recent_flows(&client, src, dst).await))
    })?;
    // The deciding rules' counters, from the agent API of the node that enforces each (in a
    // lab without one, from the node's namespace): each node read once, and a node that cannot
    // be read leaves its rule's counter unknown, with why.
    let counters = match crate::agents::Counters::for_target(target) {
        Ok(counters) => counters,
        Err(e) => {
            eprintln!("seam: rule counters not read: {e:#}");
            None
        }
    };
    let cache = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let read = |node: &str| -> Result<std::collections::BTreeMap<String, (u64, u64)>, String> {
        if let Some(known) = cache.borrow().get(node) {
            return Clone::clone(known);
        }
        let result = read_node(counters.as_ref(), &snapshot.nodes, node);
        cache.borrow_mut().insert(node.to_string(), result.clone());
        result
    };
    let x = explain::explain(
        &snapshot,
        flow,
        counters
            .as_ref()
            .map(|_| &read as explain::CounterReader<'_>),
    )?;
    if json {
        let mut value = explain::render_json(&x);
        if let Some(object) = value.as_object_mut() {
            // Null when the controller could not be asked (the warning says why).
            let flows = match &recent {
                Ok(records) => serde_json::to_value(records)?,
                Err(_) => serde_json::Value::Null,
            };
            object.insert("recentFlows".to_string(), flows);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", explain::render_text(&x));
        match &recent {
            Ok(records) if records.is_empty() => {
                println!("recent flows: none recorded from {src} to {dst}")
            }
            Ok(records) => {
                // To a Service address: the records of connections sent to it, each naming the
                // backend it reached (`FlowFilter::to` matches a record's Service address).
                let to = if x.service.is_some() {
                    ", to the Service's backends"
                } else {
                    ""
                };
                let n = records.len();
                println!("recent flows (newest {n} of {src} -> {dst}{to}):");
                for r in records {
                    let cells = super::flows::row(r);
                    println!("  {}", cells.join("  ").trim_end());
                }
            }
            Err(_) => {}
        }
    }
    if let Err(e) = &recent {
        eprintln!("warning: recent flows not shown: {e:#}");
    }
    Ok(())
}

/// One node's rule counters by comment, or why they could not be read.
fn read_node(
    counters: Option<&crate::agents::Counters>,
    nodes: &[seam_model::Node],
    node: &str,
) -> Result<std::collections::BTreeMap<String, (u64, u64)>, String> {
    let counters = counters.ok_or("no way to read counters")?;
    let node = nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| format!("node {node} is not in the controller's list"))?;
    block_on(async { counters.read(node).await })
        .map(|rules| {
            rules
                .into_iter()
                .map(|(k, c)| (k, (c.packets, c.bytes)))
                .collect()
        })
        .map_err(|e| format!("{e:#}"))
}

/// How many of the pair's flow records `seam explain` shows.
const RECENT_FLOWS: usize = 10;

/// The newest flow records from `src` to `dst` (`namespace/name` or an address), oldest first.
async fn recent_flows(
    client: &ControllerClient,
    src: &str,
    dst: &str,
) -> anyhow::Result<Vec<FlowRecord>> {
    let filter = FlowFilter {
        from: Some(PeerFilter::parse(src).map_err(anyhow::Error::msg)?),
        to: Some(PeerFilter::parse(dst).map_err(anyhow::Error::msg)?),
        limit: Some(RECENT_FLOWS),
        ..FlowFilter::default()
    };
    Ok(client.flows(&filter).await?.records().await?)
}
