//! Small helpers shared by the benchmarks: namespaces, links, commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Creates namespace `name` with its loopback up.
pub fn netns_with_lo(name: &str) -> anyhow::Result<PathBuf> {
    let path = seam_linux::netns::create(name).with_context(|| format!("create netns {name}"))?;
    ip(name, &["link", "set", "lo", "up"])?;
    Ok(path)
}

/// `ip -n NETNS args…`.
pub fn ip(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip -n {netns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of the links in namespace `netns`.
pub fn links(netns: &str) -> anyhow::Result<Vec<String>> {
    Ok(ip(netns, &["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// The name of a namespace path (`/run/netns/NAME`).
pub fn netns_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .with_context(|| format!("no {field} in {path}"))
}

/// The machine's CPU count.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// 1-minute load average, as a hint of how quiet the machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Removes ANSI colour escapes (seamd's text log uses them).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[3mop\u{1b}[0m\u{1b}[2m=\u{1b}[0mX"),
            "op=X"
        );
    }
}
