//! Gateway nodes and the "external network" with bare-metal servers behind them.
//!
//! `add_gateway` makes a node namespace `<lab>-<name>` on the underlay (`eth0` = 198.18.1.K,
//! K = 1, 2, … per gateway) whose `seamd` runs with `--role gateway`, and joins it by a second
//! interface (`eth1` = 203.0.113.K/24) to the external network: namespace `<lab>-xn` holding a
//! bridge `xn0` (a plain L2 switch, no address). `add_server` makes a bare-metal server
//! `<lab>-x-<name>` on that switch with its address and, as an operator would configure the
//! external network, static routes to the pod and VM prefixes via its gateway's external address
//! (`ip route add 10.240.0.0/12 via 203.0.113.K`): no NAT anywhere, the server sees pod
//! addresses and pods see the server's.
//!
//! `add_internet_host` puts a host on "the internet": a network (198.51.100.0/24, a
//! documentation range) behind a router `<lab>-xr` on the external switch (203.0.113.254), which
//! every gateway uses as its default route. The router knows no route to the pod prefixes (as the
//! internet would not), so a pod reaches such a host only through a segment with `snat` on, whose
//! egress the gateway masquerades to its external address.
//!
//! The state is kept in `<state dir>/external.json`; a gateway node is also an ordinary entry of
//! `lab.json`'s nodes (so `down`, `status`, `kill_agent`/`start_agent` work on it), and its role
//! is kept in the file `role` next to its agent socket.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::process::{spawn_agent, wait_for_agent};
use crate::state::{io_err, read_json_or_default, state_dir, write_json_atomic, NodeInfo};
use crate::topology::{ip, node_entry, Topology};
use crate::workloads::Workloads;

/// A gateway node's interface on the external network (`seamd --external-interface`).
pub const EXTERNAL_INTERFACE: &str = "eth1";

/// The external network's prefix length (203.0.113.0/24, a documentation range).
pub const EXTERNAL_PREFIX: u8 = 24;

/// The pod and VM prefix servers route to the gateway by default: the controller's default pool.
pub const DEFAULT_POOL: &str = "10.240.0.0/12";

/// The router between the external network and the lab's "internet", on the external side.
pub const INTERNET_ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// The router's address on the "internet" network, its hosts' default route.
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The "internet" network's prefix length (198.51.100.0/24, a documentation range).
pub const INTERNET_PREFIX: u8 = 24;

/// A host on the lab's "internet", reached only through the gateways' default route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InternetHost {
    /// Host name.
    pub name: String,
    /// Its network namespace path.
    pub netns_path: PathBuf,
    /// Its address (198.51.100.0/24).
    pub ip: Ipv4Addr,
}

/// A gateway node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo {
    /// Node name.
    pub name: String,
    /// Its underlay address.
    pub underlay_ip: Ipv4Addr,
    /// Its address on the external network (`eth1`), the next hop of the servers' routes.
    pub external_ip: Ipv4Addr,
}

/// A bare-metal server on the external network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// Server name.
    pub name: String,
    /// Its network namespace path.
    pub netns_path: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The gateway its routes to the pod prefixes point at.
    pub gateway: String,
    /// The prefixes routed via the gateway (`ip route add P via GW`).
    pub routes: Vec<String>,
}

/// The lab's gateways and servers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalState {
    /// Gateway nodes, in creation order.
    pub gateways: Vec<GatewayInfo>,
    /// Servers.
    pub servers: Vec<ServerInfo>,
    /// Hosts on the "internet" behind the router.
    #[serde(default)]
    pub internet: Vec<InternetHost>,
}

/// The role a node's agent runs with, when it is not a worker (from the file `role` next to its
/// socket).
pub fn node_role(node: &NodeInfo) -> Option<String> {
    let dir = node.agent_socket.parent()?;
    let role = std::fs::read_to_string(dir.join("role")).ok()?;
    let role = role.trim();
    (!role.is_empty()).then(|| role.to_string())
}

/// The values of `seamd --transit-encap`.
pub const TRANSIT_ENCAP_MODES: [&str; 2] = ["always", "cross-subnet"];

