//! What a run found: passed cases, one line per failing case, and what was not checked.

use crate::check::Judging;

/// The verdicts of one case's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseOutcome {
    /// Probes whose outcome disagrees with the expectation, one line each.
    pub mismatches: Vec<String>,
    /// Probes that were checked and agree.
    pub checked: usize,
    /// Probes not made ([`Observed::Skipped`](crate::Observed::Skipped)).
    pub skipped: usize,
    /// Self-pair mismatches not counted because upstream does not enforce them.
    pub ignored_self: usize,
    /// Self pairs expected denied where upstream enforces them, seen with real packets: a pod
    /// probing its own address never leaves its namespace (upstream probes through a Service,
    /// i.e. hairpin), so no firewall can be checked; neither passed nor failed.
    pub uncheckable_self: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// How the probes were judged (the summary line differs).
    pub judging: Judging,
    /// Cases whose every probe matched.
    pub passed: usize,
    /// One line per failing case: `FAIL <id>: …`.
    pub failures: Vec<String>,
    /// Cases with no probe that could be made (packets only: SCTP-only cases without SCTP).
    pub skipped_cases: Vec<String>,
    /// Probes not made.
    pub skipped_probes: usize,
    /// See [`CaseOutcome::ignored_self`].
    pub ignored_self: usize,
    /// See [`CaseOutcome::uncheckable_self`].
    pub uncheckable_self: usize,
}

impl Report {
    /// An empty report for a run judged so.
    pub fn new(judging: Judging) -> Report {
        Report {
            judging,
            ..Report::default()
        }
    }

    /// Adds one case's outcome.
    pub fn record(&mut self, id: &str, outcome: CaseOutcome) {
        self.skipped_probes += outcome.skipped;
        self.ignored_self += outcome.ignored_self;
        self.uncheckable_self += outcome.uncheckable_self;
        if let Some(first) = outcome.mismatches.first() {
            self.failures.push(format!(
                "FAIL {id}: {} mismatch(es); first: {first}",
                outcome.mismatches.len()
            ));
        } else if outcome.checked == 0 && self.judging == Judging::Packets {
            // Nothing was observed: a case without a probe made is not a pass.
            self.skipped_cases.push(id.to_string());
        } else {
            self.passed += 1;
        }
    }

    /// Records a case that could not be run (its policies were refused, the nodes never applied
    /// them, …) as failed.
    pub fn fail(&mut self, id: &str, why: &str) {
        self.failures.push(format!("FAIL {id}: {why}"));
    }

    /// The failing line of the last case recorded, if it failed.
    pub fn failure_of(&self, id: &str) -> Option<&str> {
        self.failures
            .last()
            .map(String::as_str)
            .filter(|l| l.starts_with(&format!("FAIL {id}:")))
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The closing line: `N passed, M failed`, then what was not checked.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed());
        match self.judging {
            Judging::Decisions => {
                if self.ignored_self > 0 {
                    s.push_str(&format!(
                        " ({} self-pair mismatches ignored where upstream ignores them)",
                        self.ignored_self
                    ));
                }
            }
            Judging::Packets => {
                let mut notes = Vec::new();
                if !self.skipped_cases.is_empty() {
                    notes.push(format!(
                        "{} case(s) skipped, every probe SCTP: {}",
                        self.skipped_cases.len(),
                        self.skipped_cases.join(", ")
                    ));
                }
                if self.skipped_probes > 0 {
                    notes.push(format!(
                        "{} SCTP probe(s) skipped, not passed: this kernel has no SCTP sockets",
                        self.skipped_probes
                    ));
                }
                if self.uncheckable_self > 0 {
                    notes.push(format!(
                        "{} self-pair denials not checkable: a pod probing its own address never crosses the firewall",
                        self.uncheckable_self
                    ));
                }
                if self.ignored_self > 0 {
                    notes.push(format!(
                        "{} self-pair denials ignored where upstream ignores them",
                        self.ignored_self
                    ));
                }
                if !notes.is_empty() {
                    s.push_str(&format!(" ({})", notes.join("; ")));
                }
            }
        }
        s
    }
}
