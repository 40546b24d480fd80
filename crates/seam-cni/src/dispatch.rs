//! One plug-in invocation: environment and stdin in, stdout and exit status out.
//!
//! This is the only place errors become CNI error objects (code, `msg`, `details`, nonzero
//! exit). Nothing here reads the process environment or writes to stdout, so every path is
//! testable in-process; the binary only gathers inputs and prints the [`Outcome`].

use std::ffi::OsString;
use std::io;

use seam_model::agent_rpc::{
    AgentOp, AgentReply, AgentRequest, AttachResult, Attachment, AttachmentId, AttachmentKey,
    MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

use crate::agent_client::{AgentTransport, UnixTransport};
use crate::env::{self, AttachmentEnv, Command, EnvVars};
use crate::error::{CheckMismatch, Error, FieldError, FieldProblem, Result};
use crate::netconf::{self, NetConf, VALID_ATTACHMENTS};
use crate::result::{self, CniResult};
use crate::version::CniVersion;

/// What one invocation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Everything to print on stdout: a CNI result, a version object, an error object, or
    /// nothing (DEL, CHECK, GC and STATUS succeed silently).
    pub stdout: String,
    /// Process exit status: 0 on success, 1 with an error object on stdout.
    pub exit_code: u8,
    /// Debug lines for stderr; empty unless `SEAM_CNI_LOG=debug`.
    pub log: Vec<String>,
}

/// Runs one invocation with the process's raw environment and the result of reading stdin,
/// as the binary gathers them.
pub fn run_process(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    stdin: io::Result<Vec<u8>>,
) -> Outcome {
    let inputs = env::collect_os_vars(vars).and_then(|vars| {
        let stdin = stdin.map_err(Error::ReadStdin)?;
        Ok((vars, stdin))
    });
    match inputs {
        Ok((vars, stdin)) => run(&vars, &stdin),
        Err(e) => failure(CniVersion::LATEST, &e, Vec::new()),
    }
}

/// Runs one invocation against the agent socket named in the config.
pub fn run(vars: &EnvVars, stdin: &[u8]) -> Outcome {
    run_with(vars, stdin, &UnixTransport)
}

/// Runs one invocation with the given agent transport (tests pass a fake).
pub fn run_with(vars: &EnvVars, stdin: &[u8], transport: &dyn AgentTransport) -> Outcome {
    let mut call = Invocation {
        transport,
        log: Log(env::debug_log(vars).then(Vec::new)),
        reply_version: CniVersion::LATEST,
    };
    match call.execute(vars, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
            log: call.log.into_lines(),
        },
        Err(e) => {
            call.log
                .line(|| format!("failed with code {}: {e:?}", e.code()));
            failure(call.reply_version, &e, call.log.into_lines())
        }
    }
}

/// The CNI error object for `e`, printed on stdout with exit status 1.
fn failure(version: CniVersion, e: &Error, log: Vec<String>) -> Outcome {
    // `msg` carries the whole cause chain: runtimes show only `msg` in events and logs, and
    // "not reachable at /run/seam/seamd.sock" is not actionable without "connection refused".
    let mut object = json!({
        "cniVersion": version.as_str(),
        "code": e.code(),
        "msg": e.message(),
    });
    let details = details(e);
    if !details.is_empty() {
        object["details"] = Value::String(details);
    }
    Outcome {
        stdout: format!("{object}\n"),
        exit_code: 1,
        log,
    }
}

/// The `details` of a CNI error: what to do about it, or the agent's own details.
fn details(e: &Error) -> String {
    match e {
        Error::Agent(agent) => agent.details.clone(),
        Error::AgentUnreachable { .. } | Error::AgentNotAvailable(_) => {
            "check that seamd runs on this node and that agentSocket in the network config names its socket".to_string()
        }
        Error::IncompatibleVersion { .. } | Error::CommandNeedsNewerVersion { .. } => {
            format!("supported versions: {}", CniVersion::supported_list())
        }
        _ => String::new(),
    }
}

/// Debug lines, collected only when logging is on (the closure is not even run otherwise).
struct Log(Option<Vec<String>>);

impl Log {
    fn line(&mut self, text: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.0 {
            lines.push(text());
        }
    }

