//! Named network namespaces (the `ip netns` convention: a bind mount under `/run/netns`) and
//! running code inside one.

use std::fs::File;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where named namespaces live, as `ip netns` keeps them.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of the named namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the named namespace `name` (`ip netns add NAME`) with its loopback up is left to the
/// caller. Fails if it already exists.
pub fn create(name: &str) -> Result<PathBuf> {
    let err = |source| Error::Netns {
        operation: "create",
        name: name.to_string(),
        source,
    };
    share_netns_dir().map_err(err)?;
    let path = path_of(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(err)?;
    // A fresh thread unshares its own network namespace and pins it with a bind mount; the
    // namespace outlives the thread, and no other thread ever changes namespace.
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(source) = made {
        let _ = std::fs::remove_file(&path);
        return Err(err(source));
    }
    Ok(path)
}

/// Makes `/run/netns` what `ip netns add` makes it before its first namespace: a mount point of
/// its own (a recursive bind of the directory on itself) with shared propagation. Namespaces
/// are then always mounted inside that one mount, whichever tool named the first: had Seam
/// mounted them on the bare directory, iproute2's later bind would cover them, each would
/// exist twice and could no longer be deleted (`umount` reaches only the copy on top, `unlink`
/// then finds the one underneath: EBUSY). Done before every namespace, as iproute2 does; once
/// set up, it is one `mount` call that changes nothing.
fn share_netns_dir() -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)?;
    // The same lock iproute2 takes, so two tools (or two of our threads) never both bind the
    // directory on itself, stacking mounts. Proceed without it if it cannot be had, as it does.
    let dir = File::open(NETNS_DIR)?;
    let _lock = match Flock::lock(dir, FlockArg::LockExclusive) {
        Ok(lock) => Some(lock),
        Err((_, errno)) => {
            tracing::warn!(%errno, "could not lock {NETNS_DIR}; setting it up unlocked");
            None
        }
    };
    let mut made_mount_point = false;
    loop {
        let shared = mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet. Make it one, once.
            Err(Errno::EINVAL) if !made_mount_point => {}
            Err(e) => return Err(mount_error("--make-rshared", e)),
        }
        // Recursive, so namespaces already mounted on the bare directory stay visible.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| mount_error("--rbind", e))?;
        // Private first, so that making it shared puts it in a peer group of its own rather
        // than the one of the mount it was bound from.
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| mount_error("--make-rprivate", e))?;
        made_mount_point = true;
    }
}

/// Names the step of [`share_netns_dir`] that failed, as the `mount` command would be given.
fn mount_error(option: &str, errno: Errno) -> io::Error {
    io::Error::new(
        io::Error::from(errno).kind(),
        format!("mount {option} {NETNS_DIR}: {errno}"),
    )
}

/// Removes the named namespace (`ip netns del NAME`); absent is success.
pub fn delete(name: &str) -> Result<()> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    // As `ip netns del`: not mounted (a failed create) is no reason to keep the file.
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    let source = match std::fs::remove_file(&path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // Only a namespace mounted on the bare directory before it became a mount point of its
        // own has a second mount, out of reach underneath (see `share_netns_dir`).
        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => io::Error::new(
            e.kind(),
            format!(
                "{e}: also mounted underneath a later mount of {NETNS_DIR} (it was created \
                 by an older Seam or another tool before that mount); freed when that mount \
                 goes, at the latest at reboot"
            ),
        ),
        Err(e) => e,
    };
    Err(Error::Netns {
        operation: "delete",
        name: name.to_string(),
        source,
    })
}

/// Names of all named namespaces (`ip netns list`).
pub fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Moves the calling thread into the namespace at `path`. Use it only on a thread that will do
/// nothing else (or at the start of a single-threaded process, before any runtime starts).
pub fn enter(path: &Path) -> Result<()> {
    let err = |source| Error::Netns {
        operation: "enter",
        name: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(io::Error::from(e)))
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result. Sockets
/// `f` opens stay in that namespace; processes it spawns start in it.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(path)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Netns {
                    operation: "run in",
                    name: path.display().to_string(),
                    source: io::Error::other("thread panicked"),
                })
            })
    })
}

/// Runs `f` on a new thread with a mount namespace of its own, in which `/` is private and a
/// fresh tmpfs covers `/run`: `f` finds `/run/netns` as it is after boot, and nothing mounted
/// there (namespaces, iproute2's bind mount of the directory) reaches the machine's mounts.
/// Threads and processes `f` starts inherit that view; the namespaces named there go away with
/// the last of them. For tests of the `/run/netns` set-up, which must neither depend on nor
/// change what other tools did to the machine's `/run/netns`.
pub fn with_private_run<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    let err = |source| Error::Netns {
        operation: "isolate the mounts of",
        name: NETNS_DIR.to_string(),
        source,
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| -> Result<T> {
            // Unsharing the mount namespace also unshares this thread's filesystem context, so
            // the rest of the process keeps the machine's view.
            unshare(CloneFlags::CLONE_NEWNS).map_err(|e| err(io::Error::from(e)))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| err(io::Error::from(e)))?;
            mount(
                Some("tmpfs"),
                "/run",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=755"),
            )
            .map_err(|e| err(io::Error::from(e)))?;
            Ok(f())
        });
        // A panic in `f` (a failed assertion) is the caller's: hand it back as it was.
        worker
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// One long-lived thread that runs short jobs inside other namespaces and returns to its own
/// namespace after each. The agent opens a netlink socket in a sandbox on every ADD; doing that
/// on a fresh thread each time would make glibc create (and keep) a malloc arena per thread.
#[derive(Default)]
pub struct NetnsWorker {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl NetnsWorker {
    /// Runs `f` inside the namespace at `path` on the worker thread and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        path: &Path,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let err = |source| Error::Netns {
            operation: "run in",
            name: path.display().to_string(),
            source,
        };
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        let target = path.to_path_buf();
        let job: Job = Box::new(move || {
            let result = enter(&target).map(|()| f());
            let _ = reply_tx.send(result);
        });
        self.sender()
            .map_err(err)?
            .send(job)
            .map_err(|_| err(io::Error::other("namespace worker is gone")))?;
        reply_rx
            .recv()
            .map_err(|_| err(io::Error::other("namespace worker stopped")))?
    }

    fn sender(&self) -> io::Result<std::sync::mpsc::Sender<Job>> {
        let mut slot = self
            .jobs
            .lock()
            .map_err(|_| io::Error::other("namespace worker lock poisoned"))?;
        if let Some(tx) = slot.as_ref() {
            return Ok(tx.clone());
        }
        let home = File::open("/proc/thread-self/ns/net")?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("seam-netns".into())
            .spawn(move || {
                for job in rx {
                    job();
                    // Back home after every job; a thread that cannot return must not run more.
                    if setns(&home, CloneFlags::CLONE_NEWNET).is_err() {
                        tracing::error!(
                            "namespace worker could not return to its namespace; retiring it"
                        );
                        return;
                    }
                }
            })?;
        *slot = Some(tx.clone());
        Ok(tx)
    }
}
