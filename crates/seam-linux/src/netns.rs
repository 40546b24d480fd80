//! Named network namespaces (the `ip netns` convention: a bind mount under `/run/netns`) and
//! running code inside one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

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
    std::fs::create_dir_all(NETNS_DIR).map_err(err)?;
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

/// Removes the named namespace (`ip netns del NAME`); absent is success.
pub fn delete(name: &str) -> Result<()> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Netns {
            operation: "delete",
            name: name.to_string(),
            source,
        }),
    }
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
