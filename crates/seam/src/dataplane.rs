//! `seam conformance netpol --dataplane`: the conformance cases through the real dataplane.
//!
//! Builds a lab, creates the model's namespaces (objects with the model's labels) and pods
//! (labels and named container ports through the CNI config, spread over the nodes, serving
//! the model's ports on TCP and UDP; SCTP is skipped and reported where the kernel has no SCTP
//! sockets), and then per case:
//!
//! 1. applies the case's namespace labels (`put_namespace`) and pod labels (`put_endpoint` of
//!    the agent-published endpoint with new labels: this lasts until that agent's next full
//!    resync, i.e. a reconnect to the controller, which republishes its leases' labels);
//! 2. replaces the policy set through the API (objects of the previous case that are not in
//!    this one are deleted, changed or new ones put);
//! 3. waits until every node applied it: for each node the runner compiles what that node must
//!    enforce from the controller's snapshot (`seam_firewall::cluster::node_ruleset`, the very
//!    function the agent runs), has the kernel load it into a scratch namespace, and polls the
//!    node's `table inet seam` until its canonical listing (no handles, no counter values)
//!    equals the scratch one. That covers rules *and* set members (label changes alter only
//!    sets), which rule comments alone would not;
//! 4. probes every pair in parallel with short timeouts, re-probes mismatches once with a longer
//!    timeout (upstream retries the whole matrix once), and judges them
//!    ([`seam::conformance::judge`]).
//!
//! The lab is torn down at the end, on error and on Ctrl-C / SIGTERM.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use seam::conformance::{
    self, CaseOutcome, DataplaneModel, DataplaneReport, Observed, PlannedCase, PlannedProbe,
};
use seam_client::ControllerClient;
use seam_lab::probe::{self, Outcome};
use seam_lab::{Lab, LabSpec, PodInfo};
use seam_policy::Protocol;
use serde_json::Value;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lab name.
    pub lab: String,
    /// Nodes.
    pub nodes: usize,
    /// Probe timeout (a denied probe takes this long).
    pub timeout: Duration,
    /// Keep the lab afterwards.
    pub keep: bool,
    /// How long a node may take to apply a case's policies.
    pub converge: Duration,
}

/// Runs the cases through a fresh lab and returns the report. The lab is removed afterwards
/// (unless `keep`), also when this fails.
pub fn run(cases: &Value, model: &Value, opts: &Options) -> anyhow::Result<DataplaneReport> {
    // Malformed cases fail here, before anything is built.
    let (model, planned) = conformance::dataplane_plan(cases, model)?;
    let bin_dir = crate::bin_dir()?;
    teardown_on_signal(opts.lab.clone());
    let _ = seam_lab::down(&opts.lab);
    eprintln!(
        "== lab {}: {} nodes, {} pods, {} cases",
        opts.lab,
        opts.nodes,
        model.pods.len(),
        planned.len()
    );
    let mut lab = seam_lab::up(&LabSpec {
        name: opts.lab.clone(),
        nodes: opts.nodes,
        segment_mode: "namespace".into(),
        controller_args: Vec::new(),
        one_process: false,
        store: seam_lab::LabStore::Embedded,
        controllers: 1,
        bin_dir,
    })
    .context("bring up the lab")?;
    let result = Runner::new(&mut lab, opts).and_then(|mut r| r.run(&model, &planned));
    if opts.keep {
        eprintln!("== lab kept: seam lab down --name {} removes it", opts.lab);
    } else if let Err(e) = seam_lab::down(&opts.lab) {
        eprintln!("seam: removing lab {}: {e}", opts.lab);
    }
    result
}

/// Removes the lab when SIGINT or SIGTERM arrives, then exits (130).
fn teardown_on_signal(lab: String) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("\nseam: interrupted; removing lab {lab}");
        let _ = seam_lab::down(&lab);
        std::process::exit(130);
    });
}

/// Policy object key: kind, namespace, name.
type Key = (String, Option<String>, String);