    fn into_lines(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

/// State of one invocation.
struct Invocation<'t> {
    transport: &'t dyn AgentTransport,
    log: Log,
    /// The version to write an error in: the config's when it is supported.
    reply_version: CniVersion,
}

impl Invocation<'_> {
    fn execute(&mut self, vars: &EnvVars, stdin: &[u8]) -> Result<String> {
        let command = env::command(vars)?;
        self.log.line(|| format!("seam-cni {command}"));
        if command == Command::Version {
            return Ok(version_object(stdin));
        }

        // Too big is permanent (code 7): sent on, it would break the agent connection half-way,
        // which the runtime is told to retry.
        if stdin.len() > MAX_REQUEST_BYTES {
            return Err(Error::InvalidConfig(vec![FieldError::new(
                "",
                FieldProblem::TooLarge {
                    bytes: stdin.len(),
                    max: MAX_REQUEST_BYTES,
                },
            )]));
        }
        let config = netconf::decode(stdin)?;
        if let Some(v) = netconf::requested_version(&config) {
            self.reply_version = v;
        }
        let conf = NetConf::from_value(&config)?;
        if !conf.capabilities.is_empty() {
            self.log.line(|| {
                "capabilities declared, but seam-cni implements none; runtimeConfig is ignored"
                    .to_string()
            });
        }
        let timeout = env::timeout(vars)?;
        let call = |this: &mut Self, op: AgentOp| -> Result<AgentReply> {
            let request = AgentRequest {
                protocol: PROTOCOL_VERSION,
                op,
            };
            this.log.line(|| {
                format!(
                    "calling seam agent at {}: {}",
                    conf.agent_socket.display(),
                    serde_json::to_string(&request).unwrap_or_default()
                )
            });
            let bytes = serde_json::to_vec(&request).map_or(0, |line| line.len() + 1);
            if bytes > MAX_REQUEST_BYTES {
                return Err(Error::RequestTooLarge {
                    bytes,
                    max: MAX_REQUEST_BYTES,
                });
            }
            let reply = this.transport.call(&conf.agent_socket, timeout, &request)?;
            this.log.line(|| format!("seam agent replied: {reply:?}"));
            Ok(reply)
        };

        match command {
            Command::Add => {
                let att = env::attachment_env(command, vars)?;
                match call(self, AgentOp::Add(attachment(&conf, att)))? {
                    AgentReply::Attached(r) => {
                        let result = result::add_result(
                            conf.cni_version,
                            &r,
                            conf.dns.as_ref(),
                            conf.prev_result.as_ref(),
                        );
                        let text = serde_json::to_string(&result).map_err(Error::EncodeResult)?;
                        Ok(format!("{text}\n"))
                    }
                    other => Err(reply_error(command, other)),
                }
            }
            Command::Del => {
                let att = env::attachment_env(command, vars)?;
                let id = AttachmentId {
                    network: conf.name.clone(),
                    key: AttachmentKey {
                        container_id: att.container_id,
                        ifname: att.ifname,
                    },
                    netns: att.netns,
                };
                match call(self, AgentOp::Del(id))? {
                    AgentReply::Done => Ok(String::new()),
                    other => Err(reply_error(command, other)),
                }
            }
            Command::Check => {
                require_version(command, conf.cni_version, CniVersion::V0_4_0)?;
                let Some(prev) = conf.prev_result.as_ref() else {
                    return Err(Error::InvalidConfig(vec![FieldError::new(
                        "prevResult",
                        FieldProblem::Missing,
                    )]));
                };
                if conf.disable_check {
                    self.log
                        .line(|| "disableCheck is set; CHECK does nothing".to_string());
                    return Ok(String::new());
                }
                let att = env::attachment_env(command, vars)?;
                match call(self, AgentOp::Check(attachment(&conf, att)))? {
                    AgentReply::Attached(r) => {
                        check_prev_result(prev, &r)?;
                        Ok(String::new())
                    }
                    other => Err(reply_error(command, other)),
                }
            }
            Command::Gc => {
                require_version(command, conf.cni_version, CniVersion::V1_1_0)?;
                if conf.disable_gc {
                    self.log
                        .line(|| "disableGC is set; GC does nothing".to_string());
                    return Ok(String::new());
                }
                // Without the list, GC would release every attachment of the network; the
                // runtime always sends it, so its absence is a broken config, not "none valid".
                let Some(valid) = conf.valid_attachments.clone() else {
                    return Err(Error::InvalidConfig(vec![FieldError::new(
                        VALID_ATTACHMENTS,
                        FieldProblem::Missing,
                    )]));
                };
                let op = AgentOp::Gc {
                    network: conf.name.clone(),
                    valid,
                };
                match call(self, op)? {
                    AgentReply::Done => Ok(String::new()),
                    other => Err(reply_error(command, other)),
                }
            }
            Command::Status => {
                require_version(command, conf.cni_version, CniVersion::V1_1_0)?;
                let op = AgentOp::Status {
                    network: conf.name.clone(),
                };
                // STATUS reports "not available" (50) rather than "try again" (11): the runtime
                // then marks the network not ready instead of retrying a call.
                let reply = call(self, op).map_err(|e| match e {
                    Error::AgentUnreachable { .. }
                    | Error::AgentTimeout { .. }
                    | Error::AgentIo { .. }
                    | Error::AgentNoReply { .. } => Error::AgentNotAvailable(Box::new(e)),
                    other => other,
                })?;
                match reply {
                    AgentReply::Done => Ok(String::new()),
                    other => Err(reply_error(command, other)),
                }
            }
            Command::Version => Ok(version_object(stdin)),
        }
    }
}

