//! `cases.json` / `anp_cases.json`: the cases, each with its policies, label changes and probes.
//!
//! Two shapes, told apart per case: NetworkPolicy cases (`probe` + `expected`, a full matrix over
//! the model's `pods_order`, plus `additional_probes`) and ANP cases (`probes`, single probes over
//! the `anp_model`).

use std::collections::BTreeMap;

use seam_policy::Protocol;
use serde_json::Value;

use crate::json::{Labels, CASES, MODEL};
use crate::model::{label_overrides, Model};
use crate::ConformanceError;

/// One probe of a case and its expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Client pod (`ns/pod`).
    pub from: String,
    /// Server pod (`ns/pod`).
    pub to: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Whether the connection must succeed.
    pub expected: bool,
}

/// One case, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The case id.
    pub id: String,
    /// An AdminNetworkPolicy case: on the ANP model, and a denial must be a drop.
    pub anp: bool,
    /// Whether upstream fails a case on a self pair (x/a → x/a).
    pub self_enforced: bool,
    /// Namespace labels that differ from the model at this step (full label sets).
    pub namespace_labels: BTreeMap<String, Labels>,
    /// Pod labels that differ from the model at this step, by `ns/pod` (full label sets).
    pub pod_labels: BTreeMap<String, Labels>,
    /// The policy objects, with symbolic addresses still in them
    /// ([`policy_set`](crate::policy_set), [`policy_documents`](crate::policy_documents)).
    pub policies: Value,
    /// Every probe, in the file's order (matrix by matrix, row by row).
    pub probes: Vec<Probe>,
}

impl Case {
    /// Whether this is an AdminNetworkPolicy case.
    pub fn is_anp(&self) -> bool {
        self.anp
    }

    /// The distinct (port, protocol) pairs the case probes, in order of first appearance.
    pub fn ports(&self) -> Vec<(u16, Protocol)> {
        let mut out = Vec::new();
        for p in &self.probes {
            if !out.contains(&(p.port, p.protocol)) {
                out.push((p.port, p.protocol));
            }
        }
        out
    }
}

/// Whether a case (as JSON) is an ANP case (single `probes`) rather than a matrix case.
pub fn is_anp_case(case: &Value) -> bool {
    case.get("probes").is_some_and(Value::is_array)
}

/// A case file and the model it runs on, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// The models the cases need (only those).
    pub model: Model,
    /// The cases, in order.
    pub cases: Vec<Case>,
}

impl Suite {
    /// Reads `cases` (a list of either shape) and `model` (model.json).
    pub fn from_json(cases: &Value, model: &Value) -> Result<Suite, ConformanceError> {
        let list = CASES.array(cases, "")?;
        let xyz = list.iter().any(|c| !is_anp_case(c));
        let anp = list.iter().any(is_anp_case);
        let model = Model::from_json(model, xyz, anp)?;
        let cases = list
            .iter()
            .enumerate()
            .map(|(i, c)| read_case(c, &format!("[{i}]"), &model.order))
            .collect::<Result<_, _>>()?;
        Ok(Suite { model, cases })
    }

    /// Reads the texts of a case file and of model.json, as the callers read them from disk. The cases are
    /// parsed first: a cases file that is not JSON is reported before a model that is not.
    pub fn from_texts(cases: &str, model: &str) -> Result<Suite, ConformanceError> {
        let cases = CASES.parse(cases)?;
        Suite::from_json(&cases, &MODEL.parse(model)?)
    }

    /// The case with this id.
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }
}

fn read_case(case: &Value, path: &str, order: &[String]) -> Result<Case, ConformanceError> {
    let id = CASES.str(CASES.get(case, path, "id")?, &format!("{path}.id"))?;
    let policies = CASES.get(case, path, "policies")?.clone();
    let namespace_labels = label_overrides(case, "namespace_labels")?;
    let pod_labels = label_overrides(case, "pod_labels")?;
    let anp = is_anp_case(case);
    let probes = if anp {
        anp_probes(case, path)?
    } else {
        matrix_probes(case, path, order)?
    };
    Ok(Case {
        id: id.to_string(),
        anp,
        self_enforced: case
            .get("self_probes_enforced_upstream")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        namespace_labels,
        pod_labels,
        policies,
        probes,
    })
}

fn anp_probes(case: &Value, path: &str) -> Result<Vec<Probe>, ConformanceError> {
    let mut out = Vec::new();
    for (j, probe) in CASES
        .array(CASES.get(case, path, "probes")?, path)?
        .iter()
        .enumerate()
    {
        let p = format!("{path}.probes[{j}]");
        out.push(Probe {
            from: CASES.str(CASES.get(probe, &p, "from")?, &p)?.to_string(),
            to: CASES.str(CASES.get(probe, &p, "to")?, &p)?.to_string(),
            expected: CASES.bool(CASES.get(probe, &p, "expected")?, &p)?,
            protocol: CASES.protocol(CASES.get(probe, &p, "protocol")?, &p)?,
            port: CASES.u16(CASES.get(probe, &p, "port")?, &p)?,
        });
    }
    Ok(out)
}

/// The matrices of a NetworkPolicy case: `probe` + `expected`, then `additional_probes`.
fn matrix_probes(
    case: &Value,
    path: &str,
    order: &[String],
) -> Result<Vec<Probe>, ConformanceError> {
    let mut matrices = vec![(
        CASES.get(case, path, "probe")?,
        CASES.get(case, path, "expected")?,
    )];
    if let Some(extra) = case.get("additional_probes").and_then(Value::as_array) {
        for (j, p) in extra.iter().enumerate() {
            let p_path = format!("{path}.additional_probes[{j}]");
            matrices.push((
                CASES.get(p, &p_path, "probe")?,
                CASES.get(p, &p_path, "expected")?,
            ));
        }
    }
    let mut out = Vec::new();
    let p_path = format!("{path}.probe");
    for (probe, expected) in matrices {
        for src in order {
            for dst in order {
                let e_path = format!("{path}.expected.{src}.{dst}");
                let want = CASES.bool(
                    expected
                        .get(src)
                        .and_then(|row| row.get(dst))
                        .ok_or_else(|| CASES.err(&e_path, "is missing"))?,
                    &e_path,
                )?;
                out.push(Probe {
                    from: src.clone(),
                    to: dst.clone(),
                    protocol: CASES.protocol(CASES.get(probe, &p_path, "protocol")?, &p_path)?,
                    port: CASES.u16(CASES.get(probe, &p_path, "port")?, &p_path)?,
                    expected: want,
                });
            }
        }
    }
    Ok(out)
}
