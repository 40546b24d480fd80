//! Isolation modes per tenant, set through the controller API and enforced by the nodes'
//! nftables tables with real traffic: two namespaces in two `multitenant` tenants cannot connect
//! (dropped: the probe times out); `join` puts them in one tenant, `isolate` separates them
//! again, `make-global` lets one reach and be reached by every tenant.

use std::time::Duration;

use seam_e2e::{controller, eventually, LabGuard, TestLab};
use seam_lab::probe::{self, Outcome};
use seam_lab::PodInfo;
use serde_json::json;

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_millis(700);

fn outcome(from: &PodInfo, to: &PodInfo) -> Outcome {
    probe::tcp_connect(&from.netns_path, to.ip, PORT, TIMEOUT).unwrap()
}

/// Both directions connect.
fn connect(a: &PodInfo, b: &PodInfo) -> bool {
    outcome(a, b).connected() && outcome(b, a).connected()
}

/// Both directions are dropped (time out, not refused).
fn dropped(a: &PodInfo, b: &PodInfo) -> bool {
    outcome(a, b) == Outcome::TimedOut && outcome(b, a) == Outcome::TimedOut
}

#[test]
#[ignore = "privileged: netns"]
fn tenant_isolation_join_isolate_and_make_global() {
    let mut g = LabGuard::up("e2e-tenant", 2, &[]);
    let web = g.lab.workloads().add_pod("n1", "blue", "web").unwrap();
    let client = g.lab.workloads().add_pod("n2", "green", "client").unwrap();
    let buddy = g.lab.workloads().add_pod("n2", "blue", "buddy").unwrap();
    for p in [&web, &client, &buddy] {
        probe::serve_tcp(&p.netns_path, PORT, p.name.clone()).unwrap();
    }
    eventually("everything connects before any tenant", || {
        connect(&client, &web) && connect(&buddy, &web)
    });

    // Two tenants in mode multitenant, one namespace each (raw JSON: the wire form).
    controller(&g.lab, async |c| {
        for (ns, tenant) in [("blue", "tb"), ("green", "tg")] {
            let t = json!({"name": tenant, "isolation": "multitenant"});
            let r = c
                .request_raw(
                    "PUT",
                    &format!("/v1/tenants/{tenant}"),
                    t.to_string().into(),
                )
                .await?;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let n = json!({"name": ns, "tenant": tenant});
            let r = c
                .request_raw("PUT", &format!("/v1/namespaces/{ns}"), n.to_string().into())
                .await?;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
        Ok(())
    });
    let tenants = controller(&g.lab, async |c| c.list_tenants().await);
    assert_eq!(tenants.len(), 2);
    assert!(tenants
        .iter()
        .all(|t| t.isolation.as_str() == "multitenant" && !t.global));
    eventually("tenants are isolated from each other", || {
        dropped(&client, &web)
    });
    assert!(connect(&buddy, &web), "one tenant's pods still connect");

    // join: green joins blue's tenant.
    let change = controller(&g.lab, async |c| c.join_tenant("green", "blue").await);
    assert_eq!(change.tenant.name, "tb");
    eventually("joined namespaces connect", || connect(&client, &web));

    // isolate: green gets a tenant of its own, still multitenant.
    let change = controller(&g.lab, async |c| c.isolate_namespace("green").await);
    assert_eq!(change.tenant.name, "green");
    assert_eq!(change.tenant.isolation.as_str(), "multitenant");
    eventually("an isolated namespace is cut off again", || {
        dropped(&client, &web)
    });
    assert!(connect(&buddy, &web));

    // make-global: green reaches and is reached by every tenant.
    let change = controller(&g.lab, async |c| c.make_namespace_global("green").await);
    assert!(change.tenant.global);
    eventually("a global namespace connects to every tenant", || {
        connect(&client, &web) && connect(&client, &buddy)
    });
}
