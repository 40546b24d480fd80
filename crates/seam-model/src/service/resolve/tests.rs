//! Table tests of `resolve` and `usable`, each case a rule of the Kubernetes documentation
//! (Service, EndpointSlice conditions, traffic policies, terminating endpoints).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;
use crate::objects::{ContainerPort, PortProtocol};
use crate::service::{ServiceSpec, ServiceStatus, SliceEndpoint, SlicePort};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn endpoint(name: &str, ns: &str, last: u8, node: &str, l: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        name: format!("{ns}/{name}"),
        kind: EndpointKind::Pod,
        namespace: ns.into(),
        segment: "s".into(),
        node: node.into(),
        ip: ip(last),
        mac: crate::endpoint_mac(ip(last)),
        labels: labels(l),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    }
}

fn named(mut e: Endpoint, ports: &[(&str, u16, PortProtocol)]) -> Endpoint {
    e.ports = ports
        .iter()
        .map(|(n, p, proto)| ContainerPort {
            name: n.to_string(),
            port: *p,
            protocol: *proto,
        })
        .collect();
    e
}

fn port(name: Option<&str>, number: u16, target: Option<TargetPort>) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        protocol: PortProtocol::Tcp,
        port: number,
        target_port: target,
        node_port: None,
        app_protocol: None,
    }
}

fn service(selector: Option<&[(&str, &str)]>, ports: Vec<ServicePort>) -> Service {
    Service {
        name: "web".into(),
        namespace: "shop".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            selector: selector.map(labels),
            ports,
            ..ServiceSpec::default()
        },
        status: ServiceStatus::default(),
    }
}

/// (ip last octet, port) of a port's backends.
fn pairs(resolved: &ResolvedPort) -> Vec<(u8, u16)> {
    resolved
        .backends
        .iter()
        .map(|b| (b.ip.octets()[3], b.port))
        .collect()
}

#[test]
fn a_selector_picks_the_matching_endpoints_of_the_services_namespace() {
    let mut host = endpoint("n1", "shop", 9, "n1", &[("app", "web")]);
    host.kind = EndpointKind::Host;
    let mut vm = endpoint("vm1", "shop", 5, "h1", &[("app", "web"), ("tier", "x")]);
    vm.kind = EndpointKind::Vm;
    let mut external = endpoint("bm1", "shop", 6, "gw1", &[("app", "web")]);
    external.kind = EndpointKind::External;
    let endpoints = [
        endpoint("a", "shop", 3, "n1", &[("app", "web")]),
        endpoint("b", "shop", 2, "n2", &[("app", "db")]), // other labels
        endpoint("c", "other", 4, "n1", &[("app", "web")]), // other namespace
        endpoint("d", "shop", 7, "n2", &[("tier", "x")]), // lacks a selector key
        host,                                             // a node is never a backend
        vm,
        external,
    ];
    let svc = service(Some(&[("app", "web")]), vec![port(None, 80, None)]);
    let resolved = resolve(&svc, &endpoints, &[]);
    assert_eq!(resolved.len(), 1);
    // Sorted by address; targetPort absent = the Service port.
    assert_eq!(pairs(&resolved[0]), [(3, 80), (5, 80), (6, 80)]);
    let first = &resolved[0].backends[0];
    assert_eq!(first.node.as_deref(), Some("n1"));
    assert_eq!(first.endpoint.as_deref(), Some("shop/a"));
    assert_eq!(
        first.state,
        BackendState {
            ready: true,
            serving: true,
            terminating: false
        }
    );
    // A selector with two keys needs both.
    let svc = service(
        Some(&[("app", "web"), ("tier", "x")]),
        vec![port(None, 80, None)],
    );
    assert_eq!(pairs(&resolve(&svc, &endpoints, &[])[0]), [(5, 80)]);
}

