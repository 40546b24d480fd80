//! The NFLOG socket the agent reads its table's flow samples from: binds one group in the
//! calling thread's network namespace (or a named one, [`NflogSocket::bind_in`]), with the
//! messages `seam_nft::nflog` builds, and reads samples (`seam_nft::nflog::Sample`) in batches.
//!
//! Setup: copy mode "packet" with a small copy range (headers only), samples queued by the kernel
//! and sent a few dozen at a time or after a few hundredths of a second (fewer wake-ups under a
//! flood, a bounded delay otherwise), each with its conntrack entry when the kernel can (the
//! original destination of a Service's connection; `nf_conntrack_netlink` provides it, and
//! without it the group works without: the agent then gets the entry by tuple, see
//! `seam_agent::flows::service`). The receive buffer is raised so a burst is not lost; what
//! the kernel could not queue anyway is reported as [`NflogRead::lost`] (`ENOBUFS`).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use seam_nft::nflog::{config_requests, flags_request, parse_samples, GroupConfig, Sample};

/// How long to wait for the kernel's answer to a setup message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket's receive buffer: room for bursts of samples between two reads.
const RECEIVE_BUFFER: usize = 4 << 20;

const EPERM: i32 = 1;
const ENOBUFS: i32 = 105;
const EAGAIN: i32 = 11;

/// What went wrong binding or reading an NFLOG group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NflogError {
    /// The netlink socket could not be opened, written or read.
    #[error("NFLOG netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// Another socket holds the group (the kernel gives a group to one socket per namespace).
    #[error(
        "NFLOG group {group} is already in use on this node (another process reads it, e.g. \
         ulogd or another agent); choose another group with --flow-group"
    )]
    GroupInUse {
        /// The group.
        group: u16,
    },
    /// The kernel refused a setup message.
    #[error("the kernel refused to {operation} NFLOG group {group}: {errno}")]
    Refused {
        /// What was asked.
        operation: &'static str,
        /// The group.
        group: u16,
        /// Its error.
        errno: nix::errno::Errno,
    },
    /// The kernel did not answer a setup message.
    #[error("no answer from NFLOG within {0:?}")]
    Timeout(Duration),
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] crate::Error),
}

/// One read of the socket.
#[derive(Debug, Default)]
pub struct NflogRead {
    /// The samples, in order.
    pub samples: Vec<Sample>,
    /// The kernel dropped samples since the last read because the socket's buffer was full
    /// (`ENOBUFS`: how many is not known).
    pub lost: bool,
}

/// A bound NFLOG group.
#[derive(Debug)]
pub struct NflogSocket {
    socket: Socket,
    group: u16,
    /// Whether samples carry their conntrack entry.
    conntrack: bool,
    buf: Vec<u8>,
}

/// How Seam sets up its group: headers only, samples sent 32 at a time or after 20 ms.
pub fn seam_config(copy_range: u32) -> GroupConfig {
    GroupConfig {
        copy_range,
        conntrack: true,
        queue_threshold: 32,
        flush_hundredths: 2,
        buffer: 64 << 10,
    }
}

impl NflogSocket {
    /// Binds `group` in the network namespace at `netns` (the node's; `None`: the calling
    /// thread's). The socket stays in that namespace; it may be read from any thread.
    pub fn bind_in(
        netns: Option<&Path>,
        group: u16,
        config: GroupConfig,
    ) -> Result<NflogSocket, NflogError> {
        match netns {
            Some(path) => crate::netns::run_in(path, move || NflogSocket::bind(group, config))?,
            None => NflogSocket::bind(group, config),
        }
    }

