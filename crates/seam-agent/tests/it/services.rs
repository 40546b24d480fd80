//! Services: the agent follows Services, their endpoints and EndpointSlices, and writes what its
//! node translates into the firewall table it applies.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use seam_agent::{Agent, Running};
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_dataplane::services::{DesiredServices, FrontendKey};
use seam_model::{
    ClusterIp, EndpointConditions, EndpointSlice, PortProtocol, Service, ServicePort, ServiceSpec,
    ServiceType, SliceEndpoint, SlicePort, TargetPort,
};
use seam_store::{AnyStore, Datastore, Txn, TxnOutcome};

use crate::harness::{add, agent_config, del, eventually, pod, wait_ready, Controller};

const N1_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A controller over a store the test writes Services into directly, and agent `n1`.
struct Setup {
    dir: tempfile::TempDir,
    store: AnyStore,
    ctl: Controller,
    /// `n1`'s lease store (kept across a restart).
    leases: AnyStore,
    n1: Running<FakeKernel>,
    sock: std::path::PathBuf,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::memory();
        let ctl = Controller::start_with_store(
            &dir.path().join("ctl.sock"),
            ControllerConfig::default(),
            store.clone(),
        )
        .await;
        let leases = AnyStore::memory();
        let (n1, sock) = start_agent(dir.path(), &ctl, FakeKernel::default(), leases.clone()).await;
        Setup {
            dir,
            store,
            ctl,
            leases,
            n1,
            sock,
        }
    }

    async fn put(&self, key: &str, value: serde_json::Value) {
        let txn = Txn::new().put(key, serde_json::to_vec(&value).unwrap());
        assert!(matches!(
            self.store.txn(txn).await.unwrap(),
            TxnOutcome::Committed { .. }
        ));
    }

    async fn put_service(&self, s: &Service) {
        self.put(
            &format!("/seam/v1/services/{}", s.key()),
            serde_json::to_value(s).unwrap(),
        )
        .await;
    }

    async fn put_slice(&self, s: &EndpointSlice) {
        self.put(
            &format!("/seam/v1/endpointslices/{}", s.key()),
            serde_json::to_value(s).unwrap(),
        )
        .await;
    }
}

async fn start_agent(
    dir: &Path,
    ctl: &Controller,
    kernel: FakeKernel,
    leases: AnyStore,
) -> (Running<FakeKernel>, std::path::PathBuf) {
    let cfg = agent_config(dir, "n1", N1_IP, &ctl.sock);
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, kernel, leases).await.unwrap();
    wait_ready(&sock).await;
    (n1, sock)
}

