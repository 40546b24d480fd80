//! `seam-bench policy`: the policy compiler and the nftables dataplane at scale (issue 3's
//! "Measured, in a benchmark").
//!
//! One run, on a generated realistic mix ([`crate::policy_gen`]): full compile time per node and
//! for every node; incremental changes (pod added, label changed, policy edited) compiled,
//! rendered and applied to a real nftables table in a namespace of our own; nft rules per node
//! with 1k and 10k endpoints; the memory of a process holding the view and the compiled ruleset
//! (a child process, so the numbers are not mixed with this one's); and new-connection latency
//! through a bridged node namespace with 10 and with 1,000 policies, alternating batches.
//!
//! Every namespace is named `bpol-<pid>-…` and removed on exit, error or signal
//! ([`crate::cleanup::ScopeGuard`]); the root namespace is never touched.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_firewall::{compile, evaluate_packet, render, NodeRuleset};
use seam_linux::{apply_ruleset, netns, sysctl};
use seam_policy::{Inventory, PolicyObject, PolicySet, Protocol};
use serde_json::{json, Value};

use crate::cleanup::ScopeGuard;
use crate::policy_gen::{endpoint, node_addr, Cluster, GenSpec, Rng};
use crate::stats::{ms, ratio, verdict, Stats};
use crate::util;

/// Options of `seam-bench policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyOpts {
    /// Seed of the generated mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Endpoints (pods).
    #[arg(long, default_value_t = 10_000)]
    pub endpoints: usize,
    /// Nodes they are spread over.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Kubernetes namespaces.
    #[arg(long, default_value_t = 200)]
    pub namespaces: usize,
    /// NetworkPolicies.
    #[arg(long, default_value_t = 1000)]
    pub netpols: usize,
    /// Contracts.
    #[arg(long, default_value_t = 200)]
    pub contracts: usize,
    /// EndpointGroups the contracts join.
    #[arg(long, default_value_t = 150)]
    pub groups: usize,
    /// Incremental changes of each kind (pod added, label changed, policy edited).
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// TCP connections per configuration (10 and 1,000 policies).
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Connections per batch; configurations alternate between batches (ABBA).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Only the compiler: the mix, the full compile and the incremental compiler's passes (no rule counts,
    /// memory, kernel table or connection latency; needs no root).
    #[arg(long)]
    pub compile_only: bool,
}

impl PolicyOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "policy --seed {} --endpoints {} --nodes {} --namespaces {} --netpols {} --contracts {} \
             --groups {} --changes {} --connections {} --batch {}{}",
            self.seed,
            self.endpoints,
            self.nodes,
            self.namespaces,
            self.netpols,
            self.contracts,
            self.groups,
            self.changes,
            self.connections,
            self.batch,
            if self.compile_only {
                " --compile-only"
            } else {
                ""
            }
        )
    }

    fn spec(&self, endpoints: usize) -> GenSpec {
        GenSpec {
            seed: self.seed,
            endpoints,
            nodes: self.nodes.max(1),
            namespaces: self.namespaces.max(1),
            netpols: self.netpols,
            contracts: self.contracts,
            groups: self.groups,
        }
    }
}

/// Options of the hidden `policy-memory` child.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryChildOpts {
    #[command(flatten)]
    policy: PolicyOpts,
}

/// The results of `seam-bench policy`.
#[derive(Debug, Clone, Default)]
pub struct PolicySummary {
    /// Rows of the closing table: (measure, value, target, ok).
    pub rows: Vec<(String, String, String, bool)>,
}

impl PolicySummary {
    /// Every target met.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.3)
    }

    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, target: &str, ok: bool) {
        self.rows
            .push((what.into(), value.into(), target.to_string(), ok));
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("== summary (seam-bench policy)");
        println!(
            "   {:<58} {:>40} {:>12} {:>5}",
            "measure", "value", "target", ""
        );
        for (what, value, target, ok) in &self.rows {
            let v = if target == "-" { "" } else { verdict(*ok) };
            println!("   {what:<58} {value:>40} {target:>12} {v:>5}");
        }
    }
}

/// The agent's view of the cluster: what `seamd` holds (namespaces, endpoints, policy
/// objects typed as they arrived from the controller).
struct View {
    namespaces: Vec<seam_model::Namespace>,
    endpoints: Vec<seam_model::Endpoint>,
    docs: BTreeMap<String, PolicyObject>,
}

fn doc_key(o: &PolicyObject) -> String {
    let k = o.key();
    format!(
        "{}/{}/{}",
        k.kind,
        k.namespace.as_deref().unwrap_or(""),
        k.name
    )
}

impl View {
    fn of(c: &Cluster) -> View {
        View {
            namespaces: c.namespace_objects(),
            endpoints: c.endpoints.clone(),
            docs: c.policies().map(|o| (doc_key(o), o.clone())).collect(),
        }
    }

    /// What the agent does on every reconcile pass before compiling: the engine's inputs.
    fn inputs(&self) -> (Inventory, PolicySet, Vec<String>) {
        let inv = seam_firewall::cluster::inventory(&self.namespaces, &self.endpoints);
        let (set, warnings) = seam_firewall::cluster::policy_set(self.docs.values());
        (inv, set, warnings)
    }

    /// `namespace/name` of the endpoints on `node`, as the agent passes them to `compile`.
    fn local(&self, node: &str) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|e| e.node == node)
            .map(|e| {
                format!(
                    "{}/{}",
                    e.namespace,
                    seam_firewall::cluster::inventory_name(e)
                )
            })
            .collect()
    }
}

/// Counts of a compiled ruleset.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Rules in the IR.
    ir_rules: usize,
    /// Rule lines with a `counter` in the rendered text (= policy rules in the kernel).
    nft_rules: usize,
    /// Named sets.
    sets: usize,
    /// Set elements (intervals) over all sets.
    elements: usize,
    /// Rendered bytes.
    bytes: usize,
    /// Policies (NetworkPolicies, Contracts, ANPs) with at least one rule.
    policies: usize,
}

