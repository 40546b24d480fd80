//! The `CNI_*` environment variables, validated.
//!
//! The environment arrives as a plain map (see [`EnvVars`]) so that tests never touch the
//! process environment; the binary collects it with [`collect_os_vars`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::args::CniArgs;
use crate::error::{EnvError, EnvProblem, Error, Result};

/// The process environment as the plug-in sees it: variable name to value.
pub type EnvVars = BTreeMap<String, String>;

/// `CNI_COMMAND`.
pub const CNI_COMMAND: &str = "CNI_COMMAND";
/// `CNI_CONTAINERID`.
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
/// `CNI_NETNS`.
pub const CNI_NETNS: &str = "CNI_NETNS";
/// `CNI_IFNAME`.
pub const CNI_IFNAME: &str = "CNI_IFNAME";
/// `CNI_ARGS`.
pub const CNI_ARGS: &str = "CNI_ARGS";
/// Timeout for one agent call in milliseconds (seam-specific).
pub const SEAM_CNI_TIMEOUT_MS: &str = "SEAM_CNI_TIMEOUT_MS";
/// `debug` turns on the debug log on stderr (seam-specific).
pub const SEAM_CNI_LOG: &str = "SEAM_CNI_LOG";

/// Default timeout for one agent call: ADD may wait for an address lease and a dataplane change.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest accepted `SEAM_CNI_TIMEOUT_MS`.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// A CNI verb from `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Release attachments the runtime no longer uses (1.1.0).
    Gc,
    /// Report whether ADD can succeed now (1.1.0).
    Status,
    /// Report the supported versions.
    Version,
}

impl Command {
    /// The verb as `CNI_COMMAND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns the raw process environment into [`EnvVars`].
///
/// Only `CNI_*` and `SEAM_CNI_*` variables are kept; one of those that is not UTF-8 is an
/// error (code 4) rather than being mangled, because a lossy conversion could turn an
/// unusable interface name into a different, valid-looking one.
pub fn collect_os_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<EnvVars> {
    let mut out = EnvVars::new();
    let mut errors = Vec::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !(name.starts_with("CNI_") || name.starts_with("SEAM_CNI_")) {
            continue;
        }
        match value.into_string() {
            Ok(value) => {
                out.insert(name, value);
            }
            Err(raw) => errors.push(EnvError {
                name: static_name(&name),
                value: raw.to_string_lossy().into_owned(),
                problem: EnvProblem::NotUtf8,
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::InvalidEnv(errors))
    }
}

/// Maps a variable name to its constant, so [`EnvError::name`] can stay `&'static str`.
fn static_name(name: &str) -> &'static str {
    [
        CNI_COMMAND,
        CNI_CONTAINERID,
        CNI_NETNS,
        CNI_IFNAME,
        CNI_ARGS,
        SEAM_CNI_TIMEOUT_MS,
        SEAM_CNI_LOG,
    ]
    .into_iter()
    .find(|known| *known == name)
    .unwrap_or("CNI_* variable")
}

/// Reads `CNI_COMMAND`.
pub fn command(vars: &EnvVars) -> Result<Command> {
    let value = vars.get(CNI_COMMAND).map(String::as_str);
    let command = match value {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("GC") => Command::Gc,
        Some("STATUS") => Command::Status,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(Error::InvalidEnv(vec![EnvError {
                name: CNI_COMMAND,
                value: other.to_string(),
                problem: EnvProblem::UnknownCommand,
            }]))
        }
        None => {
            return Err(Error::InvalidEnv(vec![EnvError {
                name: CNI_COMMAND,
                value: String::new(),
                problem: EnvProblem::Missing,
            }]))
        }
    };
    Ok(command)
}

/// Reads `SEAM_CNI_TIMEOUT_MS`, defaulting to [`DEFAULT_TIMEOUT`].
pub fn timeout(vars: &EnvVars) -> Result<Duration> {
    let Some(value) = vars.get(SEAM_CNI_TIMEOUT_MS) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match value.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(Error::InvalidEnv(vec![EnvError {
            name: SEAM_CNI_TIMEOUT_MS,
            value: value.clone(),
            problem: EnvProblem::BadTimeout,
        }])),
    }
}

