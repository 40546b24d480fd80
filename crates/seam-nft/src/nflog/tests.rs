use std::ffi::CString;

use netlink_packet_core::{Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::NetfilterHeader;

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// An IPv4 packet's first bytes: a 20-byte header and `transport`.
fn packet(protocol: u8, src: &str, dst: &str, transport: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, protocol, 0, 0];
    p.extend(ip(src).octets());
    p.extend(ip(dst).octets());
    p.extend(transport);
    p
}

/// A sample message as the kernel sends it.
fn sample_message(group: u16, prefix: &str, payload: Vec<u8>, ct: Option<Vec<u8>>) -> Vec<u8> {
    let mut attributes = vec![
        PacketNla::Prefix(CString::new(prefix).unwrap()),
        PacketNla::Payload(payload),
    ];
    if let Some(ct) = ct {
        attributes.push(PacketNla::Other(DefaultNla::new(NFULA_CT, ct)));
    }
    let mut message = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, group),
            ULogMessage::Packet(attributes),
        )),
    );
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

#[test]
fn samples_are_read_with_their_prefix_headers_and_original_destination() {
    // A TCP SYN from 10.0.0.5:40000 to a backend 10.0.1.9:8080, sent to 10.96.0.10:80.
    let orig = ConntrackAttribute::CtaTupleOrig(crate::conntrack::tuple(
        6,
        (ip("10.0.0.5"), 40000),
        (ip("10.96.0.10"), 80),
    ));
    let mut ct = vec![0u8; orig.buffer_len()];
    orig.emit(&mut ct);
    let tcp = [0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1];
    let mut buf = sample_message(
        7,
        "Ai:np/x/web/ingress/0",
        packet(6, "10.0.0.5", "10.0.1.9", &tcp),
        Some(ct),
    );
    // A second message in the same receive: an ICMP echo that a default deny dropped.
    buf.extend(sample_message(
        7,
        "Di:default/ingress",
        packet(1, "10.0.0.5", "10.0.1.9", &[8, 0]),
        None,
    ));
    let got = parse_samples(&buf);
    assert!(got.acks.is_empty());
    assert_eq!(got.samples.len(), 2);
    let syn = &got.samples[0];
    assert_eq!(
        (syn.group, syn.prefix.as_str()),
        (7, "Ai:np/x/web/ingress/0")
    );
    assert_eq!(
        syn.packet,
        Some(PacketHeaders {
            protocol: 6,
            src: ip("10.0.0.5"),
            dst: ip("10.0.1.9"),
            src_port: Some(40000),
            dst_port: Some(8080),
            icmp_type: None,
        })
    );
    assert_eq!(
        syn.original,
        Some(CtOriginal {
            protocol: 6,
            src: (ip("10.0.0.5"), 40000),
            dst: (ip("10.96.0.10"), 80),
        })
    );
    let ping = got.samples[1].packet.unwrap();
    assert_eq!(
        (ping.protocol, ping.icmp_type, ping.dst_port),
        (1, Some(8), None)
    );
}

#[test]
fn headers_that_are_not_ipv4_or_cut_short_are_not_guessed() {
    assert_eq!(parse_headers(&[0x60; 40]), None);
    assert_eq!(
        parse_headers(&packet(6, "10.0.0.1", "10.0.0.2", &[])[..19]),
        None
    );
    // A transport header cut short: addresses, no ports.
    let short = parse_headers(&packet(17, "10.0.0.1", "10.0.0.2", &[0, 53])).unwrap();
    assert_eq!((short.src_port, short.dst_port), (None, None));
    // A later fragment has no transport header, whatever its bytes are.
    let mut frag = packet(17, "10.0.0.1", "10.0.0.2", &[0, 53, 0, 53]);
    frag[7] = 8;
    assert_eq!(parse_headers(&frag).unwrap().dst_port, None);
    assert_eq!(parse_headers(&[]), None);
}

#[test]
fn a_group_is_bound_then_set_up_and_refusals_are_read_as_errnos() {
    let config = GroupConfig {
        copy_range: 128,
        conntrack: true,
        queue_threshold: 32,
        flush_hundredths: 2,
        buffer: 65536,
    };
    let mut messages = config_requests(5, &config, 10);
    assert_eq!(messages.len(), 2);
    messages.push(flags_request(5, true, 12));
    for (m, seq) in messages.iter().zip(10u32..) {
        let kind = u16::from_ne_bytes([m[4], m[5]]);
        assert_eq!(kind, NFNL_SUBSYS_ULOG << 8 | 1, "NFULNL_MSG_CONFIG");
        assert_eq!(u32::from_ne_bytes([m[8], m[9], m[10], m[11]]), seq);
        // The group is the netfilter header's resource id (big-endian).
        assert_eq!(u16::from_be_bytes([m[18], m[19]]), 5);
    }
    // An error answer (EPERM: another socket holds the group) to message 10.
    let mut err = vec![0u8; 36];
    err[..4].copy_from_slice(&36u32.to_ne_bytes());
    err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
    err[8..12].copy_from_slice(&10u32.to_ne_bytes());
    err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
    assert_eq!(parse_samples(&err).acks, vec![(10, 1)]);
}