fn counts(rs: &NodeRuleset, text: &str) -> Counts {
    Counts {
        ir_rules: rs.rule_count(),
        nft_rules: text.lines().filter(|l| l.contains(" counter ")).count(),
        sets: rs.sets.len(),
        elements: rs.sets.values().map(|s| s.elements().len()).sum(),
        bytes: text.len(),
        policies: rs
            .rule_ids()
            .iter()
            .filter_map(|id| policy_of(id.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    }
}

/// The policy a rule id belongs to: `np/<ns>/<name>`, `contract/<name>`, `anp/<name>`.
fn policy_of(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        ["np", ns, name, ..] => Some(format!("np/{ns}/{name}")),
        [kind @ ("contract" | "anp" | "banp"), name, ..] => Some(format!("{kind}/{name}")),
        _ => None,
    }
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    Stats::of(&v).median
}

/// Runs the benchmark.
pub fn run(opts: &PolicyOpts) -> anyhow::Result<PolicySummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let started = Instant::now();
    let mut sum = PolicySummary::default();
    let scope = ScopeGuard::new("bpol");

    // ---- 1. the mix -----------------------------------------------------------------------
    let t = Instant::now();
    let cluster = Cluster::generate(&opts.spec(opts.endpoints))?;
    let gen_s = t.elapsed().as_secs_f64();
    let mut view = View::of(&cluster);
    let t = Instant::now();
    let (inv, set, warnings) = view.inputs();
    let convert_ms = ms(t.elapsed());
    if let Some(w) = warnings.first() {
        bail!(
            "{} warnings building the policy set, first: {w}",
            warnings.len()
        );
    }
    inv.validate().context("generated inventory")?;
    describe_mix(&cluster, &set, gen_s);
    println!(
        "   view -> engine inputs (cluster::inventory + cluster::policy_set from {} documents): {convert_ms:.1} ms",
        view.docs.len()
    );

    // ---- 2. full compile ------------------------------------------------------------------
    let node0 = cluster.nodes.first().context("no node")?.clone();
    let local0 = view.local(&node0);
    let mut compile_ms = Vec::new();
    let mut render_ms = Vec::new();
    let mut rs0 = NodeRuleset::default();
    let mut text0 = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        rs0 = compile(&set, &inv, &local0)?;
        compile_ms.push(ms(t.elapsed()));
        let t = Instant::now();
        text0 = render(&rs0);
        render_ms.push(ms(t.elapsed()));
    }
    let c_node = Stats::of(&compile_ms);
    let r_node = Stats::of(&render_ms);
    let t = Instant::now();
    let mut all_counts = Vec::new();
    for node in &cluster.nodes {
        let rs = compile(&set, &inv, &view.local(node))?;
        all_counts.push(rs.rule_count());
    }
    let all_ms = ms(t.elapsed());
    let c0 = counts(&rs0, &text0);
    println!(
        "== full compile ({} local endpoints on {node0})",
        local0.len()
    );
    println!(
        "   compile {node0}: median {:.1} ms (min {:.1}, max {:.1}, 5 runs); render {:.1} ms; {} IR rules, {} sets, {} set elements, {} KiB of nft text",
        c_node.median, c_node.min, c_node.max, r_node.median, c0.ir_rules, c0.sets, c0.elements, c0.bytes / 1024
    );
    println!(
        "   compile all {} nodes one after the other: {all_ms:.0} ms (IR rules per node: {:?})",
        cluster.nodes.len(),
        all_counts
    );
    sum.row(
        format!("full compile, one node ({} local endpoints)", local0.len()),
        format!("{:.1} ms (+ render {:.1} ms)", c_node.median, r_node.median),
        "< 1000 ms",
        c_node.median < 1000.0,
    );
    sum.row(
        format!(
            "full compile, all {} nodes, sequential",
            cluster.nodes.len()
        ),
        format!("{all_ms:.0} ms"),
        "< 1000 ms",
        all_ms < 1000.0,
    );
    sum.row(
        "view -> engine inputs (agent rebuilds it every pass)",
        format!("{convert_ms:.1} ms"),
        "-",
        true,
    );

    // ---- 3a. incremental compiler, no kernel -------------------------------------------------
    incremental_compile(opts, &view, &cluster, &node0, c_node.median, &mut sum)?;
    if opts.compile_only {
        drop(scope);
        println!("   whole run: {:.0} s", started.elapsed().as_secs_f64());
        return Ok(sum);
    }

    // ---- 4. rule counts -------------------------------------------------------------------
    rule_counts(opts, &cluster, &c0, &mut sum)?;

    // ---- 5. memory (child process) ----------------------------------------------------------
    memory(opts, &mut sum)?;

    // ---- 3. incremental changes against a real table ----------------------------------------
    incremental(opts, &scope, &mut view, &cluster, &node0, &text0, &mut sum)?;

    // ---- 6. connection latency --------------------------------------------------------------
    latency(opts, &scope, &cluster, &mut sum)?;

    scope.finish()?;
    println!("   whole run: {:.0} s", started.elapsed().as_secs_f64());
    Ok(sum)
}

fn describe_mix(c: &Cluster, set: &PolicySet, gen_s: f64) {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for np in set.network_policies() {
        let name = &np.metadata.name;
        let kind = name
            .rsplit_once('-')
            .filter(|(_, n)| n.chars().all(|ch| ch.is_ascii_digit()))
            .map_or(name.as_str(), |(k, _)| k);
        *kinds.entry(kind.to_string()).or_default() += 1;
    }
    let admin = set
        .contracts()
        .filter(|c| c.spec.tier == seam_policy::ContractTier::Admin)
        .count();
    let deny = set
        .contracts()
        .filter(|c| c.spec.action == seam_policy::ContractAction::Deny)
        .count();
    println!(
        "== mix (generated in {gen_s:.2} s): {} endpoints on {} nodes, {} namespaces, {} NetworkPolicies, {} EndpointGroups, {} Contracts ({admin} admin tier, {deny} deny)",
        c.endpoints.len(),
        c.nodes.len(),
        c.namespaces.len(),
        c.netpols.len(),
        c.groups.len(),
        c.contracts.len()
    );
    let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("   NetworkPolicies by kind: {}", list.join(", "));
}

/// Counts for node 0 of a generated cluster.
fn node0_counts(c: &Cluster) -> anyhow::Result<(Counts, usize)> {
    let v = View::of(c);
    let (inv, set, _) = v.inputs();
    let node0 = c.nodes.first().context("no node")?;
    let local = v.local(node0);
    let rs = compile(&set, &inv, &local)?;
    Ok((counts(&rs, &render(&rs)), local.len()))
}