#[test]
fn target_ports_numbered_and_named_per_endpoint() {
    let endpoints = [
        named(
            endpoint("a", "shop", 1, "n1", &[("app", "web")]),
            &[("http", 8080, PortProtocol::Tcp)],
        ),
        // The same name on another number: each backend's own.
        named(
            endpoint("b", "shop", 2, "n1", &[("app", "web")]),
            &[("http", 9090, PortProtocol::Tcp)],
        ),
        // The name with another protocol only: no backend of a TCP port.
        named(
            endpoint("c", "shop", 3, "n1", &[("app", "web")]),
            &[("http", 8080, PortProtocol::Udp)],
        ),
        // No such name: left out, as Kubernetes' EndpointSlice controller does.
        endpoint("d", "shop", 4, "n1", &[("app", "web")]),
    ];
    let svc = service(
        Some(&[("app", "web")]),
        vec![
            port(Some("http"), 80, Some(TargetPort::Name("http".into()))),
            port(Some("admin"), 81, Some(TargetPort::Number(9000))),
        ],
    );
    let resolved = resolve(&svc, &endpoints, &[]);
    assert_eq!(pairs(&resolved[0]), [(1, 8080), (2, 9090)]);
    assert_eq!(
        pairs(&resolved[1]),
        [(1, 9000), (2, 9000), (3, 9000), (4, 9000)]
    );
    assert_eq!(resolved[1].port.name.as_deref(), Some("admin"));
}

fn slice_endpoint(
    last: u8,
    node: &str,
    c: (Option<bool>, Option<bool>, Option<bool>),
) -> SliceEndpoint {
    SliceEndpoint {
        addresses: vec![ip(last)],
        conditions: EndpointConditions {
            ready: c.0,
            serving: c.1,
            terminating: c.2,
        },
        node_name: Some(node.into()),
        hostname: None,
        zone: None,
        target_ref: None,
    }
}

fn slice(
    name: &str,
    ns: &str,
    svc: &str,
    ports: &[(Option<&str>, u16)],
    endpoints: Vec<SliceEndpoint>,
) -> EndpointSlice {
    EndpointSlice {
        name: name.into(),
        namespace: ns.into(),
        service: svc.into(),
        labels: BTreeMap::new(),
        endpoints,
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort {
                name: n.map(str::to_string),
                port: *p,
                protocol: PortProtocol::Tcp,
                app_protocol: None,
            })
            .collect(),
    }
}

#[test]
fn slice_conditions_resolve_as_kubernetes_says() {
    let state = |ready, serving, terminating| BackendState {
        ready,
        serving,
        terminating,
    };
    // EndpointSlice docs: a nil ready is an unknown state consumers treat as ready; serving
    // defers to ready when nil; terminating nil is not terminating.
    let cases = [
        ((None, None, None), state(true, true, false)),
        ((Some(true), None, None), state(true, true, false)),
        ((Some(false), None, None), state(false, false, false)),
        (
            (Some(false), Some(true), Some(true)),
            state(false, true, true),
        ),
        ((Some(false), None, Some(true)), state(false, false, true)),
        (
            (Some(false), Some(false), Some(true)),
            state(false, false, true),
        ),
    ];
    for (c, want) in cases {
        let conditions = EndpointConditions {
            ready: c.0,
            serving: c.1,
            terminating: c.2,
        };
        assert_eq!(conditions.resolved(), want, "{c:?}");
    }
}

