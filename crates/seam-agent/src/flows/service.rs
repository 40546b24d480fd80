//! Which Service a recorded connection was sent to, asked of conntrack by tuple.
//!
//! Policy sees a Service's connection after its translation: the sample of its first packet
//! names the backend. NFLOG can attach the connection's conntrack entry (and so its original
//! destination) to each sample, but some kernels refuse that (`NFULNL_CFG_F_CONNTRACK` →
//! `EOPNOTSUPP`). The recorder then asks conntrack itself: when an allowed record's destination
//! (or source, for a sample of the reply direction) is the backend of one of the node's Service
//! frontends, [`plan`] lists the lookups that find its entry, a worker thread of its own sends
//! them (`seam_nft::conntrack::get_request`, each a hash lookup in the kernel) and [`answer`]
//! reads the Service off the entry's original destination.
//!
//! The lookups:
//! 1. by the reply tuple (the backend to the client): the sampled packet reversed. This finds
//!    every connection this node translated without also translating its source;
//! 2. when that finds nothing, by the original tuple of each frontend of the backend (the client
//!    to the frontend's address, a NodePort at this node's address): this finds the connections
//!    whose source this node translated too (a NodePort's masquerade), whose reply tuple is not
//!    the packet's.
//!
//! An entry found whose original destination is the backend itself was not translated on this
//! node (the client's node translated it, and its own record names the Service): no Service, and
//! no further lookup.
//!
//! Denied samples are never looked up: their packet was dropped before conntrack confirmed its
//! entry, so there is none to find (and a flood of them must cost nothing here).
//!
//! Off the hot path: the recorder hands a record with its lookups to the worker through a
//! bounded queue and goes on with the next sample; the worker keeps the record once answered. A
//! full queue, a kernel that refuses or does not answer, or no entry (the connection ended
//! first) leaves the record without its Service, counted in
//! `seam_flow_service_lookups_failed_total`.

use std::net::Ipv4Addr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use seam_model::flow::FlowVerdict;
use seam_nft::conntrack::{CtDirection, CtEntry, CtQuery};
use seam_nft::services::FrontendKey;

use super::decode::{Flow, Resolver};
use super::FlowRecorder;

/// Gets one conntrack entry by a tuple (`None`: there is none), blocking; `Err` says why it
/// could not. Owned by the lookup worker's thread (`seam_linux::conntrack::ConntrackReader`).
pub type ConntrackGet =
    Box<dyn FnMut(&CtQuery) -> Result<Option<CtEntry>, String> + Send + 'static>;

/// A frontend that sends connections to a backend, and its Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where the Service is reached.
    pub key: FrontendKey,
    /// `namespace/name` of the Service.
    pub service: Arc<str>,
}

/// At most this many lookups by original tuple per record (a backend of more frontends than
/// this is looked up at its first ones only).
const MAX_ORIGINAL_LOOKUPS: usize = 8;

/// The lookups that find a record's conntrack entry, and the frontends that may have sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// In order; the first that finds an entry decides.
    pub queries: Vec<CtQuery>,
    /// The frontends of the backend.
    pub candidates: Arc<[Candidate]>,
}

/// The lookups for `flow`, or `None` when conntrack cannot name its Service: it is denied, has
/// one already, has no ports, or neither end is a backend of this node's frontends.
pub fn plan(flow: &Flow, resolver: &Resolver) -> Option<Lookup> {
    if flow.verdict != FlowVerdict::Allowed || flow.service.is_some() {
        return None;
    }
    let src = (flow.src.ip, flow.src.port?);
    let dst = (flow.dst.ip, flow.dst.port?);
    // The destination is a backend (the first packet of a connection), or the source is one
    // (a sample of the reply direction).
    let (client, backend, candidates) = match resolver.frontends_of(flow.protocol, dst) {
        Some(c) => (src, dst, c),
        None => (dst, src, resolver.frontends_of(flow.protocol, src)?),
    };
    let mut queries = vec![CtQuery {
        direction: CtDirection::Reply,
        protocol: flow.protocol,
        src: backend,
        dst: client,
    }];
    let originals = candidates.iter().filter_map(|c| {
        let to = match c.key {
            FrontendKey::Address { addr, port, .. } => (addr, port),
            FrontendKey::NodePort { port, .. } => (resolver.local()?, port),
        };
        Some(CtQuery {
            direction: CtDirection::Original,
            protocol: flow.protocol,
            src: client,
            dst: to,
        })
    });
    queries.extend(originals.take(MAX_ORIGINAL_LOOKUPS));
    Some(Lookup {
        queries,
        candidates,
    })
}