/// True when `SEAM_CNI_LOG=debug`.
pub fn debug_log(vars: &EnvVars) -> bool {
    vars.get(SEAM_CNI_LOG).is_some_and(|v| v == "debug")
}

/// The per-attachment environment of ADD, DEL and CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; empty only on DEL.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
}

/// Validates the attachment variables for `command` (ADD, DEL or CHECK), reporting every
/// problem at once.
///
/// `CNI_NETNS` must be an existing absolute path for ADD and CHECK. On DEL it may be empty or
/// missing (the runtime may have removed the namespace already) and need not exist, but a
/// relative path is still an error.
pub fn attachment_env(command: Command, vars: &EnvVars) -> Result<AttachmentEnv> {
    let mut errors = Vec::new();
    let get = |name: &'static str| vars.get(name).map(String::as_str);

    let container_id = get(CNI_CONTAINERID).unwrap_or_default();
    match get(CNI_CONTAINERID) {
        None => errors.push(missing(CNI_CONTAINERID)),
        Some(value) => {
            if let Err(problem) = check_container_id(value) {
                errors.push(EnvError {
                    name: CNI_CONTAINERID,
                    value: value.to_string(),
                    problem,
                });
            }
        }
    }

    let ifname = get(CNI_IFNAME).unwrap_or_default();
    match get(CNI_IFNAME) {
        None => errors.push(missing(CNI_IFNAME)),
        Some(value) => {
            if let Err(problem) = check_ifname(value) {
                errors.push(EnvError {
                    name: CNI_IFNAME,
                    value: value.to_string(),
                    problem,
                });
            }
        }
    }

    let netns = get(CNI_NETNS).unwrap_or_default();
    let netns_required = command != Command::Del;
    match get(CNI_NETNS) {
        None if netns_required => errors.push(missing(CNI_NETNS)),
        Some("") if netns_required => errors.push(EnvError {
            name: CNI_NETNS,
            value: String::new(),
            problem: EnvProblem::Empty,
        }),
        None | Some("") => {}
        Some(value) => {
            let path = Path::new(value);
            let problem = if !path.is_absolute() {
                Some(EnvProblem::NetnsNotAbsolute)
            } else if netns_required && !path.exists() {
                Some(EnvProblem::NetnsNotFound)
            } else {
                None
            };
            if let Some(problem) = problem {
                errors.push(EnvError {
                    name: CNI_NETNS,
                    value: value.to_string(),
                    problem,
                });
            }
        }
    }

    let args = match CniArgs::parse(get(CNI_ARGS).unwrap_or_default()) {
        Ok(args) => args,
        Err(mut arg_errors) => {
            errors.append(&mut arg_errors);
            CniArgs::default()
        }
    };

    if errors.is_empty() {
        Ok(AttachmentEnv {
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            args,
        })
    } else {
        Err(Error::InvalidEnv(errors))
    }
}

fn missing(name: &'static str) -> EnvError {
    EnvError {
        name,
        value: String::new(),
        problem: EnvProblem::Missing,
    }
}

/// Checks a container id: non-empty, only `[A-Za-z0-9_.-]` (the spec's rule).
pub fn check_container_id(value: &str) -> Result<(), EnvProblem> {
    if value.is_empty() {
        return Err(EnvProblem::Empty);
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(ch) => Err(EnvProblem::ContainerIdChar { ch }),
        None => Ok(()),
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does: 1 to 15 bytes
/// (IFNAMSIZ is 16 with the NUL), no `/`, `:` or whitespace, not `.` or `..`.
pub fn check_ifname(value: &str) -> Result<(), EnvProblem> {
    if value.is_empty() {
        return Err(EnvProblem::Empty);
    }
    if value.len() > 15 {
        return Err(EnvProblem::IfnameTooLong { len: value.len() });
    }
    if value == "." || value == ".." {
        return Err(EnvProblem::IfnameReserved);
    }
    match value
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(ch) => Err(EnvProblem::IfnameChar { ch }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
