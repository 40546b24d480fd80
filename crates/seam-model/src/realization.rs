//! Policy realization: which generation of each policy object every node enforces in its kernel.
//!
//! A policy object's **generation** is the store revision of its last write (its `mod_revision`,
//! the `ETag` of its GET): it grows with every write, and a node that enforces a generation
//! enforces every older one too. Every agent reports, per policy object (NetworkPolicy,
//! AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy, EndpointGroup,
//! Contract) and per Tenant, the generation its kernel's table holds (the one of its last table
//! write that succeeded), or the error that keeps the object out of force ([`NodeRealization`],
//! `PUT /v1/realization/<node>`). The controller answers, per object, how many of the nodes that
//! must enforce it have ([`realization_status`], `GET /v1/realization`).
//!
//! Which nodes must enforce a change: every node with a node record (`/v1/nodes`), whatever its
//! role, since every agent compiles every policy object into its own table. A node that has not
//! reported yet counts as not realized, as does one whose agent is dead: a node is taken out of
//! the count by deleting it (`seam node delete`), which deletes its report too.
//!
//! Architecture invariant: pure; the counting is one function of the current generations, the
//! node list and the reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::objects::policy_name;

/// Longest object name in a report: a policy store name (`<Kind>/<namespace or _>/<name>`:
/// a kind, a namespace label and a DNS subdomain).
pub const MAX_REALIZATION_NAME_LEN: usize = 400;

/// Longest error text in a report (an agent shortens longer ones): enough for a decode error
/// with its field path, short enough that a node with many broken objects stays in one request.
pub const MAX_REALIZATION_ERROR_LEN: usize = 1024;

/// The name a Tenant has in realization records: `Tenant/_/<name>`, the form of a cluster-scoped
/// policy object's store name ([`policy_name`]), so that one map names both.
pub fn tenant_realization_name(name: &str) -> String {
    policy_name("Tenant", None, name)
}

/// What one node enforces: the body of `PUT /v1/realization/<node>` (node role, own node only),
/// kept by the controller at `/seam/v1/realization/<node>` until the node is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRealization {
    /// The node.
    pub node: String,
    /// Per policy object (store name) and tenant ([`tenant_realization_name`]), what it enforces.
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectRealization>,
    /// Why the node's last firewall pass failed (compile or kernel write), if it did: the objects
    /// keep the generations of the last pass that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one node enforces of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRealization {
    /// The generation the node acted on: in force in its kernel, or (with `error`) refused.
    pub generation: u64,
    /// Why this generation is not in force on the node (it could not read or compile it): the
    /// object is kept by name, reported and never in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeRealization {
    /// Checks the bounds of every name and error text.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        if self.node.is_empty() {
            p.add("node", "is required");
        }
        if self
            .error
            .as_ref()
            .is_some_and(|e| e.len() > MAX_REALIZATION_ERROR_LEN)
        {
            p.add(
                "error",
                format!("longer than {MAX_REALIZATION_ERROR_LEN} bytes"),
            );
        }
        for (name, object) in &self.objects {
            if name.is_empty() || name.len() > MAX_REALIZATION_NAME_LEN {
                p.add(
                    "objects",
                    format!(
                        "{:?}: a name of 1 to {MAX_REALIZATION_NAME_LEN} bytes",
                        shorten(name, 64)
                    ),
                );
            }
            if object
                .error
                .as_ref()
                .is_some_and(|e| e.len() > MAX_REALIZATION_ERROR_LEN)
            {
                p.add(
                    &format!("objects.{name}.error"),
                    format!("longer than {MAX_REALIZATION_ERROR_LEN} bytes"),
                );
            }
        }
        p.finish("NodeRealization", &self.node)
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn shorten(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The answer of `GET /v1/realization`: every policy object and tenant with how many of the
/// nodes that must enforce it do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RealizationStatus {
    /// The nodes that must enforce every object (every node with a node record), by name.
    pub nodes: Vec<String>,
    /// Per object, in name order.
    pub objects: Vec<ObjectStatus>,
}

impl RealizationStatus {
    /// The status of one object by its name (a policy store name or [`tenant_realization_name`]).
    pub fn object(&self, name: &str) -> Option<&ObjectStatus> {
        self.objects
            .binary_search_by(|o| o.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.objects.get(i))
    }
}

/// How far one object is realized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// A policy store name (`Contract/_/web`) or [`tenant_realization_name`].
    pub name: String,
    /// Its current generation (store revision of its last write).
    pub generation: u64,
    /// How many nodes enforce this generation or a newer one, without error.
    pub realized: usize,
    /// How many nodes must ([`RealizationStatus::nodes`]).
    pub required: usize,
    /// The nodes that do not, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub laggards: Vec<Laggard>,
}

impl ObjectStatus {
    /// Every node that must enforce it does.
    pub fn is_realized(&self) -> bool {
        self.realized == self.required
    }

    /// Whether it is realized as of `generation` (every node enforces that generation or a newer
    /// one): what `seam apply --wait` waits for, with the generation its apply wrote.
    pub fn is_realized_at(&self, generation: u64) -> bool {
        self.is_realized() || self.laggards.iter().all(|l| l.is_past(generation))
    }

    /// `9/10`.
    pub fn fraction(&self) -> String {
        format!("{}/{}", self.realized, self.required)
    }
}

/// A node that does not enforce an object's current generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Laggard {
    /// The node.
    pub node: String,
    /// The generation it reported; `None` when it reported nothing of this object (or nothing
    /// at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The object's error on this node, or else the node's own (its last firewall pass failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node has not reported at all (no agent yet, or it never reached the controller).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreported: bool,
}

