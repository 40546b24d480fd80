//! [`LabGuard`]: a lab that goes away with its holder, for tests and benchmarks.

use crate::error::Result;
use crate::state::Lab;
use crate::topology::{down, up, LabSpec};

/// Lines of each log shown when a guard is dropped during a panic.
const CONTROLLER_LOG_TAIL: usize = 10;
const AGENT_LOG_TAIL: usize = 25;

/// A running lab that is torn down when dropped: after an error, an early return or a panic
/// (a failing test). During a panic the tails of the lab's logs are printed first, because the
/// logs go with the lab.
#[derive(Debug)]
pub struct LabGuard {
    /// The lab.
    pub lab: Lab,
    done: bool,
}

impl LabGuard {
    /// Builds the lab of `spec` after removing whatever an earlier run left under its name (a
    /// killed test or benchmark never cleaned up).
    pub fn new(spec: &LabSpec) -> Result<LabGuard> {
        let _ = down(&spec.name);
        Ok(LabGuard {
            lab: up(spec)?,
            done: false,
        })
    }

    /// Tears the lab down now and says whether that worked.
    pub fn finish(mut self) -> Result<()> {
        self.done = true;
        down(&self.lab.name)
    }

    /// The last lines of the controllers', etcd members' and agents' logs.
    fn print_log_tails(&self) {
        let replicas = self.lab.replicas.iter().map(|r| r.log.clone());
        let etcd = self.lab.etcd.iter().map(|m| m.log.clone());
        for log in replicas.chain(etcd) {
            print_tail(&log, CONTROLLER_LOG_TAIL);
        }
        for node in &self.lab.nodes {
            print_tail(&node.agent_log.with_extension("log.prev"), AGENT_LOG_TAIL);
            print_tail(&node.agent_log, AGENT_LOG_TAIL);
        }
    }
}

fn print_tail(log: &std::path::Path, lines: usize) {
    if let Ok(text) = std::fs::read_to_string(log) {
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        eprintln!("--- {} (last lines)", log.display());
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if std::thread::panicking() {
            self.print_log_tails();
        }
        if let Err(e) = down(&self.lab.name) {
            eprintln!("lab down {}: {e}", self.lab.name);
        }
    }
}
