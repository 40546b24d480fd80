//! `seam get services|endpointslices|addresspools` and their deletes: tables of the Services
//! with their addresses, ports and ready backends (computed from the snapshot, as the agents
//! compute them), of EndpointSlices and of address pools.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Context;
use seam_model::{AddressPool, ClusterIp, Endpoint, EndpointSlice, Service, ServiceType, Snapshot};

use crate::cli::{Output, Target};
use crate::controller::{block_on, client};

/// The kinds of this module, by any name `seam get` accepts (plural first).
pub(crate) fn kind(name: &str) -> Option<&'static str> {
    match name {
        "services" | "service" | "svc" => Some("services"),
        "endpointslices" | "endpointslice" => Some("endpointslices"),
        "addresspools" | "addresspool" => Some("addresspools"),
        _ => None,
    }
}

/// `seam get services|endpointslices|addresspools`.
pub(crate) fn get(plural: &str, output: Output, target: &Target) -> anyhow::Result<()> {
    let client = client(target)?;
    let snapshot = block_on(async { Ok(client.snapshot().await?) })?;
    let wide = output == Output::Wide;
    match plural {
        "services" => print(serde_json::to_value(&snapshot.services)?, output, || {
            service_table(&snapshot, wide)
        }),
        "endpointslices" => print(
            serde_json::to_value(&snapshot.endpoint_slices)?,
            output,
            || slice_table(&snapshot.endpoint_slices),
        ),
        _ => print(
            serde_json::to_value(&snapshot.address_pools)?,
            output,
            || pool_table(&snapshot.address_pools, &snapshot.services),
        ),
    }
}

fn print(
    items: serde_json::Value,
    output: Output,
    table: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => {
            let items = match items {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            print!(
                "{}",
                serde_saphyr::to_string_multiple(&items).context("render YAML")?
            )
        }
        Output::Table | Output::Wide => crate::commands::get::print_table(&table()),
    }
    Ok(())
}

/// `seam delete service|endpointslice|addresspool NAME` (`NS/NAME` or `-n NS NAME` for the
/// namespaced two); `false` when `kind` is none of them.
pub(crate) fn delete(
    kind_name: &str,
    name: &str,
    namespace: Option<&str>,
    target: &Target,
) -> anyhow::Result<bool> {
    let Some(plural) = kind(kind_name) else {
        return Ok(false);
    };
    let client = client(target)?;
    if plural == "addresspools" {
        anyhow::ensure!(namespace.is_none(), "an address pool is not in a namespace");
        block_on(async { Ok(client.delete_address_pool(name).await?) })?;
        println!("AddressPool {name} deleted");
        return Ok(true);
    }
    let (ns, name) = match (namespace, name.split_once('/')) {
        (None, Some((ns, name))) => (ns, name),
        (Some(ns), None) => (ns, name),
        _ => anyhow::bail!("name the object as NAMESPACE/NAME (or -n NAMESPACE NAME)"),
    };
    if plural == "services" {
        block_on(async { Ok(client.delete_service(ns, name).await?) })?;
        println!("Service {ns}/{name} deleted");
    } else {
        block_on(async { Ok(client.delete_endpoint_slice(ns, name).await?) })?;
        println!("EndpointSlice {ns}/{name} deleted");
    }
    Ok(true)
}

/// One backend of a Service port that takes new connections.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ready {
    ip: Ipv4Addr,
    port: u16,
}

/// The backends that take new connections (ready ones, or serving and terminating ones when
/// none is ready), over every port, as the agents resolve them ([`seam_model::resolve`],
/// [`seam_model::usable`]).
fn ready_backends(
    service: &Service,
    endpoints: &[Endpoint],
    slices: &[EndpointSlice],
) -> Vec<Ready> {
    let publish = service.spec.publish_not_ready_addresses;
    let mut out = BTreeSet::new();
    for port in seam_model::resolve(service, endpoints, slices) {
        for b in seam_model::usable(&port.backends, publish, None) {
            out.insert(Ready {
                ip: b.ip,
                port: b.port,
            });
        }
    }
    out.into_iter().collect()
}

fn cluster_ip_text(s: &Service) -> String {
    match s.spec.cluster_ip {
        ClusterIp::Address(ip) => ip.to_string(),
        ClusterIp::Headless => "None".to_string(),
        ClusterIp::Auto => "<none>".to_string(),
    }
}

