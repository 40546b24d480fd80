//! `seam-bench scrape`: a Prometheus scrape of an agent with 500 pods — `GET /metrics` on the
//! agent's HTTPS API, measured against `GET /healthz` on the same server and connection in the
//! same run (alternating), on a real lab node: the real seamd, its real table (with a policy
//! isolating every pod, so the drop rules' counters are read from the kernel), TLS 1.3 with the
//! node's certificate and the lab's reader certificate, from the lab's underlay.
//!
//! Target (issue 13): median and p99 under 10 ms, body under 200 KiB.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use seam_client::{ClientTls, ControllerClient};
use seam_lab::LabUser;

use crate::stats::{ms, verdict, Stats};
use crate::util;

/// Options of `seam-bench scrape`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeOpts {
    /// Pods on the node.
    #[arg(long, default_value_t = 500)]
    pub pods: usize,
    /// Scrapes (and as many baseline requests).
    #[arg(long, default_value_t = 300)]
    pub rounds: usize,
}

impl ScrapeOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!("scrape --pods {} --rounds {}", self.pods, self.rounds)
    }
}

/// Runs the benchmark on a fresh 1-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &ScrapeOpts) -> anyhow::Result<bool> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let guard = crate::cleanup::lab_up("bscr", 1, bin_dir)?;
    let result = bench(&guard, opts);
    let down = guard.finish();
    let ok = result?;
    down?;
    Ok(ok)
}

fn bench(guard: &crate::cleanup::LabGuard, opts: &ScrapeOpts) -> anyhow::Result<bool> {
    let lab = &guard.lab;
    let node = lab.nodes.first().context("lab has no node")?;
    let (_, create_secs) = crate::memory::create_pods(lab, node, opts.pods, 4, 1)?;
    println!("   {} pods created in {create_secs:.1} s", opts.pods);
    // Every pod isolated for ingress: the table has rules that drop, whose counters a scrape
    // reads from the kernel.
    let policy = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-web", "namespace": "mem0"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                          "ports": [{"protocol": "TCP", "port": 80}]}]
        }
    });
    lab.tls_call(LabUser::Admin, async |c| {
        c.put_policy("NetworkPolicy", Some("mem0"), "only-web", &policy)
            .await
    })?;
    let pki = lab.pki.as_ref().context("the lab has no PKI")?;
    let (cert, key) = pki.user(LabUser::Reader);
    let tls =
        ClientTls::from_files(&pki.ca_cert, Some((&cert, &key)))?.with_server_name(&node.name)?;
    let endpoint = format!(
        "https://{}:{}",
        node.underlay_ip,
        seam_model::counters::AGENT_API_PORT
    );
    let rounds = opts.rounds.max(10);
    let (metrics, health, size, body) = lab.in_underlay(|| {
        crate::control::runtime()?.block_on(async {
            let client = ControllerClient::new(&endpoint)?
                .with_tls(tls)
                .with_timeout(Duration::from_secs(10));
            // Until the agent has written the policy: its rules are in the scrape.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = client.request_raw("GET", "/metrics", Vec::new()).await?;
                let text = String::from_utf8_lossy(&r.body).into_owned();
                if r.status == 200 && text.contains(r#"reason="isolation""#) {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the agent's scrape never showed the policy's drops: {} {text}",
                    r.status
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (mut metrics, mut health) = (Vec::new(), Vec::new());
            let (mut size, mut body) = (0, String::new());
            for _ in 0..rounds {
                let t = Instant::now();
                let r = client.request_raw("GET", "/healthz", Vec::new()).await?;
                health.push(ms(t.elapsed()));
                ensure!(r.status == 200, "healthz answered {}", r.status);
                let t = Instant::now();
                let r = client.request_raw("GET", "/metrics", Vec::new()).await?;
                metrics.push(ms(t.elapsed()));
                ensure!(r.status == 200, "metrics answered {}", r.status);
                size = r.body.len();
                body = String::from_utf8_lossy(&r.body).into_owned();
            }
            Ok((Stats::of(&metrics), Stats::of(&health), size, body))
        })
    })??;
    let leases = body
        .lines()
        .find_map(|l| l.strip_prefix("seam_agent_leases "))
        .unwrap_or("?");
    let ok = metrics.median < 10.0 && metrics.p99 < 10.0 && size < 200 * 1024;
    println!("   {:<40} {:>10} {:>10} {:>10}", "", "median", "p99", "max");
    println!(
        "   {:<40} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "GET /healthz (baseline, same server)", health.median, health.p99, health.max
    );
    println!(
        "   {:<40} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
        "GET /metrics", metrics.median, metrics.p99, metrics.max
    );
    println!(
        "   {:<40} {:>7.2} ms  (scrape minus baseline, medians)",
        "cost of the metrics themselves",
        metrics.median - health.median
    );
    println!(
        "   {:<40} {:>7.1} KiB ({} lines; seam_agent_leases {leases})",
        "body size",
        size as f64 / 1024.0,
        body.lines().count()
    );
    println!(
        "   target: under 10 ms (median and p99) and under 200 KiB: {}",
        verdict(ok)
    );
    Ok(ok)
}