fn rule_counts(
    opts: &PolicyOpts,
    big: &Cluster,
    big0: &Counts,
    sum: &mut PolicySummary,
) -> anyhow::Result<()> {
    let small_n = (opts.endpoints / 10).max(1);
    let small = Cluster::generate(&opts.spec(small_n))?;
    let (s0, s_local) = node0_counts(&small)?;
    // Same endpoints, a tenth of the policies: what grows with the policies.
    let mut few = big.clone();
    few.netpols.truncate((opts.netpols / 10).max(1));
    few.contracts.truncate(opts.contracts / 10);
    let (f0, _) = node0_counts(&few)?;
    // Everything on one node: every policy selects a local pod with 1k endpoints already, so
    // what 10x the endpoints adds is visible on its own.
    let one = |n: usize| {
        let mut spec = opts.spec(n);
        spec.nodes = 1;
        Cluster::generate(&spec).and_then(|c| node0_counts(&c))
    };
    let t = Instant::now();
    let (o_small, _) = one(small_n)?;
    let (o_big, _) = one(opts.endpoints)?;
    let one_s = t.elapsed().as_secs_f64();

    let node0 = big.nodes.first().context("no node")?;
    let big_local = big.endpoints.iter().filter(|e| &e.node == node0).count();
    println!("== nft rules on {node0} (rule lines with a counter; sets hold the endpoints)");
    println!(
        "   {:<56} {:>9} {:>8} {:>6} {:>9} {:>7} {:>7}",
        "", "nft rules", "policies", "sets", "elements", "KiB", "r/pol"
    );
    let label = |n: usize, nodes: usize, local: usize, c: &Cluster| {
        format!(
            "{n} endpoints/{nodes} nodes ({local} local), {}+{} pol",
            c.netpols.len(),
            c.contracts.len()
        )
    };
    let rows = [
        (
            label(small.endpoints.len(), opts.nodes, s_local, &small),
            &s0,
        ),
        (label(big.endpoints.len(), opts.nodes, big_local, big), big0),
        (label(big.endpoints.len(), opts.nodes, big_local, &few), &f0),
        (label(small_n, 1, small_n, &small), &o_small),
        (label(opts.endpoints, 1, opts.endpoints, big), &o_big),
    ];
    for (what, c) in &rows {
        println!(
            "   {what:<56} {:>9} {:>8} {:>6} {:>9} {:>7} {:>7.2}",
            c.nft_rules,
            c.policies,
            c.sets,
            c.elements,
            c.bytes / 1024,
            ratio(c.nft_rules as f64, c.policies as f64)
        );
    }
    println!("   (policies = NetworkPolicies and Contracts with at least one rule on the node; the one-node compiles took {one_s:.1} s)");
    let per_policy = |c: &Counts| ratio(c.nft_rules as f64, c.policies as f64);
    let endpoint_growth = ratio(big0.nft_rules as f64, s0.nft_rules as f64);
    let per_policy_growth = ratio(per_policy(big0), per_policy(&s0));
    let one_growth = ratio(o_big.nft_rules as f64, o_small.nft_rules as f64);
    let policy_growth = ratio(big0.nft_rules as f64, f0.nft_rules as f64);
    println!(
        "   10x endpoints on 10 nodes: rules x{endpoint_growth:.2} (policies with a local pod x{:.2}, rules per such policy x{per_policy_growth:.2}), set elements x{:.2}",
        ratio(big0.policies as f64, s0.policies as f64),
        ratio(big0.elements as f64, s0.elements as f64)
    );
    println!(
        "   10x endpoints on 1 node: rules x{one_growth:.2} (policies with a local pod x{:.2}, rules per such policy x{:.2}), set elements x{:.2};  10x policies: rules x{policy_growth:.2}",
        ratio(o_big.policies as f64, o_small.policies as f64),
        ratio(per_policy(&o_big), per_policy(&o_small)),
        ratio(o_big.elements as f64, o_small.elements as f64)
    );
    println!("   target: rules per policy that selects a local pod must not grow with the endpoints (rules per pod would make it x10)");
    sum.row(
        format!(
            "nft rules {node0}/10 nodes: {} vs {} endpoints",
            small.endpoints.len(),
            big.endpoints.len()
        ),
        format!(
            "{} vs {}; per policy x{per_policy_growth:.2}",
            s0.nft_rules, big0.nft_rules
        ),
        "x < 1.2",
        per_policy_growth < 1.2,
    );
    let one_per_policy = ratio(per_policy(&o_big), per_policy(&o_small));
    sum.row(
        format!(
            "nft rules, 1 node: {small_n} vs {} endpoints",
            opts.endpoints
        ),
        format!(
            "{} vs {}; per policy x{one_per_policy:.2}",
            o_small.nft_rules, o_big.nft_rules
        ),
        "x < 1.2",
        one_per_policy < 1.2,
    );
    sum.row(
        format!(
            "nft rules {node0}: {} vs {} netpols (+{} vs {} contracts)",
            few.netpols.len(),
            big.netpols.len(),
            few.contracts.len(),
            big.contracts.len()
        ),
        format!(
            "{} vs {} (x{policy_growth:.2})",
            f0.nft_rules, big0.nft_rules
        ),
        "-",
        true,
    );
    Ok(())
}

// ---- memory ---------------------------------------------------------------------------------

fn memory(opts: &PolicyOpts, sum: &mut PolicySummary) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locate seam-bench")?;
    let args: Vec<String> = opts
        .command()
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let out = Command::new(&exe)
        .arg("policy-memory")
        .args(&args)
        .output()
        .context("run seam-bench policy-memory")?;
    if !out.status.success() {
        bail!(
            "policy-memory child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parse policy-memory output")?;
    let kib = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mib = |k: &str| kib(k) as f64 / 1024.0;
    println!(
        "== memory of a process holding node-0's view and compiled ruleset (a child process, VmRSS)"
    );
    println!(
        "   at start (binary, libraries): {:.1} MiB",
        mib("start_kib")
    );
    println!(
        "   + the view (namespaces, {} endpoints, {} policy documents as JSON): {:.1} MiB",
        kib("endpoints"),
        kib("documents"),
        mib("view_kib")
    );
    println!(
        "   + engine inputs built, ruleset compiled and rendered, inputs dropped: {:.1} MiB (peak VmHWM {:.1} MiB)",
        mib("compiled_kib"),
        mib("hwm_kib")
    );
    println!(
        "   rendered ruleset: {} KiB of nft text; IR: {} rules, {} sets, {} set elements",
        kib("rendered_bytes") / 1024,
        kib("ir_rules"),
        kib("sets"),
        kib("elements")
    );
    sum.row(
        "memory: VmRSS holding view + compiled ruleset (peak)",
        format!(
            "{:.1} MiB (+{:.1} over start; peak {:.1})",
            mib("compiled_kib"),
            mib("compiled_kib") - mib("start_kib"),
            mib("hwm_kib")
        ),
        "-",
        true,
    );
    sum.row(
        "compiled ruleset size (rendered nft text)",
        format!("{} KiB", kib("rendered_bytes") / 1024),
        "-",
        true,
    );
    Ok(())
}

