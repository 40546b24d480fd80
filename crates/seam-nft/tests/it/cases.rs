//! The batches the golden files hold: every `TableOp`, every `NftMatch` and verdict, comments at
//! the 127-byte limit, hash and interval sets, map entries, jumps and gotos, deletes, and element
//! lists long enough to be split over several messages.

use std::net::Ipv4Addr;

use seam_nft::{AddrField, NftMatch, NftRule, NftSample, NftVerdict, TableOp};

/// The table every case writes to: Seam's policy table.
pub const TABLE: &str = seam_nft::names::TABLE_NAME;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn addr(field: AddrField, set: &str, negate: bool) -> NftMatch {
    NftMatch::AddrInSet {
        field,
        set: set.into(),
        negate,
    }
}

fn rule(
    chain: &str,
    matches: Vec<NftMatch>,
    log: Option<&str>,
    verdict: NftVerdict,
    comment: &str,
) -> TableOp {
    TableOp::AddRule {
        chain: chain.into(),
        rule: NftRule {
            matches,
            log_prefix: log.map(str::to_string),
            sample: None,
            verdict,
            comment: comment.into(),
        },
    }
}

/// Named batches, in the order of their golden files.
pub fn cases() -> Vec<(&'static str, Vec<TableOp>)> {
    let sets = vec![
        TableOp::AddSet {
            name: "g/web".into(),
            interval: false,
        },
        TableOp::AddSet {
            name: "np/x/a/except".into(),
            interval: true,
        },
        TableOp::AddAddrs {
            set: "g/web".into(),
            addrs: vec![ip(10, 0, 0, 1), ip(10, 0, 0, 2), ip(192, 168, 255, 254)],
        },
        TableOp::DeleteAddrs {
            set: "g/web".into(),
            addrs: vec![ip(10, 0, 0, 2)],
        },
        TableOp::AddRanges {
            set: "np/x/a/except".into(),
            ranges: vec![
                (ip(0, 0, 0, 0), ip(9, 255, 255, 255)),
                (ip(10, 1, 0, 0), ip(10, 1, 255, 255)),
                (ip(172, 16, 0, 7), ip(172, 16, 0, 7)),
                (ip(224, 0, 0, 0), ip(255, 255, 255, 255)),
            ],
        },
        TableOp::DeleteRanges {
            set: "np/x/a/except".into(),
            ranges: vec![
                (ip(10, 1, 0, 0), ip(10, 1, 255, 255)),
                (ip(224, 0, 0, 0), ip(255, 255, 255, 255)),
            ],
        },
        TableOp::AddRanges {
            set: "np/x/a/except".into(),
            ranges: Vec::new(),
        },
        TableOp::DeleteSet {
            name: "g/old".into(),
        },
    ];
    let chains = vec![
        TableOp::AddChain {
            name: "pol/contract/web".into(),
        },
        TableOp::AddJump {
            chain: "dispatch".into(),
            target: "pol/contract/web".into(),
            goto: false,
        },
        TableOp::AddJump {
            chain: "dispatch".into(),
            target: "pod/10.0.0.1".into(),
            goto: true,
        },
        TableOp::DeleteChain {
            name: "pol/contract/old".into(),
        },
    ];
    let maps = vec![
        TableOp::AddGotos {
            map: "ingress".into(),
            entries: vec![
                (ip(10, 0, 0, 1), "pod/10.0.0.1".into()),
                (
                    ip(10, 0, 0, 2),
                    "class/a-rather-long-chain-name-for-padding".into(),
                ),
            ],
        },
        TableOp::DeleteKeys {
            map: "ingress".into(),
            keys: vec![ip(10, 0, 0, 3), ip(10, 0, 0, 4)],
        },
    ];
    let long_127 = format!("contract/{}", "x".repeat(127 - "contract/".len()));
    let long_126 = format!("np/{}", "y".repeat(126 - "np/".len()));
    let long_125 = format!("anp/{}", "z".repeat(125 - "anp/".len()));
    let rules = vec![
        rule(
            "pol/a",
            vec![
                addr(AddrField::Source, "g/web", false),
                addr(AddrField::Destination, "np/x/a/except", true),
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(80, 80), (443, 443)]),
            ],
            Some("seam contract/web/ingress/0 "),
            NftVerdict::Accept,
            "contract/web/ingress/0",
        ),
        rule(
            "pol/a",
            vec![
                addr(AddrField::Destination, "g/web", false),
                NftMatch::L4Proto(17),
                NftMatch::DstPorts(vec![(53, 53)]),
            ],
            None,
            NftVerdict::Drop,
            "np/x/dns/egress/0",
        ),
        rule(
            "pol/a",
            vec![
                NftMatch::L4Proto(132),
                NftMatch::DstPorts(vec![(8000, 8080)]),
            ],
            None,
            NftVerdict::Return,
            "anp/pass/ingress/1",
        ),
        rule(
            "pol/a",
            vec![
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(22, 22), (8000, 8080), (65000, 65535)]),
            ],
            None,
            NftVerdict::Accept,
            "np/x/ranges/ingress/0",
        ),
        rule(
            "pol/a",
            vec![
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(0, 10), (20, 20)]),
            ],
            None,
            NftVerdict::Drop,
            "np/x/from-zero/ingress/0",
        ),
        rule(
            "pol/a",
            vec![NftMatch::L4Proto(6), NftMatch::DstPorts(Vec::new())],
            None,
            NftVerdict::Drop,
            "np/x/no-ports/ingress/0",
        ),
        rule(
            "pol/a",
            vec![
                addr(AddrField::Source, "g/web", true),
                NftMatch::L4Proto(1),
                NftMatch::IcmpType(8),
            ],
            Some("seam anp/icmp "),
            NftVerdict::Drop,
            "anp/icmp/egress/0",
        ),
        rule(
            "pol/a",
            vec![
                NftMatch::L4Proto(47),
                addr(AddrField::Source, "g/a", false),
                addr(AddrField::Source, "g/b", false),
            ],
            None,
            NftVerdict::Accept,
            "cnp/gre/egress/0",
        ),
        rule(
            "pol/a",
            vec![NftMatch::L4Proto(17)],
            None,
            NftVerdict::Accept,
            "cnp/udp/egress/0",
        ),
        rule(
            "pol/a",
            Vec::new(),
            None,
            NftVerdict::Drop,
            "default/ingress",
        ),
        rule("pol/a", Vec::new(), None, NftVerdict::Return, &long_127),
        rule(
            "pol/a",
            Vec::new(),
            Some("p"),
            NftVerdict::Accept,
            &long_126,
        ),
        rule("pol/a", Vec::new(), None, NftVerdict::Drop, &long_125),
        rule("pol/a", Vec::new(), None, NftVerdict::Drop, ""),
    ];
    // Long element lists: more than one message each (256 elements per message).
    let many_addrs: Vec<Ipv4Addr> = (0..600u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    let many_ranges: Vec<(Ipv4Addr, Ipv4Addr)> = (0..300u32)
        .map(|i| {
            let start = 0x0b00_0000 + i * 16;
            (Ipv4Addr::from(start), Ipv4Addr::from(start + 7))
        })
        .collect();
    let many_entries: Vec<(Ipv4Addr, String)> = (0..300u32)
        .map(|i| (Ipv4Addr::from(0x0a00_0000 + i), format!("pod/{i}")))
        .collect();
    let many_ports: Vec<(u16, u16)> = (0..200u16)
        .map(|i| (1000 + i * 10, 1000 + i * 10 + 4))
        .collect();
    let large = vec![
        TableOp::AddAddrs {
            set: "g/big".into(),
            addrs: many_addrs.clone(),
        },
        TableOp::DeleteAddrs {
            set: "g/big".into(),
            addrs: many_addrs,
        },
        TableOp::AddRanges {
            set: "np/big".into(),
            ranges: many_ranges.clone(),
        },
        TableOp::DeleteRanges {
            set: "np/big".into(),
            ranges: many_ranges,
        },
        TableOp::AddGotos {
            map: "egress".into(),
            entries: many_entries,
        },
        rule(
            "pol/big",
            vec![NftMatch::L4Proto(6), NftMatch::DstPorts(many_ports)],
            None,
            NftVerdict::Accept,
            "np/big/ingress/0",
        ),
    ];
    let services = services();
    vec![
        ("sets", sets),
        ("chains", chains),
        ("maps", maps),
        ("rules", rules),
        ("samples", samples()),
        ("large", large),
        ("services", services),
    ]
}

