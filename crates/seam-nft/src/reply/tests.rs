use super::*;
use crate::nat::{nat_from_json, plan_nat, render_nat, DesiredNat, NatOp};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|_| unreachable!())
}

fn desired() -> DesiredReply {
    DesiredReply {
        underlay: "eth0".into(),
        gateways: [
            ReplyGateway {
                slot: 2,
                underlay_ip: Ipv4Addr::new(198, 18, 1, 2),
                routed_from: Some(MacAddr([0x02, 0, 0, 0, 0, 0x12])),
            },
            ReplyGateway {
                slot: 7,
                underlay_ip: Ipv4Addr::new(198, 18, 1, 1),
                routed_from: None,
            },
        ]
        .into(),
        inside: [net("10.240.0.0/24"), net("198.18.0.11/32")].into(),
        external: None,
    }
}

#[test]
fn each_gateway_is_recorded_by_its_outer_source_or_its_mac_and_its_replies_marked() {
    let mut out = String::new();
    render_reply(&mut out, &desired());
    assert_eq!(
        out,
        "\tset reply_inside {\n\
         \t\ttype ipv4_addr\n\
         \t\tflags interval\n\
         \t\telements = { 10.240.0.0/24, 198.18.0.11/32 }\n\
         \t}\n\
         \tchain reply_mark {\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tip saddr 198.18.1.2 udp dport 4789 meta mark set meta mark & 0x00ffffff | 0x02000000 return comment \"seam reply 2 vxlan from 198.18.1.2\"\n\
         \t\tip saddr 198.18.1.1 udp dport 4789 meta mark set meta mark & 0x00ffffff | 0x07000000 return comment \"seam reply 7 vxlan from 198.18.1.1\"\n\
         \t\tiifname \"eth0\" ether saddr 02:00:00:00:00:12 ct state new ip saddr != @reply_inside ct mark set ct mark & 0x00ffffff | 0x02000000 comment \"seam reply 2 routed from eth0 02:00:00:00:00:12\"\n\
         \t\tmeta mark & 0xff000000 == 0x02000000 ct state new ip saddr != @reply_inside ct mark set ct mark & 0x00ffffff | 0x02000000 comment \"seam reply 2 decapsulated\"\n\
         \t\tmeta mark & 0xff000000 == 0x07000000 ct state new ip saddr != @reply_inside ct mark set ct mark & 0x00ffffff | 0x07000000 comment \"seam reply 7 decapsulated\"\n\
         \t\tmeta mark & 0xff000000 != 0 meta mark set meta mark & 0x00ffffff comment \"seam reply clear\"\n\
         \t\tct direction reply ct mark & 0xff000000 == 0x02000000 meta mark set meta mark & 0x00ffffff | 0x02000000 comment \"seam reply 2 back\"\n\
         \t\tct direction reply ct mark & 0xff000000 == 0x07000000 meta mark set meta mark & 0x00ffffff | 0x07000000 comment \"seam reply 7 back\"\n\
         \t}\n\
         \tchain reply_clear {\n\
         \t\ttype filter hook postrouting priority mangle; policy accept;\n\
         \t\tmeta mark & 0xff000000 != 0 meta mark set meta mark & 0x00ffffff comment \"seam reply clear routed\"\n\
         \t}\n"
    );
    // No gateway: nothing at all.
    let mut none = String::new();
    render_reply(&mut none, &DesiredReply::default());
    assert_eq!(none, "");
}

#[test]
fn a_listing_is_compared_by_its_rules_comments_and_the_inside_set() {
    let d = desired();
    assert!(d.matches(&d.observed()));
    assert!(DesiredReply::default().matches(&ObservedReply::default()));
    assert!(!DesiredReply::default().matches(&d.observed()));
    assert!(!d.matches(&ObservedReply::default()));
    // A gateway's MAC changed: its rule's comment differs.
    let mut moved = d.clone();
    moved.gateways = moved
        .gateways
        .iter()
        .map(|g| ReplyGateway {
            routed_from: g.routed_from.map(|_| MacAddr([0x02, 0, 0, 0, 0, 0x13])),
            ..*g
        })
        .collect();
    assert!(!moved.matches(&d.observed()));
    let mut wider = d.clone();
    wider.inside.insert(net("10.240.1.0/24"));
    assert!(!wider.matches(&d.observed()));
}

#[test]
fn a_gateway_records_what_arrives_on_its_external_interface_in_slot_255() {
    let d = DesiredReply {
        underlay: "eth0".into(),
        external: Some("eth1".into()),
        ..DesiredReply::default()
    };
    assert!(!d.is_empty());
    let mut out = String::new();
    render_reply(&mut out, &d);
    assert!(
        out.contains("\t\tiifname \"eth1\" ct state new ct mark set ct mark & 0x00ffffff | 0xff000000 comment \"seam reply 255 external from eth1\"\n"),
        "{out}"
    );
    assert!(
        out.contains("\t\tct direction reply ct mark & 0xff000000 == 0xff000000 meta mark set meta mark & 0x00ffffff | 0xff000000 comment \"seam reply 255 back\"\n"),
        "{out}"
    );
}

#[test]
fn the_reply_chains_are_read_back_from_a_listing() {
    // As nft lists a table with the reply chains (expressions shortened: only the comments, the
    // chains' hooks and the set are read).
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "ip", "name": "seam-nat", "handle": 5}},
      {"set": {"family": "ip", "name": "snat_sources", "table": "seam-nat", "type": "ipv4_addr", "flags": ["interval"]}},
      {"set": {"family": "ip", "name": "not_masqueraded", "table": "seam-nat", "type": "ipv4_addr", "flags": ["interval"]}},
      {"set": {"family": "ip", "name": "reply_inside", "table": "seam-nat", "type": "ipv4_addr", "flags": ["interval"],
        "elem": [{"prefix": {"addr": "10.240.0.0", "len": 24}}, "198.18.0.11"]}},
      {"chain": {"family": "ip", "table": "seam-nat", "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "seam-nat", "name": "reply_mark", "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "seam-nat", "name": "reply_clear", "type": "filter", "hook": "postrouting", "prio": -150, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "seam-nat", "chain": "postrouting", "comment": "seam snat", "expr": [{"masquerade": null}]}},
      RULES]}"#;
    let d = desired();
    let rules: Vec<String> = d
        .rules()
        .iter()
        .map(|r| {
            format!(
                r#"{{"rule": {{"chain": "{}", "comment": "{}", "expr": []}}}}"#,
                r.chain, r.comment
            )
        })
        .collect();
    let listing = json.replace("RULES", &rules.join(","));
    let value: Value = serde_json::from_str(&listing).unwrap_or_default();
    let nat = DesiredNat {
        reply: d.clone(),
        ..DesiredNat::default()
    };
    let observed = nat_from_json(&value);
    assert!(observed.rule_ok, "{observed:?}");
    assert_eq!(observed.reply, d.observed());
    assert_eq!(plan_nat(Some(&nat), &observed), None);
    // A rule edited by hand (its comment gone) gets the table rewritten.
    let edited = listing.replace("seam reply 7 back", "");
    let value: Value = serde_json::from_str(&edited).unwrap_or_default();
    assert_eq!(
        plan_nat(Some(&nat), &nat_from_json(&value)),
        Some(NatOp::Replace(nat.clone()))
    );
    // The whole table's text holds the chains after the NAT sets.
    let text = render_nat(&nat);
    assert!(text.contains("\tchain reply_mark {\n"), "{text}");
}