#[test]
fn a_service_without_selector_takes_its_slices() {
    let mut multi = slice_endpoint(7, "n2", (None, None, None));
    // Only the first address counts (kube-proxy reads no other).
    multi.addresses.push(ip(8));
    let mut pod = slice_endpoint(4, "n1", (Some(true), None, None));
    pod.target_ref = Some(serde_json::json!({"kind": "Pod", "name": "web-1", "namespace": "shop"}));
    let slices = [
        slice(
            "web-a",
            "shop",
            "web",
            &[(Some("http"), 8080)],
            vec![pod, multi],
        ),
        slice(
            "web-b",
            "shop",
            "web",
            &[(Some("http"), 8080), (Some("admin"), 9000)],
            vec![slice_endpoint(
                2,
                "n1",
                (Some(false), Some(true), Some(true)),
            )],
        ),
        slice(
            "other",
            "shop",
            "db",
            &[(Some("http"), 1)],
            vec![slice_endpoint(30, "n1", (None, None, None))],
        ),
        slice(
            "elsewhere",
            "prod",
            "web",
            &[(Some("http"), 1)],
            vec![slice_endpoint(31, "n1", (None, None, None))],
        ),
    ];
    let svc = service(
        None,
        vec![
            port(Some("http"), 80, None),
            port(Some("admin"), 81, None),
            port(Some("none"), 82, None),
        ],
    );
    // The selector case ignores slices; this Service has none, so its endpoints are ignored.
    let endpoints = [endpoint("x", "shop", 99, "n1", &[])];
    let resolved = resolve(&svc, &endpoints, &slices);
    assert_eq!(pairs(&resolved[0]), [(2, 8080), (4, 8080), (7, 8080)]);
    assert_eq!(
        resolved[0].backends[1].endpoint.as_deref(),
        Some("shop/web-1")
    );
    assert_eq!(resolved[0].backends[1].node.as_deref(), Some("n1"));
    assert!(resolved[0].backends[0].state.terminating);
    // Only web-b serves the admin port; no slice serves port "none".
    assert_eq!(pairs(&resolved[1]), [(2, 9000)]);
    assert!(resolved[2].backends.is_empty());
}

#[test]
fn an_unnamed_service_port_takes_the_unnamed_slice_port() {
    let slices = [slice(
        "web-a",
        "shop",
        "web",
        &[(None, 8080)],
        vec![slice_endpoint(1, "n1", (None, None, None))],
    )];
    let resolved = resolve(&service(None, vec![port(None, 80, None)]), &[], &slices);
    assert_eq!(pairs(&resolved[0]), [(1, 8080)]);
    let resolved = resolve(
        &service(None, vec![port(Some("http"), 80, None)]),
        &[],
        &slices,
    );
    assert!(resolved[0].backends.is_empty());
}

#[test]
fn an_address_in_two_slices_is_one_backend_with_the_better_conditions() {
    let slices = [
        slice(
            "a",
            "shop",
            "web",
            &[(None, 80)],
            vec![slice_endpoint(
                1,
                "n1",
                (Some(false), Some(true), Some(true)),
            )],
        ),
        slice(
            "b",
            "shop",
            "web",
            &[(None, 80)],
            vec![slice_endpoint(1, "n1", (Some(true), None, None))],
        ),
        slice(
            "c",
            "shop",
            "web",
            &[(None, 80)],
            vec![slice_endpoint(1, "n1", (Some(false), None, None))],
        ),
    ];
    let resolved = resolve(&service(None, vec![port(None, 80, None)]), &[], &slices);
    assert_eq!(resolved[0].backends.len(), 1);
    assert!(resolved[0].backends[0].state.ready);
}

/// An endpoint with conditions, as the Kubernetes adapter writes a pod's.
fn with_conditions(mut e: Endpoint, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    e.conditions = Some(EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(terminating),
    });
    e
}

