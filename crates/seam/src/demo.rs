//! `seam lab demo`: pods in two namespaces on two nodes, and what really gets through.

use std::path::PathBuf;
use std::time::Duration;

use seam_lab::{probe, Lab, LabSpec};

const PORT: u16 = 8080;

pub fn run(name: &str, keep: bool, bin_dir: PathBuf) -> anyhow::Result<()> {
    let _ = seam_lab::down(name);
    println!("== building lab {name}: 2 nodes, per-namespace segments");
    let mut lab = seam_lab::up(&LabSpec {
        name: name.into(),
        nodes: 2,
        segment_mode: "namespace".into(),
        controller_args: Vec::new(),
        one_process: false,
        bin_dir,
    })?;
    let result = scenario(&mut lab);
    if keep {
        println!("== lab kept: `seam lab status --name {name}`, remove with `seam lab down --name {name}`");
    } else {
        seam_lab::down(name)?;
        println!("== lab removed");
    }
    result
}

fn scenario(lab: &mut Lab) -> anyhow::Result<()> {
    let layout = [
        ("blue", "web-1", "n1"),
        ("blue", "web-2", "n2"),
        ("green", "db-1", "n1"),
        ("green", "db-2", "n2"),
    ];
    for (ns, pod, node) in layout {
        let p = lab.add_pod(node, ns, pod)?;
        probe::serve_tcp(&p.netns_path, PORT, format!("{ns}/{pod}"))?;
        println!("   pod {ns}/{pod:<6} on {node}  {}", p.ip);
    }
    // Give the agents a moment to install the remote entries they learn from the controller.
    std::thread::sleep(Duration::from_millis(300));
    println!("\n== connectivity (TCP {PORT} answered by the right pod / ICMP echo), rows = client");
    print!("{:>12}", "");
    for dst in &lab.pods {
        print!(" {:>12}", format!("{}/{}", dst.namespace, dst.name));
    }
    println!();
    let mut failures = 0;
    for src in &lab.pods {
        print!("{:>12}", format!("{}/{}", src.namespace, src.name));
        for dst in &lab.pods {
            let expect = format!("{}/{}", dst.namespace, dst.name);
            let tcp = probe::tcp(&src.netns_path, dst.ip, PORT, Duration::from_secs(2))?.as_deref()
                == Some(expect.as_str());
            let icmp = probe::ping(&src.netns_path, dst.ip, 2)?;
            if !(tcp && icmp) {
                failures += 1;
            }
            let cell = format!(
                "{}/{}",
                if tcp { "tcp" } else { "TCP-FAIL" },
                if icmp { "icmp" } else { "ICMP-FAIL" }
            );
            print!(" {cell:>12}");
        }
        println!();
    }
    println!(
        "\n{} of {} pairs fully connected (no policy yet: everything should pass)",
        lab.pods.len().pow(2) - failures,
        lab.pods.len().pow(2)
    );
    anyhow::ensure!(
        failures == 0,
        "{failures} pair(s) failed; see the agent logs under {}",
        lab.dir.display()
    );
    policy_example(lab)
}

/// The seed's example: clients (namespace green) reach web servers (namespace blue) on TCP 80
/// and 443 through one contract.
const SEED_EXAMPLE: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{namespaces: [green]}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{namespaces: [blue]}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  subjects: [{name: web, filters: [{protocol: TCP, ports: [80, 443]}]}]
  action: allow
"#;

fn policy_example(lab: &Lab) -> anyhow::Result<()> {
    println!(
        "\n== policy: EPG-Client (green) -> Contract-Web (TCP 80, 443) -> EPG-Webserver (blue)"
    );
    let objects = seam::manifest::parse_manifests(SEED_EXAMPLE)?;
    let client = seam_client::ControllerClient::new(&lab.controller)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = rt.block_on(async {
        for object in &objects {
            if let seam::manifest::Manifest::Policy(p) = object {
                let key = p.key();
                client
                    .put_policy(
                        key.kind.as_str(),
                        key.namespace.as_deref(),
                        &key.name,
                        &p.to_value(),
                    )
                    .await?;
                println!("   {} applied", object.describe());
            }
        }
        anyhow::Ok(client.snapshot().await?)
    })?;
    for (port, what) in [
        (80, "allowed by the contract"),
        (PORT, "not in the contract"),
    ] {
        println!("\n$ seam explain green/db-1 blue/web-1 {port}/tcp   # {what}");
        let flow = seam_policy::Flow {
            src: seam::explain::parse_end("green/db-1")?,
            dst: seam::explain::parse_end("blue/web-1")?,
            protocol: seam_policy::Protocol::Tcp,
            port,
        };
        print!(
            "{}",
            seam::explain::render_text(&seam::explain::explain(&snapshot, flow)?)
        );
    }
    Ok(())
}
