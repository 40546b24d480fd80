//! The expectation check: every case's probes, decided by a [`Decider`] and judged against the
//! case file's expectations.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{evaluate, Flow, FlowEnd, Inventory, PolicySet, Reason, Verdict};
use serde_json::Value;

use crate::case::{Case, Probe, Suite};
use crate::json::CASES;
use crate::model::Cluster;
use crate::report::{CaseOutcome, Report};
use crate::symbols::{policy_documents, policy_set};
use crate::ConformanceError;

/// How the probes of a run are judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Judging {
    /// Decisions of a model (the engine, the compiled IR): every probe counts, and an error of
    /// the decider stops the run.
    #[default]
    Decisions,
    /// Real packets: self pairs that never cross a firewall are not counted, probes that cannot
    /// be made are skipped, and an error of the decider fails that case only.
    Packets,
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A model decided; `why` explains it in a failure line.
    Decided {
        /// Whether the connection is allowed.
        allowed: bool,
        /// The decision's reasons, e.g. `egress allow (…) ingress deny (…)`.
        why: String,
    },
    /// Connected (TCP handshake, UDP echo).
    Connected,
    /// Refused (RST, ICMP port unreachable).
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Another failure.
    Failed(String),
    /// Not probed: the protocol cannot be probed here (SCTP without kernel support).
    Skipped,
}

/// One case, ready for a decider: its policies with the decider's addresses in them, as the
/// engine's set and as the documents to apply, and the inventory of the model at this step.
#[derive(Debug, Clone)]
pub struct CaseInput<'a> {
    /// The case.
    pub case: &'a Case,
    /// The model it runs on.
    pub cluster: &'a Cluster,
    /// Pod addresses by `ns/pod`.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// The model with the case's labels, pods at `addresses`.
    pub inventory: Inventory,
    /// The policies, as the engine's set.
    pub policies: PolicySet,
    /// The policy objects with the addresses substituted, as written to an API.
    pub documents: Vec<Value>,
}

impl<'a> CaseInput<'a> {
    /// Builds the input of `case` with pods at `addresses`. `Ok(Err(why))`: the engine refuses the
    /// case's policies, which fails the case.
    pub fn new(
        case: &'a Case,
        cluster: &'a Cluster,
        addresses: BTreeMap<String, Ipv4Addr>,
    ) -> Result<Result<CaseInput<'a>, String>, ConformanceError> {
        let inventory = cluster.inventory(case, &addresses)?;
        let built = policy_documents(&case.policies, &addresses).and_then(|documents| {
            policy_set(&case.policies, &addresses).map(|policies| (policies, documents))
        });
        Ok(built.map(|(policies, documents)| CaseInput {
            case,
            cluster,
            addresses,
            inventory,
            policies,
            documents,
        }))
    }
}

/// What decides whether a probe passes: the policy engine ([`Engine`]), the compiled IR, a
/// kernel with the rules loaded, a lab.
pub trait Decider {
    /// Why the decider stops.
    type Error: std::error::Error + From<ConformanceError>;

    /// How its observations are judged.
    fn judging(&self) -> Judging {
        Judging::Decisions
    }

    /// The pods' addresses; `None`: the model's reference plan.
    fn addresses(&self) -> Option<&BTreeMap<String, Ipv4Addr>> {
        None
    }