#[test]
fn a_selectors_endpoints_carry_their_own_conditions() {
    let web = [("app", "web")];
    let endpoints = [
        // No conditions (a VM, a lab pod, a record older than conditions): ready.
        endpoint("a", "shop", 1, "n1", &web),
        // A pod whose readiness probe fails.
        with_conditions(endpoint("b", "shop", 2, "n1", &web), false, false, false),
        // A Ready pod in its grace period: serving, terminating, not ready.
        with_conditions(endpoint("c", "shop", 3, "n2", &web), false, true, true),
        // A pod that stopped being Ready while terminating.
        with_conditions(endpoint("d", "shop", 4, "n2", &web), false, false, true),
        // Only `ready` known: `serving` follows it, `terminating` is false.
        {
            let mut e = endpoint("e", "shop", 5, "n2", &web);
            e.conditions = Some(EndpointConditions {
                ready: Some(false),
                ..EndpointConditions::default()
            });
            e
        },
    ];
    let svc = service(Some(&web), vec![port(None, 80, None)]);
    let resolved = resolve(&svc, &endpoints, &[]);
    let states: Vec<(u8, bool, bool, bool)> = resolved[0]
        .backends
        .iter()
        .map(|b| {
            let s = b.state;
            (b.ip.octets()[3], s.ready, s.serving, s.terminating)
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, true, true, false),
            (2, false, false, false),
            (3, false, true, true),
            (4, false, false, true),
            (5, false, false, false),
        ]
    );
    let used = |backends: &[Backend], publish: bool| -> Vec<u8> {
        usable(backends, publish, None)
            .iter()
            .map(|b| b.ip.octets()[3])
            .collect()
    };
    // Only the ready one takes new connections.
    assert_eq!(used(&resolved[0].backends, false), [1]);
    // With none ready, the serving terminating pod finishes the work.
    let without_ready = resolve(&svc, &endpoints[1..], &[]);
    assert_eq!(used(&without_ready[0].backends, false), [3]);
    // publishNotReadyAddresses: every endpoint the selector matches.
    assert_eq!(used(&resolved[0].backends, true), [1, 2, 3, 4, 5]);
    // The same endpoint published twice (two segments) keeps its better state.
    let twice = [
        with_conditions(endpoint("b", "shop", 2, "n1", &web), false, false, false),
        endpoint("b2", "shop", 2, "n1", &web),
    ];
    let merged = resolve(&svc, &twice, &[]);
    assert!(merged[0].backends[0].state.ready);
}

fn backend(last: u8, node: &str, ready: bool, serving: bool, terminating: bool) -> Backend {
    Backend {
        ip: ip(last),
        port: 80,
        node: Some(node.into()),
        endpoint: None,
        state: BackendState {
            ready,
            serving,
            terminating,
        },
    }
}