struct Runner<'a> {
    lab: &'a mut Lab,
    opts: &'a Options,
    client: ControllerClient,
    rt: tokio::runtime::Runtime,
    /// Scratch namespace where the expected table is loaded for comparison.
    scratch: PathBuf,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    policies: BTreeMap<Key, Value>,
    pods: BTreeMap<String, PodInfo>,
}

fn key_of(doc: &Value) -> anyhow::Result<Key> {
    let kind = doc["kind"].as_str().context("policy object without kind")?;
    let name = doc["metadata"]["name"]
        .as_str()
        .context("policy object without metadata.name")?;
    Ok((
        kind.to_string(),
        doc["metadata"]["namespace"].as_str().map(str::to_string),
        name.to_string(),
    ))
}

impl<'a> Runner<'a> {
    fn new(lab: &'a mut Lab, opts: &'a Options) -> anyhow::Result<Self> {
        let client = ControllerClient::new(&lab.controller)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The lab's prefix, so `seam lab down` removes it with the rest.
        let scratch = seam_linux::netns::create(&format!("{}-cmp", lab.name))?;
        Ok(Runner {
            lab,
            opts,
            client,
            rt,
            scratch,
            namespace_labels: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            policies: BTreeMap::new(),
            pods: BTreeMap::new(),
        })
    }

