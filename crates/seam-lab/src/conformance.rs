//! The conformance cases through the real dataplane (`seam conformance netpol --dataplane`): a
//! lab is the [`Decider`] of seam-conformance's harness.
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
//! 4. probes every pair in parallel with short timeouts; the harness judges them
//!    ([`seam_conformance::judge`]) and mismatches are probed once more with a longer timeout
//!    (upstream retries the whole matrix once).
//!
//! The lab is torn down at the end, on error, and on Ctrl-C / SIGTERM when the binary installed
//! [`crate::teardown_on_signal`] (`seam conformance` does). Progress goes to stderr,
//! each failing case's line to stdout as it fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use seam_client::ControllerClient;
use seam_conformance::{
    CaseInput, ConformanceError, Decider, Judging, ModelPod, Observed, Probe, Report, Suite,
};
use seam_nft::listing::{canonical_listing, parse_listing};
use seam_policy::Protocol;
use serde_json::Value;

use crate::probe::{self, Outcome};
use crate::{Lab, LabSpec, NodeInfo, PodInfo};

/// How often a relabelled endpoint is re-read and written again when another writer changed it
/// in between (as `seam segment` does).
const UPDATE_ATTEMPTS: u32 = 5;

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
    /// The nodes' `seamd --segment-encap` (`cross-subnet`, seamd's default, or `always`).
    pub segment_encap: String,
}

/// Why a dataplane run stopped, or (as a case's failure line) why one case could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The cases or the model are malformed.
    #[error(transparent)]
    Cases(#[from] ConformanceError),
    /// A step failed; `what` names it.
    #[error("{what}")]
    Step {
        /// The step, e.g. `put namespace x`.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error of the lab, the controller client or the kernel, as it is.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// The lab did not get where it must (pods never connected, policies never applied).
    #[error("{0}")]
    Failed(String),
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Names the step an error comes from.
trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T>;
    fn other(self) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| DataplaneError::Step {
            what: what(),
            source: Box::new(e),
        })
    }

    fn other(self) -> Result<T> {
        self.map_err(|e| DataplaneError::Other(Box::new(e)))
    }
}

/// What a case file asks of the dataplane: the namespaces and pods of every model its cases use
/// (x/y/z before ANP), each pod with what it serves. Malformed input fails here, before anything
/// is built.
pub fn pods_to_build(suite: &Suite) -> Result<Plan, ConformanceError> {
    let mut plan = Plan::default();
    for cluster in [&suite.model.xyz, &suite.model.anp].into_iter().flatten() {
        let serves = cluster.serves()?;
        plan.namespaces.extend(cluster.namespaces.iter().cloned());
        plan.pods
            .extend(cluster.pods.iter().map(|p| (p.clone(), serves.to_vec())));
    }
    Ok(plan)
}

/// The namespaces and pods a run builds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces with the model's labels.
    pub namespaces: Vec<(String, BTreeMap<String, String>)>,
    /// Pods and the ports each serves.
    pub pods: Vec<(ModelPod, Vec<(u16, Protocol)>)>,
}

/// Runs the cases of `suite` through a fresh lab of the seam binaries in `bin_dir` and returns
/// the report. The lab is removed afterwards (unless `keep`), also when this fails.
pub fn run(suite: &Suite, opts: &Options, bin_dir: PathBuf) -> Result<Report> {
    let plan = pods_to_build(suite)?;
    // Removed on SIGINT/SIGTERM too, when the binary asked for that (`teardown_on_signal`).
    crate::register_teardown(&opts.lab);
    let _ = crate::down(&opts.lab);
    eprintln!(
        "== lab {}: {} nodes, {} pods, {} cases",
        opts.lab,
        opts.nodes,
        plan.pods.len(),
        suite.cases.len()
    );
    let mut lab = crate::up(&LabSpec {
        name: opts.lab.clone(),
        nodes: opts.nodes,
        segment_mode: "namespace".into(),
        controller_args: Vec::new(),
        one_process: false,
        store: crate::LabStore::Embedded,
        controllers: 1,
        flows: false,
        bin_dir,
    })
    .step(|| "bring up the lab".to_string())?;
    let result = set_segment_encap(&mut lab, &opts.segment_encap)
        .and_then(|()| Runner::new(&mut lab, opts))
        .and_then(|mut r| r.run(suite, &plan));
    if opts.keep {
        eprintln!("== lab kept: seam lab down --name {} removes it", opts.lab);
    } else if let Err(e) = crate::down(&opts.lab) {
        eprintln!("seam: removing lab {}: {e}", opts.lab);
    }
    crate::unregister_teardown(&opts.lab);
    result
}

