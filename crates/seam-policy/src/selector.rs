//! Kubernetes label selectors (`matchLabels` + `matchExpressions`) and label syntax checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bounds::shown;
use crate::error::Problems;

/// A label set: key to value.
pub type Labels = BTreeMap<String, String>;

/// A Kubernetes `LabelSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Every key must be present with exactly this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    /// Every requirement must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the key's value is tested.
    pub operator: SelectorOperator,
    /// Values for `In` / `NotIn`; must be empty for `Exists` / `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operators of `matchExpressions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or present with a value not in `values` (Kubernetes semantics).
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// A selector that matches everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether the selector is `{}` (matches every label set).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfies every `matchLabels` entry and every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    pub(crate) fn validate(&self, p: &mut Problems, path: &str) {
        for (k, v) in &self.match_labels {
            check_label_key(p, &format!("{path}.matchLabels"), k);
            check_label_value(p, &format!("{path}.matchLabels.{k}"), v);
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let rp = format!("{path}.matchExpressions[{i}]");
            check_label_key(p, &format!("{rp}.key"), &r.key);
            match r.operator {
                SelectorOperator::In | SelectorOperator::NotIn => {
                    if r.values.is_empty() {
                        p.add(
                            format!("{rp}.values"),
                            format!("must be non-empty for operator {:?}", r.operator),
                        );
                    }
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => {
                    if !r.values.is_empty() {
                        p.add(
                            format!("{rp}.values"),
                            format!("must be empty for operator {:?}", r.operator),
                        );
                    }
                }
            }
            for (j, v) in r.values.iter().enumerate() {
                check_label_value(p, &format!("{rp}.values[{j}]"), v);
            }
        }
    }
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfies this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters made of
/// alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric (Kubernetes' qualified name).
pub(crate) fn check_label_key(p: &mut Problems, path: &str, key: &str) {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    if !prefix_ok || !is_label_name(name) || name.is_empty() {
        p.add(
            path,
            format!(
                "{} is not a valid label key ([prefix/]name: prefix a DNS subdomain of at most 253, name 1-63 of a-z A-Z 0-9 - _ ., alphanumeric at both ends)",
                shown(key)
            ),
        );
    }
}

/// Checks a label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending
/// with an alphanumeric.
pub(crate) fn check_label_value(p: &mut Problems, path: &str, value: &str) {
    if !value.is_empty() && !is_label_name(value) {
        p.add(
            path,
            format!(
                "{} is not a valid label value (0-63 of a-z A-Z 0-9 - _ ., alphanumeric at both ends)",
                shown(value)
            ),
        );
    }
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            s.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// DNS-1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253 characters of
/// non-empty dot-separated parts of lower-case alphanumerics and `-` with alphanumeric ends; a part
/// is not bounded to 63. seam-model carries the same rule (`objects::is_dns_subdomain`).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}
