#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::services::Frontend;

const FE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const A: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 240, 0, 5), 5353);
const B: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 240, 1, 7), 5353);
const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 240, 2, 9), 40000);

fn address(protocol: PortProtocol) -> FrontendKey {
    FrontendKey::Address {
        addr: FE,
        protocol,
        port: 53,
    }
}

fn frontend(key: FrontendKey, backends: &[(Ipv4Addr, u16)]) -> Frontend {
    Frontend {
        key,
        service: "kube-system/dns:53".into(),
        backends: backends.to_vec(),
        affinity_timeout: None,
        masquerade_outside: false,
    }
}

fn services(frontends: Vec<Frontend>) -> DesiredServices {
    DesiredServices {
        frontends,
        ..Default::default()
    }
}

#[test]
fn a_udp_or_sctp_frontend_that_loses_a_backend_has_stale_flows_tcp_has_none() {
    let node_port = FrontendKey::NodePort {
        protocol: PortProtocol::Udp,
        port: 30053,
    };
    let old = services(vec![
        frontend(address(PortProtocol::Udp), &[A, B]),
        frontend(address(PortProtocol::Tcp), &[A, B]),
        frontend(address(PortProtocol::Sctp), &[A]),
        frontend(node_port, &[A, B]),
    ]);
    let new = services(vec![
        frontend(address(PortProtocol::Udp), &[B]),
        frontend(address(PortProtocol::Tcp), &[B]),
        // The SCTP frontend is gone: all its backends are stale.
        frontend(node_port, &[A, B]),
    ]);
    let stale = stale_flows(&old, &new);
    assert_eq!(
        stale,
        [
            StaleFlow {
                frontend: address(PortProtocol::Udp),
                backend: Some(A)
            },
            StaleFlow {
                frontend: address(PortProtocol::Sctp),
                backend: Some(A)
            },
        ]
    );
    // Nothing changed, or a backend added: nothing stale (but the untranslated entries of the
    // SCTP frontend that comes back).
    assert!(stale_flows(&new, &new).is_empty());
    assert_eq!(
        stale_flows(&new, &old),
        [StaleFlow {
            frontend: address(PortProtocol::Sctp),
            backend: None
        }]
    );
}

#[test]
fn a_udp_or_sctp_frontend_that_gets_its_first_backend_has_its_untranslated_entries_stale() {
    let node_port = FrontendKey::NodePort {
        protocol: PortProtocol::Udp,
        port: 30053,
    };
    let old = services(vec![
        frontend(address(PortProtocol::Udp), &[]),
        frontend(address(PortProtocol::Tcp), &[]),
    ]);
    let new = services(vec![
        frontend(address(PortProtocol::Udp), &[A]),
        frontend(address(PortProtocol::Tcp), &[A]),
        // New, with a backend (the Service was just made): as if it had none.
        frontend(node_port, &[A]),
        frontend(address(PortProtocol::Sctp), &[]),
    ]);
    assert_eq!(
        stale_flows(&old, &new),
        [
            StaleFlow {
                frontend: address(PortProtocol::Udp),
                backend: None
            },
            StaleFlow {
                frontend: node_port,
                backend: None
            },
        ]
    );
    // One more backend of a frontend that had one: nothing.
    let more = services(vec![frontend(address(PortProtocol::Udp), &[A, B])]);
    assert!(stale_flows(&new, &more).iter().all(|f| f.backend.is_some()));
}

fn entry(orig_dst: (Ipv4Addr, u16), reply_src: (Ipv4Addr, u16)) -> CtEntry {
    CtEntry {
        protocol: 17,
        orig_src: CLIENT,
        orig_dst,
        reply_src,
        reply_dst: CLIENT,
    }
}

