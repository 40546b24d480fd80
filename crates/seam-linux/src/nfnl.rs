//! nf_tables over netlink: sends the batches `seam_nft::msg` builds for in-place changes of
//! `table inet seam` (sets and their elements, dispatch map entries, chains, policy rules and
//! `jump`s) on a `NETLINK_NETFILTER` socket, and reads the kernel's answers. The kernel applies a
//! batch atomically. Nothing here encodes nf_tables: the messages are values of `seam-nft`.
//!
//! Why netlink and not `nft -f`: `nft` 1.0.6 lists every element of every set in the table before
//! it applies even one `add element` (about a second with 10,000 endpoints) and every set's
//! definition before it adds a rule that refers to a set (20–35 ms with a thousand policies).

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use seam_nft::{Batch, TableOp};

const NLMSG_ERROR: u16 = 2;

/// How long to wait for the kernel's answer to a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong sending a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NfnlError {
    /// The netlink socket could not be opened, written or read.
    #[error("nf_tables netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused the batch (nothing of it was applied).
    #[error("the kernel refused the nf_tables batch: {operation}: {errno}")]
    Refused {
        /// The first refused operation.
        operation: String,
        /// Its error.
        errno: nix::errno::Errno,
    },
    /// The kernel did not answer in time.
    #[error("no answer from nf_tables within {0:?}")]
    Timeout(Duration),
}

/// Applies `ops` to `table inet <table>` as one nf_tables batch, in the calling thread's network
/// namespace: all of it or, when the kernel refuses any operation, none of it.
pub fn apply_batch(table: &str, ops: &[TableOp]) -> Result<(), NfnlError> {
    if ops.is_empty() {
        return Ok(());
    }
    let batch = Batch::new(table, ops);

    let mut socket = match CACHED.with(|c| c.borrow_mut().take()) {
        Some((ns, socket)) if Some(ns) == netns_id() => socket,
        _ => open_socket()?,
    };
    // One answer per message: a big batch must not overflow the receive buffer, or answers are
    // lost and the wait times out. Raising it needs CAP_NET_ADMIN, which applying needs anyway.
    let answers = batch.len().saturating_mul(64).max(1 << 18);
    if let Err(e) = nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::RcvBufForce,
        &answers,
    ) {
        tracing::debug!(error = %e, "raising the nf_tables socket's receive buffer failed");
    }
    // The batch goes in one `send`, which the kernel refuses (EMSGSIZE) beyond the socket's
    // send buffer: a sync of 10,000 Services is megabytes. nft raises it the same way.
    let size = batch.bytes().len().saturating_add(1 << 16);
    if size > 1 << 17 {
        if let Err(e) = nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::SndBufForce,
            &size,
        ) {
            tracing::debug!(error = %e, "raising the nf_tables socket's send buffer failed");
        }
    }
    socket.send(batch.bytes(), 0)?;
    let outcome = read_answers(&mut socket, &batch);
    // Only a socket whose every answer was read is clean enough to reuse.
    if outcome.is_ok() {
        if let Some(ns) = netns_id() {
            CACHED.with(|c| *c.borrow_mut() = Some((ns, socket)));
        }
    }
    outcome
}

thread_local! {
    /// The thread's nf_tables socket and the network namespace it was opened in. Why keep it: closing
    /// a netfilter netlink socket waits for the kernel to free the last batch's transaction (an RCU
    /// grace period, 5–12 ms here), which would double the time of every change.
    static CACHED: std::cell::RefCell<Option<(u64, Socket)>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's network namespace (a socket belongs to the namespace it was opened in).
fn netns_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

fn open_socket() -> Result<Socket, NfnlError> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout =
        nix::sys::time::TimeVal::new(i64::try_from(ANSWER_TIMEOUT.as_secs()).unwrap_or(5), 0);
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::ReceiveTimeout,
        &timeout,
    )
    .map_err(std::io::Error::from)?;
    Ok(socket)
}

/// Reads the kernel's answer to every message of a batch; the first refusal is the error.
fn read_answers(socket: &mut Socket, batch: &Batch<'_>) -> Result<(), NfnlError> {
    let last_seq = batch.last_seq();
    let mut answered = 0usize;
    let mut refused: Option<NfnlError> = None;
    let mut rx = vec![0u8; 1 << 16];
    while answered < batch.len() {
        rx.clear();
        let n = match socket.recv(&mut rx, 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(refused.unwrap_or(NfnlError::Timeout(ANSWER_TIMEOUT)));
            }
            Err(e) => return Err(e.into()),
        };
        let mut at = 0;
        while at + 16 <= n {
            let word = |i: usize| -> u32 {
                let b = rx.get(i..i + 4).unwrap_or(&[0, 0, 0, 0]);
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
            };
            let len = word(at) as usize;
            let kind = u16::try_from(word(at + 4) & 0xffff).unwrap_or(0);
            let seq = word(at + 8);
            if len < 16 || at + len > n {
                break;
            }
            if kind == NLMSG_ERROR && len >= 20 {
                answered += 1;
                let code = word(at + 16) as i32;
                if code != 0 && refused.is_none() {
                    let operation = batch
                        .operation(seq)
                        .unwrap_or_else(|| format!("message {seq}"));
                    refused = Some(NfnlError::Refused {
                        operation,
                        errno: nix::errno::Errno::from_raw(-code),
                    });
                }
                if seq == last_seq {
                    answered = batch.len();
                }
            }
            at += (len + 3) & !3;
        }
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::netns;
    use seam_nft::names::{TABLE, TABLE_NAME};

    /// Removes the namespace even when the test fails.
    struct Namespace(String);

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = netns::delete(&self.0);
        }
    }

    #[test]
    #[ignore = "privileged: netns"]
    fn a_refused_batch_names_the_operation_and_changes_nothing() {
        // The effective uid is the second field of `Uid:`.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1));
        assert_eq!(euid, Some("0"), "privileged test: run as root");
        let ns = Namespace(format!("sdm{}", std::process::id()));
        netns::create(&ns.0).unwrap();
        let (refused, nothing_left) = netns::run_in(&netns::path_of(&ns.0), || {
            crate::nft::apply_ruleset(&format!("table {TABLE} {{\n}}\n")).unwrap();
            let refused = apply_batch(
                TABLE_NAME,
                &[
                    TableOp::AddChain {
                        name: "never".into(),
                    },
                    TableOp::DeleteSet {
                        name: "missing".into(),
                    },
                ],
            );
            // The chain of the refused batch was not made: deleting it is refused in turn.
            let nothing_left = apply_batch(
                TABLE_NAME,
                &[TableOp::DeleteChain {
                    name: "never".into(),
                }],
            );
            (refused, nothing_left)
        })
        .unwrap();
        let refused = refused.unwrap_err();
        assert!(
            matches!(&refused, NfnlError::Refused { operation, errno: nix::errno::Errno::ENOENT } if operation == "delete set missing"),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "the kernel refused the nf_tables batch: delete set missing: ENOENT: No such file or directory"
        );
        let nothing_left = nothing_left.unwrap_err();
        assert!(
            matches!(&nothing_left, NfnlError::Refused { operation, errno: nix::errno::Errno::ENOENT } if operation == "flush chain never"),
            "{nothing_left:?}"
        );
    }
}
