//! Compiled rulesets the single-node benches render with Seam's own renderer.

use std::net::Ipv4Addr;

use seam_firewall::ir::{AddrMatch, L4Match, LocalEndpoint, PortRange, Rule, TierChain};
use seam_firewall::{Action, AddrSet, NodeRuleset, RuleId, Tier};
use seam_policy::Protocol;

fn rule(id: &str, src: Vec<AddrMatch>, dst: Vec<AddrMatch>, l4: L4Match, action: Action) -> Rule {
    Rule {
        id: RuleId(id.into()),
        src,
        dst,
        l4,
        action,
        log: false,
    }
}

/// Two local endpoints of namespace `x`, `client` and `server` (name, address): the server's
/// ingress isolated but for TCP `ports` from the client, as a NetworkPolicy compiles; everything
/// else falls to the baseline, which allows.
pub fn isolated_server(
    client: (&str, Ipv4Addr),
    server: (&str, Ipv4Addr),
    ports: &[u16],
) -> NodeRuleset {
    let (client_name, client_addr) = client;
    let (server_name, server_addr) = server;
    let mut r = NodeRuleset::default();
    r.sets.insert(
        "local".into(),
        AddrSet::from_addrs([client_addr, server_addr]),
    );
    r.sets
        .insert(client_name.into(), AddrSet::from_addrs([client_addr]));
    r.sets
        .insert(server_name.into(), AddrSet::from_addrs([server_addr]));
    r.local = vec![
        LocalEndpoint {
            name: format!("x/{client_name}"),
            addresses: vec![client_addr],
        },
        LocalEndpoint {
            name: format!("x/{server_name}"),
            addresses: vec![server_addr],
        },
    ];
    let baseline = |dir: &str| TierChain {
        tier: Tier::Baseline,
        rules: vec![rule(
            &format!("default/{dir}"),
            vec![],
            vec![],
            L4Match::Any,
            Action::Allow,
        )],
    };
    r.egress = vec![baseline("egress")];
    r.ingress = vec![
        TierChain {
            tier: Tier::Namespace,
            rules: vec![
                rule(
                    &format!("np/x/{server_name}/ingress/0"),
                    vec![AddrMatch::In(client_name.into())],
                    vec![AddrMatch::In(server_name.into())],
                    L4Match::Ports {
                        protocol: Protocol::Tcp,
                        ranges: ports
                            .iter()
                            .map(|&p| PortRange { start: p, end: p })
                            .collect(),
                    },
                    Action::Allow,
                ),
                rule(
                    "ns-isolation/ingress",
                    vec![],
                    vec![AddrMatch::In(server_name.into())],
                    L4Match::Any,
                    Action::Deny,
                ),
            ],
        },
        baseline("ingress"),
    ];
    r
}