    fn run(
        &mut self,
        model: &DataplaneModel,
        planned: &[PlannedCase],
    ) -> anyhow::Result<DataplaneReport> {
        self.build(model)?;
        let mut report = DataplaneReport::default();
        let started = Instant::now();
        for (i, case) in planned.iter().enumerate() {
            let t0 = Instant::now();
            match self.run_case(model, case) {
                Ok(outcome) => report.record(&case.id, outcome),
                Err(e) => report.fail(&case.id, &format!("{e:#}")),
            }
            let status = match report.failures.last() {
                Some(line) if line.starts_with(&format!("FAIL {}:", case.id)) => {
                    println!("{line}");
                    "FAIL"
                }
                _ => "ok",
            };
            eprintln!(
                "   [{}/{}] {} {status} ({} ms)",
                i + 1,
                planned.len(),
                case.id,
                t0.elapsed().as_millis()
            );
        }
        eprintln!(
            "== {} cases in {:.1} s",
            planned.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    }

    /// Namespaces, pods, servers; then waits until every pair connects without policy.
    fn build(&mut self, model: &DataplaneModel) -> anyhow::Result<()> {
        for (name, labels) in &model.namespaces {
            self.put_namespace(name, labels)?;
        }
        let nodes: Vec<String> = self.lab.nodes.iter().map(|n| n.name.clone()).collect();
        for (i, pod) in model.pods.iter().enumerate() {
            let node = &nodes[i % nodes.len()];
            let ports: Vec<seam_model::ContainerPort> = pod
                .named_ports
                .iter()
                .filter_map(|(name, port, protocol)| {
                    Some(seam_model::ContainerPort {
                        name: name.clone(),
                        port: *port,
                        protocol: seam_model::PortProtocol::parse(protocol.as_str())?,
                    })
                })
                .collect();
            let info = self
                .lab
                .add_pod_with(node, &pod.namespace, &pod.name, &pod.labels, &ports)
                .with_context(|| format!("create pod {}", pod.reference()))?;
            for (port, protocol) in &pod.serves {
                match protocol {
                    Protocol::Tcp => probe::serve_tcp(&info.netns_path, *port, pod.reference())?,
                    Protocol::Udp => probe::serve_udp(&info.netns_path, *port)?,
                    // std has no SCTP sockets and this kernel has no SCTP: not served, and
                    // every SCTP probe is reported as skipped.
                    _ => {}
                }
            }
            eprintln!("   pod {:<50} {} on {node}", pod.reference(), info.ip);
            self.pod_labels.insert(pod.reference(), pod.labels.clone());
            self.pods.insert(pod.reference(), info);
        }
        // Remote neighbours and FDB entries arrive through the controller: wait until every
        // pair connects on the first TCP port served.
        let Some(port) = model
            .pods
            .first()
            .and_then(|p| p.serves.iter().find(|(_, pr)| *pr == Protocol::Tcp))
            .map(|(p, _)| *p)
        else {
            return Ok(());
        };
        let refs: Vec<String> = self.pods.keys().cloned().collect();
        let mut pending: Vec<PlannedProbe> = refs
            .iter()
            .flat_map(|a| {
                refs.iter().map(move |b| PlannedProbe {
                    from: a.clone(),
                    to: b.clone(),
                    port,
                    protocol: Protocol::Tcp,
                    expected: true,
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let results = self.probe_all(&pending, self.opts.timeout);
            pending = pending
                .into_iter()
                .zip(results)
                .filter(|(_, o)| *o != Observed::Connected)
                .map(|(p, _)| p)
                .collect();
            if pending.is_empty() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} pair(s) never connected without any policy, e.g. {} -> {}; see the logs under {}",
                pending.len(),
                pending[0].from,
                pending[0].to,
                self.lab.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("   all {} pairs connect without policy", refs.len().pow(2));
        Ok(())
    }

    fn put_namespace(
        &mut self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        if self.namespace_labels.get(name) == Some(labels) {
            return Ok(());
        }
        let ns = seam_model::Namespace {
            name: name.to_string(),
            labels: labels.clone(),
            tenant: None,
        };
        self.rt
            .block_on(self.client.put_namespace(&ns))
            .with_context(|| format!("put namespace {name}"))?;
        self.namespace_labels
            .insert(name.to_string(), labels.clone());
        Ok(())
    }

    fn set_pod_labels(
        &mut self,
        reference: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        if self.pod_labels.get(reference) == Some(labels) {
            return Ok(());
        }
        let client = &self.client;
        self.rt
            .block_on(client.update::<seam_model::Endpoint, _>(
                seam_model::ObjectKind::Endpoint,
                reference,
                crate::segment_cmd::UPDATE_ATTEMPTS,
                |ep| {
                    ep.labels = labels.clone();
                    true
                },
            ))
            .with_context(|| format!("relabel endpoint {reference}"))?;
        self.pod_labels
            .insert(reference.to_string(), labels.clone());
        Ok(())
    }

    fn run_case(
        &mut self,
        model: &DataplaneModel,
        case: &PlannedCase,
    ) -> anyhow::Result<CaseOutcome> {
        for (name, labels) in &model.namespaces {
            let want = case.namespace_labels.get(name).unwrap_or(labels);
            self.put_namespace(name, want)?;
        }
        for pod in &model.pods {
            let r = pod.reference();
            let want = case.pod_labels.get(&r).unwrap_or(&pod.labels);
            self.set_pod_labels(&r, want)?;
        }
        let addresses: BTreeMap<String, Ipv4Addr> =
            self.pods.iter().map(|(k, p)| (k.clone(), p.ip)).collect();
        let docs = conformance::policy_documents(&case.policies, &addresses)
            .map_err(|e| anyhow::anyhow!("policies rejected by the engine: {e}"))?;
        let mut wanted = BTreeMap::new();
        for doc in docs {
            wanted.insert(key_of(&doc)?, doc);
        }
        self.replace_policies(wanted)?;
        self.wait_applied()?;
        let results = self.probe_all(&case.probes, self.opts.timeout);
        let mut outcome = CaseOutcome::default();
        // Upstream retries a mismatching matrix once; re-probe mismatches with more time.
        let mut retry = Vec::new();
        for (i, (p, o)) in case.probes.iter().zip(&results).enumerate() {
            let mut trial = CaseOutcome::default();
            conformance::judge(case, p, o, &mut trial);
            if trial.mismatches.is_empty() {
                conformance::judge(case, p, o, &mut outcome);
            } else {
                retry.push(i);
            }
        }
        if !retry.is_empty() {
            let again: Vec<PlannedProbe> = retry.iter().map(|i| case.probes[*i].clone()).collect();
            let results = self.probe_all(&again, self.opts.timeout * 2);
            for (p, o) in again.iter().zip(&results) {
                conformance::judge(case, p, o, &mut outcome);
            }
        }
        Ok(outcome)
    }

    fn replace_policies(&mut self, wanted: BTreeMap<Key, Value>) -> anyhow::Result<()> {
        let client = &self.client;
        let current = &self.policies;
        self.rt.block_on(async {
            for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
                client
                    .delete_policy(&key.0, key.1.as_deref(), &key.2)
                    .await
                    .with_context(|| format!("delete {} {}", key.0, key.2))?;
            }
            for (key, doc) in &wanted {
                if current.get(key) != Some(doc) {
                    client
                        .put_policy(&key.0, key.1.as_deref(), &key.2, doc)
                        .await
                        .with_context(|| format!("put {} {}", key.0, key.2))?;
                }
            }
            anyhow::Ok(())
        })?;
        self.policies = wanted;
        Ok(())
    }

    /// Waits until every node's `table inet seam` is what that node must enforce now.
    fn wait_applied(&self) -> anyhow::Result<()> {
        let snapshot = self.rt.block_on(self.client.snapshot())?;
        let mut expected = BTreeMap::new();
        for node in &self.lab.nodes {
            let (ruleset, _warnings) = seam_firewall::cluster::node_ruleset(
                &snapshot.tenants,
                &snapshot.namespaces,
                &snapshot.endpoints,
                &snapshot.policies,
                &node.name,
            )
            .with_context(|| format!("compile {}'s ruleset", node.name))?;
            let text = seam_firewall::render(&ruleset);
            let listing = seam_linux::netns::run_in(&self.scratch, || {
                seam_linux::nft::apply_ruleset(&text)?;
                seam_linux::nft::list_table()
            })?
            .with_context(|| {
                format!(
                    "load {}'s expected table into the scratch namespace",
                    node.name
                )
            })?;
            expected.insert(
                node.name.clone(),
                seam_linux::nft::canonical_listing(&listing),
            );
        }
        let deadline = Instant::now() + self.opts.converge;
        let mut pending: Vec<&seam_lab::NodeInfo> = self.lab.nodes.iter().collect();
        loop {
            pending.retain(|node| {
                let actual =
                    seam_linux::netns::run_in(&node.netns_path, seam_linux::nft::list_table)
                        .ok()
                        .and_then(Result::ok)
                        .map(|v| seam_linux::nft::canonical_listing(&v));
                actual.as_ref() != expected.get(&node.name)
            });
            if pending.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node(s) {} did not apply the case's policies within {:?} (agent logs under {})",
                pending
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.opts.converge,
                self.lab.dir.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Makes every probe at once; SCTP probes are skipped.
    fn probe_all(&self, probes: &[PlannedProbe], timeout: Duration) -> Vec<Observed> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = probes
                .iter()
                .map(|p| {
                    scope.spawn(move || -> Observed {
                        let (Some(from), Some(to)) = (self.pods.get(&p.from), self.pods.get(&p.to))
                        else {
                            return Observed::Failed(format!(
                                "unknown pod in {} -> {}",
                                p.from, p.to
                            ));
                        };
                        let outcome = match p.protocol {
                            Protocol::Tcp => {
                                probe::tcp_connect(&from.netns_path, to.ip, p.port, timeout)
                            }
                            Protocol::Udp => probe::udp(&from.netns_path, to.ip, p.port, timeout),
                            _ => return Observed::Skipped,
                        };
                        match outcome {
                            Ok(Outcome::Connected) => Observed::Connected,
                            Ok(Outcome::Refused) => Observed::Refused,
                            Ok(Outcome::TimedOut) => Observed::TimedOut,
                            Ok(Outcome::Failed(e)) => Observed::Failed(e),
                            Err(e) => Observed::Failed(e.to_string()),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Observed::Failed("probe thread panicked".into()))
                })
                .collect()
        })
    }
}