#[test]
fn an_entry_is_of_a_flow_when_sent_to_its_frontend_and_answered_by_its_backend() {
    let flow = StaleFlow {
        frontend: address(PortProtocol::Udp),
        backend: Some(A),
    };
    assert!(entry((FE, 53), A).is_of(&flow));
    // Another backend, another frontend port, another protocol: not this flow.
    assert!(!entry((FE, 53), B).is_of(&flow));
    assert!(!entry((FE, 54), A).is_of(&flow));
    assert!(!CtEntry {
        protocol: 6,
        ..entry((FE, 53), A)
    }
    .is_of(&flow));
    // A node port matches on any local address; an untranslated entry never does.
    let node_port = StaleFlow {
        frontend: FrontendKey::NodePort {
            protocol: PortProtocol::Udp,
            port: 30053,
        },
        backend: Some(A),
    };
    assert!(entry((Ipv4Addr::new(198, 18, 0, 11), 30053), A).is_of(&node_port));
    assert!(entry((Ipv4Addr::new(10, 0, 0, 1), 30053), A).is_of(&node_port));
    assert!(!entry(A, A).is_of(&StaleFlow {
        frontend: FrontendKey::NodePort {
            protocol: PortProtocol::Udp,
            port: A.1,
        },
        backend: Some(A),
    }));
    // A flow without a backend: the entries sent to the frontend that were not translated.
    let untranslated = StaleFlow {
        backend: None,
        ..flow
    };
    assert!(entry((FE, 53), (FE, 53)).is_of(&untranslated));
    assert!(!entry((FE, 53), A).is_of(&untranslated));
    assert!(!entry((FE, 54), (FE, 54)).is_of(&untranslated));
}

/// One entry as the kernel sends it (`IPCTNL_MSG_CT_NEW`), in answer to request `seq`.
fn entry_message(e: &CtEntry, seq: u32, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let body = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple(e.protocol, e.orig_src, e.orig_dst)),
            ConntrackAttribute::CtaTupleReply(tuple(e.protocol, e.reply_src, e.reply_dst)),
            ConntrackAttribute::CtaMark(0),
        ]),
    );
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    bytes
}