    /// Binds `group` in the calling thread's network namespace.
    pub fn bind(group: u16, config: GroupConfig) -> Result<NflogSocket, NflogError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_timeout(&socket, Some(ANSWER_TIMEOUT))?;
        if let Err(e) = nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &RECEIVE_BUFFER,
        ) {
            tracing::debug!(error = %e, "raising the NFLOG socket's receive buffer failed");
        }
        let mut me = NflogSocket {
            socket,
            group,
            conntrack: config.conntrack,
            buf: vec![0u8; 1 << 17],
        };
        me.configure(&config)?;
        if config.conntrack {
            // The conntrack flag needs `nf_conntrack_netlink`: a kernel that has not loaded it
            // refuses with EAGAIN while it does (ask once more); without it the group works
            // without (samples then lack the original destination).
            let mut errno = me.set_flags(true, 3)?;
            if errno == EAGAIN {
                errno = me.set_flags(true, 4)?;
            }
            if errno != 0 {
                tracing::warn!(
                    group,
                    error = %nix::errno::Errno::from_raw(errno),
                    "NFLOG samples without conntrack entries (the kernel refused them): \
                     the Service of a translated connection is looked up in conntrack instead"
                );
                me.conntrack = false;
            }
        }
        if !me.conntrack {
            match me.set_flags(false, 5)? {
                0 => {}
                errno => {
                    return Err(NflogError::Refused {
                        operation: "set flags of",
                        group,
                        errno: nix::errno::Errno::from_raw(errno),
                    })
                }
            }
        }
        set_timeout(&me.socket, None)?;
        Ok(me)
    }

    /// Whether samples carry their connection's conntrack entry.
    pub fn conntrack(&self) -> bool {
        self.conntrack
    }

    /// The bound group.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Sets the group's flags; the kernel's errno (0: done).
    fn set_flags(&mut self, conntrack: bool, seq: u32) -> Result<i32, NflogError> {
        self.socket
            .send(&flags_request(self.group, conntrack, seq), 0)?;
        self.answer(seq)
    }

    fn configure(&mut self, config: &GroupConfig) -> Result<(), NflogError> {
        let operations = ["bind", "set up"];
        for (message, (seq, operation)) in config_requests(self.group, config, 1)
            .iter()
            .zip((1u32..).zip(operations))
        {
            self.socket.send(message, 0)?;
            match self.answer(seq)? {
                0 => {}
                EPERM if operation == "bind" => {
                    return Err(NflogError::GroupInUse { group: self.group })
                }
                errno => {
                    return Err(NflogError::Refused {
                        operation,
                        group: self.group,
                        errno: nix::errno::Errno::from_raw(errno),
                    })
                }
            }
        }
        Ok(())
    }

    /// Waits for the answer to message `seq`: its errno, 0 for success.
    fn answer(&mut self, seq: u32) -> Result<i32, NflogError> {
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(NflogError::Timeout(ANSWER_TIMEOUT))
                }
                Err(e) => return Err(e.into()),
            };
            let got = parse_samples(self.buf.get(..n).unwrap_or_default());
            if let Some((_, errno)) = got.acks.iter().find(|(s, _)| *s == seq) {
                return Ok(*errno);
            }
        }
    }

    /// Blocks until the kernel sends samples (or `timeout` passes: an empty read), and returns
    /// them.
    pub fn read(&mut self, timeout: Option<Duration>) -> Result<NflogRead, NflogError> {
        set_timeout(&self.socket, timeout)?;
        let mut out = NflogRead::default();
        match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => {
                out.samples = parse_samples(self.buf.get(..n).unwrap_or_default()).samples;
            }
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => out.lost = true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(out)
    }
}

impl NflogSocket {
    /// Reads the group on a thread of its own until `deliver` returns false: each read (samples,
    /// or the news that the kernel dropped some) goes to `deliver`. A read error is logged and
    /// the thread waits a moment before it reads again.
    pub fn spawn_reader(
        mut self,
        mut deliver: impl FnMut(NflogRead) -> bool + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("seam-nflog-{}", self.group))
            .spawn(move || loop {
                match self.read(None) {
                    Ok(read) if read.samples.is_empty() && !read.lost => {}
                    Ok(read) => {
                        if !deliver(read) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = self.group, error = %e, "reading NFLOG failed");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            })
    }
}

fn set_timeout(socket: &Socket, timeout: Option<Duration>) -> Result<(), NflogError> {
    let value = match timeout {
        Some(t) => nix::sys::time::TimeVal::new(
            i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            i64::from(t.subsec_micros()),
        ),
        None => nix::sys::time::TimeVal::new(0, 0),
    };
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::ReceiveTimeout,
        &value,
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}
