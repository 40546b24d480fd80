//! `seam audit`: the controller's audit log, newest last.

use anyhow::Context;
use seam_model::AuditRecord;

use crate::cli::{Output, Target};
use crate::controller::{block_on, client};

/// The table: time, who, verb, key, and the object's revision before → after (`-` before a
/// create).
fn table(records: &[AuditRecord]) -> Vec<[String; 5]> {
    let mut rows = vec![["TIME", "WHO", "VERB", "KEY", "REVISION"].map(str::to_string)];
    rows.extend(records.iter().map(|r| {
        let before = r.before.map_or_else(|| "-".to_string(), |b| b.to_string());
        [
            r.at.clone(),
            r.who.clone(),
            r.verb.clone(),
            r.key.clone(),
            format!("{before}→{}", r.revision),
        ]
    }));
    rows
}

/// `seam audit [--limit N] [-o json]`.
pub(crate) fn run(limit: usize, output: Output, target: &Target) -> anyhow::Result<()> {
    let client = client(target)?;
    let records =
        block_on(async { Ok(client.audit(Some(limit)).await?) }).context("read the audit log")?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&records)?),
        Output::Yaml => print!(
            "{}",
            serde_saphyr::to_string_multiple(&records).context("render YAML")?
        ),
        Output::Table | Output::Wide => {
            let rows = table(&records);
            let widths: Vec<usize> = (0..5)
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            for row in &rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                println!("{}", line.join("  ").trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_both_revisions() {
        let record = |before, revision| AuditRecord {
            revision,
            who: "node/n1".to_string(),
            verb: "PUT".to_string(),
            key: "/seam/v1/nodes/n1".to_string(),
            before,
            at: "2026-12-07T12:00:00Z".to_string(),
        };
        let rows = table(&[record(None, 4), record(Some(4), 9)]);
        assert_eq!(rows[0][0], "TIME");
        assert_eq!(rows[1][4], "-→4");
        assert_eq!(rows[2][4], "4→9");
        assert_eq!(rows[2][1], "node/n1");
    }
}
