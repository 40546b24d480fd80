//! Crash safety: the agent dies (its whole runtime is dropped, in-flight ADD included) and a
//! new agent starts on the same lease store and the same kernel state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seam_agent::{Agent, Running};
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_dataplane::{AttachedPort, LinkOp, NodeKernel, Observed, PodAttach};
use seam_model::agent_rpc::{AgentOp, AgentRequest, PROTOCOL_VERSION};
use seam_nft::nat::{NatOp, ObservedNat};
use seam_nft::table::TableModel;
use seam_store::AnyStore;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::harness::{
    add, agent_config, eventually, leases, pod, port, raw_call, wait_ready, Controller,
};

/// The fake kernel, except that attaching `hang_on` creates the port and then never returns:
/// the agent is stuck between "veth created" and "lease bound" when it dies.
struct StallingKernel {
    inner: Arc<FakeKernel>,
    hang_on: String,
    stalled: Arc<Notify>,
}

impl NodeKernel for StallingKernel {
    async fn observe(&self) -> seam_dataplane::Result<Observed> {
        self.inner.observe().await
    }

    async fn apply(&self, op: &LinkOp) -> seam_dataplane::Result<()> {
        self.inner.apply(op).await
    }

    async fn attach(&self, spec: &PodAttach) -> seam_dataplane::Result<AttachedPort> {
        let port = self.inner.attach(spec).await?;
        if spec.host_ifname == self.hang_on {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(port)
    }

    async fn detach(&self, host_ifname: &str) -> seam_dataplane::Result<()> {
        self.inner.detach(host_ifname).await
    }

    async fn retire(
        &self,
        host_ifname: &str,
        sandbox: Option<(&str, &str)>,
    ) -> seam_dataplane::Result<()> {
        self.inner.retire(host_ifname, sandbox).await
    }

    async fn reap(&self) -> seam_dataplane::Result<bool> {
        self.inner.reap().await
    }

    async fn check(&self, spec: &PodAttach) -> seam_dataplane::Result<AttachedPort> {
        self.inner.check(spec).await
    }

    async fn underlay_interface(
        &self,
        ifname: &str,
    ) -> seam_dataplane::Result<seam_dataplane::UnderlayInterface> {
        self.inner.underlay_interface(ifname).await
    }
}

pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Opens the store file, waiting for the dead agent's handle on it to be gone.
pub(crate) fn reopen(path: &Path) -> AnyStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match AnyStore::open_embedded(path) {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("store not released yet: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_restarted_agent_keeps_its_leases_and_rolls_back_half_done_adds() {
    let main = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("leases.redb");
    let ctl = main.block_on(Controller::start(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
    ));
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    let sock = cfg.socket.clone();

    // First life: three pods, then an ADD that dies half-way.
    let fake = Arc::new(FakeKernel::default());
    let stalled = Arc::new(Notify::new());
    let doomed = "crash-me";
    let first_rt = runtime();
    let first: Running<StallingKernel> = first_rt
        .block_on(Agent::start(
            cfg.clone(),
            StallingKernel {
                inner: fake.clone(),
                hang_on: port(doomed),
                stalled: stalled.clone(),
            },
            AnyStore::open_embedded(&store_path).unwrap(),
        ))
        .unwrap();
    let (before, pending_ip, in_flight) = main.block_on(async {
        wait_ready(&sock).await;
        let mut before = BTreeMap::new();
        for id in ["a", "b", "c"] {
            before.insert(id.to_string(), add(&sock, &pod("web", id)).await);
        }
        let mut line = serde_json::to_vec(&AgentRequest {
            protocol: PROTOCOL_VERSION,
            op: AgentOp::Add(pod("web", doomed)),
        })
        .unwrap();
        line.push(b'\n');
        let sock2 = sock.clone();
        let in_flight = tokio::spawn(async move { raw_call(&sock2, &line).await });
        stalled.notified().await;
        let book = leases(&first).await;
        let (pending_ip, bound) = book[doomed];
        assert!(!bound, "the stalled ADD's lease must still be pending");
        (before, pending_ip, in_flight)
    });
    assert!(fake.state().attachments.contains_key(&port(doomed)));

    // Crash: every task of the agent dies where it stands.
    drop(first);
    drop(first_rt);
    let reply = main.block_on(in_flight).unwrap();
    assert_eq!(reply, "", "the runtime of the dead agent must see no reply");

    // Second life: same store file, a new kernel handle on the same kernel state.
    let kernel = FakeKernel::default();
    let old_state = fake.state();
    kernel.with_state(|s| *s = old_state.clone());
    let second = main
        .block_on(Agent::start(cfg, kernel, reopen(&store_path)))
        .unwrap();
    main.block_on(async {
        // Rolled back at start, before the controller is even consulted.
        let book = leases(&second).await;
        assert!(!book.contains_key(doomed), "{book:?}");
        assert!(!second
            .agent
            .kernel
            .state()
            .attachments
            .contains_key(&port(doomed)));
        let expected: BTreeMap<String, (Ipv4Addr, bool)> = before
            .iter()
            .map(|(id, r)| (id.clone(), (r.address.addr(), true)))
            .collect();
        assert_eq!(book, expected);

        wait_ready(&sock).await;
        for (id, r) in &before {
            assert_eq!(
                &add(&sock, &pod("web", id)).await,
                r,
                "repeated ADD of {id}"
            );
        }
        let mut seen: BTreeSet<Ipv4Addr> = before.values().map(|r| r.address.addr()).collect();
        for i in 0..5 {
            let r = add(&sock, &pod("web", &format!("new{i}"))).await;
            assert!(seen.insert(r.address.addr()), "{r:?} duplicates an address");
            assert_ne!(
                r.address.addr(),
                pending_ip,
                "rolled-back address reused at once"
            );
        }
        // The retried ADD of the doomed pod works too.
        let r = add(&sock, &pod("web", doomed)).await;
        assert!(seen.insert(r.address.addr()));

        // Kernel, leases and controller agree.
        let book = leases(&second).await;
        assert_eq!(book.len(), 9);
        let ports: BTreeSet<String> = book.keys().map(|id| port(id)).collect();
        let attached: BTreeSet<String> = second
            .agent
            .kernel
            .state()
            .attachments
            .into_keys()
            .collect();
        assert_eq!(attached, ports);
        let want: BTreeSet<String> = book.keys().map(|id| format!("web/{id}")).collect();
        eventually("the controller has every endpoint once", || async {
            let eps = ctl.endpoints().await;
            let names: BTreeSet<String> = eps.iter().map(|e| e.name.clone()).collect();
            eps.len() == want.len() && names == want
        })
        .await;
    });
    drop(second);
    drop(ctl);
    drop(main);
}

impl seam_dataplane::Firewall for StallingKernel {
    async fn apply_ruleset(&self, table: &TableModel) -> seam_dataplane::Result<()> {
        self.inner.apply_ruleset(table).await
    }

    async fn apply_delta(&self, delta: &seam_nft::FirewallDelta) -> seam_dataplane::Result<()> {
        self.inner.apply_delta(delta).await
    }

    async fn list_table(&self) -> seam_dataplane::Result<Option<TableModel>> {
        self.inner.list_table().await
    }

    async fn apply_nat(&self, op: &NatOp) -> seam_dataplane::Result<()> {
        self.inner.apply_nat(op).await
    }

    async fn list_nat(&self) -> seam_dataplane::Result<Option<ObservedNat>> {
        self.inner.list_nat().await
    }
}

#[test]
fn labels_set_through_the_api_survive_the_agents_resync() {
    let main = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("leases.redb");
    let ctl = main.block_on(Controller::start(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
    ));
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    let sock = cfg.socket.clone();
    let fake = Arc::new(FakeKernel::default());
    let first_rt = runtime();
    let first = first_rt
        .block_on(Agent::start(
            cfg.clone(),
            StallingKernel {
                inner: fake.clone(),
                hang_on: String::new(),
                stalled: Arc::new(Notify::new()),
            },
            AnyStore::open_embedded(&store_path).unwrap(),
        ))
        .unwrap();
    let name = main.block_on(async {
        wait_ready(&sock).await;
        add(&sock, &pod("web", "a")).await;
        eventually("the agent publishes its endpoint", || async {
            ctl.endpoints().await.iter().any(|e| e.namespace == "web")
        })
        .await;
        // The Kubernetes adapter (or an operator) labels the endpoint through the API.
        let mut ep = ctl
            .endpoints()
            .await
            .into_iter()
            .find(|e| e.namespace == "web")
            .unwrap();
        ep.labels.insert("app".into(), "web".into());
        ctl.client.put_endpoint(&ep).await.unwrap();
        ep.name
    });
    // The agent restarts: its resync compares its leases with the controller's endpoints.
    drop(first);
    drop(first_rt);
    let kernel = FakeKernel::default();
    let old_state = fake.state();
    kernel.with_state(|s| *s = old_state.clone());
    let second = main
        .block_on(Agent::start(cfg, kernel, reopen(&store_path)))
        .unwrap();
    main.block_on(async {
        wait_ready(&sock).await;
        // Give the resync (and a publish it might wrongly make) time to land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ep = ctl.endpoint(&name).await.unwrap();
        assert_eq!(
            ep.labels.get("app").map(String::as_str),
            Some("web"),
            "the resync undid the API's labels: {ep:?}"
        );
    });
    drop(second);
}
