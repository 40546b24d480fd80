//! Every way the plug-in can fail, and the CNI error code each one maps to.
//!
//! The mapping to CNI's wire form (code, `msg`, `details`, exit status) happens once, in
//! [`crate::dispatch`]; here each variant only names what failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use seam_model::agent_rpc::AgentError;

use crate::env::Command;
use crate::version::CniVersion;

/// CNI error codes, as the spec's "Error" section numbers them (codes below 100 are reserved
/// for the spec; the agent may pass others through).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plug-in is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Internal error.
    pub const INTERNAL: u32 = 999;

    /// Every code this plug-in produces by itself.
    pub const ALL: [u32; 10] = [
        INCOMPATIBLE_VERSION,
        UNSUPPORTED_FIELD,
        UNKNOWN_CONTAINER,
        INVALID_ENV,
        IO,
        DECODE,
        INVALID_NETWORK_CONFIG,
        TRY_AGAIN_LATER,
        NOT_AVAILABLE,
        INTERNAL,
    ];
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the plug-in failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config asks for a `cniVersion` this plug-in does not speak.
    #[error(
        "cniVersion {requested:?} is not supported; supported versions are {}",
        CniVersion::supported_list()
    )]
    IncompatibleVersion {
        /// The version the config asked for.
        requested: String,
    },
    /// The command exists only in later versions of the spec.
    #[error("{command} is not supported for cniVersion {version}; it needs cniVersion {minimum} or later")]
    CommandNeedsNewerVersion {
        /// The command from `CNI_COMMAND`.
        command: Command,
        /// The config's `cniVersion`.
        version: CniVersion,
        /// The first version that has the command.
        minimum: CniVersion,
    },
    /// One or more `CNI_*` environment variables are missing or malformed.
    #[error("invalid environment variables: {}", JoinDisplay(.0))]
    InvalidEnv(Vec<EnvError>),
    /// Reading stdin failed.
    #[error("cannot read the network config from stdin")]
    ReadStdin(#[source] io::Error),
    /// Stdin is not JSON.
    #[error("network config on stdin is not valid JSON")]
    Decode(#[source] serde_json::Error),
    /// The config is JSON but not a valid seam-cni config; every problem is listed.
    #[error("invalid network config: {}", JoinDisplay(.0))]
    InvalidConfig(Vec<FieldError>),
    /// CHECK: `prevResult` disagrees with what the agent holds for this attachment.
    #[error("prevResult does not match the seam attachment: {0}")]
    PrevResultMismatch(CheckMismatch),
    /// The agent socket could not be connected (missing socket, refused, permission).
    #[error("seam agent is not reachable at {}", path.display())]
    AgentUnreachable {
        /// The agent socket path.
        path: PathBuf,
        /// Why `connect` failed.
        #[source]
        source: io::Error,
    },
    /// STATUS: the agent could not be asked (unreachable, timed out, hung up), so the plug-in
    /// cannot serve ADD.
    #[error("seam-cni is not available")]
    AgentNotAvailable(#[source] Box<Error>),
    /// The agent accepted the connection but did not answer in time.
    #[error("seam agent at {} did not answer within {timeout_ms} ms", path.display())]
    AgentTimeout {
        /// The agent socket path.
        path: PathBuf,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// Sending the request or reading the reply failed half-way.
    #[error("talking to the seam agent at {} failed", path.display())]
    AgentIo {
        /// The agent socket path.
        path: PathBuf,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The agent closed the connection without a reply line (it probably restarted).
    #[error("seam agent at {} closed the connection without replying", path.display())]
    AgentNoReply {
        /// The agent socket path.
        path: PathBuf,
    },
    /// The agent's reply is not an `AgentReply` (protocol mismatch or corruption).
    #[error("seam agent at {} sent an unreadable reply", path.display())]
    AgentReplyDecode {
        /// The agent socket path.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered with a reply kind that does not fit the request.
    #[error("seam agent answered {command} with an unexpected {reply} reply")]
    UnexpectedReply {
        /// The command that was sent.
        command: Command,
        /// The kind of reply received.
        reply: &'static str,
    },
    /// Writing the result as JSON failed (a bug: the result types always serialize).
    #[error("cannot encode the CNI result")]
    EncodeResult(#[source] serde_json::Error),
    /// The request to the agent would be larger than the agent reads (a config just under the
    /// limit with a huge `CNI_CONTAINERID`, say); the same call fails the same way every time.
    #[error("the request to the seam agent would be {bytes} bytes; the agent reads at most {max} (network config and CNI_* values together)")]
    RequestTooLarge {
        /// The encoded request's size.
        bytes: usize,
        /// The agent's limit.
        max: usize,
    },
    /// The agent reported a CNI error; it is passed through unchanged.
    #[error("{}", agent_msg(.0))]
    Agent(AgentError),
}

impl Error {
    /// The message with its whole cause chain, `: `-separated, as CNI's `msg` carries it.
    pub fn message(&self) -> String {
        use std::error::Error as _;
        let mut msg = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            msg.push_str(": ");
            msg.push_str(&cause.to_string());
            source = cause.source();
        }
        msg
    }

    /// The CNI error code for this failure.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } | Error::CommandNeedsNewerVersion { .. } => {
                code::INCOMPATIBLE_VERSION
            }
            Error::InvalidEnv(_) => code::INVALID_ENV,
            Error::ReadStdin(_) => code::IO,
            Error::Decode(_) => code::DECODE,
            Error::InvalidConfig(_)
            | Error::PrevResultMismatch(_)
            | Error::RequestTooLarge { .. } => code::INVALID_NETWORK_CONFIG,
            // The runtime retries ADD and DEL on 11; an agent that is restarting or briefly
            // overloaded is exactly that case.
            Error::AgentUnreachable { .. }
            | Error::AgentTimeout { .. }
            | Error::AgentIo { .. }
            | Error::AgentNoReply { .. } => code::TRY_AGAIN_LATER,
            Error::AgentNotAvailable { .. } => code::NOT_AVAILABLE,
            Error::AgentReplyDecode { .. }
            | Error::UnexpectedReply { .. }
            | Error::EncodeResult(_) => code::INTERNAL,
            // Code 0 means success in CNI, so an agent error claiming it is a bug.
            Error::Agent(e) if e.code == 0 => code::INTERNAL,
            Error::Agent(e) => e.code,
        }
    }
}

/// The agent's message, or a stand-in when it sent none (`msg` must never be empty).
fn agent_msg(e: &AgentError) -> String {
    if e.msg.is_empty() {
        format!(
            "seam agent reported error code {} without a message",
            e.code
        )
    } else {
        e.msg.clone()
    }
}

/// One problem with one environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// The variable, e.g. `CNI_IFNAME`.
    pub name: &'static str,
    /// Its value as given (empty when missing).
    pub value: String,
    /// What is wrong with it.
    pub problem: EnvProblem,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            EnvProblem::Missing => write!(f, "{} is not set", self.name),
            _ => write!(f, "{}={:?}: {}", self.name, self.value, self.problem),
        }
    }
}

