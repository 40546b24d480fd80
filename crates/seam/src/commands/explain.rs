//! `seam explain SRC DST PORT/PROTO`: the engine's verdict for a new connection (to a Service
//! address: the Service port and the verdict to each candidate backend), with the
//! nodes' rule counters when the controller is a lab's.

use seam_firewall::explain;
use seam_lab::Lab;
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
    // Inside a lab the nodes' tables can be read directly from their namespaces; a real
    // cluster will ask each agent instead.
    let lab = if target.controller.is_none() {
        Lab::load(&target.lab).ok()
    } else {
        None
    };
    let read = |node: &str| -> Result<std::collections::BTreeMap<String, (u64, u64)>, String> {
        let lab = lab.as_ref().ok_or("no lab")?;
        lab.rule_counters(node).map_err(|e| e.to_string())
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