/// The hidden `policy-memory` child: builds the view and node-0's ruleset and prints its own
/// VmRSS at each step as JSON.
pub fn memory_child(opts: &MemoryChildOpts) -> anyhow::Result<()> {
    let me = std::process::id();
    let start = util::proc_status_kib(me, "VmRSS")?;
    let view = {
        let cluster = Cluster::generate(&opts.policy.spec(opts.policy.endpoints))?;
        View::of(&cluster)
    };
    let view_kib = util::proc_status_kib(me, "VmRSS")?;
    let node0 = "node-0";
    let (rs, text) = {
        let (inv, set, _) = view.inputs();
        let rs = compile(&set, &inv, &view.local(node0))?;
        let text = render(&rs);
        (rs, text)
    };
    let compiled_kib = util::proc_status_kib(me, "VmRSS")?;
    let hwm_kib = util::proc_status_kib(me, "VmHWM")?;
    let c = counts(&rs, &text);
    println!(
        "{}",
        json!({
            "start_kib": start,
            "view_kib": view_kib,
            "compiled_kib": compiled_kib,
            "hwm_kib": hwm_kib,
            "endpoints": view.endpoints.len(),
            "documents": view.docs.len(),
            "rendered_bytes": c.bytes,
            "ir_rules": c.ir_rules,
            "sets": c.sets,
            "elements": c.elements,
        })
    );
    Ok(())
}

// ---- incremental changes --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    PodAdded,
    LabelChanged,
    PolicyEdited,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::PodAdded => "pod added",
            Change::LabelChanged => "label changed",
            Change::PolicyEdited => "policy edited",
        }
    }
}

#[derive(Default)]
struct Timings {
    convert: Vec<f64>,
    compile: Vec<f64>,
    render: Vec<f64>,
    nft: Vec<f64>,
    total: Vec<f64>,
    /// The thread's CPU time of the same phases (compile, model, delta, apply, total).
    cpu: [Vec<f64>; 5],
    /// Wall time of the table model alone (the rest of `render` is the delta).
    model: Vec<f64>,
    /// Operations per change (both batches).
    ops: Vec<f64>,
    changed: usize,
}

/// Applies one change of `kind` to the view (on `node`, node index 0); returns the name of what changed, as the
/// agent's view records it from the watch event.
fn mutate(
    kind: Change,
    rng: &mut Rng,
    view: &mut View,
    cluster: &mut Cluster,
    node: &str,
) -> anyhow::Result<seam_firewall::ViewChanges> {
    let mut changed = seam_firewall::ViewChanges::default();
    match kind {
        Change::PodAdded => {
            let ns = rng.pick(&cluster.namespaces).ns.name.clone();
            let i = cluster.add_pod_on(rng, ns, 0)?;
            view.endpoints.push(cluster.endpoints[i].clone());
            changed.endpoints.insert(cluster.endpoints[i].name.clone());
        }
        Change::LabelChanged => {
            let local: Vec<usize> = (0..view.endpoints.len())
                .filter(|i| view.endpoints[*i].node == node)
                .collect();
            let i = *rng.pick(&local);
            let ep = &mut view.endpoints[i];
            changed.endpoints.insert(ep.name.clone());
            let apps = cluster
                .namespaces
                .iter()
                .find(|n| n.ns.name == ep.namespace)
                .map(|n| n.apps.clone())
                .unwrap_or_default();
            if rng.chance(0.5) && !apps.is_empty() {
                ep.labels.insert("app".into(), rng.pick(&apps).to_string());
            } else {
                let v = ["v1", "v2", "v3", "v4"];
                ep.labels.insert("version".into(), rng.pick(&v).to_string());
            }
        }
        Change::PolicyEdited => {
            let np = rng.pick(&cluster.netpols);
            let key = doc_key(np);
            changed.documents.insert(key.clone());
            let mut doc = view
                .docs
                .get(&key)
                .context("edited policy not in view")?
                .to_value();
            let port = 1024 + rng.below(30000);
            let new_ports = json!([{"protocol": "TCP", "port": port}]);
            let spec = doc.get_mut("spec").context("policy without spec")?;
            if let Some(Value::Array(rules)) = spec.get_mut("ingress") {
                if let Some(r) = rules.first_mut() {
                    r["ports"] = new_ports;
                }
            } else if let Some(Value::Array(rules)) = spec.get_mut("egress") {
                if let Some(r) = rules.first_mut() {
                    r["ports"] = new_ports;
                }
            } else {
                // default-deny: start allowing one port from the namespace.
                spec["ingress"] = json!([{"from": [{"podSelector": {}}], "ports": new_ports}]);
            }
            // The watch event's decode, which the agent does when the edit arrives (not timed here).
            let edited = PolicyObject::from_value(doc).context("edited policy is invalid")?;
            view.docs.insert(key, edited);
        }
    }
    Ok(changed)
}