impl Laggard {
    /// Whether it enforces `generation` or newer without an error of the object's.
    fn is_past(&self, generation: u64) -> bool {
        self.generation.is_some_and(|g| g >= generation) && self.error.is_none()
    }

    /// What the node is at, for people: `at generation 41`, `not reported`, with the error.
    pub fn describe(&self) -> String {
        let at = match (self.unreported, self.generation) {
            (true, _) => "has not reported".to_string(),
            (false, Some(g)) => format!("at generation {g}"),
            (false, None) => "does not know it yet".to_string(),
        };
        match &self.error {
            Some(e) => format!("{at}: {e}"),
            None => at,
        }
    }
}

/// Counts, for every object of `generations` (name → current generation), the `nodes` that
/// enforce it according to their `reports` (by node): a node counts when it reported the
/// object's current generation or a newer one without an error for it. A node without a report,
/// or whose report lacks the object, counts as not realized. Reports of nodes not in `nodes`
/// are ignored.
pub fn realization_status(
    generations: &BTreeMap<String, u64>,
    nodes: &[String],
    reports: &BTreeMap<String, NodeRealization>,
) -> RealizationStatus {
    let mut nodes: Vec<String> = nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    let objects = generations
        .iter()
        .map(|(name, &generation)| {
            let laggards: Vec<Laggard> = nodes
                .iter()
                .filter_map(|node| laggard(node, name, generation, reports.get(node)))
                .collect();
            ObjectStatus {
                name: name.clone(),
                generation,
                realized: nodes.len() - laggards.len(),
                required: nodes.len(),
                laggards,
            }
        })
        .collect();
    RealizationStatus { nodes, objects }
}

/// `None` when `node` enforces `generation` of `name`, else why not.
fn laggard(
    node: &str,
    name: &str,
    generation: u64,
    report: Option<&NodeRealization>,
) -> Option<Laggard> {
    let Some(report) = report else {
        return Some(Laggard {
            node: node.to_string(),
            unreported: true,
            ..Laggard::default()
        });
    };
    let object = report.objects.get(name);
    match object {
        Some(o) if o.generation >= generation && o.error.is_none() => None,
        _ => Some(Laggard {
            node: node.to_string(),
            generation: object.map(|o| o.generation),
            error: object
                .and_then(|o| o.error.clone())
                .or_else(|| report.error.clone()),
            unreported: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, objects: &[(&str, u64, Option<&str>)]) -> NodeRealization {
        NodeRealization {
            node: node.into(),
            objects: objects
                .iter()
                .map(|(n, g, e)| {
                    (
                        n.to_string(),
                        ObjectRealization {
                            generation: *g,
                            error: e.map(str::to_string),
                        },
                    )
                })
                .collect(),
            error: None,
        }
    }

    #[test]
    fn a_node_counts_when_it_reported_the_current_generation_or_newer_without_error() {
        let generations = BTreeMap::from([
            ("Contract/_/web".to_string(), 10),
            ("Tenant/_/t1".to_string(), 4),
        ]);
        let nodes: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let reports = BTreeMap::from([
            (
                "a".to_string(),
                report(
                    "a",
                    &[("Contract/_/web", 10, None), ("Tenant/_/t1", 4, None)],
                ),
            ),
            // Behind on the contract.
            (
                "b".to_string(),
                report(
                    "b",
                    &[("Contract/_/web", 9, None), ("Tenant/_/t1", 5, None)],
                ),
            ),
            // Cannot compile it.
            (
                "c".to_string(),
                report(
                    "c",
                    &[
                        ("Contract/_/web", 10, Some("bad")),
                        ("Tenant/_/t1", 4, None),
                    ],
                ),
            ),
            // A node no longer in the list: ignored.
            ("z".to_string(), report("z", &[])),
        ]);
        let status = realization_status(&generations, &nodes, &reports);
        assert_eq!(status.nodes, nodes);
        let web = status.object("Contract/_/web").unwrap();
        assert_eq!(
            (web.realized, web.required, web.fraction()),
            (1, 4, "1/4".into())
        );
        let described: Vec<(String, String)> = web
            .laggards
            .iter()
            .map(|l| (l.node.clone(), l.describe()))
            .collect();
        assert_eq!(
            described,
            [
                ("b".to_string(), "at generation 9".to_string()),
                ("c".to_string(), "at generation 10: bad".to_string()),
                ("d".to_string(), "has not reported".to_string()),
            ]
        );
        assert!(!web.is_realized());
        assert!(!web.is_realized_at(9), "c has an error, d has not reported");
        let tenant = status.object("Tenant/_/t1").unwrap();
        assert_eq!(tenant.fraction(), "3/4");
        assert!(status.object("Contract/_/other").is_none());
    }

    #[test]
    fn a_node_error_names_the_laggard_and_bounds_are_checked() {
        let mut r = report("b", &[("Contract/_/web", 3, None)]);
        r.error = Some("applying the firewall failed: EPERM".into());
        let status = realization_status(
            &BTreeMap::from([("Contract/_/web".to_string(), 4)]),
            &["b".to_string()],
            &BTreeMap::from([("b".to_string(), r.clone())]),
        );
        assert_eq!(
            status.objects[0].laggards[0].describe(),
            "at generation 3: applying the firewall failed: EPERM"
        );
        assert!(r.validate().is_ok());
        r.error = Some("x".repeat(MAX_REALIZATION_ERROR_LEN + 1));
        r.objects.insert(
            String::new(),
            ObjectRealization {
                generation: 1,
                error: None,
            },
        );
        let err = r.validate().unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert_eq!(shorten("héllo", 2), "h");
        assert_eq!(tenant_realization_name("t1"), "Tenant/_/t1");
    }
}