/// Restarts every node's agent with `--segment-encap MODE` unless it is seamd's default.
fn set_segment_encap(lab: &mut Lab, mode: &str) -> Result<()> {
    if mode == "cross-subnet" {
        return Ok(());
    }
    let nodes: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    for node in nodes {
        lab.topology()
            .set_segment_encap(&node, mode)
            .step(|| format!("restart {node} with --segment-encap {mode}"))?;
    }
    Ok(())
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
    /// Every namespace and pod built, with the model's labels (a case's overrides are relative
    /// to them).
    plan: Plan,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    policies: BTreeMap<Key, Value>,
    pods: BTreeMap<String, PodInfo>,
    addresses: BTreeMap<String, Ipv4Addr>,
}

fn key_of(doc: &Value) -> Result<Key> {
    let missing = |what: &str| DataplaneError::Failed(format!("policy object without {what}"));
    let kind = doc["kind"].as_str().ok_or_else(|| missing("kind"))?;
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| missing("metadata.name"))?;
    Ok((
        kind.to_string(),
        doc["metadata"]["namespace"].as_str().map(str::to_string),
        name.to_string(),
    ))
}

impl<'a> Runner<'a> {
    fn new(lab: &'a mut Lab, opts: &'a Options) -> Result<Self> {
        let client = lab.client().other()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .other()?;
        // The lab's prefix, so `seam lab down` removes it with the rest.
        let scratch = seam_linux::netns::create(&format!("{}-cmp", lab.name)).other()?;
        Ok(Runner {
            lab,
            opts,
            client,
            rt,
            scratch,
            plan: Plan::default(),
            namespace_labels: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            policies: BTreeMap::new(),
            pods: BTreeMap::new(),
            addresses: BTreeMap::new(),
        })
    }