/// What the agent runs on every pass, for the same changes as the kernel section (same seed, same kinds, on its own
/// copy of the view), without rendering or the kernel: `IncrementalCompiler::sync` with the whole view (compares
/// every object), and `IncrementalCompiler::sync_changes` with the view by name and the name of the changed object
/// (what the agent calls now), each on its own compiler; p50/p99 per kind next to the full compile. The first
/// changes of each kind are checked equal to `cluster::node_ruleset`.
fn incremental_compile(
    opts: &PolicyOpts,
    view: &View,
    cluster: &Cluster,
    node: &str,
    full_ms: f64,
    sum: &mut PolicySummary,
) -> anyhow::Result<()> {
    const CHECKED: usize = 3;
    let mut view = View {
        namespaces: view.namespaces.clone(),
        endpoints: view.endpoints.clone(),
        docs: view.docs.clone(),
    };
    let mut cluster = cluster.clone();
    let mut rng = Rng::new(opts.seed ^ 0xC4A7_6E00);
    let mut inc = seam_firewall::IncrementalCompiler::new(node);
    let mut hinted = seam_firewall::IncrementalCompiler::new(node);
    // The agent's view is a map by name: the compiler gets the endpoints in name order, as it would there.
    let by_name = |view: &View| {
        let mut eps: Vec<&seam_model::Endpoint> = view.endpoints.iter().collect();
        eps.sort_by(|a, b| a.name.cmp(&b.name));
        eps.into_iter().cloned().collect::<Vec<_>>()
    };
    // The same view by name, for `sync_changes` (kept up to date by the changed names, outside the timing).
    let tenants: BTreeMap<String, seam_model::Tenant> = BTreeMap::new();
    let namespaces: BTreeMap<String, seam_model::Namespace> = view
        .namespaces
        .iter()
        .map(|n| (n.name.clone(), n.clone()))
        .collect();
    let mut endpoints: BTreeMap<String, seam_model::Endpoint> = view
        .endpoints
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    let eps = by_name(&view);
    let t = Instant::now();
    inc.sync([], &view.namespaces, &eps, view.docs.values())?;
    let first_ms = ms(t.elapsed());
    let t = Instant::now();
    inc.sync([], &view.namespaces, &eps, view.docs.values())?;
    let idle_ms = ms(t.elapsed());
    fn keyed<'a>(
        tenants: &'a BTreeMap<String, seam_model::Tenant>,
        namespaces: &'a BTreeMap<String, seam_model::Namespace>,
        endpoints: &'a BTreeMap<String, seam_model::Endpoint>,
        documents: &'a BTreeMap<String, PolicyObject>,
    ) -> seam_firewall::KeyedView<'a> {
        seam_firewall::KeyedView {
            tenants,
            namespaces,
            endpoints,
            documents,
        }
    }
    let t = Instant::now();
    hinted.sync_changes(
        keyed(&tenants, &namespaces, &endpoints, &view.docs),
        &seam_firewall::ViewChanges::everything(),
    )?;
    let hinted_first_ms = ms(t.elapsed());
    let t = Instant::now();
    hinted.sync_changes(
        keyed(&tenants, &namespaces, &endpoints, &view.docs),
        &seam_firewall::ViewChanges::default(),
    )?;
    let hinted_idle_ms = ms(t.elapsed());
    let mut out = Vec::new();
    for kind in [Change::PodAdded, Change::LabelChanged, Change::PolicyEdited] {
        let (mut samples, mut cpu) = (Vec::new(), Vec::new());
        let (mut h_samples, mut h_cpu) = (Vec::new(), Vec::new());
        for i in 0..opts.changes {
            let changed = mutate(kind, &mut rng, &mut view, &mut cluster, node)?;
            let eps = by_name(&view);
            for name in &changed.endpoints {
                match eps.binary_search_by(|e| e.name.as_str().cmp(name)) {
                    Ok(j) => endpoints.insert(name.clone(), eps[j].clone()),
                    Err(_) => endpoints.remove(name),
                };
            }
            let c = thread_cpu_ns();
            let t = Instant::now();
            let (rs, _) = inc.sync([], &view.namespaces, &eps, view.docs.values())?;
            samples.push(ms(t.elapsed()));
            if let (Some(a), Some(b)) = (c, thread_cpu_ns()) {
                cpu.push(b.saturating_sub(a) as f64 / 1e6);
            }
            // Kept only for the check below (outside the timing).
            let rs = (i < CHECKED).then(|| rs.clone());
            let c = thread_cpu_ns();
            let t = Instant::now();
            let (h_rs, _) = hinted.sync_changes(
                keyed(&tenants, &namespaces, &endpoints, &view.docs),
                &changed,
            )?;
            h_samples.push(ms(t.elapsed()));
            if let (Some(a), Some(b)) = (c, thread_cpu_ns()) {
                h_cpu.push(b.saturating_sub(a) as f64 / 1e6);
            }
            if i < CHECKED {
                let (want, _) = seam_firewall::cluster::node_ruleset(
                    [],
                    &view.namespaces,
                    &eps,
                    view.docs.values(),
                    node,
                )?;
                if rs.as_ref() != Some(&want) || *h_rs != want {
                    bail!(
                        "the incremental compiler's ruleset after a change ({}) differs from a full compile",
                        kind.name()
                    );
                }
            }
        }
        out.push((kind, "sync", samples, cpu));
        out.push((kind, "sync_changes", h_samples, h_cpu));
    }
    println!(
        "== incremental compiler on {node} ({} changes of each kind, the first {CHECKED} of each checked equal to a full compile)",
        opts.changes
    );
    println!("   sync: the whole view, every object compared; sync_changes: the view by name and the changed object's name (what the agent calls)");
    println!(
        "   first pass (everything): sync {first_ms:.0} ms, sync_changes {hinted_first_ms:.0} ms; a pass with no change: sync {idle_ms:.2} ms, sync_changes {hinted_idle_ms:.3} ms; full compile: {full_ms:.0} ms"
    );
    for (kind, how, samples, cpu) in &out {
        let s = Stats::of(samples);
        let c = Stats::of(cpu);
        println!(
            "   {:<15} {:<12} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({:.0}x faster than a full compile at p50); CPU time p50 {:.2} ms, p99 {:.2} ms",
            kind.name(),
            how,
            s.median,
            s.p99,
            s.max,
            ratio(full_ms, s.median),
            c.median,
            c.p99
        );
        sum.row(
            format!(
                "incremental compiler ({how}): {}, p50/p99 (CPU p50/p99)",
                kind.name()
            ),
            format!(
                "{:.2} / {:.2} ms ({:.2} / {:.2})",
                s.median, s.p99, c.median, c.p99
            ),
            // Reported, not judged: issue 3's target (p99 < 20 ms) is for a change compiled
            // and applied, the incremental-apply rows; this is one part of it.
            "-",
            true,
        );
    }
    println!("   (CPU time: the thread's own, CLOCK_THREAD_CPUTIME_ID; wall time also counts waiting for a CPU on a busy machine)");
    Ok(())
}

/// CPU time of the calling thread in ns, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`; the
/// schedstat figure is only brought up to date at scheduler ticks, 4 ms steps here).
fn thread_cpu_ns() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec()).ok()?)
}

