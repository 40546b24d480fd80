//! Concurrency, kill -9 and restarts: no duplicate or leaked address, no dropped traffic.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use seam_e2e::{eventually, host_ports, vxlan_fdb, LabGuard, TestLab};
use seam_lab::probe;

fn add(g: &LabGuard, container: &str, netns: &str) -> (i32, String) {
    let c = g
        .lab
        .cni_call(&g.node("n1"), "ADD", container, netns, "")
        .unwrap();
    let out = c.run_in(&g.node("n1").netns_path).unwrap();
    (out.status, out.stdout)
}

fn del(g: &LabGuard, container: &str, netns: &str) -> i32 {
    let c = g
        .lab
        .cni_call(&g.node("n1"), "DEL", container, netns, "")
        .unwrap();
    c.run_in(&g.node("n1").netns_path).unwrap().status
}

fn address(stdout: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["ips"][0]["address"].as_str().unwrap().to_string()
}

fn make_netns(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let _ = seam_linux::netns::delete(&name);
            seam_linux::netns::create(&name)
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

fn drop_netns(prefix: &str, n: usize) {
    for i in 0..n {
        let _ = seam_linux::netns::delete(&format!("{prefix}{i}"));
    }
}

#[test]
#[ignore = "privileged: netns"]
fn two_hundred_concurrent_adds_and_dels_never_share_an_address() {
    let g = Arc::new(LabGuard::up("e2e-conc", 1, &[]));
    let paths = Arc::new(make_netns("e2e-conc-", 100));
    // 20 workers; each ADDs five sandboxes, DELs two of them, ADDs them again: 200 calls.
    let workers: Vec<_> = (0..20)
        .map(|w| {
            let (g, paths) = (g.clone(), paths.clone());
            std::thread::spawn(move || {
                let mut live = Vec::new();
                for k in 0..5 {
                    let i = w * 5 + k;
                    let (status, out) = add(&g, &format!("c{i}"), &paths[i]);
                    assert_eq!(status, 0, "{out}");
                    live.push((i, address(&out)));
                }
                for (i, _) in live.iter().take(2) {
                    assert_eq!(del(&g, &format!("c{i}"), &paths[*i]), 0);
                }
                for entry in live.iter_mut().take(2) {
                    let i = entry.0;
                    let (status, out) = add(&g, &format!("c{i}"), &paths[i]);
                    assert_eq!(status, 0, "{out}");
                    entry.1 = address(&out);
                }
                live
            })
        })
        .collect();
    let live: Vec<(usize, String)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let unique: BTreeSet<&String> = live.iter().map(|(_, a)| a).collect();
    assert_eq!(unique.len(), 100, "every live sandbox has its own address");
    assert_eq!(host_ports(&g.node("n1")).len(), 100);
    for (i, _) in &live {
        assert_eq!(del(&g, &format!("c{i}"), &paths[*i]), 0);
    }
    eventually("nothing left after DEL", || {
        host_ports(&g.node("n1")).is_empty()
    });
    drop_netns("e2e-conc-", 100);
}

#[test]
#[ignore = "privileged: netns"]
fn kill_9_in_the_middle_of_adds_leaks_and_duplicates_nothing() {
    let mut guard = LabGuard::up("e2e-kill9", 1, &[]);
    let paths = make_netns("e2e-k9-", 40);
    let g = Arc::new(std::mem::replace(
        &mut guard.lab,
        seam_lab::Lab::load("e2e-kill9").unwrap(),
    ));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (g, paths, done) = (g.clone(), paths.clone(), done.clone());
            std::thread::spawn(move || {
                (0..10)
                    .map(|k| {
                        let i = w * 10 + k;
                        let c = g
                            .cni_call(
                                g.node("n1").unwrap(),
                                "ADD",
                                &format!("k{i}"),
                                &paths[i],
                                "",
                            )
                            .unwrap();
                        let out = c.run_in(&g.node("n1").unwrap().netns_path).unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (i, out.status, out.stdout)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Kill once a few ADDs have completed, while the others are in flight.
    while done.load(std::sync::atomic::Ordering::SeqCst) < 6 {
        std::thread::sleep(Duration::from_millis(1));
    }
    guard.lab.processes().kill_agent("n1", "KILL").unwrap();
    let results: Vec<(usize, i32, String)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    guard.lab.processes().start_agent("n1").unwrap();
    // The runtime DELs every sandbox whose ADD failed; then every surviving ADD is unique and
    // is exactly what the node holds.
    let mut ok = BTreeSet::new();
    for (i, status, out) in &results {
        if *status == 0 {
            assert!(ok.insert(address(out)), "duplicate address {out}");
        } else {
            let c = guard
                .lab
                .cni_call(&guard.node("n1"), "DEL", &format!("k{i}"), &paths[*i], "")
                .unwrap();
            assert_eq!(c.run_in(&guard.node("n1").netns_path).unwrap().status, 0);
        }
    }
    let succeeded = results.iter().filter(|r| r.1 == 0).count();
    assert!(
        succeeded > 0 && succeeded < 40,
        "the kill should land mid-way ({succeeded} of 40 succeeded)"
    );
    eventually("no leaked veths", || {
        host_ports(&guard.node("n1")).len() == succeeded
    });
    // New ADDs after the restart never reuse a live address, and repeated ADDs still agree.
    for (i, status, out) in &results {
        let c = guard
            .lab
            .cni_call(&guard.node("n1"), "ADD", &format!("k{i}"), &paths[*i], "")
            .unwrap();
        let again = c.run_in(&guard.node("n1").netns_path).unwrap();
        assert_eq!(again.status, 0, "{}", again.stdout);
        if *status == 0 {
            assert_eq!(
                address(&again.stdout),
                address(out),
                "repeated ADD after restart"
            );
        } else {
            assert!(
                ok.insert(address(&again.stdout)),
                "re-ADD reused a live address"
            );
        }
    }
    assert_eq!(ok.len(), 40);
    drop(g);
    drop_netns("e2e-k9-", 40);
}

#[test]
#[ignore = "privileged: netns"]
fn agent_restart_keeps_traffic_flowing_and_adopts_the_dataplane() {
    let mut g = LabGuard::up("e2e-restart", 2, &[]);
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    probe::serve_tcp(&b.netns_path, 8080, "b".into()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let fdb_before = vxlan_fdb(&g.node("n1").netns, "seam-v4096");
    let ports_before = host_ports(&g.node("n1"));
    // 200 pings at 20 ms from a (n1) to b (n2) while n1's agent is killed -9 and restarted.
    let ns = seam_e2e::netns_name(&a.netns_path);
    let pinger = std::thread::spawn({
        let ip = b.ip.to_string();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-c", "200", "-i", "0.02", "-W", "1", "-q", &ip,
                ])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    g.lab.processes().kill_agent("n1", "KILL").unwrap();
    g.lab.processes().start_agent("n1").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    g.lab.processes().kill_agent("n1", "TERM").unwrap();
    g.lab.processes().start_agent("n1").unwrap();
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 received") && text.contains(" 0% packet loss"),
        "{text}"
    );
    assert_eq!(
        vxlan_fdb(&g.node("n1").netns, "seam-v4096"),
        fdb_before,
        "FDB adopted, not rebuilt"
    );
    assert_eq!(host_ports(&g.node("n1")), ports_before);
    assert_eq!(
        probe::tcp(&a.netns_path, b.ip, 8080, Duration::from_secs(2))
            .unwrap()
            .as_deref(),
        Some("b")
    );
}
