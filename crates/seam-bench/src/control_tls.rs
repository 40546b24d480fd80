//! `seam-bench control-tls` (issue 11): what mutual TLS costs the control plane, against plain
//! TCP in the same run.
//!
//! Both setups run the same `seam-controller` binary on the embedded store, listening on its
//! Unix socket and on `tcp:127.0.0.1:7450` inside a namespace of the benchmark's own
//! (`bctls-<pid>-api`): "plain" with `--insecure-plain-tcp`, "TLS" with a serving certificate
//! and the CA that verifies clients. Rounds alternate (plain, TLS, TLS, plain, …), each with a
//! fresh controller, store and 50 watcher processes that follow it as seamd does (snapshot,
//! then the watch, through seam-client; with TLS each presents a reader certificate of its own,
//! as each node has its own). Measured per round: single-change propagation to every watcher,
//! the change written alternately through the Unix socket (only the watchers' side differs) and
//! over the round's TCP transport (TLS end to end: the writer presents an admin certificate);
//! then the controller is killed (-9) and restarted, and the time until every watcher has a
//! fresh snapshot and watch is taken. Before the rounds, watchers with a refused certificate
//! must exit with their error (not hang). Last, the `cni` benchmark runs on labs whose agents
//! reach the controller over TLS and, alternately, on its Unix socket (as before issue 11).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_client::{ClientTls, ControllerClient};
use seam_model::identity::{Identity, Role};

use crate::cleanup::{ChildGuard, ScopeGuard};
use crate::cni::{AgentLink, CniOpts, CniSummary};
use crate::control::{bprop, runtime, start_watchers, WatcherEvent, WatcherExited};
use crate::stats::{ms, ratio, verdict, Stats};
use crate::util;

/// Where the benchmark's controllers listen for TCP clients, inside the benchmark's namespace.
const ADDRESS: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PORT: u16 = 7450;
/// Certificates outlive any run.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Untimed changes at the start of each round (connections, caches).
const WARMUP: usize = 6;
/// Target: TLS p99 / plain p99 of single-change propagation.
const RATIO_TARGET: f64 = 1.1;
/// Target: every watcher re-synced this long after the controller restarted, ms.
const RESYNC_TARGET_MS: f64 = 2000.0;

/// Options of `seam-bench control-tls`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlTlsOpts {
    /// Watcher processes (with TLS each presents a reader certificate of its own).
    #[arg(long, default_value_t = 50)]
    pub watchers: usize,
    /// Rounds per setup; plain and TLS alternate (P T, T P, P T, …).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Single changes timed per round, written alternately through the Unix socket and over
    /// the round's TCP transport. With 200 per writer a round's p99 is its second-worst sample,
    /// not its worst.
    #[arg(long, default_value_t = 400)]
    pub changes: usize,
    /// Controller kill -9 + restarts per round, each timed until every watcher re-synced.
    #[arg(long, default_value_t = 2)]
    pub restarts: usize,
    /// ADD+DEL pairs of each `cni` run (0: no CNI runs).
    #[arg(long, default_value_t = 100)]
    pub cni_calls: usize,
    /// `cni` runs per agent link (TLS, Unix socket), alternating.
    #[arg(long, default_value_t = 2)]
    pub cni_rounds: usize,
}

impl ControlTlsOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "control-tls --watchers {} --rounds {} --changes {} --restarts {} --cni-calls {} --cni-rounds {}",
            self.watchers, self.rounds, self.changes, self.restarts, self.cni_calls, self.cni_rounds
        )
    }
}

/// The two setups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `tcp:` with `--insecure-plain-tcp`.
    Plain,
    /// `tcp:` with a serving certificate; clients present theirs.
    Tls,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Tls => "TLS",
        }
    }

    /// The TCP endpoint clients use.
    fn endpoint(self) -> String {
        let scheme = match self {
            Setup::Plain => "http",
            Setup::Tls => "https",
        };
        format!("{scheme}://{ADDRESS}:{PORT}")
    }
}

/// The benchmark's CA and certificates (files under the run's directory).
struct BenchPki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    /// The writer over TLS (`seam:admins`).
    admin: (PathBuf, PathBuf),
    /// One per watcher (`seam:readers`, `bench-reader-<i>`).
    readers: Vec<(PathBuf, PathBuf)>,
    /// Another CA, and a reader certificate it issued.
    foreign_ca: PathBuf,
    foreign_reader: (PathBuf, PathBuf),
}

fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

fn make_pki(dir: &Path, watchers: usize) -> anyhow::Result<BenchPki> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca = seam_pki::Ca::generate("seam-bench CA", VALIDITY)?;
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).context("write the CA certificate")?;
    let server = pair(dir, "controller");
    ca.issue_server(
        "seam-controller",
        &["localhost".to_string()],
        &[IpAddr::V4(ADDRESS)],
        VALIDITY,
    )?
    .save(&server.0, &server.1)?;
    let admin = pair(dir, "admin");
    ca.issue_client(&Identity::of(Role::Admin, "bench-admin"), VALIDITY)?
        .save(&admin.0, &admin.1)?;
    let mut readers = Vec::new();
    for i in 0..watchers {
        let files = pair(dir, &format!("reader-{i}"));
        ca.issue_client(
            &Identity::of(Role::Reader, format!("bench-reader-{i}")),
            VALIDITY,
        )?
        .save(&files.0, &files.1)?;
        readers.push(files);
    }
    let other = seam_pki::Ca::generate("another CA", VALIDITY)?;
    let foreign_ca = dir.join("foreign-ca.crt");
    std::fs::write(&foreign_ca, other.cert_pem()).context("write the other CA")?;
    let foreign_reader = pair(dir, "foreign-reader");
    other
        .issue_client(&Identity::of(Role::Reader, "bench-reader-0"), VALIDITY)?
        .save(&foreign_reader.0, &foreign_reader.1)?;
    Ok(BenchPki {
        ca: ca_path,
        server,
        admin,
        readers,
        foreign_ca,
        foreign_reader,
    })
}

/// The watcher's TLS flags.
fn tls_args(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--ca".into(), ca.into()];
    if let Some((crt, key)) = cert {
        args.extend(["--cert".into(), crt.into(), "--key".into(), key.into()]);
    }
    args
}

fn watcher_args(setup: Setup, pki: &BenchPki, i: usize) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--controller".into(),
        setup.endpoint().into(),
        "--resync".into(),
    ];
    if setup == Setup::Tls {
        args.extend(tls_args(&pki.ca, pki.readers.get(i)));
    }
    args
}

/// One controller of the benchmark, restartable on the same store.
struct BenchController {
    bin: PathBuf,
    dir: PathBuf,
    setup: Setup,
    args: Vec<OsString>,
    child: Option<ChildGuard>,
}