/// The agent's attachment request for ADD and CHECK.
fn attachment(conf: &NetConf, att: AttachmentEnv) -> Attachment {
    Attachment {
        network: conf.name.clone(),
        key: AttachmentKey {
            container_id: att.container_id,
            ifname: att.ifname,
        },
        netns: att.netns,
        namespace: att
            .args
            .pod_namespace
            .unwrap_or_else(|| conf.default_namespace.clone()),
        pod_name: att.args.pod_name,
        segment: conf.segment.clone(),
        labels: conf.labels.clone(),
        ports: conf.ports.clone(),
    }
}

/// Turns a non-success reply into an error: the agent's own error, or a protocol mismatch.
fn reply_error(command: Command, reply: AgentReply) -> Error {
    match reply {
        AgentReply::Error(e) => Error::Agent(e),
        AgentReply::Attached(_) => Error::UnexpectedReply {
            command,
            reply: "attached",
        },
        AgentReply::Done => Error::UnexpectedReply {
            command,
            reply: "done",
        },
    }
}

fn require_version(command: Command, version: CniVersion, minimum: CniVersion) -> Result<()> {
    if version < minimum {
        return Err(Error::CommandNeedsNewerVersion {
            command,
            version,
            minimum,
        });
    }
    Ok(())
}

/// CHECK: the runtime's record (`prevResult`) must list the address and sandbox interface the
/// agent holds; the agent has already verified the kernel side.
fn check_prev_result(prev: &CniResult, attached: &AttachResult) -> Result<()> {
    let address = ipnet::IpNet::V4(attached.address);
    if !prev.ips.iter().any(|ip| ip.address == address) {
        return Err(Error::PrevResultMismatch(CheckMismatch::AddressMissing {
            address: address.to_string(),
        }));
    }
    let has_interface = prev.interfaces.iter().any(|i| {
        i.name == attached.container_ifname && i.sandbox.as_deref() == Some(&attached.sandbox)
    });
    if !has_interface {
        return Err(Error::PrevResultMismatch(CheckMismatch::InterfaceMissing {
            ifname: attached.container_ifname.clone(),
            sandbox: attached.sandbox.clone(),
        }));
    }
    Ok(())
}

/// VERSION's answer. The config on stdin is optional here and only its `cniVersion` is read,
/// echoed when supported: a runtime probing versions must get an answer, not a config error.
fn version_object(stdin: &[u8]) -> String {
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .as_ref()
        .and_then(netconf::requested_version)
        .unwrap_or(CniVersion::LATEST);
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    format!(
        "{}\n",
        json!({ "cniVersion": version.as_str(), "supportedVersions": supported })
    )
}

#[cfg(test)]
mod tests;
