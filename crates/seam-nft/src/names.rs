//! Every nftables name Seam uses: its tables, base chains, verdict maps, the prefixes of the
//! chains it derives, and how an IR set name and a rule id become a set name and a rule comment.
//! Nothing else in the workspace's code spells one of these out (only tests that pin the exact
//! text Seam writes do): a rename is a change here. The interface name prefixes the rules match
//! (`sv*`, `seam-*`, …) are `seam_model`'s, which names the links.

/// The policy table: family `inet`, name `seam`, as `nft` text names it.
pub const TABLE: &str = "inet seam";
/// The policy table's family.
pub const TABLE_FAMILY: &str = "inet";
/// The policy table's name (the same name is used for [`BRIDGE_TABLE`]).
pub const TABLE_NAME: &str = "seam";

/// The bridge-family table that drops IPv6 on Seam's bridges, as `nft` text names it.
pub const BRIDGE_TABLE: &str = "bridge seam";
/// The bridge table's family (its name is [`TABLE_NAME`]).
pub const BRIDGE_FAMILY: &str = "bridge";
/// The bridge table's only chain (hook forward).
pub const BRIDGE_CHAIN: &str = "forward";
/// The comment of the bridge table's IPv6 rules.
pub const IPV6_RULE_COMMENT: &str = "ipv6-on-segments";

/// The base chain of egress (hook forward, priority filter): dispatches by source address.
pub const EGRESS_CHAIN: &str = "egress";
/// The base chain of ingress (hook forward, priority filter + 10): dispatches by destination.
pub const INGRESS_CHAIN: &str = "ingress";
/// Both base chains of the policy table.
pub const BASE_CHAINS: [&str; 2] = [EGRESS_CHAIN, INGRESS_CHAIN];

/// The verdict map of egress: local source address → class chain.
pub const EGRESS_DISPATCH: &str = "egress_dispatch";
/// The verdict map of ingress: local destination address → class chain.
pub const INGRESS_DISPATCH: &str = "ingress_dispatch";

/// Prefix of an admin-tier policy chain (`a_<hash>`).
pub const ADMIN_CHAIN_PREFIX: &str = "a_";
/// Prefix of a namespace-tier policy chain (`b_<hash>`).
pub const NAMESPACE_CHAIN_PREFIX: &str = "b_";
/// Prefix of a class chain (`c_<hash>`), which the dispatch maps go to.
pub const CLASS_CHAIN_PREFIX: &str = "c_";
/// Prefix of a direction's baseline chain (`z_<hash>`).
pub const BASELINE_CHAIN_PREFIX: &str = "z_";
/// Every prefix of a regular chain Seam makes; a chain with another name is not Seam's.
pub const CHAIN_PREFIXES: [&str; 4] = [
    ADMIN_CHAIN_PREFIX,
    NAMESPACE_CHAIN_PREFIX,
    CLASS_CHAIN_PREFIX,
    BASELINE_CHAIN_PREFIX,
];

/// Prefix of a hash set's name (a set of single addresses; interval sets have none).
pub const HASH_SET_PREFIX: &str = "h/";

/// The nftables family of [`NAT_TABLE`] (NAT of IPv4 only: segments are IPv4).
pub const NAT_FAMILY: &str = "ip";
/// Seam's NAT table (kept apart from `inet seam`, which the policy engine rewrites).
pub const NAT_TABLE: &str = "seam-nat";
/// The set of source prefixes whose egress is masqueraded: the SNAT segments' subnets.
pub const NAT_SOURCES_SET: &str = "snat_sources";
/// The set of destinations never masqueraded: every segment, node and external endpoint.
pub const NAT_KNOWN_SET: &str = "not_masqueraded";
/// The NAT table's base chain (nat hook postrouting, priority srcnat).
pub const NAT_CHAIN: &str = "postrouting";
/// The comment that marks Seam's masquerade rule (how the observer recognises it).
pub const NAT_RULE_COMMENT: &str = "seam snat";