fn external_text(s: &Service) -> String {
    let mut addresses: Vec<String> = s
        .status
        .load_balancer
        .ingress
        .iter()
        .map(|i| i.ip.to_string())
        .chain(s.spec.external_ips.iter().map(ToString::to_string))
        .collect();
    addresses.dedup();
    match (addresses.is_empty(), s.spec.service_type) {
        (false, _) => addresses.join(","),
        (true, ServiceType::LoadBalancer) => "<pending>".to_string(),
        (true, _) => "<none>".to_string(),
    }
}

fn ports_text(s: &Service) -> String {
    s.spec
        .ports
        .iter()
        .map(|p| match p.node_port {
            Some(n) => format!("{}:{n}/{}", p.port, p.protocol.as_str()),
            None => format!("{}/{}", p.port, p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_text(s: &Service) -> String {
    match &s.spec.selector {
        Some(selector) => selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        None => "<none>".to_string(),
    }
}

/// NAMESPACE NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) ENDPOINTS (ready backends), and with
/// `wide` the backends as `ip:port` and the selector.
fn service_table(snapshot: &Snapshot, wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAMESPACE",
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "ENDPOINTS",
    ];
    if wide {
        header.extend(["BACKENDS", "SELECTOR"]);
    }
    let mut rows = vec![header.into_iter().map(str::to_string).collect()];
    for s in &snapshot.services {
        let ready = ready_backends(s, &snapshot.endpoints, &snapshot.endpoint_slices);
        let mut row = vec![
            s.namespace.clone(),
            s.name.clone(),
            format!("{:?}", s.spec.service_type),
            cluster_ip_text(s),
            external_text(s),
            ports_text(s),
            ready.len().to_string(),
        ];
        if wide {
            let backends: Vec<String> = ready
                .iter()
                .map(|r| format!("{}:{}", r.ip, r.port))
                .collect();
            row.push(if backends.is_empty() {
                "<none>".to_string()
            } else {
                backends.join(",")
            });
            row.push(selector_text(s));
        }
        rows.push(row);
    }
    rows
}

fn slice_table(slices: &[EndpointSlice]) -> Vec<Vec<String>> {
    let mut rows = vec![["NAMESPACE", "NAME", "SERVICE", "PORTS", "ENDPOINTS"]
        .into_iter()
        .map(str::to_string)
        .collect()];
    for s in slices {
        let ports: Vec<String> = s.ports.iter().map(|p| p.port.to_string()).collect();
        let addresses: Vec<String> = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().map(ToString::to_string))
            .collect();
        let shown = match addresses.len() {
            0 => "<none>".to_string(),
            n if n > 3 => format!("{} + {} more", addresses[..3].join(","), n - 3),
            _ => addresses.join(","),
        };
        rows.push(vec![
            s.namespace.clone(),
            s.name.clone(),
            s.service.clone(),
            ports.join(","),
            shown,
        ]);
    }
    rows
}

fn pool_table(pools: &[AddressPool], services: &[Service]) -> Vec<Vec<String>> {
    let mut rows = vec![["NAME", "ADDRESSES", "AUTO-ASSIGN", "IN-USE"]
        .into_iter()
        .map(str::to_string)
        .collect()];
    for p in pools {
        let in_use = services
            .iter()
            .flat_map(|s| s.status.load_balancer.ingress.iter())
            .filter(|i| p.addresses.iter().any(|n| n.contains(&i.ip)))
            .count();
        rows.push(vec![
            p.name.clone(),
            p.addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            p.auto_assign.to_string(),
            in_use.to_string(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::{
        ContainerPort, EndpointKind, LoadBalancerIngress, PortProtocol, ServicePort, ServiceSpec,
        SliceEndpoint, SlicePort, TargetPort,
    };
    use std::collections::BTreeMap;

    fn endpoint(name: &str, ip: [u8; 4], app: &str) -> Endpoint {
        Endpoint {
            name: format!("web/{name}"),
            kind: EndpointKind::Pod,
            namespace: "web".to_string(),
            segment: "s".to_string(),
            node: "n1".to_string(),
            ip: ip.into(),
            mac: seam_model::endpoint_mac(ip.into()),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            container_id: None,
            ifname: None,
            ports: vec![ContainerPort {
                name: "http".to_string(),
                port: 8080,
                protocol: PortProtocol::Tcp,
            }],
            conditions: None,
        }
    }

    fn service(name: &str, t: ServiceType) -> Service {
        Service {
            name: name.to_string(),
            namespace: "web".to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            spec: ServiceSpec {
                service_type: t,
                selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ports: vec![ServicePort {
                    name: None,
                    protocol: PortProtocol::Tcp,
                    port: 80,
                    target_port: Some(TargetPort::Name("http".to_string())),
                    node_port: Some(30080),
                    app_protocol: None,
                }],
                cluster_ip: ClusterIp::Address([10, 96, 0, 10].into()),
                ..ServiceSpec::default()
            },
            status: Default::default(),
        }
    }

    #[test]
    fn services_show_addresses_ports_and_ready_backends() {
        let mut lb = service("front", ServiceType::LoadBalancer);
        let pending = lb.clone();
        lb.status.load_balancer.ingress = vec![LoadBalancerIngress {
            ip: [203, 0, 113, 1].into(),
            ip_mode: Some("VIP".to_string()),
        }];
        let mut manual = service("db", ServiceType::ClusterIP);
        manual.spec.selector = None;
        manual.spec.ports[0].node_port = None;
        manual.spec.ports[0].target_port = None;
        let snapshot = Snapshot {
            services: vec![lb, manual],
            endpoints: vec![
                endpoint("a", [10, 0, 0, 2], "web"),
                endpoint("b", [10, 0, 0, 3], "web"),
                endpoint("c", [10, 0, 0, 4], "other"),
            ],
            endpoint_slices: vec![EndpointSlice {
                name: "db-1".to_string(),
                namespace: "web".to_string(),
                service: "db".to_string(),
                labels: BTreeMap::new(),
                endpoints: vec![SliceEndpoint {
                    addresses: vec![[192, 0, 2, 10].into()],
                    conditions: Default::default(),
                    node_name: None,
                    hostname: None,
                    zone: None,
                    target_ref: None,
                }],
                ports: vec![SlicePort {
                    name: None,
                    port: 5432,
                    protocol: PortProtocol::Tcp,
                    app_protocol: None,
                }],
            }],
            ..Snapshot::default()
        };
        let rows = service_table(&snapshot, true);
        assert_eq!(
            rows[1],
            [
                "web",
                "front",
                "LoadBalancer",
                "10.96.0.10",
                "203.0.113.1",
                "80:30080/TCP",
                "2",
                "10.0.0.2:8080,10.0.0.3:8080",
                "app=web"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "web",
                "db",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP",
                "1",
                "192.0.2.10:5432",
                "<none>"
            ]
        );
        let pending = Snapshot {
            services: vec![pending],
            ..Snapshot::default()
        };
        let rows = service_table(&pending, false);
        assert_eq!(rows[0].len(), 7);
        assert_eq!(rows[1][4], "<pending>");
        assert_eq!(rows[1][6], "0");
    }

    #[test]
    fn a_pod_that_is_not_ready_or_terminating_is_no_ready_endpoint() {
        let conditions = |ready, serving, terminating| {
            Some(seam_model::EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            })
        };
        let mut probing = endpoint("a", [10, 0, 0, 2], "web");
        probing.conditions = conditions(false, false, false);
        let mut leaving = endpoint("b", [10, 0, 0, 3], "web");
        leaving.conditions = conditions(false, true, true);
        let ready = endpoint("c", [10, 0, 0, 4], "web");
        let mut snapshot = Snapshot {
            services: vec![service("front", ServiceType::ClusterIP)],
            endpoints: vec![probing, leaving, ready],
            ..Snapshot::default()
        };
        let rows = service_table(&snapshot, true);
        assert_eq!(rows[1][6], "1");
        assert_eq!(rows[1][7], "10.0.0.4:8080");
        // With the ready pod gone, the terminating one that still serves is used.
        snapshot.endpoints.pop();
        let rows = service_table(&snapshot, true);
        assert_eq!(rows[1][6], "1");
        assert_eq!(rows[1][7], "10.0.0.3:8080");
        // publishNotReadyAddresses: every endpoint the selector picks.
        snapshot.services[0].spec.publish_not_ready_addresses = true;
        let rows = service_table(&snapshot, true);
        assert_eq!(rows[1][7], "10.0.0.2:8080,10.0.0.3:8080");
    }

    #[test]
    fn pools_count_the_addresses_in_use() {
        let mut lb = service("front", ServiceType::LoadBalancer);
        lb.status.load_balancer.ingress = vec![LoadBalancerIngress {
            ip: [203, 0, 113, 1].into(),
            ip_mode: None,
        }];
        let pool = AddressPool {
            name: "public".to_string(),
            addresses: vec!["203.0.113.0/30".parse().unwrap()],
            auto_assign: true,
        };
        let rows = pool_table(&[pool], &[lb]);
        assert_eq!(rows[1], ["public", "203.0.113.0/30", "true", "1"]);
    }
}