/// The Service and the address and port the client used, from the connection's entry: `None`
/// when the entry was not translated here (its original destination is where the reply comes
/// from) or no candidate frontend is its original destination.
pub fn answer(lookup: &Lookup, entry: &CtEntry) -> Option<(Arc<str>, Ipv4Addr, u16)> {
    if entry.orig_dst == entry.reply_src {
        return None;
    }
    let (addr, port) = entry.orig_dst;
    lookup
        .candidates
        .iter()
        .find(|c| match c.key {
            FrontendKey::Address {
                addr: a, port: p, ..
            } => (a, p) == (addr, port),
            FrontendKey::NodePort { port: p, .. } => p == port,
        })
        .map(|c| (c.service.clone(), addr, port))
}

/// What became of one record's lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Service it was sent to.
    Service(Arc<str>, Ipv4Addr, u16),
    /// Its entry shows no translation on this node.
    NotTranslated,
    /// No entry answered (the connection ended first), or the kernel did not: why.
    Failed(String),
}

/// Runs `lookup`'s queries in order until one finds the entry.
pub fn resolve(get: &mut ConntrackGet, lookup: &Lookup) -> Outcome {
    let mut error = None;
    for query in &lookup.queries {
        match get(query) {
            Ok(Some(entry)) => {
                return match answer(lookup, &entry) {
                    Some((service, addr, port)) => Outcome::Service(service, addr, port),
                    None => Outcome::NotTranslated,
                }
            }
            Ok(None) => {}
            Err(e) => error = Some(e),
        }
    }
    Outcome::Failed(error.unwrap_or_else(|| "no conntrack entry".to_string()))
}

/// Records waiting for their lookups (beyond this many, a record is kept without its Service).
const QUEUE: usize = 1024;

/// The lookup worker: a thread that answers records' lookups and keeps them.
#[derive(Debug, Clone)]
pub struct ServiceLookups {
    queue: SyncSender<(Flow, Lookup)>,
}

impl ServiceLookups {
    /// Starts the worker, which keeps the records it answered in `recorder`; it ends when every
    /// handle is dropped.
    pub fn spawn(get: ConntrackGet, recorder: Arc<FlowRecorder>) -> std::io::Result<Self> {
        let (queue, pending) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("seam-flow-ct".into())
            .spawn(move || work(get, pending, &recorder))?;
        Ok(ServiceLookups { queue })
    }

    /// Queues `flow` for its lookups; a full queue (or a worker gone) hands it back.
    pub fn submit(&self, flow: Flow, lookup: Lookup) -> Result<(), Box<Flow>> {
        self.queue.try_send((flow, lookup)).map_err(|e| match e {
            TrySendError::Full((flow, _)) | TrySendError::Disconnected((flow, _)) => Box::new(flow),
        })
    }
}

fn work(mut get: ConntrackGet, pending: Receiver<(Flow, Lookup)>, recorder: &FlowRecorder) {
    let mut failing = false;
    while let Ok((mut flow, lookup)) = pending.recv() {
        match resolve(&mut get, &lookup) {
            Outcome::Service(service, addr, port) => {
                recorder.metrics().service_found.inc();
                flow.service = Some((service, addr, port));
                failing = false;
            }
            Outcome::NotTranslated => failing = false,
            Outcome::Failed(error) => {
                recorder.metrics().service_failed.inc();
                if !failing {
                    tracing::debug!(%error, "a flow record's Service could not be looked up in conntrack");
                }
                failing = true;
            }
        }
        recorder.keep(flow);
    }
}