/// Services (see [`crate::services`]): the verdict map of frontends at an address
/// (`ipv4_addr . inet_proto . inet_service : verdict`) → a `m_<N>` or `sa_<hash>` chain.
pub const SVC_DISPATCH: &str = "svc_dispatch";
/// The verdict map of NodePorts (`inet_proto . inet_service : verdict`) → a `n_<N>` or
/// `sa_<hash>` chain.
pub const SVC_NODEPORTS: &str = "svc_nodeports";
/// The backends of frontends at an address: frontend and slot (`0..N`) → backend address and
/// port.
pub const SVC_BACKENDS: &str = "svc_backends";
/// The backends of NodePorts: protocol, port and slot → backend address and port.
pub const SVC_NODEPORT_BACKENDS: &str = "svc_np_backends";
/// Frontends at an address with no usable backend: refused at once.
pub const SVC_REJECT: &str = "svc_reject";
/// NodePorts with no usable backend: refused at once.
pub const SVC_NODEPORT_REJECT: &str = "svc_np_reject";
/// Frontends at an address whose connections from outside [`SVC_INSIDE`] are masqueraded.
pub const SVC_MASQUERADE: &str = "svc_masq";
/// NodePorts whose connections from outside [`SVC_INSIDE`] are masqueraded.
pub const SVC_NODEPORT_MASQUERADE: &str = "svc_np_masq";
/// Seam's segments (an interval set): sources inside are never masqueraded by a Service.
pub const SVC_INSIDE: &str = "svc_inside";
/// Hairpin pairs `B . B`: a local backend reaching itself through a Service is masqueraded.
pub const SVC_HAIRPIN: &str = "svc_hairpin";
/// The LoadBalancer addresses this node serves: anything else sent to them is dropped on input.
pub const SVC_LB_ADDRESSES: &str = "svc_lb_addresses";
/// The address marked connections are SNATed to (`mark : ipv4_addr`, one element keyed by
/// [`SVC_MASQUERADE_MARK`]): the node's underlay address, which every node routes back to this
/// node (masquerade would pick the segment's gateway address, the same on every node).
pub const SVC_SNAT_TO: &str = "svc_snat_to";
/// Addresses of backends outside Seam's segments (external endpoints): a translated connection
/// to one from outside [`SVC_INSIDE`] is masqueraded, or the backend would answer the client
/// directly.
pub const SVC_SNAT_BACKENDS: &str = "svc_snat_backends";
/// Every set and map of the Services part, in the order a whole-table write declares them.
pub const SVC_SETS: [&str; 13] = [
    SVC_DISPATCH,
    SVC_NODEPORTS,
    SVC_BACKENDS,
    SVC_NODEPORT_BACKENDS,
    SVC_REJECT,
    SVC_NODEPORT_REJECT,
    SVC_MASQUERADE,
    SVC_NODEPORT_MASQUERADE,
    SVC_INSIDE,
    SVC_HAIRPIN,
    SVC_LB_ADDRESSES,
    SVC_SNAT_TO,
    SVC_SNAT_BACKENDS,
];

/// The nat base chain on prerouting (priority dstnat): translation of what arrives.
pub const SVC_PREROUTING: &str = "svc_prerouting";
/// The nat base chain on output (priority -100): translation of what the node sends.
pub const SVC_OUTPUT: &str = "svc_output";
/// The nat base chain on postrouting (priority srcnat): masquerade and hairpin.
pub const SVC_POSTROUTING: &str = "svc_postrouting";
/// The filter base chain on input (priority filter - 10): refusals and the LB address guard.
pub const SVC_REJECT_INPUT: &str = "svc_reject_input";
/// The filter base chain on prerouting (priority dstnat - 10, before translation and routing):
/// refusals of frontends at an address, whether the node would forward the packet or not
/// (without a route to the address, the forward hook never sees it).
pub const SVC_REJECT_PREROUTING: &str = "svc_reject_prerouting";
/// The filter base chain on output (priority filter - 10): refusals.
pub const SVC_REJECT_OUTPUT: &str = "svc_reject_output";
/// Every base chain of the Services part.
pub const SVC_BASE_CHAINS: [&str; 6] = [
    SVC_PREROUTING,
    SVC_OUTPUT,
    SVC_POSTROUTING,
    SVC_REJECT_INPUT,
    SVC_REJECT_PREROUTING,
    SVC_REJECT_OUTPUT,
];