/// [`thread_cpu_ns`], 0 when unavailable.
fn thread_cpu_precise() -> u64 {
    thread_cpu_ns().unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn incremental(
    opts: &PolicyOpts,
    scope: &ScopeGuard,
    view: &mut View,
    cluster: &Cluster,
    node: &str,
    full_text: &str,
    sum: &mut PolicySummary,
) -> anyhow::Result<()> {
    let ns_name = scope.netns("inc");
    let path = util::netns_with_lo(&ns_name)?;
    let mut cluster = cluster.clone();
    let mut rng = Rng::new(opts.seed ^ 0xC4A7_6E00);
    let changes = opts.changes;
    if let Some(dump) = std::env::var_os("SEAM_BENCH_DUMP_TABLE") {
        std::fs::write(dump, full_text)?;
    }
    let result = netns::run_in(&path, || -> anyhow::Result<_> {
        let t = Instant::now();
        apply_ruleset(full_text).context("apply the full ruleset")?;
        let first_apply = ms(t.elapsed());
        let t = Instant::now();
        let kernel_rules = kernel_rule_count()?;
        let list_ms = ms(t.elapsed());
        // As the agent does: the kernel's table is changed in place by the delta from what it holds.
        let mut applied = seam_nft::table::from_nft_json(
            &seam_linux::nft::list_table_text()?.unwrap_or_default(),
        )
        .context("read back the table just written")?;
        // As the agent does: a long-lived incremental compiler told which objects changed, over the
        // view by name (kept up to date outside the timing, as the watch does in the agent).
        let tenants: BTreeMap<String, seam_model::Tenant> = BTreeMap::new();
        let namespaces: BTreeMap<String, seam_model::Namespace> = view
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), n.clone()))
            .collect();
        let mut endpoints: BTreeMap<String, seam_model::Endpoint> = view
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        let mut compiler = seam_firewall::IncrementalCompiler::new(node);
        // The agent's renderer keeps what it rendered last; it starts from the table just written.
        let mut renderer = seam_firewall::render::table::Renderer::default();
        let (first, _) = compiler.sync_changes(
            seam_firewall::KeyedView {
                tenants: &tenants,
                namespaces: &namespaces,
                endpoints: &endpoints,
                documents: &view.docs,
            },
            &seam_firewall::ViewChanges::everything(),
        )?;
        renderer.model(first);
        let mut out = Vec::new();
        for kind in [Change::PodAdded, Change::LabelChanged, Change::PolicyEdited] {
            let mut tm = Timings::default();
            for _ in 0..changes {
                let changed = mutate(kind, &mut rng, view, &mut cluster, node)?;
                for name in &changed.endpoints {
                    match view.endpoints.iter().find(|e| &e.name == name) {
                        Some(e) => endpoints.insert(name.clone(), e.clone()),
                        None => endpoints.remove(name),
                    };
                }
                let t0 = Instant::now();
                let c1 = thread_cpu_precise();
                let t1 = Instant::now();
                let (rs, _) = compiler.sync_changes(
                    seam_firewall::KeyedView {
                        tenants: &tenants,
                        namespaces: &namespaces,
                        endpoints: &endpoints,
                        documents: &view.docs,
                    },
                    &changed,
                )?;
                let t2 = Instant::now();
                let c2 = thread_cpu_precise();
                // The renderer changes its last table in place and says what it changed: the
                // delta from the table the kernel holds (the renderer's last one).
                let (table, delta) = renderer.model_and_delta(rs);
                let tm_model = Instant::now();
                let c_model = thread_cpu_precise();
                // The copy of the table the agent keeps as what the kernel holds (its recovery
                // path diffs against it, or writes it whole).
                let model = table.clone();
                let t3 = Instant::now();
                let c3 = thread_cpu_precise();
                seam_linux::apply_delta(&delta).context("apply an incremental change")?;
                let t4 = Instant::now();
                let c4 = thread_cpu_precise();
                for (i, (a, b)) in [(c1, c2), (c2, c_model), (c_model, c3), (c3, c4), (c1, c4)]
                    .into_iter()
                    .enumerate()
                {
                    tm.cpu[i].push(b.saturating_sub(a) as f64 / 1e6);
                }
                tm.model.push(ms(tm_model - t2));
                tm.ops
                    .push((delta.switch.len() + delta.cleanup.len()) as f64);
                tm.convert.push(ms(t1 - t0));
                tm.compile.push(ms(t2 - t1));
                tm.render.push(ms(t3 - t2));
                tm.nft.push(ms(t4 - t3));
                tm.total.push(ms(t4 - t1));
                if !delta.is_empty() {
                    tm.changed += 1;
                }
                drop(std::mem::replace(&mut applied, model));
            }
            out.push((kind, tm));
        }
        Ok((first_apply, kernel_rules, list_ms, out))
    });
    let delete = netns::delete(&ns_name);
    let (first_apply, kernel_rules, list_ms, out) = result??;
    delete?;
    println!(
        "== incremental changes on {node}, {changes} of each, in namespace {ns_name}, as the agent makes them: IncrementalCompiler::sync_changes, table model + delta, applied in place (nf_tables netlink batches)"
    );
    println!(
        "   first full apply: {first_apply:.0} ms; the kernel then holds {kernel_rules} rules with counters (nft -j list table: {list_ms:.0} ms)"
    );
    println!(
        "   {:<15} {:>8} {:>17} {:>17} {:>17} {:>17} {:>17}",
        "ms p50 / p99", "changed", "compile+delta+apply", "compile", "model+delta", "apply", "-"
    );
    let pp = |v: &[f64]| {
        let s = Stats::of(v);
        format!("{:.1} / {:.1}", s.median, s.p99)
    };
    let mut all_total = Vec::new();
    for (kind, tm) in &out {
        println!(
            "   {:<15} {:>8} {:>17} {:>17} {:>17} {:>17} {:>17}",
            kind.name(),
            format!("{}/{}", tm.changed, tm.total.len()),
            pp(&tm.total),
            pp(&tm.compile),
            pp(&tm.render),
            pp(&tm.nft),
            pp(&tm.convert)
        );
        let s = Stats::of(&tm.total);
        sum.row(
            format!(
                "incremental: {} -> compile+render+apply, p50/p99",
                kind.name()
            ),
            format!("{:.1} / {:.1} ms", s.median, s.p99),
            "p99 < 20 ms",
            s.p99 < 20.0,
        );
        all_total.extend_from_slice(&tm.total);
    }
    println!(
        "   {:<15} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>10}",
        "CPU ms p50/p99",
        "total",
        "compile",
        "model+delta",
        "copy",
        "apply",
        "model wall",
        "ops p50"
    );
    for (kind, tm) in &out {
        println!(
            "   {:<15} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>10.0}",
            kind.name(),
            pp(&tm.cpu[4]),
            pp(&tm.cpu[0]),
            pp(&tm.cpu[1]),
            pp(&tm.cpu[2]),
            pp(&tm.cpu[3]),
            pp(&tm.model),
            Stats::of(&tm.ops).median,
        );
    }
    println!("   (CPU: the thread's own, CLOCK_THREAD_CPUTIME_ID; kernel work done for the batch in other contexts is not counted)");
    let split = |f: fn(&Timings) -> &Vec<f64>| {
        median_of(out.iter().flat_map(|(_, t)| f(t).iter().copied()).collect())
    };
    let total = median_of(all_total);
    println!(
        "   median split over all changes: compile {:.1} ms, render {:.1} ms, nft {:.1} ms (of {total:.1} ms); the agent also rebuilds its inputs from the view: {:.1} ms",
        split(|t| &t.compile),
        split(|t| &t.render),
        split(|t| &t.nft),
        split(|t| &t.convert)
    );
    Ok(())
}

