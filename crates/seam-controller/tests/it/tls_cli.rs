//! The `seam-controller` binary's TLS listener against the real `curl` and `openssl s_client`,
//! on 127.0.0.1 (no root needed): who gets through the handshake and who does not.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use seam_model::{CallerRole as Role, Identity};
use seam_pki::Ca;

const DAY: Duration = Duration::from_secs(86_400);

/// A controller serving TLS on a loopback port, with its CA and certificates in a directory;
/// killed on drop.
struct Controller {
    dir: tempfile::TempDir,
    ca: Ca,
    port: u16,
    child: Child,
}

impl Controller {
    fn start() -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("seam test CA", DAY).unwrap();
        let p = |name: &str| dir.path().join(name);
        std::fs::write(p("ca.crt"), ca.cert_pem()).unwrap();
        ca.issue_server(
            "controller-0",
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            DAY,
        )
        .unwrap()
        .save(&p("tls.crt"), &p("tls.key"))
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(p("controller.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_seam-controller"))
            .args(["--listen", &format!("tcp:127.0.0.1:{port}")])
            .args(["--store", "memory"])
            .arg("--tls-cert")
            .arg(p("tls.crt"))
            .arg("--tls-key")
            .arg(p("tls.key"))
            .arg("--ca")
            .arg(p("ca.crt"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the controller did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Controller {
            dir,
            ca,
            port,
            child,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a client certificate and key for `identity` issued by `ca`; their paths.
    fn client_cert(
        &self,
        ca: &Ca,
        identity: &Identity,
        validity: Duration,
        name: &str,
    ) -> (PathBuf, PathBuf) {
        let (crt, key) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        ca.issue_client(identity, validity)
            .unwrap()
            .save(&crt, &key)
            .unwrap();
        (crt, key)
    }

    /// `curl` GET of `path` with an optional client certificate: (exit success, HTTP status
    /// (`000` when there was no HTTP exchange), body).
    fn curl(&self, path: &str, cert: Option<&(PathBuf, PathBuf)>) -> (bool, String, String) {
        let body = self.path("body");
        let _ = std::fs::remove_file(&body);
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--tlsv1.3", "--cacert"])
            .arg(self.path("ca.crt"))
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"]);
        if let Some((crt, key)) = cert {
            cmd.arg("--cert").arg(crt).arg("--key").arg(key);
        }
        let out = run(cmd.arg(format!("https://127.0.0.1:{}{path}", self.port)));
        let body = std::fs::read_to_string(&body).unwrap_or_default();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            body,
        )
    }

    /// `openssl s_client` with extra arguments: (exit success, stdout + stderr).
    fn s_client(&self, args: &[&str], cert: Option<&(PathBuf, PathBuf)>) -> (bool, String) {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{}", self.port)])
            .arg("-CAfile")
            .arg(self.path("ca.crt"))
            .args(args);
        if let Some((crt, key)) = cert {
            cmd.arg("-cert").arg(crt).arg("-key").arg(key);
        }
        let out = run(&mut cmd);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("controller.log")).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client with nothing on stdin (s_client then sends nothing and quits).
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn skip_without(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Command::new(tool).arg("version").output().is_ok();
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    !found
}

#[test]
fn curl_with_an_admin_certificate_is_answered_and_others_are_refused() {
    if skip_without("curl") {
        return;
    }
    let c = Controller::start();
    let admin = c.client_cert(&c.ca, &Identity::of(Role::Admin, "alice"), DAY, "admin");
    let (ok, status, body) = c.curl("/v1/nodes", Some(&admin));
    assert!(ok && status == "200", "{status} {body}");
    assert_eq!(body.trim(), "[]");

    // Without a certificate the handshake succeeds (joining needs it); /healthz answers.
    let (ok, status, _) = c.curl("/healthz", None);
    assert!(ok && status == "200", "{status}");

    // A certificate from another CA: the handshake fails, no HTTP status at all.
    let other = Ca::generate("someone else's CA", DAY).unwrap();
    let stranger = c.client_cert(&other, &Identity::of(Role::Admin, "eve"), DAY, "stranger");
    let (ok, status, body) = c.curl("/v1/nodes", Some(&stranger));
    assert!(!ok && status == "000", "{status} {body}");

    // An expired certificate: refused, and the controller's log says why in plain words.
    let expired = c.client_cert(
        &c.ca,
        &Identity::of(Role::Admin, "old"),
        Duration::from_secs(1),
        "expired",
    );
    std::thread::sleep(Duration::from_secs(2));
    let (ok, status, body) = c.curl("/v1/nodes", Some(&expired));
    assert!(!ok && status == "000", "{status} {body}");
    let log = c.log();
    assert!(
        log.contains("certificate expired at") && log.contains("clock"),
        "{log}"
    );
}

/// Anonymous callers may only GET /healthz and POST /v1/join.
#[test]
fn curl_without_a_certificate_gets_401_for_nodes() {
    if skip_without("curl") {
        return;
    }
    let c = Controller::start();
    let (ok, status, body) = c.curl("/v1/nodes", None);
    assert!(
        ok,
        "the handshake itself must succeed without a certificate"
    );
    assert_eq!(status, "401", "{body}");
    assert!(!body.contains("underlayIp"), "{body}");
}

#[test]
fn openssl_s_client_gets_tls_1_3_only() {
    if skip_without("openssl") {
        return;
    }
    let c = Controller::start();
    let admin = c.client_cert(&c.ca, &Identity::of(Role::Admin, "alice"), DAY, "admin");
    let (ok, text) = c.s_client(&["-tls1_3", "-verify_return_error"], Some(&admin));
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    let (ok, text) = c.s_client(&["-tls1_2"], Some(&admin));
    assert!(!ok, "TLS 1.2 was accepted: {text}");
    // The server answers a TLS 1.2 ClientHello with a protocol_version alert; no cipher.
    assert!(text.contains("alert protocol version"), "{text}");
    assert!(text.contains("Cipher is (NONE)"), "{text}");
}
