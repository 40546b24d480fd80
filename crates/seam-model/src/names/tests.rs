use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::{endpoint_mac, Endpoint, EndpointKind, Segment};

/// An endpoint as the agent publishes it for these names.
fn endpoint(namespace: &str, pod: Option<&str>, container_id: &str, ifname: &str) -> Endpoint {
    let ip = Ipv4Addr::new(10, 0, 0, 2);
    Endpoint {
        name: pod_endpoint_name(namespace, pod, container_id, ifname),
        kind: EndpointKind::Pod,
        namespace: namespace.to_string(),
        segment: namespace_segment_name(namespace),
        node: "n1".into(),
        ip,
        mac: endpoint_mac(ip),
        labels: BTreeMap::new(),
        container_id: Some(container_id.to_string()),
        ifname: Some(ifname.to_string()),
        ports: Vec::new(),
        conditions: None,
    }
}

fn segment(namespace: &str) -> Segment {
    Segment {
        name: namespace_segment_name(namespace),
        tenant: "default".into(),
        subnet: "10.0.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        vni: 4097,
        block_prefix: 26,
        namespace: Some(namespace.to_string()),
        snat: false,
        forwarding: Default::default(),
    }
}

#[test]
fn fnv1a_128_matches_the_reference_vectors() {
    assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
    assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
}

#[test]
fn the_longest_kubernetes_names_make_valid_objects() {
    let ns = "n".repeat(63);
    let pod = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(pod.len(), 253);
    for (pod, cid, ifname) in [
        (Some(pod.as_str()), "c1", "eth0"),
        (Some(pod.as_str()), "c1", "net1-long-name1"),
        (None, &*"f".repeat(1000), "eth0"),
        (None, &*"f".repeat(64), "net1-long-name1"),
    ] {
        let ep = endpoint(&ns, pod, cid, ifname);
        assert_eq!(ep.validate(), Ok(()), "{}", ep.name);
    }
    assert_eq!(segment(&ns).validate(), Ok(()));
    assert_eq!(namespace_segment_name(&ns).len(), 66);
}

#[test]
fn pod_names_stay_whole_and_long_container_ids_are_shortened() {
    assert_eq!(
        pod_endpoint_name("web", Some("fe-1"), "abc", "eth0"),
        "web/fe-1"
    );
    assert_eq!(
        pod_endpoint_name("web", Some("fe-1"), "abc", "net1"),
        "web/fe-1/net1"
    );
    let id = "0123456789abcdef".repeat(4);
    assert_eq!(
        pod_endpoint_name("web", None, &id, "eth0"),
        format!("web/{id}/eth0")
    );
    let long = "x".repeat(1000);
    let name = pod_endpoint_name("web", None, &long, "eth0");
    // Pinned: the name must not change between releases (agents recompute it after upgrades).
    assert_eq!(
        name,
        format!(
            "web/{}~{:032x}/eth0",
            "x".repeat(64),
            fnv1a_128(long.as_bytes())
        )
    );
    assert!(name.len() < 120, "{name}");
}

#[test]
fn segment_names_have_their_own_bound() {
    assert!(is_valid_segment_name(&"s".repeat(253)));
    assert!(!is_valid_segment_name(&"s".repeat(254)));
    assert!(!crate::is_valid_name(&"s".repeat(64)));
    let mut seg = segment("web");
    seg.name = "s".repeat(254);
    assert!(seg.validate().is_err());
}

fn dns_label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        // Often the longest.
        "[a-z0-9][a-z0-9-]{61}[a-z0-9]",
    ]
}

fn dns_subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec(dns_label(), 1..=5)
        .prop_map(|labels| {
            let mut name = labels.join(".");
            // Cut to 253 at a label boundary's alphanumeric end.
            while name.len() > 253 {
                name.truncate(253);
                while name.ends_with(['-', '.']) {
                    name.pop();
                }
            }
            name
        })
        .prop_filter("non-empty", |n| !n.is_empty())
}

fn container_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}",
        "[A-Za-z0-9][A-Za-z0-9_.-]{0,200}",
        "[A-Za-z0-9][A-Za-z0-9_.-]{120,1200}",
    ]
}