/// With flow recording on: the chain a refusal of a frontend at an address (on prerouting and
/// output: the client's side) jumps to before it is refused, which samples it under a limit.
pub const SVC_REFUSED_EGRESS: &str = "svc_refused_e";
/// The same for a refused NodePort (on input: the side it arrived at).
pub const SVC_REFUSED_INGRESS: &str = "svc_refused_i";
/// Both sample chains of refusals.
pub const SVC_REFUSED_CHAINS: [&str; 2] = [SVC_REFUSED_EGRESS, SVC_REFUSED_INGRESS];
/// The comment of a refusal's over-limit rule, and what its samples' prefixes name (a record of
/// a refusal names no policy rule).
pub const SVC_REFUSAL_COMMENT: &str = "svc-no-endpoints";

/// Prefix of the shared chain of frontends at an address with N backends (`m_<N>`).
pub const SPREAD_CHAIN_PREFIX: &str = "m_";
/// Prefix of the shared chain of NodePorts with N backends (`n_<N>`).
pub const NODEPORT_SPREAD_CHAIN_PREFIX: &str = "n_";
/// Prefix of a frontend's ClientIP affinity chain (`sa_<hash>`).
pub const AFFINITY_CHAIN_PREFIX: &str = "sa_";
/// Prefix of an affinity backend's chain (`se_<hash>`): records the client, translates.
pub const STICKY_CHAIN_PREFIX: &str = "se_";
/// Prefix of an affinity backend's timed set of clients (`aff_<hash>`, the hash of its
/// `se_<hash>` chain).
pub const AFFINITY_SET_PREFIX: &str = "aff_";
/// Every prefix of a Services chain.
pub const SVC_CHAIN_PREFIXES: [&str; 4] = [
    SPREAD_CHAIN_PREFIX,
    NODEPORT_SPREAD_CHAIN_PREFIX,
    AFFINITY_CHAIN_PREFIX,
    STICKY_CHAIN_PREFIX,
];

/// The packet mark bit set in the nat prerouting/output chains on a connection's first packet
/// when its frontend masquerades sources outside Seam's segments and its source is such; the
/// postrouting chain masquerades what carries it. A packet mark (not a ct mark): only the first
/// packet of a connection passes nat chains, and its NAT binding holds for the rest.
pub const SVC_MASQUERADE_MARK: u32 = 0x0010_0000;

/// The packet and conntrack mark field that names the gateway a connection came through on a
/// backend's node (`seam_dataplane::reply`): one slot 1..=255 per gateway in the top byte, clear
/// of [`SVC_MASQUERADE_MARK`]. Only `table ip seam-nat`'s reply chains set or clear it.
pub const REPLY_MARK_MASK: u32 = 0xff00_0000;
/// How far a gateway's slot is shifted into [`REPLY_MARK_MASK`].
pub const REPLY_MARK_SHIFT: u32 = 24;
/// The prerouting chain of [`NAT_TABLE`] that records the gateway of each new connection in its
/// conntrack mark and marks its replies.
pub const REPLY_MARK_CHAIN: &str = "reply_mark";
/// The postrouting chain of [`NAT_TABLE`] that clears [`REPLY_MARK_MASK`] once the reply is
/// routed (a VXLAN device routes its outer packet with the inner packet's mark).
pub const REPLY_CLEAR_CHAIN: &str = "reply_clear";
/// The set of sources never recorded (segments and nodes: Seam's own traffic keeps its paths).
pub const REPLY_INSIDE_SET: &str = "reply_inside";
/// The start of every reply rule's comment; the rest says what the rule is, so a listing is
/// compared with the desired rules by their comments.
pub const REPLY_COMMENT_PREFIX: &str = "seam reply";
/// The UDP port of Seam's VXLAN devices (segments and the transit), the outer packets the reply
/// chain marks by their source.
pub const VXLAN_UDP_PORT: u16 = 4789;