/// The `--transit-encap` a gateway's agent runs with, when set by
/// [`Topology::set_transit_encap`] (the file `transit-encap` next to its socket); else `seamd`'s
/// default.
pub fn node_transit_encap(node: &NodeInfo) -> Option<String> {
    let dir = node.agent_socket.parent()?;
    let mode = std::fs::read_to_string(dir.join("transit-encap")).ok()?;
    let mode = mode.trim();
    (!mode.is_empty()).then(|| mode.to_string())
}

fn external_netns(lab: &str) -> String {
    format!("{lab}-xn")
}

fn router_netns(lab: &str) -> String {
    format!("{lab}-xr")
}

fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "{what} name {name:?} must be 1-{max} of a-z, 0-9, '-', starting with a letter"
        )))
    }
}

/// The gateways, servers and internet hosts of lab `lab` (empty when there are none).
fn read_external(lab: &str) -> Result<ExternalState> {
    read_json_or_default(lab, "external.json")
}

fn save_external(lab: &str, state: &ExternalState) -> Result<()> {
    write_json_atomic(&state_dir(lab).join("external.json"), state)
}

impl Topology<'_> {
    /// The lab's gateways and servers (empty when there are none).
    pub fn external_state(&self) -> Result<ExternalState> {
        read_external(&self.lab.name)
    }

    /// Restarts gateway `name`'s agent with `--transit-encap MODE` (`always` or `cross-subnet`),
    /// kept for later restarts; waits until the agent is ready.
    pub fn set_transit_encap(&mut self, name: &str, mode: &str) -> Result<()> {
        if !TRANSIT_ENCAP_MODES.contains(&mode) {
            return Err(LabError::Invalid(format!(
                "transit encapsulation {mode:?} is not one of always, cross-subnet"
            )));
        }
        let node = self.lab.node(name)?.clone();
        if node_role(&node).as_deref() != Some("gateway") {
            return Err(LabError::Invalid(format!("node {name:?} is not a gateway")));
        }
        if let Some(dir) = node.agent_socket.parent() {
            let file = dir.join("transit-encap");
            std::fs::write(&file, format!("{mode}\n")).map_err(io_err(&file))?;
        }
        let mut processes = self.lab.processes();
        processes.kill_agent(name, "TERM")?;
        processes.start_agent(name)
    }

    /// Restarts node `name`'s agent with `--segment-encap MODE` (`always` or `cross-subnet`).
    ///
    /// PLACEHOLDER until routed segments are merged: always refuses.
    pub fn set_segment_encap(&mut self, name: &str, mode: &str) -> Result<()> {
        let _ = (name, mode);
        Err(LabError::Invalid(
            "segment encapsulation is not built yet".into(),
        ))
    }

    /// Adds gateway node `name`: on the underlay and on the external network (made on first
    /// use), its `seamd` started with `--role gateway`; waits until the agent is ready.
    pub fn add_gateway(&mut self, name: &str) -> Result<GatewayInfo> {
        check_name("gateway", name, 12)?;
        if self.lab.nodes.iter().any(|n| n.name == name) {
            return Err(LabError::Invalid(format!(
                "lab {} already has a node {name:?}",
                self.lab.name
            )));
        }
        let mut state = read_external(&self.lab.name)?;
        let k = u8::try_from(state.gateways.len() + 1)
            .ok()
            .filter(|k| *k < 200)
            .ok_or_else(|| LabError::Invalid("too many gateways".into()))?;
        let underlay_ip = Ipv4Addr::new(198, 18, 1, k);
        let external_ip = Ipv4Addr::new(203, 0, 113, k);
        let netns = format!("{}-{name}", self.lab.name);
        let netns_path = seam_linux::netns::create(&netns)?;
        let ul = self.lab.underlay_netns.clone();
        ip(
            &ul,
            &[
                "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        ip(&ul, &["link", "set", name, "master", "ul0", "up"])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
        ip(
            &netns,
            &["addr", "add", &format!("{underlay_ip}/15"), "dev", "eth0"],
        )?;
        ip(&netns, &["link", "set", "eth0", "up"])?;
        // The external network: one switch.
        let xn = external_netns(&self.lab.name);
        if !seam_linux::netns::list().contains(&xn) {
            seam_linux::netns::create(&xn)?;
            ip(&xn, &["link", "set", "lo", "up"])?;
            ip(&xn, &["link", "add", "xn0", "type", "bridge"])?;
            ip(&xn, &["link", "set", "xn0", "up"])?;
        }
        let port = format!("g-{name}");
        ip(
            &xn,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth1", "netns", &netns,
            ],
        )?;
        ip(&xn, &["link", "set", &port, "master", "xn0", "up"])?;
        ip(
            &netns,
            &[
                "addr",
                "add",
                &format!("{external_ip}/{EXTERNAL_PREFIX}"),
                "dev",
                "eth1",
            ],
        )?;
        ip(&netns, &["link", "set", "eth1", "up"])?;
        if seam_linux::netns::list().contains(&router_netns(&self.lab.name)) {
            ip(
                &netns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &INTERNET_ROUTER.to_string(),
                ],
            )?;
        }

        let mut node = node_entry(
            &self.lab.dir,
            name.to_string(),
            netns,
            netns_path,
            underlay_ip,
        )?;
        if let Some(dir) = node.agent_socket.parent() {
            let role = dir.join("role");
            std::fs::write(&role, "gateway\n").map_err(io_err(&role))?;
        }
        node.agent_pid = spawn_agent(self.lab, &node, false, None, &[])?;
        self.lab.nodes.push(node.clone());
        self.lab.save()?;
        let info = GatewayInfo {
            name: name.to_string(),
            underlay_ip,
            external_ip,
        };
        state.gateways.push(info.clone());
        save_external(&self.lab.name, &state)?;
        wait_for_agent(self.lab, &node)?;
        Ok(info)
    }
}