/// Rules with a counter in `table inet seam` of the calling thread's namespace.
fn kernel_rule_count() -> anyhow::Result<usize> {
    let listed = seam_linux::nft::list_table().context("nft -j list table inet seam")?;
    let v = seam_nft::listing::parse_listing(listed)?;
    Ok(seam_nft::listing::counted_rules(&v))
}

// ---- connection latency -------------------------------------------------------------------

const PROBE_PORT: u16 = 8443;
/// The pause after a table swap of the latency test before its warm-up.
const SWAP_SETTLE: Duration = Duration::from_millis(250);
const CLIENT_NS: &str = "zz-probe-client";
const SERVER_NS: &str = "zz-probe-server";
const ALLOW_PROBE: &str = "allow-probe";

/// The two probe pods on node 0 (addresses from node 0's CIDR, above every generated pod).
fn probe_addrs() -> (Ipv4Addr, Ipv4Addr) {
    (
        node_addr(0, crate::policy_gen::NODE_HOSTS - 100),
        node_addr(0, crate::policy_gen::NODE_HOSTS - 99),
    )
}

/// The cluster plus the probe namespaces and pods, and the policy that lets the client reach
/// the server: it sorts after every generated NetworkPolicy, so the SYN meets it late.
fn probe_cluster(base: &Cluster, netpols: usize, with_contracts: bool) -> anyhow::Result<View> {
    let mut c = base.clone();
    // An even spread of the generated policies, minus one for the probe's own.
    let keep = netpols.saturating_sub(1).min(c.netpols.len());
    let step = (c.netpols.len() / keep.max(1)).max(1);
    c.netpols = c.netpols.iter().step_by(step).take(keep).cloned().collect();
    if !with_contracts {
        c.contracts.clear();
        c.groups.clear();
    }
    let mut view = View::of(&c);
    let (client, server) = probe_addrs();
    for (ns, pod, ip) in [
        (CLIENT_NS, "probe-client", client),
        (SERVER_NS, "probe-server", server),
    ] {
        view.namespaces.push(seam_model::Namespace::named(ns));
        let labels = [("app".to_string(), pod.to_string())].into_iter().collect();
        view.endpoints
            .push(endpoint(ns, pod, &base.nodes[0], ip, labels)?);
    }
    let allow = PolicyObject::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": SERVER_NS, "name": ALLOW_PROBE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "probe-server"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {seam_model::NAMESPACE_NAME_LABEL: CLIENT_NS}},
                                   "podSelector": {"matchLabels": {"app": "probe-client"}}}],
                         "ports": [{"protocol": "TCP", "port": PROBE_PORT}]}]
        }
    }))?;
    view.docs.insert(doc_key(&allow), allow);
    Ok(view)
}

/// One firewall configuration of the latency test.
struct Config {
    label: String,
    policies: usize,
    text: String,
    /// Rules the SYN is tested against: egress (client), ingress before the allow, ingress total.
    egress_rules: usize,
    ingress_before: usize,
    ingress_total: usize,
    /// Kernel rules in the chains the dispatch sends the SYN through (client's egress class,
    /// server's ingress class: every chain they jump or go to, whole).
    kernel_path: (usize, usize),
    samples: Vec<f64>,
    allow_hits: Option<u64>,
}

fn config(label: &str, view: &View, node: &str) -> anyhow::Result<Config> {
    let (inv, set, warnings) = view.inputs();
    if let Some(w) = warnings.first() {
        bail!("{label}: {w}");
    }
    let rs = compile(&set, &inv, &view.local(node))?;
    let (client, server) = probe_addrs();
    let v = evaluate_packet(&rs, client, server, Protocol::Tcp, PROBE_PORT);
    let want = format!("np/{SERVER_NS}/{ALLOW_PROBE}/ingress/0");
    let ing = v.ingress.as_ref().and_then(|i| i.rule.as_ref());
    if !v.allowed() || ing.map(|r| r.as_str()) != Some(want.as_str()) {
        bail!("{label}: the probe flow is not allowed by {want} in the compiled ruleset: {v:?}");
    }
    let egress_rules: usize = rs.egress.iter().map(|c| c.rules.len()).sum();
    let mut ingress_before = 0;
    let mut found = false;
    for chain in &rs.ingress {
        for r in &chain.rules {
            if r.id.as_str() == want {
                found = true;
                break;
            }
            ingress_before += 1;
        }
        if found {
            break;
        }
    }
    let policies = set.network_policies().count() + set.contracts().count();
    Ok(Config {
        label: label.to_string(),
        policies,
        text: render(&rs),
        egress_rules,
        ingress_before,
        ingress_total: rs.ingress.iter().map(|c| c.rules.len()).sum(),
        kernel_path: kernel_path(&rs, client, server),
        samples: Vec::new(),
        allow_hits: None,
    })
}

/// Kernel rules on the SYN's path: the class chains the dispatch maps give the client (egress)
/// and the server (ingress), with every chain they jump or go to.
fn kernel_path(rs: &NodeRuleset, client: Ipv4Addr, server: Ipv4Addr) -> (usize, usize) {
    use seam_nft::table::ChainBody;
    let model = seam_firewall::render::table::model(rs);
    let rules = |class: Option<&std::sync::Arc<str>>| -> usize {
        let Some(ChainBody::Dispatch { jumps, goto }) = class.and_then(|c| model.chains.get(&**c))
        else {
            return 0;
        };
        jumps
            .iter()
            .chain(std::iter::once(goto))
            .map(|c| match model.chains.get(c) {
                Some(ChainBody::Rules(r)) => r.len(),
                _ => 0,
            })
            .sum::<usize>()
            + jumps.len()
            + 1
    };
    (
        rules(model.egress.get(&client)),
        rules(model.ingress.get(&server)),
    )
}

