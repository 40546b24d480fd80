//! Policy realization in the CLI: the REALIZED column of `seam get` (nodes that enforce an
//! object's current generation / nodes that must), the laggards in `-o wide` and in the
//! `status` of one object (`seam get contract web -o yaml`), and `seam apply --wait`.

use std::time::{Duration, Instant};

use anyhow::Context;
use seam_client::ControllerClient;
use seam_model::{
    policy_name, tenant_realization_name, ApplyObject, ObjectStatus, RealizationStatus,
};
use serde_json::{json, Value};

/// How often `--wait` asks the controller.
const POLL: Duration = Duration::from_millis(200);

/// The controller's realization status; `None` from a controller that predates it.
pub(crate) async fn status(client: &ControllerClient) -> anyhow::Result<Option<RealizationStatus>> {
    match client.realization().await {
        Ok(status) => Ok(Some(status)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The realization name of an object `seam get` lists: a policy object's store name, or a
/// tenant's.
pub(crate) fn listed_name(plural: &str, item: &Value) -> Option<String> {
    if plural == "tenants" {
        return item["name"].as_str().map(tenant_realization_name);
    }
    let kind = item["kind"].as_str()?;
    let name = item["metadata"]["name"].as_str()?;
    Some(policy_name(
        kind,
        item["metadata"]["namespace"].as_str(),
        name,
    ))
}

/// `n2: at generation 41; n3: has not reported`.
fn laggards_text(object: &ObjectStatus) -> String {
    if object.laggards.is_empty() {
        return "-".to_string();
    }
    object
        .laggards
        .iter()
        .map(|l| format!("{}: {}", l.node, l.describe()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Appends REALIZED (and, when `wide`, LAGGARDS) to a table whose first row is the header and
/// whose other rows are `items`, in order.
pub(crate) fn add_columns(
    rows: &mut [Vec<String>],
    plural: &str,
    items: &[Value],
    status: &RealizationStatus,
    wide: bool,
) {
    let Some((header, body)) = rows.split_first_mut() else {
        return;
    };
    header.push("REALIZED".to_string());
    if wide {
        header.push("LAGGARDS".to_string());
    }
    for (row, item) in body.iter_mut().zip(items) {
        let object = listed_name(plural, item).and_then(|n| status.object(&n));
        row.push(object.map_or_else(|| "-".to_string(), ObjectStatus::fraction));
        if wide {
            row.push(object.map_or_else(|| "-".to_string(), laggards_text));
        }
    }
}

/// The `status.realization` of one object for `-o yaml`/`-o json`: its generation, how many
/// nodes enforce it, and each laggard with what it is at and its error.
pub(crate) fn status_value(object: &ObjectStatus) -> Value {
    let laggards: Vec<Value> = object
        .laggards
        .iter()
        .map(|l| {
            let mut v = json!({"node": l.node, "state": l.describe()});
            if let Some(g) = l.generation {
                v["generation"] = json!(g);
            }
            if let Some(e) = &l.error {
                v["error"] = json!(e);
            }
            v
        })
        .collect();
    json!({
        "generation": object.generation,
        "realized": object.fraction(),
        "laggards": laggards,
    })
}

/// The objects of an apply that nodes enforce (policy objects and tenants), as (what to call
/// them, realization name).
pub(crate) fn enforced_objects(objects: &[ApplyObject]) -> Vec<(String, String)> {
    objects
        .iter()
        .filter_map(|o| {
            let name = match o {
                ApplyObject::Tenant(t) => tenant_realization_name(&t.name),
                ApplyObject::Policy(v) => policy_name(
                    v["kind"].as_str()?,
                    v["metadata"]["namespace"].as_str(),
                    v["metadata"]["name"].as_str()?,
                ),
                _ => return None,
            };
            Some((o.describe(), name))
        })
        .collect()
}

/// Waits until every node that must enforce `objects` (described, realization name) enforces
/// `generation` of each (or a newer one), asking every [`POLL`]; after `timeout`, fails naming
/// each object still behind with its laggards.
pub(crate) async fn wait(
    client: &ControllerClient,
    objects: &[(String, String)],
    generation: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = status(client).await?.context(
            "the controller predates realization status (GET /v1/realization): cannot --wait",
        )?;
        let behind = behind(&status, objects, generation);
        if behind.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let mut report = format!(
                "timed out after {} waiting for {} of {} objects to be realized on every node:",
                show_duration(timeout),
                behind.len(),
                objects.len()
            );
            for line in behind {
                report.push_str("\n  ");
                report.push_str(&line);
            }
            anyhow::bail!(report);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A line per object of `objects` that not every node enforces as of `generation`: the object,
/// how many nodes enforce it, and each laggard.
fn behind(
    status: &RealizationStatus,
    objects: &[(String, String)],
    generation: u64,
) -> Vec<String> {
    objects
        .iter()
        .filter_map(|(what, name)| {
            // Gone meanwhile (deleted since): nothing left to enforce.
            let object = status.object(name)?;
            if object.is_realized_at(generation) {
                return None;
            }
            let laggards: Vec<String> = object
                .laggards
                .iter()
                .map(|l| format!("{} {}", l.node, l.describe()))
                .collect();
            Some(format!(
                "{what} (generation {}): realized on {} nodes; {}",
                object.generation.max(generation),
                object.fraction(),
                laggards.join("; ")
            ))
        })
        .collect()
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `--timeout`: `30s`, `500ms`, `2m`, or a number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::{realization_status, NodeRealization, ObjectRealization};
    use std::collections::BTreeMap;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").is_err());
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn the_laggards_of_each_object_behind_are_named() {
        let generations = BTreeMap::from([
            ("Contract/_/web".to_string(), 12),
            ("Tenant/_/t1".to_string(), 12),
        ]);
        let report = NodeRealization {
            node: "n1".into(),
            objects: BTreeMap::from([
                (
                    "Contract/_/web".to_string(),
                    ObjectRealization {
                        generation: 12,
                        error: None,
                    },
                ),
                (
                    "Tenant/_/t1".to_string(),
                    ObjectRealization {
                        generation: 12,
                        error: None,
                    },
                ),
            ]),
            error: None,
        };
        let status = realization_status(
            &generations,
            &["n1".to_string(), "n2".to_string()],
            &BTreeMap::from([("n1".to_string(), report)]),
        );
        let objects = vec![
            ("Contract web".to_string(), "Contract/_/web".to_string()),
            ("Tenant t1".to_string(), "Tenant/_/t1".to_string()),
            ("Contract gone".to_string(), "Contract/_/gone".to_string()),
        ];
        assert_eq!(
            behind(&status, &objects, 12),
            [
                "Contract web (generation 12): realized on 1/2 nodes; n2 has not reported",
                "Tenant t1 (generation 12): realized on 1/2 nodes; n2 has not reported",
            ]
        );
        let mut rows = vec![vec!["KIND".to_string()], vec!["Contract".to_string()]];
        let item = json!({"kind": "Contract", "metadata": {"name": "web"}});
        add_columns(&mut rows, "contracts", &[item], &status, true);
        assert_eq!(rows[0], ["KIND", "REALIZED", "LAGGARDS"]);
        assert_eq!(rows[1], ["Contract", "1/2", "n2: has not reported"]);
    }
}
