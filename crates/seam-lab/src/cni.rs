//! Calling a CNI plug-in exactly as a container runtime does: env vars, config on stdin,
//! result on stdout, from inside the node's network namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// One plug-in invocation.
#[derive(Debug, Clone)]
pub struct CniCall {
    /// The plug-in binary.
    pub plugin: PathBuf,
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub cni_path: String,
    /// The network config given on stdin.
    pub config: serde_json::Value,
}

/// What the plug-in did.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// Exit status (−1 when killed by a signal).
    pub status: i32,
    /// Its stdout (the result or error object).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Wall time of the call.
    pub elapsed: Duration,
}

impl CniOutput {
    /// The parsed stdout, or the CNI error as a [`LabError`].
    pub fn json(&self, command: &str) -> Result<serde_json::Value> {
        if self.status != 0 {
            return Err(LabError::Cni {
                command: command.into(),
                status: self.status,
                stdout: self.stdout.clone(),
            });
        }
        if self.stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.stdout).map_err(|e| LabError::Cni {
            command: command.into(),
            status: self.status,
            stdout: format!("unparsable output ({e}): {}", self.stdout),
        })
    }
}

impl CniCall {
    /// Runs the plug-in from inside the namespace at `node_netns` (where a runtime on that node
    /// would run it), with a clean environment.
    pub fn run_in(&self, node_netns: &Path) -> Result<CniOutput> {
        seam_linux::netns::run_in(node_netns, || self.run_here())?
    }

    /// Runs the plug-in in the caller's namespace.
    pub fn run_here(&self) -> Result<CniOutput> {
        let started = Instant::now();
        let mut child = Command::new(&self.plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.args)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Io {
                path: self.plugin.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = serde_json::to_vec(&self.config).unwrap_or_default();
            stdin.write_all(&body).map_err(|source| LabError::Io {
                path: self.plugin.clone(),
                source,
            })?;
        }
        let out = child.wait_with_output().map_err(|source| LabError::Io {
            path: self.plugin.clone(),
            source,
        })?;
        Ok(CniOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }
}
