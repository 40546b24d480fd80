//! The command line's grammar: every verb, flag and help text of `seam` (clap), and nothing
//! else. What a verb does is in `commands/<verb>.rs`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use seam_lab::LabStore;
use seam_model::{MacAddr, EXTERNAL_NAMESPACE};

#[derive(Parser, Debug)]
#[command(
    name = "seam",
    version,
    about = "Seam: one network and one policy for pods, VMs and servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where the controller is, and who the command is to it.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Controller endpoint (unix:/path, https://host:port[,https://…] or http://host:port);
    /// defaults to the lab's API over TLS, as the lab's admin.
    #[arg(long, env = "SEAM_CONTROLLER")]
    pub controller: Option<String>,
    /// Lab whose controller to ask when --controller is not given (from inside the lab's
    /// underlay namespace, with the admin certificate in the lab's directory).
    #[arg(long, default_value = "seam")]
    pub lab: String,
    /// CA certificate (PEM) that verifies an https:// controller; defaults to the lab's.
    #[arg(long, env = "SEAM_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to an https:// controller; defaults to the lab's
    /// admin certificate.
    #[arg(long, env = "SEAM_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "SEAM_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The port of the nodes' agent API (`seamd --api-listen`), where `-o wide` and `explain`
    /// read the rule counters (with the certificate above, a reader's or an admin's).
    #[arg(long, env = "SEAM_AGENT_PORT", default_value_t = seam_model::counters::AGENT_API_PORT)]
    pub agent_port: u16,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One line per object.
    Table,
    /// One line per object, with more columns (services: their backends and selector); the
    /// table for other kinds.
    Wide,
    /// JSON (a list).
    Json,
    /// YAML (one document per object).
    Yaml,
}

/// `seam explain -o`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplainOutput {
    /// The human layout.
    Text,
    /// JSON (as `--json`).
    Json,
}

/// `seam flows`.
#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// Sender: namespace/name, namespace/, an IPv4 address or CIDR, or node:NAME.
    #[arg(long)]
    pub from: Option<String>,
    /// Receiver: namespace/name, namespace/, an IPv4 address or CIDR, or node:NAME.
    #[arg(long)]
    pub to: Option<String>,
    /// Only records of the node whose table decided.
    #[arg(long)]
    pub node: Option<String>,
    /// allowed or denied.
    #[arg(long)]
    pub verdict: Option<String>,
    /// The policy or contract that decided: "NetworkPolicy prod/allow-web", "Contract web",
    /// prod/allow-web or allow-web (it must exist).
    #[arg(long)]
    pub policy: Option<String>,
    /// Only records this recent: 30s, 5m, 2h, 1h30m.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (the newest) before following; the controller's default is 1000.
    #[arg(long)]
    pub limit: Option<String>,
    /// Keep streaming new matching records (Ctrl-C ends).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Output format: a table, or JSON (one record per line).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: FlowsOutput,
    #[command(flatten)]
    pub target: Target,
}