/// An `NLMSG_ERROR` answering request `seq` with `errno` (0: an acknowledgement).
fn error_message(errno: i32, seq: u32) -> Vec<u8> {
    // The header, the negative errno, then the request's header (only its length matters here).
    let words: [u32; 9] = [
        36,
        u32::from(NLMSG_ERROR),
        seq,
        0,
        (-errno) as u32,
        16,
        0,
        0,
        0,
    ];
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// A dump answer as the kernel sends it: one `IPCTNL_MSG_CT_NEW` per entry, then `NLMSG_DONE`.
fn dump_answer(entries: &[CtEntry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in entries {
        bytes.extend(entry_message(e, 0, 2)); // NLM_F_MULTIPART
    }
    // NLMSG_DONE: a header and a zero.
    let done: [u32; 5] = [20, u32::from(NLMSG_DONE) | (2 << 16), 0, 0, 0];
    for w in done {
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    bytes
}

#[test]
fn a_get_names_one_tuple_and_its_answer_is_the_entry_or_its_absence() {
    // What the flow recorder asks: the entry whose reply comes from backend A to the client.
    let query = CtQuery {
        direction: CtDirection::Reply,
        protocol: 17,
        src: A,
        dst: CLIENT,
    };
    let bytes = get_request(&query, 9);
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
    assert_eq!(m.header.message_type, 1 << 8 | 1); // ctnetlink, IPCTNL_MSG_CT_GET
    assert_eq!(m.header.flags, NLM_F_REQUEST, "not a dump, no ack");
    assert_eq!(m.header.sequence_number, 9);
    let NetlinkPayload::InnerMessage(m) = m.payload else {
        panic!()
    };
    let NetfilterMessageInner::Conntrack(ConntrackMessage::Get(attributes)) = m.inner else {
        panic!("{m:?}")
    };
    assert_eq!(
        attributes,
        [ConntrackAttribute::CtaTupleReply(tuple(17, A, CLIENT))]
    );
    let original = get_request(
        &CtQuery {
            direction: CtDirection::Original,
            ..query
        },
        10,
    );
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(&original).unwrap();
    let NetlinkPayload::InnerMessage(m) = m.payload else {
        panic!()
    };
    let NetfilterMessageInner::Conntrack(ConntrackMessage::Get(attributes)) = m.inner else {
        panic!("{m:?}")
    };
    assert_eq!(
        attributes,
        [ConntrackAttribute::CtaTupleOrig(tuple(17, A, CLIENT))]
    );

    // The answers: the entry, no entry, a refusal; an answer to another request is not this one.
    let found = entry((FE, 53), A);
    assert_eq!(
        parse_get(&entry_message(&found, 9, 0), 9),
        Some(GetAnswer::Found(found))
    );
    assert_eq!(parse_get(&error_message(2, 9), 9), Some(GetAnswer::Missing));
    assert_eq!(
        parse_get(&error_message(1, 9), 9),
        Some(GetAnswer::Refused(1))
    );
    assert_eq!(parse_get(&entry_message(&found, 8, 0), 9), None);
    let mut late_then_ours = error_message(2, 8);
    late_then_ours.extend(entry_message(&found, 9, 0));
    assert_eq!(parse_get(&late_then_ours, 9), Some(GetAnswer::Found(found)));
    // Cut short: nothing read.
    let whole = entry_message(&found, 9, 0);
    assert_eq!(parse_get(&whole[..whole.len() - 8], 9), None);
}

#[test]
fn a_dump_answer_reads_back_as_entries_then_done() {
    let entries = [entry((FE, 53), A), entry((FE, 53), B)];
    let part = parse_dump(&dump_answer(&entries));
    assert_eq!(part.entries, entries);
    assert!(part.done);
    assert_eq!(part.error, None);
    // Truncated: what was whole is read, and the dump is not over.
    let bytes = dump_answer(&entries);
    let part = parse_dump(&bytes[..bytes.len() - 30]);
    assert_eq!(part.entries, entries[..1]);
    assert!(!part.done);
}

#[test]
fn a_delete_names_the_entry_by_its_original_tuple_and_asks_for_an_ack() {
    let bytes = delete_request(&entry((FE, 53), A), 7);
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
    assert_eq!(m.header.message_type, 1 << 8 | 2); // ctnetlink, IPCTNL_MSG_CT_DELETE
    assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(m.header.sequence_number, 7);
    let NetlinkPayload::InnerMessage(m) = m.payload else {
        panic!()
    };
    assert_eq!(u8::from(m.header.family), 2); // NFPROTO_IPV4
    let NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attributes)) = m.inner else {
        panic!("{m:?}")
    };
    assert_eq!(
        attributes,
        [ConntrackAttribute::CtaTupleOrig(tuple(
            17,
            CLIENT,
            (FE, 53)
        ))]
    );
    let dump = NetlinkMessage::<NetfilterMessage>::deserialize(&dump_request(1)).unwrap();
    assert_eq!(dump.header.message_type, 1 << 8 | 1); // IPCTNL_MSG_CT_GET
    assert_eq!(dump.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
}

#[test]
fn the_index_picks_the_entries_the_flows_pick() {
    let node_port = FrontendKey::NodePort {
        protocol: PortProtocol::Udp,
        port: 30053,
    };
    let flows = [
        StaleFlow {
            frontend: address(PortProtocol::Udp),
            backend: Some(A),
        },
        StaleFlow {
            frontend: node_port,
            backend: None,
        },
    ];
    let index = StaleIndex::new(&flows);
    let node = Ipv4Addr::new(198, 18, 0, 11);
    for e in [
        entry((FE, 53), A),
        entry((FE, 53), B),
        entry((FE, 53), (FE, 53)),
        entry((node, 30053), (node, 30053)),
        entry((node, 30053), A),
        entry((node, 30054), (node, 30054)),
        CtEntry {
            protocol: 6,
            ..entry((FE, 53), A)
        },
    ] {
        assert_eq!(index.matches(&e), flows.iter().any(|f| e.is_of(f)), "{e:?}");
    }
    assert!(index.matches(&entry((FE, 53), A)));
    assert!(index.matches(&entry((node, 30053), (node, 30053))));
}