impl Workloads<'_> {
    /// Adds bare-metal server `name` with address `address` on the external network, with static
    /// routes to `routes` (the pod and VM prefixes) via `gateway`'s external address.
    pub fn add_server(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        gateway: &str,
        routes: &[&str],
    ) -> Result<ServerInfo> {
        check_name("server", name, 12)?;
        let mut state = read_external(&self.lab.name)?;
        if state.servers.iter().any(|s| s.name == name) {
            return Err(LabError::Invalid(format!(
                "lab {} already has a server {name:?}",
                self.lab.name
            )));
        }
        let gw = state
            .gateways
            .iter()
            .find(|g| g.name == gateway)
            .cloned()
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "lab {} has no gateway {gateway:?} (add one with `seam lab gateway-add`)",
                    self.lab.name
                ))
            })?;
        let netns = format!("{}-x-{name}", self.lab.name);
        let via = gw.external_ip.to_string();
        let routes_via: Vec<[&str; 2]> = routes.iter().map(|r| [*r, via.as_str()]).collect();
        let netns_path = add_host(
            &external_netns(&self.lab.name),
            "xn0",
            &format!("x-{name}"),
            &netns,
            &format!("{address}/{EXTERNAL_PREFIX}"),
            &routes_via,
        )?;
        let info = ServerInfo {
            name: name.to_string(),
            netns_path,
            ip: address,
            gateway: gateway.to_string(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
        };
        state.servers.push(info.clone());
        save_external(&self.lab.name, &state)?;
        Ok(info)
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Result<ServerInfo> {
        read_external(&self.lab.name)?
            .servers
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                LabError::Invalid(format!("lab {} has no server {name:?}", self.lab.name))
            })
    }

    /// Adds host `name` with `address` (in 198.51.100.0/24) on the lab's "internet": made on first
    /// use, a router on the external network whose address becomes every gateway's default
    /// route. Nothing there routes to the pod prefixes.
    pub fn add_internet_host(&mut self, name: &str, address: Ipv4Addr) -> Result<InternetHost> {
        check_name("internet host", name, 12)?;
        let [a, b, c, host] = address.octets();
        let [ga, gb, gc, _] = INTERNET_GATEWAY.octets();
        if [a, b, c] != [ga, gb, gc] || host == 0 || host == 255 || address == INTERNET_GATEWAY {
            return Err(LabError::Invalid(format!(
                "internet host address {address} must be a host address of {ga}.{gb}.{gc}.0/{INTERNET_PREFIX} other than {INTERNET_GATEWAY}"
            )));
        }
        let mut state = read_external(&self.lab.name)?;
        if state.gateways.is_empty() {
            return Err(LabError::Invalid(format!(
                "lab {} has no gateway to reach the internet through (add one with `seam lab gateway-add`)",
                self.lab.name
            )));
        }
        if state
            .internet
            .iter()
            .any(|h| h.name == name || h.ip == address)
        {
            return Err(LabError::Invalid(format!(
                "lab {} already has an internet host {name:?} or {address}",
                self.lab.name
            )));
        }
        let router = router_netns(&self.lab.name);
        if !seam_linux::netns::list().contains(&router) {
            self.add_internet_router(&router, &state.gateways)?;
        }
        let netns = format!("{}-i-{name}", self.lab.name);
        let netns_path = add_host(
            &router,
            "in0",
            &format!("i-{name}"),
            &netns,
            &format!("{address}/{INTERNET_PREFIX}"),
            &[["default", &INTERNET_GATEWAY.to_string()]],
        )?;
        let host = InternetHost {
            name: name.to_string(),
            netns_path,
            ip: address,
        };
        state.internet.push(host.clone());
        save_external(&self.lab.name, &state)?;
        Ok(host)
    }

    /// The router: `eth0` on the external switch, bridge `in0` for the internet hosts, forwarding
    /// on; every gateway's default route points at it.
    fn add_internet_router(&self, router: &str, gateways: &[GatewayInfo]) -> Result<()> {
        let path = seam_linux::netns::create(router)?;
        let xn = external_netns(&self.lab.name);
        ip(
            &xn,
            &[
                "link", "add", "r-xr", "type", "veth", "peer", "name", "eth0", "netns", router,
            ],
        )?;
        ip(&xn, &["link", "set", "r-xr", "master", "xn0", "up"])?;
        ip(router, &["link", "set", "lo", "up"])?;
        ip(
            router,
            &[
                "addr",
                "add",
                &format!("{INTERNET_ROUTER}/{EXTERNAL_PREFIX}"),
                "dev",
                "eth0",
            ],
        )?;
        ip(router, &["link", "set", "eth0", "up"])?;
        ip(router, &["link", "add", "in0", "type", "bridge"])?;
        ip(
            router,
            &[
                "addr",
                "add",
                &format!("{INTERNET_GATEWAY}/{INTERNET_PREFIX}"),
                "dev",
                "in0",
            ],
        )?;
        ip(router, &["link", "set", "in0", "up"])?;
        seam_linux::netns::run_in(&path, || {
            seam_linux::sysctl::write("net/ipv4/ip_forward", "1")
        })??;
        for gw in gateways {
            ip(
                &format!("{}-{}", self.lab.name, gw.name),
                &[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &INTERNET_ROUTER.to_string(),
                ],
            )?;
        }
        Ok(())
    }

    /// The internet host called `name`.
    pub fn internet_host(&self, name: &str) -> Result<InternetHost> {
        read_external(&self.lab.name)?
            .internet
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "lab {} has no internet host {name:?}",
                    self.lab.name
                ))
            })
    }
}

/// A host namespace `netns` whose `eth0` is plugged into `bridge` of `hub` (as port `port`), with
/// `address` (a CIDR) and `routes` (`[destination, via]`); the namespace is removed again when any
/// step fails.
fn add_host(
    hub: &str,
    bridge: &str,
    port: &str,
    netns: &str,
    address: &str,
    routes: &[[&str; 2]],
) -> Result<std::path::PathBuf> {
    let path = seam_linux::netns::create(netns)?;
    let wired = (|| -> Result<()> {
        ip(
            hub,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ],
        )?;
        ip(hub, &["link", "set", port, "master", bridge, "up"])?;
        ip(netns, &["link", "set", "lo", "up"])?;
        ip(netns, &["addr", "add", address, "dev", "eth0"])?;
        ip(netns, &["link", "set", "eth0", "up"])?;
        for [dest, via] in routes {
            ip(netns, &["route", "add", dest, "via", via])?;
        }
        Ok(())
    })();
    match wired {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = seam_linux::netns::delete(netns);
            Err(e)
        }
    }
}