/// The mark of reply slot `slot` ([`REPLY_MARK_MASK`]).
pub fn reply_mark(slot: u8) -> u32 {
    u32::from(slot) << REPLY_MARK_SHIFT
}

/// The longest comment nftables keeps (its limit is 128 bytes including the terminator).
const MAX_COMMENT: usize = 127;

/// The longest set name rendered as is.
const MAX_SET_NAME: usize = 200;

// FNV-1a lives in seam-model (the controller and the agent's crates share it); the names here
// are made of it.
pub use seam_model::fnv::{fnv1a, fnv_feed, FNV_OFFSET};

/// A derived chain's name: its prefix (one of [`CHAIN_PREFIXES`]) and a hash of what it holds
/// (its labels, then its rules' hashes), so equal chains share a name and the kernel's table can
/// be adopted by its names after a restart.
pub fn chain_name(prefix: &str, labels: &[&str], rules: impl IntoIterator<Item = u64>) -> String {
    let mut h = FNV_OFFSET;
    for l in labels {
        h = fnv_feed(h, l.as_bytes());
        h = fnv_feed(h, b"\n");
    }
    for r in rules {
        h = fnv_feed(h, &r.to_le_bytes());
    }
    format!("{prefix}{h:016x}")
}

/// The longest part of a rule comment a log prefix carries (the kernel keeps 127 bytes of prefix).
const MAX_LOG_COMMENT: usize = 100;

/// The log prefix of a rule whose comment is `comment` (see [`nft_comment`]): `seam `, the
/// comment's first 100 characters, and a space.
pub fn log_prefix(comment: &str) -> String {
    let comment: String = comment.chars().take(MAX_LOG_COMMENT).collect();
    format!("seam {comment} ")
}

/// The longest NFLOG prefix nf_tables keeps (`NF_LOG_PREFIXLEN` is 128 with the terminator).
const MAX_SAMPLE_PREFIX: usize = 127;

/// What a flow sample says about the rule that sent it: the first character of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleKind {
    /// An allow rule (`accept`): a new connection let through.
    Allow,
    /// A deny rule (`drop`), isolation and default-deny drops included.
    Deny,
    /// A Pass rule (`return`): the admin tier handed the flow on.
    Pass,
}

impl SampleKind {
    /// Its letter in a prefix: `A`, `D`, `P`.
    pub fn letter(self) -> char {
        match self {
            SampleKind::Allow => 'A',
            SampleKind::Deny => 'D',
            SampleKind::Pass => 'P',
        }
    }

    /// The kind a prefix letter stands for.
    pub fn from_letter(c: char) -> Option<SampleKind> {
        match c {
            'A' => Some(SampleKind::Allow),
            'D' => Some(SampleKind::Deny),
            'P' => Some(SampleKind::Pass),
            _ => None,
        }
    }
}

/// The NFLOG prefix of the flow samples of a rule with this comment ([`nft_comment`]) in one
/// direction's chains: the kind's letter, `e` or `i`, `:`, then the comment, or when that would
/// pass NFLOG's 127 bytes, its start and `~` plus a hash of the whole comment. The agent maps a
/// sample's prefix back to the rule through the same function (prefix → rule metadata, built from
/// the compiled ruleset), so the prefix only has to be unique per node, and readable helps
/// whoever reads `nft list`.
pub fn sample_prefix(kind: SampleKind, egress: bool, comment: &str) -> String {
    let head = format!("{}{}:", kind.letter(), if egress { 'e' } else { 'i' });
    if head.len() + comment.len() <= MAX_SAMPLE_PREFIX {
        return format!("{head}{comment}");
    }
    let hash = format!("~{:016x}", fnv1a(comment));
    let keep = MAX_SAMPLE_PREFIX - head.len() - hash.len();
    // Comments are ASCII ([`nft_comment`]), so any byte is a char boundary.
    let start: String = comment.chars().take(keep).collect();
    format!("{head}{start}{hash}")
}

