//! The conformance data of crates/seam-policy/test_data/netpol, read by the conformance harness
//! (seam-conformance): the 9-pod x/y/z × a/b/c model and the ANP model, cases and probes.

use seam_conformance::{Case, Suite, TEST_DATA};
use seam_policy::Protocol;

/// A case file with `model.json`.
pub fn suite(name: &str) -> Suite {
    let read = |file: &str| std::fs::read_to_string(format!("{TEST_DATA}/{file}")).unwrap();
    Suite::from_texts(&read(name), &read("model.json")).unwrap()
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