/// Every Services operation: its chains (spread, NodePort spread, affinity with its sticky
/// chains and timed sets), every kind of element, deletes, and the base's removal.
fn services() -> Vec<TableOp> {
    use seam_model::PortProtocol;
    use seam_nft::services::{FrontendKey, SvcChain, SvcElement};
    let cluster = FrontendKey::Address {
        addr: ip(10, 96, 0, 10),
        protocol: PortProtocol::Tcp,
        port: 80,
    };
    let node_port = FrontendKey::NodePort {
        protocol: PortProtocol::Sctp,
        port: 30080,
    };
    let udp = FrontendKey::Address {
        addr: ip(10, 96, 0, 12),
        protocol: PortProtocol::Udp,
        port: 53,
    };
    let backend = |slot: u8| (ip(10, 1, slot, 2), 8080);
    vec![
        TableOp::AddServiceBase,
        TableOp::AddAffinitySet {
            name: "aff_1".into(),
            timeout: 10800,
        },
        TableOp::AddSvcChain {
            name: "se_1".into(),
            chain: SvcChain::Sticky {
                protocol: PortProtocol::Udp,
                backend: backend(1),
            },
        },
        TableOp::AddSvcChain {
            name: "sa_1".into(),
            chain: SvcChain::Affinity {
                sticky: vec!["se_1".into(), "se_1".into()],
            },
        },
        TableOp::AddSvcChain {
            name: "m_2".into(),
            chain: SvcChain::Spread { count: 2 },
        },
        TableOp::AddSvcChain {
            name: "n_2".into(),
            chain: SvcChain::NodeSpread { count: 2 },
        },
        TableOp::AddSvcElements {
            elements: vec![
                SvcElement::Frontend {
                    key: cluster,
                    chain: "m_2".into(),
                },
                SvcElement::Frontend {
                    key: node_port,
                    chain: "n_2".into(),
                },
                SvcElement::Backend {
                    key: cluster,
                    slot: 0,
                    backend: backend(1),
                },
                SvcElement::Backend {
                    key: node_port,
                    slot: 1,
                    backend: backend(2),
                },
                SvcElement::Reject(udp),
                SvcElement::Reject(node_port),
                SvcElement::Masquerade(node_port),
                SvcElement::Inside(ip(10, 1, 0, 0), ip(10, 1, 255, 255)),
                SvcElement::Hairpin(ip(10, 1, 1, 2)),
                SvcElement::LbAddress(ip(192, 0, 2, 10)),
                SvcElement::SnatTo(ip(192, 168, 0, 1)),
                SvcElement::SnatBackend(ip(203, 0, 113, 5)),
            ],
        },
        TableOp::DeleteSvcElements {
            elements: vec![
                SvcElement::Backend {
                    key: cluster,
                    slot: 0,
                    backend: backend(1),
                },
                SvcElement::Inside(ip(10, 1, 0, 0), ip(10, 1, 255, 255)),
            ],
        },
        TableOp::DeleteChain {
            name: "sa_1".into(),
        },
        TableOp::DeleteSet {
            name: "aff_1".into(),
        },
        TableOp::DeleteServiceBase,
    ]
}

