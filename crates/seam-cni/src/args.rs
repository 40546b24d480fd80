//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.

use crate::env::CNI_ARGS;
use crate::error::{EnvError, EnvProblem};

/// The `CNI_ARGS` keys seam-cni understands (the ones Kubernetes runtimes send).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `K8S_POD_NAMESPACE`; empty values count as absent.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub pod_infra_container_id: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `IgnoreUnknown`: when true, unknown keys are skipped instead of rejected.
    pub ignore_unknown: bool,
}

impl CniArgs {
    /// Parses `CNI_ARGS`, reporting every problem at once.
    ///
    /// Empty entries (`a=1;;b=2`, a trailing `;`) are skipped, as libcni's parser does. Unknown
    /// keys are errors unless `IgnoreUnknown` is true anywhere in the string, because a
    /// misspelt key would otherwise be silently dropped.
    pub fn parse(raw: &str) -> Result<CniArgs, Vec<EnvError>> {
        let mut args = CniArgs::default();
        let mut errors = Vec::new();
        let mut unknown = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let err = |problem| EnvError {
            name: CNI_ARGS,
            value: raw.to_string(),
            problem,
        };
        for entry in raw.split(';').filter(|e| !e.is_empty()) {
            let Some((key, value)) = entry.split_once('=') else {
                errors.push(err(EnvProblem::ArgMalformed {
                    entry: entry.to_string(),
                }));
                continue;
            };
            if key.is_empty() {
                errors.push(err(EnvProblem::ArgMalformed {
                    entry: entry.to_string(),
                }));
                continue;
            }
            if seen.contains(&key) {
                errors.push(err(EnvProblem::ArgDuplicate {
                    key: key.to_string(),
                }));
                continue;
            }
            seen.push(key);
            let non_empty = (!value.is_empty()).then(|| value.to_string());
            match key {
                "K8S_POD_NAMESPACE" => args.pod_namespace = non_empty,
                "K8S_POD_NAME" => args.pod_name = non_empty,
                "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = non_empty,
                "K8S_POD_UID" => args.pod_uid = non_empty,
                "IgnoreUnknown" => match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => args.ignore_unknown = true,
                    "0" | "false" => args.ignore_unknown = false,
                    _ => errors.push(err(EnvProblem::ArgBadBool)),
                },
                other => unknown.push(other.to_string()),
            }
        }
        if !args.ignore_unknown {
            errors.extend(
                unknown
                    .into_iter()
                    .map(|key| err(EnvProblem::ArgUnknown { key })),
            );
        }
        if errors.is_empty() {
            Ok(args)
        } else {
            Err(errors)
        }
    }
}
