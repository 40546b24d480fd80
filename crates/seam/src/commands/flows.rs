//! `seam flows`: the controller's flow records, as a table or NDJSON, optionally followed.

use std::io::Write;

use anyhow::Context;
use seam_client::FlowEvent;
use seam_model::flow::{verdict_name, FlowFilter, FlowPeer, FlowReason, FlowRecord, PeerKind};

use crate::cli::{FlowsArgs, FlowsOutput};
use crate::controller::{block_on, client};

/// The filter the flags name, read by the parser the controller uses (so a bad flag gets the
/// words the controller would answer with, before anything is sent).
pub(crate) fn filter_of(args: &FlowsArgs) -> anyhow::Result<FlowFilter> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("node", &args.node),
        ("verdict", &args.verdict),
        ("policy", &args.policy),
        ("since", &args.since),
        ("limit", &args.limit),
    ] {
        if let Some(value) = value {
            pairs.push((key, value));
        }
    }
    let mut filter = FlowFilter::from_pairs(pairs)?;
    filter.follow = args.follow;
    Ok(filter)
}

/// `seam flows [--from X] [--to Y] [--node N] [--verdict V] [--policy P] [--since D] [--limit N]
/// [--follow] [-o table|json]`.
pub(crate) fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    let filter = filter_of(args)?;
    let client = client(&args.target)?;
    block_on(async move {
        let mut stream = client.flows(&filter).await.context("read flow records")?;
        if stream.agent_dropped() > 0 {
            eprintln!(
                "note: the agents dropped {} flow records on the way to the controller (it was slow or unreachable); the records here are not all there were",
                stream.agent_dropped()
            );
        }
        let mut out = std::io::stdout().lock();
        let mut rows = Vec::new();
        if args.output == FlowsOutput::Table {
            writeln!(out, "{}", format_row(&header(), None))?;
        }
        while let Some(event) = stream.next().await {
            match event.context("read flow records")? {
                FlowEvent::Lagged(n) => {
                    eprintln!("note: {n} flow records skipped: this reader fell behind");
                }
                FlowEvent::Record(record) => match args.output {
                    FlowsOutput::Json => {
                        serde_json::to_writer(&mut out, &record)?;
                        writeln!(out)?;
                        out.flush()?;
                    }
                    // Followed: each row as it comes, in fixed columns.
                    FlowsOutput::Table if args.follow => {
                        writeln!(out, "{}", format_row(&row(&record), Some(&FIXED_WIDTHS)))?;
                        out.flush()?;
                    }
                    FlowsOutput::Table => rows.push(row(&record)),
                },
            }
        }
        print_rows(&mut out, &rows)?;
        Ok(())
    })
}

/// The columns of the table.
const COLUMNS: usize = 8;

/// Column widths of a followed table (a row is printed before the next is known).
const FIXED_WIDTHS: [usize; COLUMNS] = [12, 10, 24, 1, 24, 10, 8, 40];

fn header() -> [String; COLUMNS] {
    [
        "TIME (UTC)",
        "NODE",
        "SRC",
        "",
        "DST",
        "PROTO/PORT",
        "VERDICT",
        "POLICY/RULE",
    ]
    .map(str::to_string)
}

/// One record as table cells; a Service the client addressed is added to the last cell.
pub(crate) fn row(r: &FlowRecord) -> [String; COLUMNS] {
    let proto = match r.dst.port {
        Some(port) => format!("{}/{port}", r.protocol),
        None => r.protocol.clone(),
    };
    let mut verdict = verdict_name(r.verdict).to_string();
    if r.suppressed > 0 {
        verdict.push_str(&format!(" (+{} suppressed)", r.suppressed));
    }
    let mut decided = match (&r.policy, &r.rule) {
        (Some(policy), Some(rule)) => format!("{policy} [{rule}]"),
        (Some(policy), None) => policy.clone(),
        (None, _) => reason_text(r.reason).to_string(),
    };
    if let Some(tier) = &r.tier {
        decided.push_str(&format!(" ({tier})"));
    }
    if let Some(s) = &r.service {
        decided.push_str(&format!("  SERVICE {} via {}:{}", s.service, s.ip, s.port));
    }
    [
        clock(r.time_ms),
        r.node.clone(),
        peer(&r.src),
        "→".to_string(),
        peer(&r.dst),
        proto,
        verdict,
        decided,
    ]
}

/// What a record without a policy was decided by.
fn reason_text(reason: FlowReason) -> &'static str {
    match reason {
        FlowReason::Rule => "rule",
        FlowReason::Isolation => "isolation (no rule allowed it)",
        FlowReason::DefaultDeny => "default deny",
        FlowReason::Pass => "passed to the baseline",
        FlowReason::DefaultAllow => "default allow",
        FlowReason::NoEndpoints => "no endpoints",
    }
}

/// `namespace/name` of an endpoint, `node:NAME` of a node, else the address.
fn peer(p: &FlowPeer) -> String {
    match (p.kind, &p.namespace, &p.name) {
        (PeerKind::Node, _, Some(name)) => format!("node:{name}"),
        (_, Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => p.ip.to_string(),
    }
}

/// `HH:MM:SS.mmm` of a Unix time in milliseconds, UTC.
fn clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// The cells padded to `widths` (or as they are), two spaces apart.
fn format_row(cells: &[String; COLUMNS], widths: Option<&[usize; COLUMNS]>) -> String {
    let line: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let w = widths.map_or(0, |w| w[i]);
            format!("{cell:<w$}")
        })
        .collect();
    line.join("  ").trim_end().to_string()
}

/// The rows (header excluded: it was printed first) in columns as wide as their widest cell.
fn print_rows(out: &mut impl Write, rows: &[[String; COLUMNS]]) -> anyhow::Result<()> {
    let mut widths = [0; COLUMNS];
    for row in rows.iter().chain(std::iter::once(&header())) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        writeln!(out, "{}", format_row(row, Some(&widths)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::flow::{FlowDirection, FlowService, FlowVerdict};

    #[test]
    fn a_row_says_who_what_and_why() {
        let record = FlowRecord {
            time_ms: 20_430 * 86_400_000 + 3_723_123,
            node: "n1".to_string(),
            direction: FlowDirection::Ingress,
            protocol: "TCP".to_string(),
            src: FlowPeer {
                ip: "10.1.0.5".parse().unwrap(),
                port: Some(40000),
                kind: PeerKind::Pod,
                namespace: Some("web".to_string()),
                name: Some("client".to_string()),
            },
            dst: FlowPeer {
                ip: "10.2.0.7".parse().unwrap(),
                port: Some(5432),
                kind: PeerKind::World,
                namespace: None,
                name: None,
            },
            verdict: FlowVerdict::Denied,
            reason: FlowReason::DefaultDeny,
            tier: Some("baseline".to_string()),
            policy: None,
            rule: None,
            service: Some(FlowService {
                service: "db/pg".to_string(),
                ip: "10.96.0.10".parse().unwrap(),
                port: 5432,
            }),
            suppressed: 3,
        };
        let cells = row(&record);
        assert_eq!(cells[0], "01:02:03.123");
        assert_eq!(cells[2], "web/client");
        assert_eq!(cells[4], "10.2.0.7");
        assert_eq!(cells[5], "TCP/5432");
        assert_eq!(cells[6], "denied (+3 suppressed)");
        assert_eq!(
            cells[7],
            "default deny (baseline)  SERVICE db/pg via 10.96.0.10:5432"
        );
    }
}
