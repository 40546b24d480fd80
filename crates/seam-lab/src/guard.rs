//! [`LabGuard`]: a lab that goes away with its holder, for tests and benchmarks; and the one
//! teardown on SIGINT/SIGTERM: labs are registered while they exist ([`register_teardown`];
//! every guard registers its own), and a binary that wants them removed when it is interrupted
//! opts in once with [`teardown_on_signal`]. Nothing here exits the process unless a binary
//! called that.

use std::sync::Mutex;

use crate::error::{LabError, Result};
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
    /// The lab is registered for [`teardown_on_signal`] before it is built, so a signal during
    /// `up` removes what was made so far.
    pub fn new(spec: &LabSpec) -> Result<LabGuard> {
        register_teardown(&spec.name);
        let _ = down(&spec.name);
        match up(spec) {
            Ok(lab) => Ok(LabGuard { lab, done: false }),
            Err(e) => {
                unregister_teardown(&spec.name);
                Err(e)
            }
        }
    }

    /// Tears the lab down now and says whether that worked.
    pub fn finish(mut self) -> Result<()> {
        self.done = true;
        let result = down(&self.lab.name);
        unregister_teardown(&self.lab.name);
        result
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
        unregister_teardown(&self.lab.name);
    }
}

/// Labs (or name prefixes of namespaces, which [`down`] removes alike) to remove on a signal.
static TEARDOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn with_teardown<T>(f: impl FnOnce(&mut Vec<String>) -> T) -> T {
    // A panic while holding the lock leaves a list that is still right: keep using it.
    match TEARDOWN.lock() {
        Ok(mut list) => f(&mut list),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// Registers lab `name` (anything [`down`] removes by that name) for removal when the process is
/// interrupted, should its binary have called [`teardown_on_signal`]; without that, nothing
/// happens.
pub fn register_teardown(name: &str) {
    with_teardown(|list| {
        if !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
    });
}

/// Takes lab `name` off the list of [`register_teardown`] (it is gone, or it is kept on purpose).
pub fn unregister_teardown(name: &str) {
    with_teardown(|list| list.retain(|n| n != name));
}

/// For binaries: on SIGINT or SIGTERM (and SIGHUP when `hangup`), call `before` with the
/// registered labs (to say why, and to stop what the binary started itself), remove each of
/// them (`failed` hears of any that could not be), then exit with status 130 as an interrupted
/// command does. Call it once, before the first lab is built; the library never installs it by
/// itself.
pub fn teardown_on_signal(
    hangup: bool,
    before: impl FnOnce(&[String]) + Send + 'static,
    failed: impl Fn(&str, &LabError) + Send + 'static,
) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let caught = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return false;
            };
            // Only listened to when asked: listening replaces SIGHUP's default (exit).
            let mut hup = match hangup {
                true => match signal(SignalKind::hangup()) {
                    Ok(hup) => Some(hup),
                    Err(_) => return false,
                },
                false => None,
            };
            tokio::select! {
                _ = int.recv() => true,
                _ = term.recv() => true,
                Some(_) = async { hup.as_mut()?.recv().await } => true,
            }
        });
        if !caught {
            return;
        }
        let labs = with_teardown(std::mem::take);
        before(&labs);
        for name in &labs {
            if let Err(e) = down(name) {
                failed(name, &e);
            }
        }
        std::process::exit(130);
    });
}