/// `seam flows -o`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowsOutput {
    /// One line per record.
    Table,
    /// NDJSON: one record per line, as the controller serves them.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Build, inspect and remove a lab of network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// Create or replace objects from a file (YAML documents or JSON): NetworkPolicy,
    /// AdminNetworkPolicy, BaselineAdminNetworkPolicy, EndpointGroup, Contract, v1 Namespace,
    /// Tenant, v1 Service, discovery.k8s.io/v1 EndpointSlice, seam.dev/v1alpha1 AddressPool.
    /// Every document is validated first, then all are written in one transaction on the
    /// controller: one bad document, or one the controller refuses, and nothing is applied.
    Apply {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Return only once every node enforces the new generation of each policy object and
        /// tenant applied (every node with a node record must; one that never reported counts
        /// as not enforcing).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (30s, 500ms, 2m), naming the nodes behind.
        #[arg(long, default_value = "30s", value_parser = crate::commands::realization::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// List objects of a kind: policies, networkpolicies, adminnetworkpolicies,
    /// baselineadminnetworkpolicies, endpointgroups, contracts, namespaces, tenants, nodes,
    /// segments, blocks, endpoints, services, endpointslices, addresspools.
    Get {
        /// The kind (plural).
        kind: String,
        /// Only the object of this name (`namespace/name` for a NetworkPolicy); with -o yaml or
        /// json, its realization status too (the nodes behind and their errors).
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one object: KIND is a policy kind (networkpolicy, contract, ...; singular or
    /// plural), namespace, tenant, service or endpointslice (NAME as NAMESPACE/NAME or with
    /// -n), or addresspool.
    Delete {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// The namespace (NetworkPolicy, Service, EndpointSlice).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Explain the policy verdict for a new connection, per direction, from the engine. To a
    /// Service address (ClusterIP, externalIP, LoadBalancer address, node address + NodePort):
    /// the Service port, and each candidate backend with its verdict (policy sees the backend).
    Explain {
        /// Source: namespace/name of an endpoint, or an IPv4 address.
        src: String,
        /// Destination: namespace/name of an endpoint, or an IPv4 address (a Service's too).
        dst: String,
        /// PORT/PROTO: 80/tcp, 53/udp, 8/icmp (ICMP type), or just a TCP port.
        port: String,
        /// Print JSON (as `-o json`).
        #[arg(long)]
        json: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: ExplainOutput,
        #[command(flatten)]
        target: Target,
    },
    /// External endpoints: servers outside the overlay reached through a gateway node, no NAT.
    External {
        #[command(subcommand)]
        command: ExternalCmd,
    },
    /// Segments: create or replace one from a file, turn its SNAT on or off.
    Segment {
        #[command(subcommand)]
        command: SegmentCmd,
    },
    /// VMs on hypervisor hosts: attach, detach, move, delete, list.
    Vm {
        #[command(subcommand)]
        command: VmCmd,
    },
    /// Tenant operations (OpenShift's `oc adm pod-network`): join, isolate, make-global.
    Tenant {
        #[command(subcommand)]
        command: TenantCmd,
    },
    /// The controller's audit log: who changed which object, newest last, with the object's
    /// revision before and after.
    Audit {
        /// How many records (the newest), at most 10000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Serve the controller's page (topology and flows) and its read API on a loopback
    /// address for a browser, presenting your certificate to the controller (as `kubectl
    /// proxy` does). Reads only. Prints the page's URL.
    Proxy {
        /// Where to listen: a loopback address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        target: Target,
    },
    /// Flow records from the nodes' dataplanes: what each node's table decided about a
    /// connection (allowed once per new connection, denied per dropped packet, rate limited),
    /// with the policy and rule that decided. Oldest first; --follow keeps streaming.
    Flows(FlowsArgs),
    /// Conformance suites.
    Conformance {
        #[command(subcommand)]
        command: ConformanceCmd,
    },
    /// Node identities: join tokens for new nodes, revocation of a node's certificates.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Join tokens: a node joins once with one and gets its certificate.
    Token {
        #[command(subcommand)]
        command: NodeTokenCmd,
    },
    /// Makes every certificate of node NAME useless at once; nothing of the node is trusted
    /// until it joins again with a new token.
    Revoke {
        /// The node.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeTokenCmd {
    /// Creates a one-time join token and prints it (it is shown only once). Give it to the node
    /// as `seamd --join-token-file FILE` or the environment variable SEAM_JOIN_TOKEN.
    Create {
        /// How long the token may be used, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Only this node may join with the token.
        #[arg(long)]
        node: Option<String>,
        /// How many nodes may join with the token (a fleet joining at once, e.g. a
        /// DaemonSet's nodes); each node joins once. Not with --node.
        #[arg(long, default_value_t = 1, conflicts_with = "node")]
        uses: u32,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// NS joins the tenant of namespace INTO (INTO is unchanged).
    Join {
        /// The namespace that moves.
        namespace: String,
        /// The namespace whose tenant it joins.
        into: String,
        #[command(flatten)]
        target: Target,
    },
    /// NS gets a tenant of its own (named after it), with the mode of the tenant it leaves.
    Isolate {
        /// The namespace.
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// NS gets a global tenant of its own: it reaches and is reached by every tenant.
    MakeGlobal {
        /// The namespace.
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConformanceCmd {
    /// Kubernetes NetworkPolicy and AdminNetworkPolicy cases (cases.json / anp_cases.json).
    Netpol {
        /// The cases file; the kind of case is detected from its shape.
        #[arg(long)]
        cases: PathBuf,
        /// The model; default: model.json next to the cases file.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Check with real packets through the dataplane of a fresh lab (needs root): the model's
        /// pods, each case's policies applied through the API, every pair probed.
        #[arg(long)]
        dataplane: bool,
        /// --dataplane: name of the lab to build (removed afterwards).
        #[arg(long, default_value = "conf")]
        lab_name: String,
        /// --dataplane: number of nodes the pods are spread over.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// --dataplane: probe timeout in milliseconds (a denied probe waits this long).
        #[arg(long, default_value_t = 1000)]
        probe_timeout_ms: u64,
        /// --dataplane: keep the lab afterwards.
        #[arg(long)]
        keep: bool,
        /// --dataplane: the nodes' `seamd --segment-encap` (`cross-subnet`: the pods' traffic
        /// between nodes is routed without encapsulation; `always`: VXLAN).
        #[arg(long, default_value = "cross-subnet", value_parser = seam_lab::gateway::TRANSIT_ENCAP_MODES)]
        segment_encap: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Start a lab: underlay, controller, one agent per node.
    Up {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// `namespace` (a segment per namespace, NSX style) or `flat` (one segment).
        #[arg(long, default_value = "namespace")]
        segment_mode: String,
        /// Print the lab description as JSON.
        #[arg(long)]
        json: bool,
        /// One-machine mode: node n1's seamd also runs the controller (no separate process).
        #[arg(long)]
        one_process: bool,
        /// The controller's datastore: `embedded` (one controller, a redb file) or `etcd` (a
        /// 3-member etcd cluster in the underlay namespace, shared by --controllers replicas
        /// that elect a leader; agents are given every replica).
        #[arg(long, default_value = "embedded")]
        store: LabStore,
        /// Number of seam-controller replicas (1 with the embedded store, 1..=5 with etcd).
        #[arg(long, default_value_t = 1)]
        controllers: usize,
        /// Whether the agents record flows (`seam flows`, the page): `on` or `off`.
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        flows: String,
        /// The nodes' `seamd --segment-encap`: `cross-subnet` routes the segments' traffic
        /// between the lab's nodes (one underlay subnet) without encapsulation, `always` keeps
        /// the VXLAN.
        #[arg(long, default_value = "cross-subnet", value_parser = seam_lab::gateway::TRANSIT_ENCAP_MODES)]
        segment_encap: String,
    },
    /// Stop a lab and remove everything it made (also after a crash).
    Down {
        #[arg(long, default_value = "seam")]
        name: String,
    },
    /// Describe a running lab.
    Status {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the environment (SEAM_CONTROLLER, SEAM_CA, SEAM_CERT, SEAM_KEY) that points
    /// `seam` at the lab's API over TLS with one of the lab's certificates; the API is on the
    /// lab's underlay (`ip netns exec <name>-ul seam …`). Without it, `seam --lab NAME` does
    /// the same as the admin.
    Env {
        #[arg(long, default_value = "seam")]
        name: String,
        /// Whose certificate: admin (seam:admins), reader (seam:readers) or adapter.
        #[arg(long, default_value = "admin", value_parser = parse_lab_user)]
        user: seam_lab::LabUser,
    },
    /// Create a pod (a namespace attached through seam-cni ADD).
    PodAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        node: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
        /// Pod labels: k=v[,k=v…], published with its endpoint as Kubernetes pod labels are
        /// (what Service and policy selectors match).
        #[arg(long, default_value = "")]
        labels: String,
        /// A named container port, NAME=PORT[/tcp|udp|sctp] (repeatable): what a Service's
        /// named `targetPort` and a policy's named port resolve against.
        #[arg(long = "port")]
        ports: Vec<String>,
    },
    /// Delete a pod (seam-cni DEL, then its namespace).
    PodDel {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
    },
    /// Add a gateway node (seamd --role gateway) on the underlay and on the lab's external
    /// network (203.0.113.0/24).
    GatewayAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The gateway node's name.
        #[arg(long, default_value = "gw1")]
        node: String,
        /// Its `seamd --transit-encap`: `cross-subnet` routes to and from the lab's nodes (one
        /// underlay subnet) without encapsulation, `always` through the transit VXLAN.
        #[arg(long, default_value = "cross-subnet", value_parser = seam_lab::gateway::TRANSIT_ENCAP_MODES)]
        transit_encap: String,
    },
    /// Add a bare-metal server on the external network, with static routes to the pod and VM
    /// prefixes via its gateway (`ip route add PREFIX via GATEWAY`).
    ServerAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The server's name.
        #[arg(long)]
        server: String,
        /// Its address on the external network (203.0.113.0/24).
        #[arg(long)]
        address: Ipv4Addr,
        /// The gateway node its routes point at.
        #[arg(long, default_value = "gw1")]
        gateway: String,
        /// Prefixes routed via the gateway (the controller's pool by default).
        #[arg(long = "route", default_value = seam_lab::gateway::DEFAULT_POOL)]
        routes: Vec<String>,
    },
    /// Add a host on the lab's "internet" (198.51.100.0/24): behind a router on the external
    /// network that every gateway uses as its default route, with no route to the pod prefixes,
    /// so pods reach it only from segments with SNAT on (`seam segment snat`).
    InternetAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The host's name.
        #[arg(long)]
        host: String,
        /// Its address (198.51.100.0/24, not .1: the router).
        #[arg(long)]
        address: Ipv4Addr,
    },
    /// Make a node a hypervisor host (restarts its seamd with --role hypervisor).
    Hypervisor {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The node.
        #[arg(long)]
        node: String,
    },
    /// Start a lab VM (a namespace behind a veth named as Seam names the VM's port) on a
    /// hypervisor node and attach it through the API (`seam vm attach`).
    VmAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The VM's name.
        #[arg(long)]
        vm: String,
        /// The hypervisor node.
        #[arg(long)]
        host: String,
        /// The segment.
        #[arg(long)]
        segment: String,
        /// Labels: k=v[,k=v…].
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// Serve as a Service backend in the current network namespace (run it with `ip netns exec
    /// <lab>-p-<namespace>-<pod>`): every TCP connection and UDP datagram on each PORT is
    /// answered with `<BACKEND> <client address as seen here>`. Runs until interrupted.
    Serve {
        /// The name the backend answers with.
        #[arg(long)]
        backend: String,
        /// A port to serve on, TCP and UDP (repeatable).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// Connect COUNT times to ADDRESS:PORT from the current network namespace (run it with `ip
    /// netns exec`), one connection (or, with --udp, one datagram from a new socket) after the
    /// other, and print how many each backend (`seam lab serve`) answered and the client
    /// addresses they saw.
    Connect {
        /// The address (a ClusterIP, a LoadBalancer address, a node for a NodePort, …).
        address: Ipv4Addr,
        /// The port.
        port: u16,
        /// Connections (datagrams with --udp).
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// How long each attempt waits, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The demo: 2 nodes, 2 namespaces with 2 pods each, a measured connectivity matrix.
    Demo {
        #[arg(long, default_value = "seamdemo")]
        name: String,
        /// Keep the lab up afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExternalCmd {
    /// Register (or replace) an external endpoint: a server outside the overlay, known by its
    /// addresses, reached through a gateway node without NAT. It joins groups and contracts like
    /// any endpoint (select it by its labels, its namespace, or `kinds: [external]`).
    Add {
        /// Its name.
        name: String,
        /// Its addresses (comma-separated), outside every segment and the pod pool.
        #[arg(long = "address", value_delimiter = ',', required = true)]
        addresses: Vec<Ipv4Addr>,
        /// The gateway node (seamd --role gateway) it is reached through.
        #[arg(long)]
        gateway: String,
        /// Its namespace (for group selectors).
        #[arg(short = 'n', long, default_value = EXTERNAL_NAMESPACE)]
        namespace: String,
        /// Labels: k=v[,k=v…].
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove an external endpoint (all its addresses).
    Del {
        /// Its name.
        name: String,
        /// Its namespace.
        #[arg(short = 'n', long, default_value = EXTERNAL_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// List external endpoints.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SegmentCmd {
    /// Create or replace a segment from a file: one Segment object as JSON (the API's form) or
    /// YAML with the same fields (name, tenant, subnet, gateway, vni, blockPrefix, namespace,
    /// snat). Unknown fields, wrong types and invalid values are refused, and nothing changes.
    Put {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        target: Target,
    },
    /// Turn the segment's SNAT on or off. On: traffic from its endpoints to destinations Seam
    /// does not know (no segment, node or external endpoint) leaves through a gateway node,
    /// masqueraded to the gateway's address. Off (the default): no NAT anywhere.
    Snat {
        /// The segment (`seam get segments`; a namespace's is `ns-<namespace>`).
        name: String,
        /// `on` or `off`.
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        target: Target,
    },
}

/// A switch.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Attach VM NAME on hypervisor HOST to segment S: leases an address and a MAC (kept across
    /// detach/attach and moves, released by delete) and prints the host interface the
    /// hypervisor must create (a tap, e.g. QEMU `-netdev tap,ifname=PORT,script=no`); the
    /// host's agent plugs it into the segment.
    Attach {
        /// The VM's name (a DNS label).
        name: String,
        /// The segment.
        #[arg(long)]
        segment: String,
        /// The hypervisor host (a node whose seamd runs with --role hypervisor).
        #[arg(long)]
        host: String,
        /// A fixed MAC (default: derived from the address, 0a:58:<IPv4>).
        #[arg(long)]
        mac: Option<MacAddr>,
        /// A fixed address (default: a free one outside the nodes' pod blocks).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Labels: k=v,k2=v2.
        #[arg(long)]
        labels: Option<String>,
        /// Namespace of the VM's endpoint (default: the segment's, else `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop VM NAME: its endpoint and port go; its address and MAC stay leased.
    Detach {
        /// The VM.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Move VM NAME to hypervisor HOST, keeping address and MAC.
    Move {
        /// The VM.
        name: String,
        /// The new hypervisor host.
        #[arg(long)]
        host: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete VM NAME and release its address and MAC.
    Delete {
        /// The VM.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List VMs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_lab_user(s: &str) -> Result<seam_lab::LabUser, String> {
    seam_lab::LabUser::ALL
        .into_iter()
        .find(|u| u.stem() == s)
        .ok_or_else(|| format!("invalid user {s:?}: expected admin, reader or adapter"))
}