impl BenchController {
    fn new(bin_dir: &Path, dir: &Path, setup: Setup, pki: &BenchPki) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            format!("unix:{}", dir.join("controller.sock").display()).into(),
            "--listen".into(),
            format!("tcp:{ADDRESS}:{PORT}").into(),
            "--store".into(),
            format!("embedded:{}", dir.join("store.redb").display()).into(),
        ];
        match setup {
            Setup::Plain => args.push("--insecure-plain-tcp".into()),
            Setup::Tls => args.extend([
                "--tls-cert".into(),
                pki.server.0.clone().into(),
                "--tls-key".into(),
                pki.server.1.clone().into(),
                "--ca".into(),
                pki.ca.clone().into(),
            ]),
        }
        Ok(BenchController {
            bin: bin_dir.join("seam-controller"),
            dir: dir.to_path_buf(),
            setup,
            args,
            child: None,
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.join("controller.log")
    }

    fn unix_endpoint(&self) -> String {
        format!("unix:{}", self.dir.join("controller.sock").display())
    }

    /// Starts the process (in the calling thread's namespace); returns when it was spawned.
    fn spawn(&mut self) -> anyhow::Result<Instant> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .with_context(|| format!("open {}", self.log().display()))?;
        let err = log.try_clone().context("controller log")?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let at = Instant::now();
        self.child = Some(ChildGuard::new(child));
        Ok(at)
    }

    /// Polls the TCP listener until it accepts a connection; the controller exiting instead is
    /// an error quoting its log.
    fn wait_accepting(&mut self) -> anyhow::Result<Instant> {
        let address = SocketAddr::new(IpAddr::V4(ADDRESS), PORT);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return Ok(Instant::now());
            }
            if let Some(guard) = self.child.as_mut() {
                if let Ok(Some(status)) = guard.0.try_wait() {
                    bail!(
                        "the {} controller exited ({status}) before accepting connections: {}",
                        self.setup.label(),
                        log_tail(&self.log())
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} controller did not accept connections on {address} within 20 s: {}",
                    self.setup.label(),
                    log_tail(&self.log())
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// kill -9, and reaped.
    fn kill(&mut self) {
        drop(self.child.take());
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n      ");
    format!("(last lines of {})\n      {tail}", path.display())
}

/// What one round measured.
#[derive(Debug, Clone)]
struct Round {
    setup: Setup,
    /// Change written through the Unix socket to the last watcher's ack, ms.
    fanout: Stats,
    /// Change written over the round's TCP transport to the last watcher's ack, ms.
    end_to_end: Stats,
    /// The PUT alone through the Unix socket, ms.
    put_unix: Stats,
    /// The PUT alone over the TCP transport, ms.
    put_tcp: Stats,
    /// The samples of the four above, in that order (pooled over rounds in the summary).
    samples: [Vec<f64>; 4],
    /// Restarted process spawned to every watcher re-synced, ms (one per restart).
    resync_from_spawn: Vec<f64>,
    /// Restarted controller accepting TCP connections to every watcher re-synced, ms.
    resync_from_accept: Vec<f64>,
    /// Spawned to accepting, ms.
    startup: Vec<f64>,
    /// Changes slower than [`STALL_MS`]: seconds into the round, and the PUT's share (ms).
    stalls: Vec<(f64, f64, f64)>,
}

/// A change this slow is listed (when, and how much of it the PUT took), to tell machine or
/// disk stalls, which hit both setups, from anything periodic.
const STALL_MS: f64 = 50.0;

fn tcp_client(setup: Setup, pki: &BenchPki) -> anyhow::Result<ControllerClient> {
    let client = ControllerClient::new(&setup.endpoint())?;
    Ok(match setup {
        Setup::Plain => client,
        Setup::Tls => client.with_tls(ClientTls::from_files(
            &pki.ca,
            Some((&pki.admin.0, &pki.admin.1)),
        )?),
    })
}

/// One round; runs in the benchmark's namespace (the calling thread's).
fn round(
    bin_dir: &Path,
    pki: &BenchPki,
    dir: &Path,
    setup: Setup,
    opts: &ControlTlsOpts,
) -> anyhow::Result<Round> {
    let mut controller = BenchController::new(bin_dir, dir, setup, pki)?;
    controller.spawn()?;
    controller.wait_accepting()?;
    let rt = runtime()?;
    let unix = ControllerClient::new(&controller.unix_endpoint())?;
    rt.block_on(unix.healthz())
        .context("the controller's Unix socket")?;
    let tcp = tcp_client(setup, pki)?;
    let n = opts.watchers;
    let watchers = start_watchers(n, |i| watcher_args(setup, pki, i))?;

    let (mut fanout, mut end_to_end, mut put_unix, mut put_tcp) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut stalls = Vec::new();
    let began = Instant::now();
    for seq in 0..WARMUP + opts.changes {
        let over_tcp = seq % 2 == 1;
        let writer = if over_tcp { &tcp } else { &unix };
        let key = format!("bprop {seq}");
        let sent = Instant::now();
        rt.block_on(writer.put_namespace(&bprop("bprop", seq)))
            .with_context(|| format!("PUT change {seq} ({})", writer.endpoint()))?;
        let written = Instant::now();
        let mut seen = BTreeSet::new();
        let mut last = sent;
        while seen.len() < n {
            let what = format!(
                "{} change {seq}: {} watchers saw it",
                setup.label(),
                seen.len()
            );
            if let WatcherEvent::Ack {
                watcher,
                key: k,
                at,
                ..
            } = watchers.next(Duration::from_secs(10), &what)?
            {
                if k == key && seen.insert(watcher) {
                    last = last.max(at);
                }
            }
        }
        if seq >= WARMUP {
            let (all, put) = if over_tcp {
                (&mut end_to_end, &mut put_tcp)
            } else {
                (&mut fanout, &mut put_unix)
            };
            all.push(ms(last - sent));
            put.push(ms(written - sent));
            if ms(last - sent) > STALL_MS {
                stalls.push((
                    (sent - began).as_secs_f64(),
                    ms(last - sent),
                    ms(written - sent),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let (mut from_spawn, mut from_accept, mut startup) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..opts.restarts {
        controller.kill();
        let killed = Instant::now();
        let spawned = controller.spawn()?;
        let accepting = controller.wait_accepting()?;
        let mut synced = BTreeSet::new();
        let mut last = accepting;
        while synced.len() < n {
            let what = format!(
                "{} restart {k}: {} of {n} watchers re-synced",
                setup.label(),
                synced.len()
            );
            if let WatcherEvent::Ready { watcher, at, .. } =
                watchers.next(Duration::from_secs(30), &what)?
            {
                if at > killed && synced.insert(watcher) {
                    last = last.max(at);
                }
            }
        }
        from_spawn.push(ms(last - spawned));
        from_accept.push(ms(last.saturating_duration_since(accepting)));
        startup.push(ms(accepting - spawned));
        // The herd settles before the next kill.
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(watchers);
    controller.kill();
    Ok(Round {
        setup,
        fanout: Stats::of(&fanout),
        end_to_end: Stats::of(&end_to_end),
        put_unix: Stats::of(&put_unix),
        put_tcp: Stats::of(&put_tcp),
        samples: [fanout, end_to_end, put_unix, put_tcp],
        resync_from_spawn: from_spawn,
        resync_from_accept: from_accept,
        startup,
        stalls,
    })
}

/// One refusal the watchers must show.
struct Refusal {
    case: &'static str,
    /// Refused by the TLS handshake (required here); otherwise by authorization, which this
    /// benchmark reports without making it a target.
    handshake: bool,
    /// How long the watcher took to exit, and the first line of its error; `None` when it did
    /// not exit (or, wrongly, got a watch).
    outcome: Result<(f64, String), String>,
}

impl Refusal {
    fn ok(&self) -> bool {
        self.outcome.is_ok() || !self.handshake
    }
}

/// A TLS controller and one watcher per bad setting: each must exit with its error.
fn refusals(bin_dir: &Path, pki: &BenchPki, dir: &Path) -> anyhow::Result<Vec<Refusal>> {
    let mut controller = BenchController::new(bin_dir, dir, Setup::Tls, pki)?;
    controller.spawn()?;
    controller.wait_accepting()?;
    let endpoint = Setup::Tls.endpoint();
    let base = |extra: Vec<OsString>| {
        let mut args: Vec<OsString> = vec!["--controller".into(), endpoint.clone().into()];
        args.extend(extra);
        args
    };
    let cases: Vec<(&'static str, bool, Vec<OsString>)> = vec![
        (
            "client certificate from another CA",
            true,
            base(tls_args(&pki.ca, Some(&pki.foreign_reader))),
        ),
        (
            "controller not signed by the CA the watcher trusts",
            true,
            base(tls_args(&pki.foreign_ca, pki.readers.first())),
        ),
        (
            "no client certificate (anonymous: authorization)",
            false,
            base(tls_args(&pki.ca, None)),
        ),
    ];
    let mut out = Vec::new();
    for (case, handshake, args) in cases {
        let start = Instant::now();
        let outcome = match start_watchers(1, |_| args.clone()) {
            Ok(_) => Err("the watcher got a watch".to_string()),
            Err(e) => match e.downcast_ref::<WatcherExited>() {
                Some(exited) => Ok((ms(start.elapsed()), exited.first_line().to_string())),
                None => Err(format!("{e:#}")),
            },
        };
        out.push(Refusal {
            case,
            handshake,
            outcome,
        });
    }
    controller.kill();
    Ok(out)
}

/// Median over rounds of `f` of each round of `setup`.
fn median_of(rounds: &[Round], setup: Setup, f: impl Fn(&Round) -> f64) -> f64 {
    let v: Vec<f64> = rounds.iter().filter(|r| r.setup == setup).map(f).collect();
    Stats::of(&v).median
}

fn all_of(rounds: &[Round], setup: Setup, f: impl Fn(&Round) -> &Vec<f64>) -> Stats {
    let v: Vec<f64> = rounds
        .iter()
        .filter(|r| r.setup == setup)
        .flat_map(|r| f(r).iter().copied())
        .collect();
    Stats::of(&v)
}

/// The results of `seam-bench control-tls`.
#[derive(Debug, Clone)]
pub struct ControlTlsResult {
    /// TLS / plain, medians over rounds of each round's p99: writer on the Unix socket.
    pub fanout_p99_ratio: f64,
    /// The same with the writer over the round's TCP transport.
    pub end_to_end_p99_ratio: f64,
    /// Longest re-sync of all watchers after a restart with TLS (from the spawn), ms.
    pub tls_resync_max: f64,
    /// Every refusal case ended its watcher with an error.
    pub refusals_ok: bool,
    /// seam-cni ADD median with agents over TLS / on the Unix socket (medians over runs).
    pub cni_add_ratio: Option<f64>,
}

impl ControlTlsResult {
    /// Every target met.
    pub fn ok(&self) -> bool {
        self.fanout_p99_ratio <= RATIO_TARGET
            && self.end_to_end_p99_ratio <= RATIO_TARGET
            && self.tls_resync_max < RESYNC_TARGET_MS
            && self.refusals_ok
            && self.cni_add_ratio.is_none_or(|r| r <= RATIO_TARGET)
    }
}

/// Runs `seam-bench control-tls`.
pub fn run(bin_dir: &Path, opts: &ControlTlsOpts) -> anyhow::Result<ControlTlsResult> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    println!(
        "   one seam-controller (embedded store) per round on unix: and tcp:{ADDRESS}:{PORT} in \
         namespace bctls-<pid>-api: plain = --insecure-plain-tcp, TLS = TLS 1.3 with a serving \
         certificate and --ca; {} watcher processes follow it as seamd does (snapshot + watch, \
         re-sync with seamd's backoff), with TLS each presenting a reader certificate of its own",
        opts.watchers
    );
    let scope = ScopeGuard::new("bctls");
    let result = run_in_scope(bin_dir, opts, &scope);
    let down = scope.finish();
    let mut result = result?;
    down?;

    if opts.cni_calls > 0 && opts.cni_rounds > 0 {
        result.cni_add_ratio = Some(cni_runs(bin_dir, opts)?);
    }
    print_verdicts(&result);
    Ok(result)
}

fn run_in_scope(
    bin_dir: &Path,
    opts: &ControlTlsOpts,
    scope: &ScopeGuard,
) -> anyhow::Result<ControlTlsResult> {
    let netns = scope.netns("api");
    let netns_path = util::netns_with_lo(&netns)?;
    let work = tempfile::Builder::new()
        .prefix("seam-bench-tls-")
        .tempdir()
        .context("a directory for the benchmark's PKI and stores")?;
    let pki = make_pki(&work.path().join("pki"), opts.watchers)?;
    // Everything below runs on a thread inside the namespace: the controllers and watchers it
    // starts inherit it.
    let (refused, rounds) = seam_linux::netns::run_in(&netns_path, || {
        let refused = refusals(bin_dir, &pki, &work.path().join("refusals"))?;
        print_refusals(&refused);
        let mut rounds = Vec::new();
        for r in 0..opts.rounds {
            let order = if r % 2 == 0 {
                [Setup::Plain, Setup::Tls]
            } else {
                [Setup::Tls, Setup::Plain]
            };
            for setup in order {
                let dir = work
                    .path()
                    .join(format!("round-{r}-{}", setup.label().to_lowercase()));
                let result = round(bin_dir, &pki, &dir, setup, opts)?;
                print_round(r, &result);
                rounds.push(result);
            }
        }
        Ok::<_, anyhow::Error>((refused, rounds))
    })??;
    Ok(summarize(&rounds, &refused, opts))
}

fn print_refusals(refused: &[Refusal]) {
    println!("   -- a watcher whose TLS handshake or certificate is refused exits with its error");
    for r in refused {
        match &r.outcome {
            Ok((t, line)) => println!("      {:<52} exited after {t:.0} ms: {line}", r.case),
            Err(e) if r.handshake => println!("      {:<52} FAIL: {e}", r.case),
            Err(e) => println!(
                "      {:<52} not refused ({e}): is authorization (401 for anonymous callers) in this build?",
                r.case
            ),
        }
    }
}

fn print_round(r: usize, x: &Round) {
    println!(
        "   round {r} {:<5}  via Unix p50 {:.1} p99 {:.1} | via {} p50 {:.1} p99 {:.1} | PUT unix {:.1} tcp {:.1} | re-sync from spawn {:?} ms",
        x.setup.label(),
        x.fanout.median,
        x.fanout.p99,
        x.setup.label(),
        x.end_to_end.median,
        x.end_to_end.p99,
        x.put_unix.median,
        x.put_tcp.median,
        x.resync_from_spawn
            .iter()
            .map(|v| v.round() as i64)
            .collect::<Vec<_>>(),
    );
    if !x.stalls.is_empty() {
        let list: Vec<String> = x
            .stalls
            .iter()
            .map(|(at, all, put)| format!("{all:.0} ms at {at:.1} s (PUT {put:.0})"))
            .collect();
        println!("      changes over {STALL_MS:.0} ms: {}", list.join(", "));
    }
}

fn summarize(rounds: &[Round], refused: &[Refusal], opts: &ControlTlsOpts) -> ControlTlsResult {
    let (p, t) = (Setup::Plain, Setup::Tls);
    println!(
        "   -- single change -> all {} watchers (ms; medians over {} rounds of each round's p50 / p99, {} changes per round, half per writer)",
        opts.watchers, opts.rounds, opts.changes
    );
    println!(
        "      {:<40} {:>15} {:>15} {:>15}",
        "change written", "plain p50/p99", "TLS p50/p99", "ratio p50/p99"
    );
    let row = |label: &str, f: &dyn Fn(&Round) -> Stats, k: usize| {
        let (pm, pp) = (
            median_of(rounds, p, |r| f(r).median),
            median_of(rounds, p, |r| f(r).p99),
        );
        let (tm, tp) = (
            median_of(rounds, t, |r| f(r).median),
            median_of(rounds, t, |r| f(r).p99),
        );
        // Every sample of the setup, pooled over its rounds: a p99 from more samples.
        let pooled = |setup: Setup| {
            let v: Vec<f64> = rounds
                .iter()
                .filter(|r| r.setup == setup)
                .flat_map(|r| r.samples[k].iter().copied())
                .collect();
            Stats::of(&v)
        };
        let (pa, ta) = (pooled(p), pooled(t));
        println!(
            "      {label:<40} {:>15} {:>15} {:>15}   pooled p99 {:.1} / {:.1} = {:.2} (n={})",
            format!("{pm:.1} / {pp:.1}"),
            format!("{tm:.1} / {tp:.1}"),
            format!("{:.2} / {:.2}", ratio(tm, pm), ratio(tp, pp)),
            pa.p99,
            ta.p99,
            ratio(ta.p99, pa.p99),
            pa.n
        );
        ratio(tp, pp)
    };
    let fanout = row(
        "through the Unix socket (watchers differ)",
        &|r| r.fanout,
        0,
    );
    let end_to_end = row(
        "over the TCP transport (TLS end to end)",
        &|r| r.end_to_end,
        1,
    );
    row("  the PUT alone, Unix socket", &|r| r.put_unix, 2);
    row("  the PUT alone, TCP (kept connection)", &|r| r.put_tcp, 3);

    println!(
        "   -- re-sync of all {} watchers after kill -9 + restart ({} per round; ms p50 / max over all restarts)",
        opts.watchers, opts.restarts
    );
    let mut tls_max = 0.0;
    for setup in [p, t] {
        let spawn = all_of(rounds, setup, |r| &r.resync_from_spawn);
        let accept = all_of(rounds, setup, |r| &r.resync_from_accept);
        let startup = all_of(rounds, setup, |r| &r.startup);
        println!(
            "      {:<5}  from the restart (process spawned) {:.0} / {:.0}; from accepting TCP {:.0} / {:.0}; startup {:.0} / {:.0} (n={})",
            setup.label(),
            spawn.median,
            spawn.max,
            accept.median,
            accept.max,
            startup.median,
            startup.max,
            spawn.n
        );
        if setup == t {
            tls_max = spawn.max;
        }
    }
    ControlTlsResult {
        fanout_p99_ratio: fanout,
        end_to_end_p99_ratio: end_to_end,
        tls_resync_max: tls_max,
        refusals_ok: refused.iter().all(Refusal::ok),
        cni_add_ratio: None,
    }
}

/// The `cni` benchmark on a lab whose agents reach the controller over TLS, and on one whose
/// agents use its Unix socket, alternating; returns the ratio of seam-cni's ADD medians.
fn cni_runs(bin_dir: &Path, opts: &ControlTlsOpts) -> anyhow::Result<f64> {
    let mut runs: Vec<(AgentLink, CniSummary)> = Vec::new();
    for r in 0..opts.cni_rounds {
        let order = if r % 2 == 0 {
            [AgentLink::Tls, AgentLink::Unix]
        } else {
            [AgentLink::Unix, AgentLink::Tls]
        };
        for agents in order {
            let o = CniOpts {
                calls: opts.cni_calls,
                warmup: 2,
                threads: 20,
                per_thread: 5,
                ref_dir: PathBuf::from("/usr/lib/cni"),
                agents,
            };
            runs.push((agents, crate::cni::run(bin_dir, &o)?));
            // Namespace teardown finishes in the kernel after `ip netns del`.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    println!(
        "== control-tls: CNI with the agents over TLS vs on the controller's Unix socket ({} run(s) each, {} calls; medians over runs, ms)",
        opts.cni_rounds, opts.cni_calls
    );
    let med = |agents: AgentLink, f: &dyn Fn(&CniSummary) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|(a, _)| *a == agents)
            .map(|(_, s)| f(s))
            .collect();
        Stats::of(&v).median
    };
    for agents in [AgentLink::Tls, AgentLink::Unix] {
        println!(
            "   agents {:<5}  seam ADD median {:.2} (p95 {:.2}), DEL median {:.2}, ADD ratio to bridge+host-local {:.2}, concurrent ADD p95 {:.1}",
            agents.label(),
            med(agents, &|s| s.seam_add.median),
            med(agents, &|s| s.seam_add.p95),
            med(agents, &|s| s.seam_del.median),
            med(agents, &|s| ratio(s.seam_add.median, s.ref_add.median)),
            med(agents, &|s| s.seam_conc.add.p95),
        );
    }
    Ok(ratio(
        med(AgentLink::Tls, &|s| s.seam_add.median),
        med(AgentLink::Unix, &|s| s.seam_add.median),
    ))
}

fn print_verdicts(r: &ControlTlsResult) {
    println!("== control-tls targets");
    println!(
        "   propagation p99 TLS / plain, change via the Unix socket   {:.2}  <= {RATIO_TARGET:.2}  {}",
        r.fanout_p99_ratio,
        verdict(r.fanout_p99_ratio <= RATIO_TARGET)
    );
    println!(
        "   propagation p99 TLS / plain, change over TCP too          {:.2}  <= {RATIO_TARGET:.2}  {}",
        r.end_to_end_p99_ratio,
        verdict(r.end_to_end_p99_ratio <= RATIO_TARGET)
    );
    println!(
        "   re-sync of all watchers after a restart, TLS, max         {:.0} ms  < {RESYNC_TARGET_MS:.0} ms  {}",
        r.tls_resync_max,
        verdict(r.tls_resync_max < RESYNC_TARGET_MS)
    );
    println!(
        "   watchers whose handshake is refused exit with their error   {}",
        verdict(r.refusals_ok)
    );
    if let Some(c) = r.cni_add_ratio {
        println!(
            "   seam-cni ADD median, agents over TLS / on the Unix socket {c:.2}  <= {RATIO_TARGET:.2}  {}",
            verdict(c <= RATIO_TARGET)
        );
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    use super::*;

    #[test]
    fn setups_name_their_endpoints() {
        assert_eq!(Setup::Plain.endpoint(), "http://127.0.0.1:7450");
        assert_eq!(Setup::Tls.endpoint(), "https://127.0.0.1:7450");
    }

    #[test]
    fn pki_gives_each_watcher_its_own_reader() {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), 3).unwrap();
        let mut names = BTreeSet::new();
        for (crt, _) in &pki.readers {
            let der = CertificateDer::from_pem_file(crt).unwrap();
            let id = seam_pki::identity_of(der.as_ref()).unwrap();
            assert_eq!(id.role, Role::Reader);
            names.insert(id.name);
        }
        assert_eq!(names.len(), 3);
        let args = watcher_args(Setup::Tls, &pki, 2);
        assert!(args.contains(&OsString::from(pki.readers[2].0.clone())));
        assert!(!watcher_args(Setup::Plain, &pki, 2).contains(&OsString::from("--ca")));
    }
}
