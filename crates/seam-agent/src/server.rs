//! The CNI socket: one JSON request line in, one JSON reply line out, per connection.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::agent_rpc::{AgentError as RpcError, AgentReply, AgentRequest, PROTOCOL_VERSION};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{AgentError, Result};
use crate::metrics::Verb;
use crate::Agent;

/// Largest request accepted.
const MAX_REQUEST: usize = seam_model::agent_rpc::MAX_REQUEST_BYTES;

/// Binds the socket with mode 0600, replacing a stale socket file from an earlier run.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let err = |source| AgentError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Accepts connections forever, one task per connection.
pub async fn serve<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    listener: UnixListener,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(agent, stream).await {
                        tracing::warn!(error = %e, "cni connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "accept on cni socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_one<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    stream: UnixStream,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    // Bytes, not a String: invalid UTF-8 is a malformed request that gets a reply, not an I/O
    // error that drops the connection without one.
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<AgentRequest>(&line) {
        Ok(req) if req.protocol == PROTOCOL_VERSION => {
            let started = std::time::Instant::now();
            let verb = match &req.op {
                seam_model::agent_rpc::AgentOp::Add(_) => Verb::ADD,
                seam_model::agent_rpc::AgentOp::Del(_) => Verb::DEL,
                seam_model::agent_rpc::AgentOp::Check(_) => Verb::CHECK,
                seam_model::agent_rpc::AgentOp::Gc { .. } => Verb::GC,
                seam_model::agent_rpc::AgentOp::Status { .. } => Verb::STATUS,
            };
            let reply = agent.handle(req.op).await;
            let took = started.elapsed();
            agent
                .metrics
                .observe_cni(verb, !matches!(reply, AgentReply::Error(_)), took);
            tracing::debug!(op = ?verb, elapsed_us = took.as_micros() as u64, "cni request");
            reply
        }
        Ok(req) => AgentReply::Error(RpcError {
            code: 1,
            msg: format!("agent speaks socket protocol {PROTOCOL_VERSION}, plug-in sent {}: upgrade seam-cni and seamd together", req.protocol),
            details: String::new(),
        }),
        Err(e) => AgentReply::Error(RpcError { code: 6, msg: format!("malformed request on the agent socket: {e}"), details: String::new() }),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| {
        b"{\"error\":{\"code\":999,\"msg\":\"reply encoding failed\",\"details\":\"\"}}".to_vec()
    });
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
