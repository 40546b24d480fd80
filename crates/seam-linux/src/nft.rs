//! The nftables edge: apply one rendered transaction (`nft -f -`), send in-place changes as
//! nf_tables batches ([`crate::nfnl`]), list a table as `nft -j` text, delete the tables.
//!
//! Everything runs in the calling thread's network namespace (the `nft` child inherits it): callers
//! that act on another namespace wrap the call in [`crate::netns::run_in`]. Every text and
//! message comes from `seam_nft` (`seam_nft::table::full_text`, `seam_nft::nat`,
//! `seam_nft::msg`), and every listing is read there: each whole-table text replaces its table
//! in one transaction, so applying is atomic.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use seam_nft::listing::{counters_from_json, parse_listing, ListingError};
use seam_nft::names::{NAT_FAMILY, NAT_TABLE, TABLE, TABLE_FAMILY, TABLE_NAME};
use seam_nft::nat::{nat_from_json, ObservedNat};

// The counters `read_counters` returns are `seam_nft`'s, which reads every listing.
pub use seam_nft::listing::RuleCounter;

/// What went wrong talking to nftables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The `nft` program could not be run (not installed, or no permission).
    #[error("run nft to {operation}: {source}")]
    Spawn {
        /// What was being done: `apply ruleset`, `list table`, `delete table`.
        operation: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused the input or the request.
    #[error("nft rejected {operation} (exit status {status:?}): {stderr}{}", line_context(.line))]
    Rejected {
        /// What was being done.
        operation: &'static str,
        /// nft's exit status.
        status: Option<i32>,
        /// nft's standard error, trimmed.
        stderr: String,
        /// The offending input line (number, text) when nft named one.
        line: Option<(usize, String)>,
    },
    /// `table inet seam` does not exist in this namespace.
    #[error("table {TABLE} does not exist")]
    NoTable,
    /// The kernel refused (or never answered) an nf_tables netlink batch; nothing of it applied.
    #[error("{0}")]
    Batch(#[from] crate::nfnl::NfnlError),
    /// `nft -j` printed something that is not the JSON expected.
    #[error(transparent)]
    Listing(#[from] ListingError),
}

fn line_context(line: &Option<(usize, String)>) -> String {
    match line {
        Some((n, text)) => format!(" (input line {n}: {})", text.trim()),
        None => String::new(),
    }
}

/// Runs `nft args…` with `input` on stdin; returns stdout.
fn run(operation: &'static str, args: &[&str], input: Option<&str>) -> Result<Vec<u8>, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn { operation, source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // nft reads its whole input before it answers, so writing first cannot deadlock.
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NftError::Spawn { operation, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NftError::Spawn { operation, source })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("No such file or directory") && operation == "list table" {
        return Err(NftError::NoTable);
    }
    let line = input.and_then(|text| offending_line(&stderr, text));
    Err(NftError::Rejected {
        operation,
        status: out.status.code(),
        stderr,
        line,
    })
}

/// The input line nft's error names (`/dev/stdin:12:5-20: Error: …`).
fn offending_line(stderr: &str, input: &str) -> Option<(usize, String)> {
    stderr.lines().find_map(|l| {
        let rest = l.split_once(':')?.1;
        let n: usize = rest.split(':').next()?.trim().parse().ok()?;
        let text = input.lines().nth(n.checked_sub(1)?)?;
        Some((n, text.to_string()))
    })
}

/// Applies one nftables transaction (`nft -f -`), e.g. the output of `seam_firewall::render`.
/// The kernel applies it all or nothing.
pub fn apply_ruleset(text: &str) -> Result<(), NftError> {
    run("apply ruleset", &["-f", "-"], Some(text)).map(|_| ())
}

/// Changes `table inet seam` in place: the `switch` operations, then the `cleanup` ones, in one
/// nf_tables batch (see [`seam_nft::FirewallDelta`]). A switch that adds the Services part
/// ([`seam_nft::TableOp::AddServiceBase`], which has no netlink form) adds it first as `nft -f`
/// text: empty, it translates nothing, so traffic sees no difference until the batch fills it.
pub fn apply_delta(delta: &seam_nft::FirewallDelta) -> Result<(), NftError> {
    if delta.switch.contains(&seam_nft::TableOp::AddServiceBase) {
        run(
            "add the services base",
            &["-f", "-"],
            Some(&seam_nft::services::base_text()),
        )?;
    }
    // One batch, one commit: the kernel applies it all or nothing, and removes what the switch
    // left unreferenced only after the switch's operations (each commit of a table with verdict
    // maps walks every chain the maps reach, so a second batch would cost that walk again).
    if delta.cleanup.is_empty() {
        return Ok(crate::nfnl::apply_batch(TABLE_NAME, &delta.switch)?);
    }
    if delta.switch.is_empty() {
        return Ok(crate::nfnl::apply_batch(TABLE_NAME, &delta.cleanup)?);
    }
    let ops: Vec<seam_nft::TableOp> = delta.switch.iter().chain(&delta.cleanup).cloned().collect();
    crate::nfnl::apply_batch(TABLE_NAME, &ops)?;
    Ok(())
}

/// `nft -j list table inet seam` as text, `None` when the table does not exist.
pub fn list_table_text() -> Result<Option<String>, NftError> {
    match list_table() {
        Ok(text) => Ok(Some(text)),
        Err(NftError::NoTable) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Seam's NAT table as the kernel holds it (`nft -j list table ip seam-nat`), `None` when
/// absent.
pub fn list_nat_table() -> Result<Option<ObservedNat>, NftError> {
    match run(
        "list table",
        &["-j", "list", "table", NAT_FAMILY, NAT_TABLE],
        None,
    ) {
        Ok(out) => Ok(Some(nat_from_json(&parse_listing(&out)?))),
        Err(NftError::NoTable) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies `nft -f` text that touches tables other than `inet seam` (Seam's NAT table).
pub fn apply_text(operation: &'static str, text: &str) -> Result<(), NftError> {
    run(operation, &["-f", "-"], Some(text)).map(|_| ())
}

/// Deletes Seam's tables (`inet seam` and `bridge seam`); absent is success.
pub fn delete_table() -> Result<(), NftError> {
    let text = seam_nft::table::removal_text();
    run("delete table", &["-f", "-"], Some(&text)).map(|_| ())
}

/// The counters of every rule of `table inet seam` that has a comment, summed by comment (the
/// renderer gives every rule of one policy rule the same comment: `seam_firewall::nft_comment`).
pub fn read_counters() -> Result<BTreeMap<String, RuleCounter>, NftError> {
    Ok(counters_from_json(&parse_listing(list_table()?)?))
}

/// What the flow sample limits of `table inet seam` suppressed so far, by rule comment
/// (`seam_nft::listing::suppressed_from_json`).
pub fn read_suppressed() -> Result<BTreeMap<String, u64>, NftError> {
    Ok(seam_nft::listing::suppressed_from_json(&parse_listing(
        list_table()?,
    )?))
}

/// `nft -j list table inet seam` as text; [`NftError::NoTable`] when the table does not exist.
/// `seam_nft::listing` and `seam_nft::table::from_nft_json` read it.
pub fn list_table() -> Result<String, NftError> {
    let out = run(
        "list table",
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    )?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offending_line_is_found() {
        let input = "table inet seam {}\nbogus line here\n";
        let stderr =
            "/dev/stdin:2:1-5: Error: syntax error, unexpected string\nbogus line here\n^^^^^";
        assert_eq!(
            offending_line(stderr, input),
            Some((2, "bogus line here".to_string()))
        );
    }
}