    /// Decides every probe of one case, one observation per probe, in order.
    fn decide(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, Self::Error>;

    /// A second look at the probes whose first observation mismatched (upstream retries a
    /// failing matrix once); `None`: the first observations stand.
    fn recheck(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Option<Vec<Observed>>, Self::Error> {
        let _ = (input, probes);
        Ok(None)
    }
}

/// Runs every case of `suite` through `decider` and judges the observations. Fails only on
/// malformed input or a decider's error (with [`Judging::Decisions`]).
pub fn check<D: Decider + ?Sized>(suite: &Suite, decider: &mut D) -> Result<Report, D::Error> {
    let mut report = Report::new(decider.judging());
    for case in &suite.cases {
        check_case(suite, case, decider, &mut report)?;
    }
    Ok(report)
}

/// Runs one case of `suite` through `decider` and records it in `report` (for runners that
/// report progress case by case; [`check`] is the loop).
pub fn check_case<D: Decider + ?Sized>(
    suite: &Suite,
    case: &Case,
    decider: &mut D,
    report: &mut Report,
) -> Result<(), D::Error> {
    let judging = decider.judging();
    let Some(cluster) = suite.model.cluster(case) else {
        // Suite::from_json reads every model its cases need.
        return Err(CASES.err(&case.id, "no model for this case").into());
    };
    let addresses = decider
        .addresses()
        .unwrap_or(&cluster.reference_plan)
        .clone();
    let input = match CaseInput::new(case, cluster, addresses)? {
        Ok(input) => input,
        Err(why) => {
            match judging {
                Judging::Decisions => report.record(
                    &case.id,
                    CaseOutcome {
                        mismatches: vec![format!("policies rejected: {why}")],
                        ..CaseOutcome::default()
                    },
                ),
                Judging::Packets => {
                    report.fail(&case.id, &format!("policies rejected by the engine: {why}"))
                }
            }
            return Ok(());
        }
    };
    match observe_case(&input, decider) {
        Ok(outcome) => report.record(&case.id, outcome),
        // With packets a case that could not be run (the nodes never applied its policies, …)
        // fails and the others still run.
        Err(e) if judging == Judging::Packets => report.fail(&case.id, &chain(&e)),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn observe_case<D: Decider + ?Sized>(
    input: &CaseInput<'_>,
    decider: &mut D,
) -> Result<CaseOutcome, D::Error> {
    let case = input.case;
    let observed = decider.decide(input, &case.probes)?;
    let missing = Observed::Failed("the decider gave no observation".into());
    let mut outcome = CaseOutcome::default();
    let mut retry = Vec::new();
    for (i, p) in case.probes.iter().enumerate() {
        let o = observed.get(i).unwrap_or(&missing);
        let mut trial = CaseOutcome::default();
        judge(case, p, o, &mut trial);
        if trial.mismatches.is_empty() {
            judge(case, p, o, &mut outcome);
        } else {
            retry.push(i);
        }
    }
    if retry.is_empty() {
        return Ok(outcome);
    }
    let again: Vec<Probe> = retry.iter().map(|i| case.probes[*i].clone()).collect();
    let second = decider.recheck(input, &again)?;
    for (k, p) in again.iter().enumerate() {
        let o = match &second {
            Some(obs) => obs.get(k).unwrap_or(&missing),
            None => observed.get(retry[k]).unwrap_or(&missing),
        };
        judge(case, p, o, &mut outcome);
    }
    Ok(outcome)
}

/// Judges one probe. A decision must equal the expectation (a mismatch on a self pair upstream
/// does not enforce is ignored). With packets, a NetworkPolicy probe is blocked by any failure;
/// an ANP probe expected denied must time out (a refusal means the packet was rejected, not
/// dropped); and a self pair expected denied cannot be checked.
pub fn judge(case: &Case, probe: &Probe, observed: &Observed, out: &mut CaseOutcome) {
    let self_pair = probe.from == probe.to;
    let want = |yes: &str, no: &str| {
        format!(
            "{}->{} {}/{}: want {}",
            probe.from,
            probe.to,
            probe.port,
            probe.protocol.as_str(),
            if probe.expected { yes } else { no }
        )
    };
    if let Observed::Decided { allowed, why } = observed {
        if *allowed == probe.expected {
            out.checked += 1;
        } else if self_pair && !case.self_enforced {
            out.ignored_self += 1;
        } else {
            out.mismatches
                .push(format!("{}, got {why}", want("allow", "deny")));
        }
        return;
    }
    if *observed == Observed::Skipped {
        out.skipped += 1;
        return;
    }
    let connected = *observed == Observed::Connected;
    if self_pair && !probe.expected && !connected {
        out.checked += 1;
        return;
    }
    if self_pair && !probe.expected {
        if case.self_enforced {
            out.uncheckable_self += 1;
        } else {
            out.ignored_self += 1;
        }
        return;
    }
    let bad = if probe.expected {
        !connected
    } else {
        connected || (case.anp && *observed == Observed::Refused)
    };
    if bad {
        let denied = if case.anp {
            "drop (timeout)"
        } else {
            "blocked"
        };
        out.mismatches.push(format!(
            "{}, got {}",
            want("connect", denied),
            match observed {
                Observed::Connected => "connected".to_string(),
                Observed::Refused => "refused".to_string(),
                Observed::TimedOut => "timeout".to_string(),
                Observed::Failed(e) => format!("error: {e}"),
                Observed::Skipped | Observed::Decided { .. } => "skipped".to_string(),
            }
        ));
    } else {
        out.checked += 1;
    }
}

/// The policy engine (`seam_policy::evaluate`) as a decider: the reference.
#[derive(Debug, Clone, Copy)]
pub struct Engine {
    explain: fn(&Reason) -> String,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            explain: |r| format!("{r:?}"),
        }
    }
}

impl Engine {
    /// The engine, failure lines explaining reasons with `explain` (`seam explain`'s wording).
    pub fn explained_by(explain: fn(&Reason) -> String) -> Engine {
        Engine { explain }
    }

    /// The observation of a verdict.
    pub fn observe(&self, verdict: &Verdict) -> Observed {
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        Observed::Decided {
            allowed: verdict.allowed(),
            why: format!(
                "egress {} ({}) ingress {} ({})",
                word(verdict.egress.allowed()),
                (self.explain)(&verdict.egress.reason),
                word(verdict.ingress.allowed()),
                (self.explain)(&verdict.ingress.reason),
            ),
        }
    }
}

/// The flow a probe stands for.
pub fn flow(probe: &Probe) -> Flow {
    Flow {
        src: FlowEnd::Endpoint(probe.from.clone()),
        dst: FlowEnd::Endpoint(probe.to.clone()),
        protocol: probe.protocol,
        port: probe.port,
    }
}

impl Decider for Engine {
    type Error = ConformanceError;

    fn decide(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, ConformanceError> {
        probes
            .iter()
            .map(|p| {
                let verdict = evaluate(&input.policies, &input.inventory, &flow(p))
                    .map_err(|e| CASES.err("probe", e.to_string()))?;
                Ok(self.observe(&verdict))
            })
            .collect()
    }
}
