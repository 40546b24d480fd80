//! `seam explain SRC DST PORT/PROTO`: the engine's verdict for a new connection (to a Service
//! address: the Service port and the verdict to each candidate backend), with the deciding
//! rules' counters read from the agent API of the nodes that enforce them
//! ([`crate::agents`]).

use seam_firewall::explain;
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
    let snapshot = block_on(async { Ok(client.snapshot().await?) })?;
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
        println!(
            "{}",
            serde_json::to_string_pretty(&explain::render_json(&x))?
        );
    } else {
        print!("{}", explain::render_text(&x));
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
