//! A fake `seamd`: a Unix listener in a temp dir that answers one request with a canned reply.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use seam_model::agent_rpc::{AgentReply, AgentRequest};

/// How long the fake waits for the plug-in to connect before failing the test.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(20);

pub struct FakeAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
    listener: UnixListener,
}

/// A running fake that answers one request.
pub struct Serving(JoinHandle<AgentRequest>);

impl Serving {
    /// Waits for the request the plug-in sent.
    pub fn request(self) -> AgentRequest {
        self.0.join().expect("fake agent thread failed")
    }
}

impl FakeAgent {
    pub fn start() -> FakeAgent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("seamd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeAgent {
            dir,
            socket,
            listener,
        }
    }

    pub fn socket_str(&self) -> String {
        self.socket.to_str().unwrap().to_string()
    }

    /// The temp dir: an existing absolute path, standing in for a netns path.
    pub fn dir_str(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    /// Answers the next connection with `reply` on a thread, checking the line is one
    /// well-formed `AgentRequest`.
    pub fn serve(&self, reply: AgentReply) -> Serving {
        let mut answer = serde_json::to_string(&reply).unwrap();
        answer.push('\n');
        self.serve_raw(Some(answer))
    }

    /// Reads the next request and answers with `answer` verbatim, or with nothing at all
    /// (holding the connection open for a while) when `answer` is `None`.
    pub fn serve_raw(&self, answer: Option<String>) -> Serving {
        let listener = self.listener.try_clone().unwrap();
        Serving(thread::spawn(move || {
            let started = Instant::now();
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        assert!(
                            started.elapsed() < ACCEPT_DEADLINE,
                            "plug-in never connected"
                        );
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accept failed: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(ACCEPT_DEADLINE)).unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            assert!(line.ends_with('\n'), "request must be one line: {line:?}");
            let request: AgentRequest = serde_json::from_str(&line).unwrap();
            match answer {
                Some(answer) => (&stream).write_all(answer.as_bytes()).unwrap(),
                // Longer than the plug-in's timeout in the tests that use this.
                None => thread::sleep(Duration::from_secs(1)),
            }
            request
        }))
    }

    /// True when nothing connected (checked after the plug-in exited: a connect would have
    /// been queued on the listener even without an accept).
    pub fn no_connection(&self) -> bool {
        matches!(self.listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
}