    fn run(&mut self, suite: &Suite, plan: &Plan) -> Result<Report> {
        self.build(plan)?;
        let mut report = Report::new(Judging::Packets);
        let started = Instant::now();
        let total = suite.cases.len();
        for (i, case) in suite.cases.iter().enumerate() {
            let t0 = Instant::now();
            seam_conformance::check_case(suite, case, self, &mut report)?;
            let status = match report.failure_of(&case.id) {
                Some(line) => {
                    println!("{line}");
                    "FAIL"
                }
                None => "ok",
            };
            eprintln!(
                "   [{}/{}] {} {status} ({} ms)",
                i + 1,
                total,
                case.id,
                t0.elapsed().as_millis()
            );
        }
        eprintln!(
            "== {} cases in {:.1} s",
            total,
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    }

    /// Namespaces, pods, servers; then waits until every pair connects without policy.
    fn build(&mut self, plan: &Plan) -> Result<()> {
        self.plan = plan.clone();
        for (name, labels) in &plan.namespaces {
            self.put_namespace(name, labels)?;
        }
        let nodes: Vec<String> = self.lab.nodes.iter().map(|n| n.name.clone()).collect();
        for (i, (pod, serves)) in plan.pods.iter().enumerate() {
            let node = &nodes[i % nodes.len()];
            let ports: Vec<seam_model::ContainerPort> = pod
                .named_ports()
                .into_iter()
                .filter_map(|(name, port, protocol)| {
                    Some(seam_model::ContainerPort {
                        name,
                        port,
                        protocol: seam_model::PortProtocol::parse(protocol.as_str())?,
                    })
                })
                .collect();
            let info = self
                .lab
                .workloads()
                .add_pod_with(node, &pod.namespace, &pod.name, &pod.labels, &ports)
                .step(|| format!("create pod {}", pod.reference))?;
            for (port, protocol) in serves {
                match protocol {
                    Protocol::Tcp => {
                        probe::serve_tcp(&info.netns_path, *port, pod.reference.clone()).other()?
                    }
                    Protocol::Udp => probe::serve_udp(&info.netns_path, *port).other()?,
                    // std has no SCTP sockets and this kernel has no SCTP: not served, and
                    // every SCTP probe is reported as skipped.
                    _ => {}
                }
            }
            eprintln!("   pod {:<50} {} on {node}", pod.reference, info.ip);
            self.pod_labels
                .insert(pod.reference.clone(), pod.labels.clone());
            self.addresses.insert(pod.reference.clone(), info.ip);
            self.pods.insert(pod.reference.clone(), info);
        }
        // Remote neighbours and FDB entries arrive through the controller: wait until every
        // pair connects on the first TCP port served.
        let Some(port) = plan
            .pods
            .first()
            .and_then(|(_, serves)| serves.iter().find(|(_, pr)| *pr == Protocol::Tcp))
            .map(|(p, _)| *p)
        else {
            return Ok(());
        };
        let refs: Vec<String> = self.pods.keys().cloned().collect();
        let mut pending: Vec<Probe> = refs
            .iter()
            .flat_map(|a| {
                refs.iter().map(move |b| Probe {
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
            let Some(first) = pending.first() else {
                break;
            };
            if Instant::now() >= deadline {
                return Err(DataplaneError::Failed(format!(
                    "{} pair(s) never connected without any policy, e.g. {} -> {}; see the logs under {}",
                    pending.len(),
                    first.from,
                    first.to,
                    self.lab.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("   all {} pairs connect without policy", refs.len().pow(2));
        Ok(())
    }

    fn put_namespace(&mut self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
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
            .step(|| format!("put namespace {name}"))?;
        self.namespace_labels
            .insert(name.to_string(), labels.clone());
        Ok(())
    }

    fn set_pod_labels(&mut self, reference: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        if self.pod_labels.get(reference) == Some(labels) {
            return Ok(());
        }
        let client = &self.client;
        self.rt
            .block_on(client.update::<seam_model::Endpoint, _>(
                seam_model::ObjectKind::Endpoint,
                reference,
                UPDATE_ATTEMPTS,
                |ep| {
                    ep.labels = labels.clone();
                    true
                },
            ))
            .step(|| format!("relabel endpoint {reference}"))?;
        self.pod_labels
            .insert(reference.to_string(), labels.clone());
        Ok(())
    }

    /// Every namespace and pod of the lab with the labels `input`'s case gives them.
    fn apply_labels(&mut self, input: &CaseInput<'_>) -> Result<()> {
        let plan = std::mem::take(&mut self.plan);
        let result = (|| {
            for (name, labels) in &plan.namespaces {
                let want = input.case.namespace_labels.get(name).unwrap_or(labels);
                self.put_namespace(name, want)?;
            }
            for (pod, _) in &plan.pods {
                let want = input
                    .case
                    .pod_labels
                    .get(&pod.reference)
                    .unwrap_or(&pod.labels);
                self.set_pod_labels(&pod.reference, want)?;
            }
            Ok(())
        })();
        self.plan = plan;
        result
    }

    fn replace_policies(&mut self, wanted: BTreeMap<Key, Value>) -> Result<()> {
        let client = &self.client;
        let current = &self.policies;
        self.rt.block_on(async {
            for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
                client
                    .delete_policy(&key.0, key.1.as_deref(), &key.2)
                    .await
                    .step(|| format!("delete {} {}", key.0, key.2))?;
            }
            for (key, doc) in &wanted {
                if current.get(key) != Some(doc) {
                    client
                        .put_policy(&key.0, key.1.as_deref(), &key.2, doc)
                        .await
                        .step(|| format!("put {} {}", key.0, key.2))?;
                }
            }
            Ok::<(), DataplaneError>(())
        })?;
        self.policies = wanted;
        Ok(())
    }

    /// Waits until every node's `table inet seam` is what that node must enforce now.
    fn wait_applied(&self) -> Result<()> {
        let snapshot = self.rt.block_on(self.client.snapshot()).other()?;
        let mut expected = BTreeMap::new();
        for node in &self.lab.nodes {
            let (ruleset, _warnings) = seam_firewall::cluster::node_ruleset(
                &snapshot.tenants,
                &snapshot.namespaces,
                &snapshot.endpoints,
                &snapshot.policies,
                &node.name,
            )
            .step(|| format!("compile {}'s ruleset", node.name))?;
            // A lab whose agents record flows writes the default samples into every rule.
            let text = if self.lab.flows {
                let sampling = seam_nft::rule::FlowSampling::default();
                let model = seam_firewall::render::table::Renderer::with_sampling(Some(sampling))
                    .model(&ruleset);
                seam_nft::table::full_text(&model)
            } else {
                seam_firewall::render(&ruleset)
            };
            let listing = seam_linux::netns::run_in(&self.scratch, || {
                seam_linux::nft::apply_ruleset(&text)?;
                let listed = seam_linux::nft::list_table()?;
                Ok::<_, seam_linux::NftError>(canonical_listing(&parse_listing(listed)?))
            })
            .other()?
            .step(|| {
                format!(
                    "load {}'s expected table into the scratch namespace",
                    node.name
                )
            })?;
            expected.insert(node.name.clone(), listing);
        }
        let deadline = Instant::now() + self.opts.converge;
        let mut pending: Vec<&NodeInfo> = self.lab.nodes.iter().collect();
        loop {
            pending.retain(|node| {
                let actual =
                    seam_linux::netns::run_in(&node.netns_path, seam_linux::nft::list_table)
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|listed| parse_listing(listed).ok())
                        .map(|v| canonical_listing(&v));
                actual.as_ref() != expected.get(&node.name)
            });
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DataplaneError::Failed(format!(
                    "node(s) {} did not apply the case's policies within {:?} (agent logs under {})",
                    pending
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.opts.converge,
                    self.lab.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Makes every probe at once; SCTP probes are skipped.
    fn probe_all(&self, probes: &[Probe], timeout: Duration) -> Vec<Observed> {
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

impl Decider for Runner<'_> {
    type Error = DataplaneError;

    fn judging(&self) -> Judging {
        Judging::Packets
    }

    fn addresses(&self) -> Option<&BTreeMap<String, Ipv4Addr>> {
        Some(&self.addresses)
    }

    fn decide(&mut self, input: &CaseInput<'_>, probes: &[Probe]) -> Result<Vec<Observed>> {
        self.apply_labels(input)?;
        let mut wanted = BTreeMap::new();
        for doc in &input.documents {
            wanted.insert(key_of(doc)?, doc.clone());
        }
        self.replace_policies(wanted)?;
        self.wait_applied()?;
        Ok(self.probe_all(probes, self.opts.timeout))
    }

    fn recheck(
        &mut self,
        _input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Option<Vec<Observed>>> {
        Ok(Some(self.probe_all(probes, self.opts.timeout * 2)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn load(name: &str) -> Value {
        let path = format!(
            "{}/../seam-policy/test_data/netpol/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_lab_holds_both_models_and_serves_their_ports() {
        let model = load("model.json");
        let mut cases = load("cases.json").as_array().unwrap().clone();
        cases.extend(load("anp_cases.json").as_array().unwrap().iter().cloned());
        let suite = Suite::from_json(&Value::Array(cases), &model).unwrap();
        let plan = pods_to_build(&suite).unwrap();
        assert_eq!(plan.namespaces.len(), 3 + 5);
        assert_eq!(plan.namespaces[0].0, "x");
        assert_eq!(plan.pods.len(), 9 + 8, "host-network pods are not built");
        let (xa, serves) = &plan.pods[0];
        assert_eq!(xa.reference, "x/a");
        assert_eq!(serves.len(), 6);
        let (_, anp_serves) = &plan.pods[9];
        assert!(anp_serves.contains(&(8080, Protocol::Tcp)));

        let mut no_servers = model.clone();
        no_servers.as_object_mut().unwrap().remove("servers");
        let suite = Suite::from_json(&load("cases.json"), &no_servers).unwrap();
        assert_eq!(
            pods_to_build(&suite).unwrap_err().to_string(),
            "model: .servers: is missing"
        );
    }
}