/// What is wrong with an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvProblem {
    /// Required and not set.
    #[error("is not set")]
    Missing,
    /// Required and empty.
    #[error("must not be empty")]
    Empty,
    /// The value is not UTF-8.
    #[error("is not valid UTF-8")]
    NotUtf8,
    /// `CNI_COMMAND` is not a CNI verb.
    #[error("expected one of ADD, DEL, CHECK, GC, STATUS, VERSION")]
    UnknownCommand,
    /// `CNI_CONTAINERID` has a character outside `[A-Za-z0-9_.-]`.
    #[error("character {ch:?} is not allowed; use only letters, digits, '_', '.' and '-'")]
    ContainerIdChar {
        /// The offending character.
        ch: char,
    },
    /// `CNI_IFNAME` is longer than the kernel's IFNAMSIZ - 1.
    #[error("is {len} bytes long; Linux interface names are at most 15 bytes")]
    IfnameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// `CNI_IFNAME` has a character the kernel refuses (`dev_valid_name`).
    #[error("character {ch:?} is not allowed in a Linux interface name")]
    IfnameChar {
        /// The offending character.
        ch: char,
    },
    /// `CNI_IFNAME` is `.` or `..`, which the kernel refuses.
    #[error("'.' and '..' are not valid interface names")]
    IfnameReserved,
    /// `CNI_NETNS` is relative.
    #[error("must be an absolute path")]
    NetnsNotAbsolute,
    /// `CNI_NETNS` does not exist.
    #[error("does not exist")]
    NetnsNotFound,
    /// A `CNI_ARGS` entry is not `K=V`.
    #[error("entry {entry:?} is not KEY=VALUE (entries are separated by ';')")]
    ArgMalformed {
        /// The entry.
        entry: String,
    },
    /// A `CNI_ARGS` key seam-cni does not know.
    #[error("unknown key {key:?}; known keys are K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID and IgnoreUnknown (set IgnoreUnknown=1 to skip unknown keys)")]
    ArgUnknown {
        /// The key.
        key: String,
    },
    /// A `CNI_ARGS` key given twice.
    #[error("key {key:?} is given more than once")]
    ArgDuplicate {
        /// The key.
        key: String,
    },
    /// `IgnoreUnknown` is not a boolean.
    #[error("IgnoreUnknown must be 1, 0, true or false")]
    ArgBadBool,
    /// `SEAM_CNI_TIMEOUT_MS` is not a number of milliseconds in range.
    #[error("expected a number of milliseconds from 1 to 600000")]
    BadTimeout,
}

