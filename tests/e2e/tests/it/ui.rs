//! The controller's page in a real browser (Debian's chromium, headless, driven over the
//! DevTools protocol), against a lab with allowed and denied traffic: reached through `seam
//! proxy` as a user would, it shows the endpoints, the denied flow between the two groups as
//! denied, and, after a click on that edge, the flows with the rule and the explanation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use futures::StreamExt;
use seam_e2e::{controller, eventually, LabGuard};
use seam_lab::probe;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `seam proxy` on a free loopback port, killed on drop.
struct ProxyGuard {
    child: Child,
    url: String,
}

impl ProxyGuard {
    fn start(lab: &seam_lab::Lab) -> ProxyGuard {
        let mut child = Command::new(lab.bin_dir.join("seam"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--lab", &lab.name])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
        ProxyGuard { child, url }
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's text of the elements `selector` matches, once `ready` holds for it (polled: the
/// page refreshes every few seconds).
async fn wait_for_text(
    page: &chromiumoxide::Page,
    selector: &str,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(elements) = page.find_elements(selector).await {
            let mut text = String::new();
            for e in elements {
                text.push_str(&e.inner_text().await.ok().flatten().unwrap_or_default());
                text.push('\n');
            }
            if ready(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the page never showed {what} ({selector}); last seen: {last:?}");
}

#[test]
#[ignore = "privileged: netns, chromium"]
fn the_page_shows_endpoints_and_a_denied_flow_with_its_rule_and_explains_it_on_click() {
    seam_e2e::require_root();
    let mut g = LabGuard::new(&seam_lab::LabSpec {
        name: "e2e-ui".to_string(),
        nodes: 2,
        segment_mode: "namespace".to_string(),
        bin_dir: seam_e2e::bin_dir(),
        controller_args: Vec::new(),
        one_process: false,
        store: seam_lab::LabStore::Embedded,
        controllers: 1,
        flows: true,
    })
    .unwrap();
    let web = g
        .lab
        .workloads()
        .add_pod_with_labels("n1", "shop", "web", &labels(&[("app", "web")]))
        .unwrap();
    let client = g
        .lab
        .workloads()
        .add_pod_with_labels("n2", "office", "client", &labels(&[("app", "client")]))
        .unwrap();
    probe::serve_tcp(&web.netns_path, 8080, "web".to_string()).unwrap();
    probe::serve_tcp(&web.netns_path, 9090, "web".to_string()).unwrap();
    let reach = |port: u16| {
        probe::tcp(&client.netns_path, web.ip, port, Duration::from_millis(700))
            .unwrap()
            .is_some()
    };
    eventually("client reaches web before any policy", || reach(8080));
    // web admits TCP 8080 only: 9090 is dropped by the isolation the policy implies.
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-8080", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]
        }
    });
    controller(&g.lab, async |c| {
        c.put_policy("NetworkPolicy", Some("shop"), "web-8080", &policy)
            .await
    });
    eventually("the policy reaches n1", || !reach(9090));
    assert!(reach(8080));

    let proxy = ProxyGuard::start(&g.lab);
    let profile = tempfile_dir(&g.lab);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = BrowserConfig::builder()
            .chrome_executable("/usr/bin/chromium")
            .no_sandbox()
            .user_data_dir(&profile)
            .arg("--disable-gpu")
            .build()
            .unwrap();
        let (mut browser, mut handler) = Browser::launch(config).await.unwrap();
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page(proxy.url.as_str()).await.unwrap();

        // The topology: both nodes and both endpoints, as the lab made them.
        let nodes = wait_for_text(&page, "[data-testid=node]", "the nodes", |t| {
            t.contains("n1") && t.contains("n2")
        })
        .await;
        assert!(
            nodes.contains("shop/web") && nodes.contains("office/client"),
            "{nodes}"
        );

        // The denied flow office → shop, coloured as denied (or mixed: 8080 was allowed).
        let edge = "[data-testid=edge][data-from=office][data-to=shop]";
        let deadline = Instant::now() + Duration::from_secs(30);
        let verdict = loop {
            // Keep traffic coming so the flows window has both verdicts.
            let _ = (reach(8080), reach(9090));
            if let Ok(e) = page.find_element(edge).await {
                if let Ok(Some(v)) = e.attribute("data-verdict").await {
                    if v != "allowed" {
                        break v;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no denied edge office → shop on the page"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(verdict == "denied" || verdict == "mixed", "{verdict}");

        // A click on the edge, as a person would: its flows with the deciding rule, and the
        // explanation of the denied pair.
        page.find_element(&format!("{edge} [data-testid=edge-label]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let flows = wait_for_text(
            &page,
            "[data-testid=flow][data-verdict=denied]",
            "denied flows",
            |t| t.contains("denied"),
        )
        .await;
        assert!(flows.contains(&web.ip.to_string()), "{flows}");
        assert!(
            flows.contains("shop/web-8080") || flows.contains("isolation"),
            "{flows}"
        );
        let explain = wait_for_text(&page, "[data-testid=explain]", "the explanation", |t| {
            t.contains("DENIED")
        })
        .await;
        assert!(explain.contains("shop/web"), "{explain}");
        browser.close().await.unwrap();
        let _ = browser.wait().await;
        events.abort();
    });
}

/// A fresh browser profile in the lab's directory (removed with the lab).
fn tempfile_dir(lab: &seam_lab::Lab) -> std::path::PathBuf {
    let dir = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
