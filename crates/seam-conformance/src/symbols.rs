//! The symbolic addresses of the case files (`{{ip:x/b}}`, `{{net:x/a/4}}`) and the policies with
//! real addresses in them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::PolicySet;
use serde_json::Value;

/// Replaces `{{ip:NS/POD}}` with the pod's address and `{{net:NS/POD/N}}` with the canonical /N
/// network holding it. The error names the symbol.
pub fn substitute(text: &str, plan: &BTreeMap<String, Ipv4Addr>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| e + start)
            .ok_or("unterminated {{")?;
        let token = &rest[start + 2..end];
        let (what, arg) = token
            .split_once(':')
            .ok_or_else(|| format!("bad symbol {token:?}"))?;
        let addr = |pod: &str| {
            plan.get(pod)
                .copied()
                .ok_or_else(|| format!("symbol {token:?} names unknown pod {pod:?}"))
        };
        match what {
            "ip" => out.push_str(&addr(arg)?.to_string()),
            "net" => {
                let (pod, len) = arg
                    .rsplit_once('/')
                    .ok_or_else(|| format!("bad symbol {token:?}"))?;
                let len: u8 = len
                    .parse()
                    .map_err(|_| format!("bad prefix in {token:?}"))?;
                let net = ipnet::Ipv4Net::new(addr(pod)?, len)
                    .map_err(|_| format!("bad prefix in {token:?}"))?
                    .trunc();
                out.push_str(&net.to_string());
            }
            other => return Err(format!("unknown symbol kind {other:?}")),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A case's policy objects with `addresses` substituted, each checked by the engine's parser (a
/// rejected object fails the case before anything is applied).
pub fn policy_documents(
    policies: &Value,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> Result<Vec<Value>, String> {
    let text = substitute(&policies.to_string(), addresses)?;
    let docs: Vec<Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    seam_policy::parse_json(&text).map_err(|e| e.to_string())?;
    Ok(docs)
}

/// A case's policy objects with `addresses` substituted, as the engine's policy set.
pub fn policy_set(
    policies: &Value,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> Result<PolicySet, String> {
    let text = substitute(&policies.to_string(), addresses)?;
    let objects = seam_policy::parse_json(&text).map_err(|e| e.to_string())?;
    PolicySet::from_objects(objects).map_err(|e| e.to_string())
}
