//! The client side of the agent socket: one JSON request line out, one JSON reply line back.
//!
//! [`AgentTransport`] is the seam for tests: [`crate::dispatch::run_with`] takes any transport,
//! and [`UnixTransport`] is the real one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use seam_model::agent_rpc::{AgentReply, AgentRequest};

use crate::error::{Error, Result};

/// Longest reply line accepted; an `AgentReply` is a few hundred bytes, so anything near this
/// is a broken agent, and the cap keeps the plug-in's memory bounded.
const MAX_REPLY_BYTES: u64 = 1 << 20;

/// Sends one request to the agent and returns its reply.
pub trait AgentTransport {
    /// Calls the agent listening on `socket`, giving up after `timeout` without a reply.
    fn call(&self, socket: &Path, timeout: Duration, request: &AgentRequest) -> Result<AgentReply>;
}

/// The real transport: a blocking [`UnixStream`] with read and write timeouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixTransport;

impl AgentTransport for UnixTransport {
    fn call(&self, socket: &Path, timeout: Duration, request: &AgentRequest) -> Result<AgentReply> {
        let path = socket.to_path_buf();
        // Connecting a Unix socket does not wait for the peer to accept (the kernel queues
        // it), so only reads and writes need a timeout.
        let stream = UnixStream::connect(socket).map_err(|source| Error::AgentUnreachable {
            path: path.clone(),
            source,
        })?;
        let io_err = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Error::AgentTimeout {
                    path: path.clone(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }
            } else {
                Error::AgentIo {
                    path: path.clone(),
                    source,
                }
            }
        };
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;

        let mut line = serde_json::to_vec(request).map_err(|e| Error::AgentIo {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        (&stream).write_all(&line).map_err(io_err)?;
        (&stream).flush().map_err(io_err)?;

        let mut reply = Vec::new();
        BufReader::new((&stream).take(MAX_REPLY_BYTES))
            .read_until(b'\n', &mut reply)
            .map_err(io_err)?;
        if reply.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::AgentNoReply { path });
        }
        serde_json::from_slice(&reply).map_err(|source| Error::AgentReplyDecode { path, source })
    }
}