/// Rules with flow samples: an allowed new connection sampled every time, a deny and a Pass
/// sampled under a rate limit (two kernel rules each, the first with its own port set), one with
/// a Contract's kernel log line as well.
fn samples() -> Vec<TableOp> {
    let sampled =
        |matches, log: Option<&str>, limit, verdict, comment: &str, kind: char| TableOp::AddRule {
            chain: "pol/a".into(),
            rule: NftRule {
                matches,
                log_prefix: log.map(str::to_string),
                sample: Some(NftSample {
                    group: 1234,
                    prefix: format!("{kind}i:{comment}"),
                    snaplen: 128,
                    limit,
                }),
                verdict,
                comment: comment.into(),
            },
        };
    vec![
        TableOp::AddChain {
            name: "pol/a".into(),
        },
        sampled(
            vec![
                addr(AddrField::Source, "g/web", false),
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(80, 80)]),
            ],
            None,
            None,
            NftVerdict::Accept,
            "np/x/a/ingress/0",
            'A',
        ),
        sampled(
            vec![
                NftMatch::L4Proto(17),
                NftMatch::DstPorts(vec![(53, 53), (5000, 5100)]),
            ],
            Some("seam contract/db/ingress/0 "),
            Some(10),
            NftVerdict::Drop,
            "contract/db/ingress/0",
            'D',
        ),
        sampled(
            Vec::new(),
            None,
            Some(100),
            NftVerdict::Return,
            "anp/p/ingress/1",
            'P',
        ),
        sampled(
            Vec::new(),
            None,
            Some(10),
            NftVerdict::Drop,
            "default/ingress",
            'D',
        ),
    ]
}
