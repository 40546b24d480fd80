//! The conformance data of crates/seam-policy/test_data/netpol, read by the conformance harness
//! (seam-conformance): the 9-pod x/y/z × a/b/c model and the ANP model, cases and probes.

use seam_conformance::{Case, Suite};
use seam_policy::Protocol;
use serde_json::Value;

pub const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../seam-policy/test_data/netpol"
);

pub fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DATA}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A case file with `model.json`.
pub fn suite(name: &str) -> Suite {
    Suite::from_json(&load(name), &load("model.json")).unwrap()
}

/// The (port, protocol) probes of a case: its own, plus 80/81 over TCP, UDP and SCTP.
pub fn probes(case: &Case) -> Vec<(u16, Protocol)> {
    let mut out = case.ports();
    for port in [80, 81] {
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            if !out.contains(&(port, proto)) {
                out.push((port, proto));
            }
        }
    }
    out
}
