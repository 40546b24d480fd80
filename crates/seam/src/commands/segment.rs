//! `seam segment put|snat`: explicit segments, and a segment's SNAT option, through the API.

use anyhow::Context;
use seam_model::{ObjectKind, Segment};
use serde_json::Value;

use crate::cli::{OnOff, SegmentCmd};
use crate::commands::read_input;
use crate::controller::{block_on, client};

/// How often a read-modify-write command reads again after a concurrent change.
pub const UPDATE_ATTEMPTS: u32 = 5;

pub(crate) fn parse_segment(text: &str) -> anyhow::Result<Segment> {
    let trimmed = text.trim_start();
    let value: Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).context("parse JSON")?
    } else {
        serde_saphyr::from_str(text).context("parse YAML")?
    };
    let segment: Segment = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("Segment field {path}: {}", e.into_inner())
    })?;
    segment.validate()?;
    Ok(segment)
}

pub(crate) fn run(command: SegmentCmd) -> anyhow::Result<()> {
    match command {
        SegmentCmd::Put { file, target } => {
            let text = read_input(&file)?;
            let segment =
                parse_segment(&text).with_context(|| format!("{file}: nothing changed"))?;
            let client = client(&target)?;
            let stored = block_on(async { Ok(client.put_segment(&segment).await?) })
                .with_context(|| format!("segment {}: nothing changed", segment.name))?;
            println!(
                "segment {} {} vni {} snat {}",
                stored.name,
                stored.subnet,
                stored.vni,
                if stored.snat { "on" } else { "off" }
            );
            Ok(())
        }
        SegmentCmd::Snat {
            name,
            state,
            target,
        } => {
            let client = client(&target)?;
            let on = state == OnOff::On;
            // A conditional write: a change made to the segment between the read and the write
            // (another `seam segment put`, another `snat`) is not overwritten; the read is
            // repeated instead.
            let written = block_on(async {
                Ok(client
                    .update::<Segment, _>(ObjectKind::Segment, &name, UPDATE_ATTEMPTS, |segment| {
                        let change = segment.snat != on;
                        segment.snat = on;
                        change
                    })
                    .await)
            })?;
            match written {
                Ok(_) => {}
                Err(e) if e.is_revision_conflict() => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "segment {name} changed concurrently {UPDATE_ATTEMPTS} times in a row; gave up, snat not changed"
                    )))
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("segment {name}"))),
            }
            println!("segment {name} snat {}", if on { "on" } else { "off" });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: vms\ntenant: default\nsubnet: 192.168.10.0/24\ngateway: 192.168.10.1\nvni: 100\nblockPrefix: 28\nsnat: true\n";

    #[test]
    fn a_segment_reads_from_yaml_and_json_alike() {
        let from_yaml = parse_segment(YAML).unwrap();
        assert!(from_yaml.snat);
        let json = serde_json::to_string(&from_yaml).unwrap();
        assert_eq!(parse_segment(&json).unwrap(), from_yaml);
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let typo = parse_segment(&YAML.replace("snat:", "snta:")).unwrap_err();
        assert!(
            format!("{typo:#}").contains("unknown field `snta`"),
            "{typo:#}"
        );
        let wrong = parse_segment(&YAML.replace("snat: true", "snat: sometimes")).unwrap_err();
        assert!(format!("{wrong:#}").contains("field snat"), "{wrong:#}");
        let bad = parse_segment(&YAML.replace("192.168.10.1", "10.0.0.1")).unwrap_err();
        assert!(format!("{bad:#}").contains("gateway"), "{bad:#}");
    }
}