fn plain(c: char) -> bool {
    c.is_ascii_graphic() && c != '"' && c != '\\'
}

/// The `comment` a rule with this id carries in the kernel: the id itself when it fits
/// nftables' 127 bytes and is plain text; otherwise a prefix of it (unsafe characters replaced
/// by `_`) and `~` plus a hash of the full id.
pub fn nft_comment(id: &str) -> String {
    if id.chars().all(plain) && id.len() <= MAX_COMMENT {
        return id.to_string();
    }
    let hash = format!("~{:016x}", fnv1a(id));
    let mut out: String = id
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .take(MAX_COMMENT - hash.len())
        .collect();
    out.push_str(&hash);
    out
}

/// The nftables name of an IR set: the name itself when it is a plain identifier (letters,
/// digits, `_./-`, a letter first, at most 200 bytes); otherwise `x_` + a sanitized prefix + a
/// hash of the full name.
pub fn nft_set_name(name: &str) -> String {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let starts_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_ok && name.len() <= MAX_SET_NAME && name.chars().all(ok_char) {
        return name.to_string();
    }
    let prefix: String = name
        .chars()
        .map(|c| if ok_char(c) { c } else { '_' })
        .take(100)
        .collect();
    format!("x_{prefix}_{:016x}", fnv1a(name))
}

/// The kernel's name of an IR set held as an interval set, or as a hash set ([`HASH_SET_PREFIX`]).
pub fn kernel_set_name(ir_name: &str, interval: bool) -> String {
    if interval {
        nft_set_name(ir_name)
    } else {
        format!("{HASH_SET_PREFIX}{}", nft_set_name(ir_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_fit_are_kept_and_others_hashed() {
        assert_eq!(nft_comment("np/x/web/ingress/0"), "np/x/web/ingress/0");
        let long = nft_comment(&"a".repeat(200));
        assert_eq!(long.len(), MAX_COMMENT);
        assert!(nft_comment("a \"b\"").starts_with("a__b_~"));
        assert_eq!(nft_set_name("tenant/blue"), "tenant/blue");
        assert!(nft_set_name("1x").starts_with("x_1x_"));
        assert_eq!(kernel_set_name("s", false), "h/s");
        assert_eq!(kernel_set_name("s", true), "s");
    }

    #[test]
    fn sample_prefixes_fit_nflog_and_stay_distinct() {
        assert_eq!(
            sample_prefix(SampleKind::Deny, false, "np/x/a/ingress/0"),
            "Di:np/x/a/ingress/0"
        );
        let long = nft_comment(&"a".repeat(300));
        let p = sample_prefix(SampleKind::Allow, true, &long);
        assert_eq!(p.len(), MAX_SAMPLE_PREFIX);
        let other = nft_comment(&format!("{}b", "a".repeat(299)));
        assert_ne!(p, sample_prefix(SampleKind::Allow, true, &other));
        for k in [SampleKind::Allow, SampleKind::Deny, SampleKind::Pass] {
            assert_eq!(SampleKind::from_letter(k.letter()), Some(k));
        }
    }

    #[test]
    fn table_names_are_their_family_and_name() {
        assert_eq!(TABLE, format!("{TABLE_FAMILY} {TABLE_NAME}"));
        assert_eq!(BRIDGE_TABLE, format!("{BRIDGE_FAMILY} {TABLE_NAME}"));
    }
}