/// One problem with one field of the network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `dns.nameservers[1]`; empty for the whole document.
    pub path: String,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, problem: FieldProblem) -> Self {
        FieldError {
            path: path.into(),
            problem,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "the config {}", self.problem)
        } else {
            write!(f, "field `{}` {}", self.path, self.problem)
        }
    }
}

/// What is wrong with a config field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// Required and absent.
    #[error("is required")]
    Missing,
    /// Present with the wrong JSON type.
    #[error("has the wrong type: expected {expected}, found {found}")]
    WrongType {
        /// What the field must be.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// Not a seam-cni field; rejected so that a typo is not silently ignored.
    #[error("is not a seam-cni config field; remove it or fix its spelling")]
    Unknown,
    /// An `ipam` section: seam-cni leases addresses through the agent.
    #[error("is not supported: seam-cni has its own IPAM; remove the ipam section")]
    Ipam,
    /// An empty string where a value is needed.
    #[error("must not be empty")]
    Empty,
    /// A path that must be absolute is not.
    #[error("must be an absolute path, found {value:?}")]
    NotAbsolute {
        /// The value.
        value: String,
    },
    /// `type` names another plug-in.
    #[error("must be \"seam-cni\", found {found:?}")]
    WrongPluginType {
        /// The value.
        found: String,
    },
    /// The network name does not match the spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
    #[error("{value:?} is not a valid network name: start with a letter or digit and use only letters, digits, '_', '.' and '-'")]
    BadNetworkName {
        /// The value.
        value: String,
    },
    /// A container id in `cni.dev/valid-attachments` is malformed.
    #[error("{value:?} is not a valid container id: use only letters, digits, '_', '.' and '-'")]
    BadContainerId {
        /// The value.
        value: String,
    },
    /// An interface name in `cni.dev/valid-attachments` is malformed.
    #[error("{value:?} is not a valid interface name: 1 to 15 bytes, no '/', ':' or whitespace, not '.' or '..'")]
    BadIfname {
        /// The value.
        value: String,
    },
    /// A port name in `ports` is not an IANA service name.
    #[error("{value:?} is not a valid port name: 1 to 15 of a-z, 0-9 and '-', at least one letter, no '-' at either end, no \"--\"")]
    BadPortName {
        /// The value.
        value: String,
    },
    /// A port name in `ports` is used twice.
    #[error("{value:?} names another port already")]
    DuplicatePortName {
        /// The value.
        value: String,
    },
    /// A port number in `ports` is outside 1..=65535.
    #[error("{value} is not a port number: use 1 to 65535")]
    BadPort {
        /// The value, as written.
        value: String,
    },
    /// A protocol in `ports` is not one a container port can have.
    #[error("{value:?} is not a port protocol: use \"TCP\", \"UDP\" or \"SCTP\"")]
    BadProtocol {
        /// The value.
        value: String,
    },
    /// The whole config is larger than seam-cni accepts.
    #[error("is {bytes} bytes long; seam-cni accepts at most {max}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `prevResult` is not a CNI result.
    #[error("is not a CNI result: {reason}")]
    BadPrevResult {
        /// The decoder's explanation.
        reason: String,
    },
}

/// How `prevResult` disagrees with the agent on CHECK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckMismatch {
    /// The agent's address for the attachment is not in `prevResult.ips`.
    #[error("the seam agent holds address {address} for this attachment, but prevResult.ips does not list it")]
    AddressMissing {
        /// The agent's address.
        address: String,
    },
    /// No interface in `prevResult.interfaces` is the container interface in this sandbox.
    #[error("prevResult.interfaces has no interface {ifname:?} in sandbox {sandbox:?}")]
    InterfaceMissing {
        /// The container interface name.
        ifname: String,
        /// The sandbox path.
        sandbox: String,
    },
}

/// Displays a list joined by "; ".
struct JoinDisplay<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for JoinDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