#[test]
fn usable_backends_follow_kube_proxys_rules() {
    let ready_n1 = backend(1, "n1", true, true, false);
    let ready_n2 = backend(2, "n2", true, true, false);
    let not_ready_n1 = backend(3, "n1", false, false, false);
    let terminating_serving_n1 = backend(4, "n1", false, true, true);
    let terminating_serving_n2 = backend(5, "n2", false, true, true);
    let terminating_gone_n2 = backend(6, "n2", false, false, true);
    let all = |v: &[&Backend]| v.iter().map(|b| (*b).clone()).collect::<Vec<_>>();
    struct Case {
        rule: &'static str,
        backends: Vec<Backend>,
        publish_not_ready: bool,
        local: Option<&'static str>,
        want: Vec<u8>,
    }
    let cases = [
        Case {
            rule: "ready endpoints take new connections; not-ready ones do not",
            backends: all(&[&ready_n1, &ready_n2, &not_ready_n1, &terminating_serving_n1]),
            publish_not_ready: false,
            local: None,
            want: vec![1, 2],
        },
        Case {
            rule: "with no ready endpoint, the serving terminating ones are used",
            backends: all(&[
                &not_ready_n1,
                &terminating_serving_n1,
                &terminating_serving_n2,
                &terminating_gone_n2,
            ]),
            publish_not_ready: false,
            local: None,
            want: vec![4, 5],
        },
        Case {
            rule: "terminating endpoints that no longer serve are never used",
            backends: all(&[&not_ready_n1, &terminating_gone_n2]),
            publish_not_ready: false,
            local: None,
            want: vec![],
        },
        Case {
            rule: "publishNotReadyAddresses: every endpoint counts as ready",
            backends: all(&[&ready_n1, &not_ready_n1, &terminating_gone_n2]),
            publish_not_ready: true,
            local: None,
            want: vec![1, 3, 6],
        },
        Case {
            rule: "traffic policy Local: only the node's own endpoints",
            backends: all(&[&ready_n1, &ready_n2, &terminating_serving_n1]),
            publish_not_ready: false,
            local: Some("n1"),
            want: vec![1],
        },
        Case {
            rule: "traffic policy Local: no local endpoint means none, never a remote one",
            backends: all(&[&ready_n2, &terminating_serving_n2]),
            publish_not_ready: false,
            local: Some("n1"),
            want: vec![],
        },
        Case {
            rule: "traffic policy Local: a local serving terminating endpoint before dropping",
            backends: all(&[&ready_n2, &terminating_serving_n1, &not_ready_n1]),
            publish_not_ready: false,
            local: Some("n1"),
            want: vec![4],
        },
        Case {
            rule: "a backend of unknown node is never local",
            backends: vec![Backend {
                node: None,
                ..ready_n1.clone()
            }],
            publish_not_ready: false,
            local: Some("n1"),
            want: vec![],
        },
    ];
    for case in &cases {
        let got: Vec<u8> = usable(&case.backends, case.publish_not_ready, case.local)
            .iter()
            .map(|b| b.ip.octets()[3])
            .collect();
        assert_eq!(got, case.want, "{}", case.rule);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_backend() -> impl Strategy<Value = Backend> {
        (
            0u8..6,
            prop::sample::select(vec![80u16, 8080]),
            prop::option::of(prop::sample::select(vec!["n1", "n2"])),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(
                |(last, port, node, (ready, serving, terminating))| Backend {
                    ip: ip(last),
                    port,
                    node: node.map(str::to_string),
                    endpoint: None,
                    state: BackendState {
                        ready,
                        serving,
                        terminating,
                    },
                },
            )
    }

    fn any_conditions() -> impl Strategy<Value = (Option<bool>, Option<bool>, Option<bool>)> {
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
        )
    }

    proptest! {
        /// Whatever the slices hold, each port's backends are sorted by (address, port), each
        /// once, and come from the Service's own slices.
        #[test]
        fn resolved_backends_are_sorted_unique_and_owned(
            entries in prop::collection::vec(
                (0u8..8, any_conditions(), prop::sample::select(vec!["web", "db"]),
                 prop::sample::select(vec!["shop", "prod"])),
                0..24,
            )
        ) {
            let slices: Vec<EndpointSlice> = entries
                .iter()
                .enumerate()
                .map(|(i, (last, c, svc, ns))| {
                    slice(&format!("s{i}"), ns, svc, &[(None, 8080)], vec![slice_endpoint(*last, "n1", *c)])
                })
                .collect();
            let svc = service(None, vec![port(None, 80, None)]);
            let resolved = resolve(&svc, &[], &slices);
            let keys: Vec<(Ipv4Addr, u16)> =
                resolved[0].backends.iter().map(|b| (b.ip, b.port)).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
            let owned: std::collections::BTreeSet<Ipv4Addr> = entries
                .iter()
                .filter(|(_, _, s, ns)| *s == "web" && *ns == "shop")
                .map(|(last, ..)| ip(*last))
                .collect();
            let got: std::collections::BTreeSet<Ipv4Addr> = keys.iter().map(|k| k.0).collect();
            prop_assert_eq!(got, owned);
        }

        /// `usable` picks from the candidates only, ready ones whenever one is ready, the local
        /// node's only under Local, and refuses only when no candidate could serve.
        #[test]
        fn usable_follows_the_rules(
            backends in prop::collection::vec(any_backend(), 0..12),
            publish in any::<bool>(),
            local in prop::option::of(prop::sample::select(vec!["n1", "n2"])),
        ) {
            let picked = usable(&backends, publish, local);
            let candidates: Vec<&Backend> = backends
                .iter()
                .filter(|b| local.is_none_or(|n| b.node.as_deref() == Some(n)))
                .collect();
            for b in &picked {
                prop_assert!(candidates.contains(b));
            }
            let any_ready = candidates.iter().any(|b| publish || b.state.ready);
            if any_ready {
                prop_assert!(picked.iter().all(|b| publish || b.state.ready));
                prop_assert_eq!(
                    picked.len(),
                    candidates.iter().filter(|b| publish || b.state.ready).count()
                );
            } else {
                prop_assert!(picked.iter().all(|b| b.state.serving && b.state.terminating));
            }
            let could_serve = candidates
                .iter()
                .any(|b| publish || b.state.ready || (b.state.serving && b.state.terminating));
            prop_assert_eq!(picked.is_empty(), !could_serve);
        }
    }
}
