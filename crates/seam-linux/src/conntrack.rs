//! Conntrack over netlink: deletes the entries of Services' stale flows (a UDP or SCTP frontend
//! that lost a backend), and gets one entry by a tuple ([`ConntrackReader`], for the flow
//! recorder: which Service a connection was sent to), with the messages `seam_nft::conntrack`
//! builds, on a `NETLINK_NETFILTER` socket in the calling thread's network namespace.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use seam_nft::conntrack::{
    delete_request, dump_request, get_request, parse_dump, parse_get, CtEntry, CtQuery, GetAnswer,
    StaleFlow, StaleIndex,
};

/// How long to wait for each answer of the kernel.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

const ENOENT: i32 = 2;

/// What went wrong listing or deleting conntrack entries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConntrackError {
    /// The netlink socket could not be opened, written or read.
    #[error("conntrack netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("the kernel refused to {operation} conntrack entries: {errno}")]
    Refused {
        /// `list`, `delete` or `get`.
        operation: &'static str,
        /// Its error.
        errno: nix::errno::Errno,
    },
}

/// Deletes every IPv4 conntrack entry that is a connection of one of `flows` (sent to its
/// frontend and translated to its backend) and returns how many it deleted. Entries that
/// expire in between are not an error.
pub fn delete_stale(flows: &[StaleFlow]) -> Result<usize, ConntrackError> {
    if flows.is_empty() {
        return Ok(0);
    }
    let mut socket = open_socket()?;
    let index = StaleIndex::new(flows);
    let stale: Vec<CtEntry> = list(&mut socket)?
        .into_iter()
        .filter(|e| index.matches(e))
        .collect();
    let mut deleted = 0;
    for (seq, entry) in (2u32..).zip(&stale) {
        socket.send(&delete_request(entry, seq), 0)?;
        match read_ack(&mut socket)? {
            0 => deleted += 1,
            ENOENT => {}
            errno => {
                return Err(ConntrackError::Refused {
                    operation: "delete",
                    errno: nix::errno::Errno::from_raw(errno),
                })
            }
        }
    }
    Ok(deleted)
}

/// `conntrack -L -f ipv4`.
pub fn list_entries() -> Result<Vec<CtEntry>, ConntrackError> {
    list(&mut open_socket()?)
}

/// A socket that gets conntrack entries one at a time by a tuple (`conntrack -G`), for a caller
/// that asks many times: one socket, a short wait for each answer.
#[derive(Debug)]
pub struct ConntrackReader {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl ConntrackReader {
    /// Opens the socket in the calling thread's network namespace; each get waits at most
    /// `timeout` for its answer (a get is a hash lookup in the kernel: it answers at once unless
    /// the machine is starved).
    pub fn open(timeout: Duration) -> Result<ConntrackReader, ConntrackError> {
        Ok(ConntrackReader {
            socket: open_socket_with(timeout)?,
            seq: 0,
            rx: vec![0u8; 4096],
        })
    }

    /// `conntrack -G`: the entry with the query's tuple, `None` when there is none.
    pub fn get(&mut self, query: &CtQuery) -> Result<Option<CtEntry>, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&get_request(query, self.seq), 0)?;
        loop {
            self.rx.clear();
            let n = self.socket.recv(&mut self.rx, 0)?;
            if n == 0 {
                return Ok(None);
            }
            // An answer to an earlier get that timed out is skipped: read on.
            match parse_get(self.rx.get(..n).unwrap_or(&[]), self.seq) {
                Some(GetAnswer::Found(entry)) => return Ok(Some(entry)),
                Some(GetAnswer::Missing) => return Ok(None),
                Some(GetAnswer::Refused(errno)) => {
                    return Err(ConntrackError::Refused {
                        operation: "get",
                        errno: nix::errno::Errno::from_raw(errno),
                    })
                }
                None => {}
            }
        }
    }
}

fn open_socket() -> Result<Socket, ConntrackError> {
    open_socket_with(ANSWER_TIMEOUT)
}

fn open_socket_with(timeout: Duration) -> Result<Socket, ConntrackError> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(5),
        i64::from(timeout.subsec_micros()),
    );
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::ReceiveTimeout,
        &timeout,
    )
    .map_err(std::io::Error::from)?;
    Ok(socket)
}

fn list(socket: &mut Socket) -> Result<Vec<CtEntry>, ConntrackError> {
    socket.send(&dump_request(1), 0)?;
    let mut entries = Vec::new();
    let mut rx = vec![0u8; 1 << 16];
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        let part = parse_dump(rx.get(..n).unwrap_or(&[]));
        entries.extend(part.entries);
        if let Some(errno) = part.error {
            return Err(ConntrackError::Refused {
                operation: "list",
                errno: nix::errno::Errno::from_raw(errno),
            });
        }
        if part.done || n == 0 {
            return Ok(entries);
        }
    }
}

/// The errno of the next acknowledgement (0: done).
fn read_ack(socket: &mut Socket) -> Result<i32, ConntrackError> {
    let mut rx = vec![0u8; 4096];
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        let b = rx.get(..n).unwrap_or(&[]);
        let word = |i: usize| {
            b.get(i..i + 4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        };
        // NLMSG_ERROR (2) carries the errno, negative, after the 16-byte header.
        if word(4).map(|w| w & 0xffff) == Some(2) {
            return Ok(word(16).map_or(0, |c| -(c as i32)));
        }
        if n == 0 {
            return Ok(0);
        }
    }
}

impl seam_dataplane::lb::ConntrackKernel for crate::LinuxKernel {
    async fn delete_conntrack(&self, flows: &[StaleFlow]) -> seam_dataplane::Result<usize> {
        let count = flows.len();
        let flows = flows.to_vec();
        tokio::task::spawn_blocking(move || delete_stale(&flows))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| seam_dataplane::Error::Kernel {
                operation: "delete conntrack entries",
                object: format!("{count} stale Service flows"),
                errno: None,
                message,
            })
    }
}