/// The bridged node: node namespace with `br0` (br_netfilter on), client and server pods.
struct Bridged {
    node: PathBuf,
    client: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl Drop for Bridged {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
    }
}

fn bridged(scope: &ScopeGuard) -> anyhow::Result<Bridged> {
    let node = scope.netns("node");
    let node_path = util::netns_with_lo(&node)?;
    util::ip(&node, &["link", "add", "br0", "type", "bridge"])?;
    util::ip(&node, &["link", "set", "br0", "up"])?;
    let key = "net/bridge/bridge-nf-call-iptables";
    netns::run_in(&node_path, || -> anyhow::Result<()> {
        if !Path::new(&format!("/proc/sys/{key}")).exists() {
            bail!("br_netfilter is not loaded (no /proc/sys/{key}): bridged traffic would bypass nftables; `modprobe br_netfilter`");
        }
        sysctl::write(key, "1")?;
        Ok(())
    })??;
    let (client_ip, server_ip) = probe_addrs();
    let mut paths = Vec::new();
    for (tag, ip) in [("c", client_ip), ("s", server_ip)] {
        let pod = scope.netns(tag);
        let path = util::netns_with_lo(&pod)?;
        let host = format!("h{tag}");
        util::ip(
            &node,
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pod,
            ],
        )?;
        util::ip(&node, &["link", "set", &host, "master", "br0", "up"])?;
        util::ip(&pod, &["addr", "add", &format!("{ip}/18"), "dev", "eth0"])?;
        util::ip(&pod, &["link", "set", "eth0", "up"])?;
        paths.push(path);
    }
    let server_path = paths.pop().context("no server namespace")?;
    let client = paths.pop().context("no client namespace")?;
    let listener = netns::run_in(&server_path, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT))
    })??;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Accepting does not affect connect latency (the kernel completes the handshake); the
    // accepted sockets are closed at once.
    let server = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    Ok(Bridged {
        node: node_path,
        client,
        stop,
        server: Some(server),
    })
}

/// `n` TCP connect+close from the client pod; connect latencies in ms.
fn connects(client: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let (_, server) = probe_addrs();
    let to = SocketAddr::from((server, PROBE_PORT));
    netns::run_in(client, || -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(1))
                .with_context(|| format!("connect to {to}"))?;
            out.push(ms(t.elapsed()));
            drop(s);
        }
        Ok(out)
    })?
}

fn latency(
    opts: &PolicyOpts,
    scope: &ScopeGuard,
    cluster: &Cluster,
    sum: &mut PolicySummary,
) -> anyhow::Result<()> {
    let node = cluster.nodes.first().context("no node")?.clone();
    let few = (opts.netpols / 100).max(10);
    let mut configs = vec![
        config(
            &format!("{few} netpols"),
            &probe_cluster(cluster, few, false)?,
            &node,
        )?,
        config(
            &format!("{} netpols", opts.netpols),
            &probe_cluster(cluster, opts.netpols, false)?,
            &node,
        )?,
        config(
            &format!("{} netpols + {} contracts", opts.netpols, opts.contracts),
            &probe_cluster(cluster, opts.netpols, true)?,
            &node,
        )?,
    ];
    let lab = bridged(scope)?;
    let batch = opts.batch.max(1);
    let rounds = opts.connections.div_ceil(batch);
    let t = Instant::now();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..configs.len()).collect()
        } else {
            (0..configs.len()).rev().collect()
        };
        for i in order {
            let text = &configs[i].text;
            netns::run_in(&lab.node, || apply_ruleset(text))?
                .with_context(|| format!("apply {}", configs[i].label))?;
            // The kernel frees the replaced table after the swap, in the background (RCU), for
            // longer the bigger it was: on 2 CPUs that work would land in the next batch and be
            // counted against the bigger configurations. What is measured is a SYN's way through
            // the table in place, so the swap settles first.
            std::thread::sleep(SWAP_SETTLE);
            connects(&lab.client, 10)?; // warm-up after the table swap
            let s = connects(&lab.client, batch)?;
            configs[i].samples.extend(s);
            if round + 2 >= rounds {
                // The allow rule's counter proves the SYNs went through the table and met it.
                let c = netns::run_in(&lab.node, seam_linux::read_counters)??;
                let id = format!("np/{SERVER_NS}/{ALLOW_PROBE}/ingress/0");
                configs[i].allow_hits = c.get(&id).map(|c| c.packets);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    drop(lab);
    println!(
        "== new-connection latency through {node}'s firewall: bridged node namespace (br_netfilter), client and server pods, TCP connect+close, {} per configuration in batches of {batch}, ABBA ({secs:.0} s)",
        rounds * batch
    );
    println!(
        "   {:<30} {:>8} {:>34} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "configuration",
        "policies",
        "IR rules e+i / kernel path e+i",
        "median",
        "p99",
        "min",
        "ratio",
        "allow hits"
    );
    let base = Stats::of(&configs[0].samples).median;
    for c in &configs {
        let s = Stats::of(&c.samples);
        println!(
            "   {:<30} {:>8} {:>34} {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>8.2} {:>10}",
            c.label,
            c.policies,
            format!(
                "{} + {} (of {}) / {} + {}",
                c.egress_rules,
                c.ingress_before + 1,
                c.ingress_total,
                c.kernel_path.0,
                c.kernel_path.1
            ),
            s.median,
            s.p99,
            s.min,
            ratio(s.median, base),
            c.allow_hits.map_or("-".to_string(), |h| h.to_string())
        );
        if c.allow_hits.is_some_and(|h| h < batch as u64) {
            bail!(
                "{}: the allow rule counted {:?} packets for {batch} connections: the SYNs did not go through the table",
                c.label,
                c.allow_hits
            );
        }
    }
    for c in configs.iter().skip(1) {
        let s = Stats::of(&c.samples);
        let r = ratio(s.median, base);
        sum.row(
            format!("connect latency median, {} / {}", c.label, configs[0].label),
            format!("{:.3} / {base:.3} ms = {r:.2}", s.median),
            "< 1.1",
            r < 1.1,
        );
    }
    Ok(())
}