fn ifname() -> impl Strategy<Value = String> {
    prop_oneof![Just("eth0".to_string()), "[a-z0-9][a-z0-9_.-]{0,14}"]
}

/// One attachment's names as Kubernetes or a runtime sends them.
#[derive(Debug, Clone)]
struct Input {
    namespace: String,
    pod: Option<String>,
    container_id: String,
    ifname: String,
}

impl Input {
    fn name(&self) -> String {
        pod_endpoint_name(
            &self.namespace,
            self.pod.as_deref(),
            &self.container_id,
            &self.ifname,
        )
    }

    /// What names one endpoint: a pod's interface is the same endpoint whichever sandbox (container
    /// id) holds it; without a pod name, the container's interface is.
    fn identity(&self) -> (String, Option<String>, Option<String>, String) {
        match &self.pod {
            Some(pod) => (
                self.namespace.clone(),
                Some(pod.clone()),
                None,
                self.ifname.clone(),
            ),
            None => (
                self.namespace.clone(),
                None,
                Some(self.container_id.clone()),
                self.ifname.clone(),
            ),
        }
    }
}

fn input() -> impl Strategy<Value = Input> {
    (
        dns_label(),
        prop::option::of(dns_subdomain()),
        container_id(),
        ifname(),
    )
        .prop_map(|(namespace, pod, container_id, ifname)| Input {
            namespace,
            pod,
            container_id,
            ifname,
        })
}

/// Two inputs that are often nearly the same: random pairs would almost never share a name by
/// chance, so the second is usually the first with one part changed a little (a container id
/// that differs only after its first 64 characters, a pod that becomes a container, …).
fn pair() -> impl Strategy<Value = (Input, Input)> {
    (input(), input(), 0..7u8, 0..1300usize).prop_map(|(a, other, how, at)| {
        let mut b = a.clone();
        match how {
            0 => b = other,
            1 => b.namespace = other.namespace,
            2 => b.pod = other.pod,
            3 => b.ifname = other.ifname,
            4 => {
                // Same prefix, one character changed somewhere.
                let mut id: Vec<char> = a.container_id.chars().collect();
                let i = at % id.len();
                id[i] = if id[i] == 'a' { 'b' } else { 'a' };
                b.container_id = id.into_iter().collect();
            }
            5 => {
                // A pod becomes a container named like it, or the other way round.
                match &a.pod {
                    Some(pod) => {
                        b.pod = None;
                        b.container_id = pod.clone();
                    }
                    None => b.pod = Some(a.container_id.to_ascii_lowercase()),
                }
            }
            _ => b.container_id = format!("{}{}", a.container_id, other.container_id),
        }
        (a, b)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any Kubernetes-valid input maps to a valid endpoint and segment, and always to the same
    /// names.
    #[test]
    fn every_valid_input_makes_valid_stable_names(i in input()) {
        let ep = endpoint(&i.namespace, i.pod.as_deref(), &i.container_id, &i.ifname);
        prop_assert_eq!(ep.validate(), Ok(()), "{}", ep.name);
        prop_assert_eq!(segment(&i.namespace).validate(), Ok(()));
        prop_assert_eq!(i.name(), i.clone().name());
        prop_assert_eq!(namespace_segment_name(&i.namespace), namespace_segment_name(&i.namespace.clone()));
    }

    /// Distinct inputs get distinct names; the same endpoint gets the same name.
    #[test]
    fn names_are_one_to_one((a, b) in pair()) {
        // The one documented meeting of the two forms (see `pod_endpoint_name`).
        let meet = |p: &Input, c: &Input| {
            p.pod.is_some()
                && c.pod.is_none()
                && p.pod.as_deref() == Some(c.container_id.as_str())
                && c.container_id.len() <= MAX_WHOLE_CONTAINER_ID
                && p.ifname == c.ifname
                && p.ifname != "eth0"
                && p.namespace == c.namespace
        };
        let same = a.identity() == b.identity() || meet(&a, &b) || meet(&b, &a);
        prop_assert_eq!(a.name() == b.name(), same, "{} / {}", a.name(), b.name());
        prop_assert_eq!(
            namespace_segment_name(&a.namespace) == namespace_segment_name(&b.namespace),
            a.namespace == b.namespace
        );
    }
}