fn service(name: &str, selector: Option<&[(&str, &str)]>, ports: Vec<ServicePort>) -> Service {
    Service {
        name: name.into(),
        namespace: "web".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            service_type: ServiceType::ClusterIP,
            selector: selector.map(|s| {
                s.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ports,
            cluster_ip: ClusterIp::Address(CLUSTER_IP),
            ..ServiceSpec::default()
        },
        status: Default::default(),
    }
}

fn http(target: u16) -> ServicePort {
    ServicePort {
        name: None,
        protocol: PortProtocol::Tcp,
        port: 80,
        target_port: Some(TargetPort::Number(target)),
        node_port: None,
        app_protocol: None,
    }
}

fn labelled(ns: &str, name: &str, app: &str) -> seam_model::agent_rpc::Attachment {
    let mut a = pod(ns, name);
    a.labels.insert("app".into(), app.into());
    a
}

/// What `n1` translates, as of its last pass.
async fn desired(n1: &Running<FakeKernel>) -> Option<DesiredServices> {
    n1.agent
        .services
        .lock()
        .await
        .desired()
        .map(|d| (*d).clone())
}

/// The backends of `key` on `n1`, if it has that frontend: as the agent wants them, and as the
/// (fake) kernel's table holds them, which must agree.
async fn backends(n1: &Running<FakeKernel>, key: FrontendKey) -> Option<Vec<(Ipv4Addr, u16)>> {
    let d = desired(n1).await?;
    let wanted = d
        .frontends
        .into_iter()
        .find(|f| f.key == key)
        .map(|f| f.backends);
    (table_backends(&n1.agent.kernel, key) == wanted).then_some(wanted)?
}

/// The backends the kernel's table sends `key` to (by slot); empty when it refuses `key`;
/// `None` when the table does not know it.
fn table_backends(kernel: &FakeKernel, key: FrontendKey) -> Option<Vec<(Ipv4Addr, u16)>> {
    let table = kernel.state().table?;
    let services = &table.services;
    if services.reject.contains(&key) {
        return Some(Vec::new());
    }
    services.frontends.get(&key)?;
    // Slot `i` holds the `i`th backend; the order does not matter here.
    let mut backends: Vec<(Ipv4Addr, u16)> = services.backends.get(&key)?.to_vec();
    backends.sort();
    Some(backends)
}

fn cluster_ip(port: u16) -> FrontendKey {
    FrontendKey::Address {
        addr: CLUSTER_IP,
        protocol: PortProtocol::Tcp,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_reaches_the_table_with_its_backends_and_loses_a_removed_one() {
    let s = Setup::start().await;
    let a = add(&s.sock, &labelled("web", "a", "web"))
        .await
        .address
        .addr();
    let b = add(&s.sock, &labelled("web", "b", "web"))
        .await
        .address
        .addr();
    // Another app, and the same labels in another namespace: not backends.
    add(&s.sock, &labelled("web", "c", "db")).await;
    add(&s.sock, &labelled("shop", "d", "web")).await;
    eventually("the endpoints are published", || async {
        s.ctl.endpoints().await.len() == 4
    })
    .await;

    s.put_service(&service("front", Some(&[("app", "web")]), vec![http(8080)]))
        .await;
    let mut want = vec![(a, 8080), (b, 8080)];
    want.sort();
    eventually("the Service's frontend has both pods", || async {
        backends(&s.n1, cluster_ip(80)).await.as_ref() == Some(&want)
    })
    .await;
    // What the kernel now translates is published (the conntrack cleanup compares it).
    eventually("the applied Services are published", || async {
        let applied = s.n1.agent.applied_services.borrow().clone();
        applied
            .frontends
            .iter()
            .any(|f| f.key == cluster_ip(80) && f.backends == want)
    })
    .await;
    // Both pods are on this node: a pod reaching itself through the Service is masqueraded.
    let d = desired(&s.n1).await.unwrap();
    assert_eq!(d.hairpin, [a, b].into());
    let written_whole = s.n1.agent.kernel.state().ruleset_applies;
    let table = s.n1.agent.kernel.state().table.unwrap();
    assert!(table.services.enabled);
    assert_eq!(table.services.hairpin, [a, b].into());
    assert_eq!(d.frontends.len(), 1);
    assert_eq!(d.frontends[0].service, "web/front:80");

    // A pod deleted is a backend removed.
    del(&s.sock, "a").await;
    eventually("the deleted pod is no backend any more", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(b, 8080)])
    })
    .await;
    assert_eq!(desired(&s.n1).await.unwrap().hairpin, [b].into());
    eventually("the table's hairpin follows", || async {
        s.n1.agent.kernel.state().table.unwrap().services.hairpin == [b].into()
    })
    .await;

    // A pod whose labels join the selector becomes one (the controller's record edited).
    let mut c = s.ctl.endpoint("web/c").await.unwrap();
    c.labels.insert("app".into(), "web".into());
    s.ctl.client.put_endpoint(&c).await.unwrap();
    eventually("the relabelled pod is a backend", || async {
        backends(&s.n1, cluster_ip(80))
            .await
            .is_some_and(|b| b.contains(&(c.ip, 8080)))
    })
    .await;

    // The Service deleted: nothing translated.
    s.store
        .txn(Txn::new().delete("/seam/v1/services/web/front"))
        .await
        .unwrap();
    eventually("the deleted Service is gone", || async {
        desired(&s.n1)
            .await
            .is_some_and(|d| d.frontends.is_empty() && d.hairpin.is_empty())
            && table_backends(&s.n1.agent.kernel, cluster_ip(80)).is_none()
    })
    .await;
    let table = s.n1.agent.kernel.state().table.unwrap();
    assert!(table.services.backends.is_empty(), "{:?}", table.services);
    // Every change since the first was made in place, never by writing the table whole.
    assert_eq!(s.n1.agent.kernel.state().ruleset_applies, written_whole);
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_that_is_not_ready_leaves_the_frontends_backends_and_comes_back() {
    let s = Setup::start().await;
    let a = add(&s.sock, &labelled("web", "a", "web"))
        .await
        .address
        .addr();
    let b = add(&s.sock, &labelled("web", "b", "web"))
        .await
        .address
        .addr();
    eventually("the endpoints are published", || async {
        s.ctl.endpoints().await.len() == 2
    })
    .await;
    s.put_service(&service("front", Some(&[("app", "web")]), vec![http(8080)]))
        .await;
    let both = {
        let mut v = vec![(a, 8080), (b, 8080)];
        v.sort();
        v
    };
    eventually("the Service's frontend has both pods", || async {
        backends(&s.n1, cluster_ip(80)).await.as_ref() == Some(&both)
    })
    .await;

    // The conditions as the Kubernetes adapter sets them on the controller's record.
    let set = |name: &'static str, conditions: Option<EndpointConditions>| {
        let client = s.ctl.client.clone();
        async move {
            let mut e = client.get_endpoint(name).await.unwrap();
            e.conditions = conditions;
            client.put_endpoint(&e).await.unwrap();
        }
    };
    let conditions = |ready, serving, terminating| {
        Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        })
    };
    // a's readiness probe fails: only b takes new connections.
    set("web/a", conditions(false, false, false)).await;
    eventually("the not-ready pod leaves the frontend", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(b, 8080)])
    })
    .await;
    // b is deleted while Ready (its grace period): with nothing ready, b finishes the work.
    set("web/b", conditions(false, true, true)).await;
    eventually("the agent sees b terminating", || async {
        s.n1.agent
            .view
            .read()
            .await
            .endpoints
            .get("web/b")
            .is_some_and(|e| e.state().terminating)
    })
    .await;
    eventually("the serving terminating pod is the fallback", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(b, 8080)])
    })
    .await;
    // a is ready again: b, terminating, is left out.
    set("web/a", None).await;
    eventually("the ready pod alone", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(a, 8080)])
    })
    .await;
    // The agent never put its lease's record back over the conditions the API set.
    assert_eq!(
        s.ctl.endpoint("web/b").await.unwrap().conditions,
        conditions(false, true, true)
    );
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_the_services_in_the_table() {
    let s = Setup::start().await;
    let a = add(&s.sock, &labelled("web", "a", "web"))
        .await
        .address
        .addr();
    s.put_service(&service("front", Some(&[("app", "web")]), vec![http(8080)]))
        .await;
    eventually("the Service is in the table", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(a, 8080)])
    })
    .await;
    // Settled: no further change is pending.
    let settled = s.n1.agent.kernel.state();
    let before = settled.table.clone().unwrap();
    let Setup {
        dir,
        store: _store,
        ctl,
        leases,
        n1,
        sock: _,
    } = s;
    n1.abort();

    // The same kernel and lease store under a new agent process.
    let kernel = FakeKernel::default();
    kernel.with_state(|st| *st = settled.clone());
    let (n1, _sock) = start_agent(dir.path(), &ctl, kernel, leases).await;
    eventually("the restarted agent made a pass", || async {
        desired(&n1).await.is_some() && n1.agent.applied_firewall.lock().await.is_some()
    })
    .await;
    // Adopted: the table was not written whole, and no change touched the Services part.
    let after = n1.agent.kernel.state();
    assert_eq!(after.ruleset_applies, settled.ruleset_applies);
    let table = after.table.unwrap();
    assert_eq!(table.services, before.services);
    assert_eq!(
        table_backends(&n1.agent.kernel, cluster_ip(80)),
        Some(vec![(a, 8080)])
    );
    n1.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_without_selector_follows_its_endpoint_slices() {
    let s = Setup::start().await;
    s.put_service(&service("ext", None, vec![http(80)])).await;
    eventually("a Service without backends refuses", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![])
    })
    .await;
    let server = Ipv4Addr::new(192, 0, 2, 10);
    let other = Ipv4Addr::new(192, 0, 2, 11);
    let mut slice = EndpointSlice {
        name: "ext-1".into(),
        namespace: "web".into(),
        service: "ext".into(),
        labels: BTreeMap::new(),
        endpoints: vec![
            SliceEndpoint {
                addresses: vec![server],
                conditions: EndpointConditions::default(),
                node_name: None,
                hostname: None,
                zone: None,
                target_ref: None,
            },
            SliceEndpoint {
                addresses: vec![other],
                conditions: EndpointConditions {
                    ready: Some(false),
                    serving: Some(false),
                    terminating: None,
                },
                node_name: None,
                hostname: None,
                zone: None,
                target_ref: None,
            },
        ],
        ports: vec![SlicePort {
            name: None,
            port: 8443,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }],
    };
    s.put_slice(&slice).await;
    eventually("the slice's ready endpoint is the backend", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![(server, 8443)])
    })
    .await;
    // The slice moved to another Service: this one has no backend left.
    slice.service = "elsewhere".into();
    s.put_slice(&slice).await;
    eventually("the moved slice is no longer this Service's", || async {
        backends(&s.n1, cluster_ip(80)).await == Some(vec![])
    })
    .await;
}
