//! The adapter's single writer to the controller.
//!
//! Watchers (one per Kubernetes kind, plus one on the controller's endpoints) send [`Input`]s;
//! [`Sync`] folds them into the desired state (what Kubernetes says the controller should hold)
//! and pushes the difference, one object at a time, level-triggered: a target is marked dirty
//! whenever its desired state or the controller's copy may have changed, and pushing a target
//! whose controller copy is already right costs no request. A controller that cannot be reached
//! (transport error, timeout, 5xx) is retried with backoff while inputs keep being folded in, so
//! after an outage only the latest state of each object is sent. An object the controller refuses
//! (400 and other 4xx) is logged and left until it changes; a refusal because of existing state
//! (409, e.g. deleting a namespace that still has endpoints) is retried later.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use seam_client::{ClientError, ControllerClient};
use seam_model::{Endpoint, EndpointKind, ObjectKind, Snapshot, WatchEvent, CLUSTER_SCOPE};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::TranslateError;
use crate::realization::{ready_condition, Tracked};
use crate::resource::{RawObject, WatchedKind};
use crate::services::{self, ServiceMapping, SliceMapping};
use crate::translate::{self, NamespaceSpec, PodLabels, PodMapping};
use crate::view::ViewHandle;

/// First wait after the controller could not be reached; doubled up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts to reach the controller (or the Kubernetes API).
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Wait before retrying an object the controller refused because of existing state (409).
const CONFLICT_RETRY: Duration = Duration::from_secs(2);

/// What the watchers tell the writer.
#[derive(Debug)]
pub(crate) enum Input {
    /// Every object of a kind, after a (re-)list: objects known before but not listed are gone.
    Relisted(WatchedKind, Vec<RawObject>),
    /// An object was added or changed.
    Applied(WatchedKind, RawObject),
    /// An object was deleted.
    Deleted(WatchedKind, RawObject),
    /// Everything the controller holds (after it was (re)connected).
    ControllerSnapshot(Box<Snapshot>),
    /// One change in the controller.
    ControllerEvent(WatchEvent),
}

/// One object the adapter manages in the controller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// `/v1/tenants/{name}`.
    Tenant(String),
    /// `/v1/namespaces/{name}`.
    Namespace(String),
    /// `/v1/policies/{kind}/{namespace}/{name}`.
    Policy {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
    },
    /// The labels of `/v1/endpoints/{namespace/pod}` (and of the pod's other interfaces).
    Pod(String),
    /// `/v1/services/{namespace}/{name}` (`namespace/name`).
    Service(String),
    /// `/v1/endpointslices/{namespace}/{name}` (`namespace/name`).
    EndpointSlice(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tenant(name) => write!(f, "Tenant {name}"),
            Target::Namespace(name) => write!(f, "Namespace {name}"),
            Target::Policy {
                kind,
                namespace: Some(ns),
                name,
            } => write!(f, "{kind} {ns}/{name}"),
            Target::Policy {
                kind,
                namespace: None,
                name,
            } => write!(f, "{kind} {name}"),
            Target::Pod(name) => write!(f, "Pod {name}"),
            Target::Service(key) => write!(f, "Service {key}"),
            Target::EndpointSlice(key) => write!(f, "EndpointSlice {key}"),
        }
    }
}

/// What the controller should hold for a target.
#[derive(Debug, Clone, PartialEq)]
enum Desired {
    Tenant(seam_model::Tenant),
    Namespace(NamespaceSpec),
    Policy(Value),
    Pod(PodLabels),
    Service(Box<seam_model::Service>),
    EndpointSlice(Box<seam_model::EndpointSlice>),
}

/// What the writer knows of a forwarded Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServiceInfo {
    /// No selector: its EndpointSlices are forwarded.
    selectorless: bool,
    /// Seam's `status.loadBalancer.ingress` is written back to Kubernetes.
    write_status: bool,
}

/// A Kubernetes EndpointSlice as the writer keeps it.
#[derive(Debug, Clone, PartialEq)]
struct SliceState {
    /// `namespace/name` of its Service.
    service: String,
    /// Seam's form; `None` when skipped (logged with the reason).
    slice: Option<Box<seam_model::EndpointSlice>>,
}

/// How pushing one target went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The controller holds the desired state (or nothing had to be sent).
    Done,
    /// The controller refused the object; logged, not retried until the object changes.
    Rejected,
    /// Refused because of existing state: retry this target later.
    RetryLater,
    /// The controller could not be reached: back off, keep the target dirty.
    Unavailable,
}

/// The metrics' word for an outcome.
fn write_result(outcome: Outcome) -> crate::metrics::WriteResult {
    use crate::metrics::WriteResult;
    match outcome {
        Outcome::Done => WriteResult::ok,
        Outcome::Rejected => WriteResult::rejected,
        Outcome::RetryLater => WriteResult::retry,
        Outcome::Unavailable => WriteResult::unavailable,
    }
}

/// The writer's state; see the module docs.
pub(crate) struct Sync {
    client: ControllerClient,
    view: ViewHandle,
    /// Per watched kind: the target each Kubernetes object (`namespace/name`) maps to.
    known: BTreeMap<WatchedKind, BTreeMap<String, Target>>,
    desired: BTreeMap<Target, Desired>,
    /// What the controller was last told (or refused) per target.
    applied: BTreeMap<Target, Desired>,
    dirty: BTreeSet<Target>,
    retry_at: BTreeMap<Target, Instant>,
    /// The controller's endpoints, kept current by its watch.
    endpoints: BTreeMap<String, Endpoint>,
    /// Kinds re-listed since their last garbage collection (policy kinds, Service,
    /// EndpointSlice).
    gc_pending: BTreeSet<WatchedKind>,
    /// Kinds listed at least once since the start.
    listed: BTreeSet<WatchedKind>,
    /// Forwarded Services by `namespace/name`.
    services: BTreeMap<String, ServiceInfo>,
    /// Kubernetes EndpointSlices by `namespace/name` (also those held back).
    slices: BTreeMap<String, SliceState>,
    /// Slice keys by Service key.
    slices_of: BTreeMap<String, BTreeSet<String>>,
    /// `status.loadBalancer.ingress` of each Service the controller holds, by `namespace/name`.
    seam_status: BTreeMap<String, Vec<seam_model::LoadBalancerIngress>>,
    /// Services whose Kubernetes status may differ from Seam's.
    status_dirty: BTreeSet<String>,
    /// The Kubernetes API, for the status write-back (none in unit tests).
    kube: Option<kube::Client>,
    /// Seam CRD objects forwarded, for their `Ready` condition ([`crate::realization`]).
    tracked: BTreeMap<Target, Tracked>,
    /// When the realization status is read next.
    next_status: Instant,
    /// What the adapter counts.
    metrics: crate::metrics::AdapterMetrics,
}

impl Sync {
    pub(crate) fn new(client: ControllerClient, view: ViewHandle) -> Self {
        Sync {
            client,
            view,
            known: BTreeMap::new(),
            desired: BTreeMap::new(),
            applied: BTreeMap::new(),
            dirty: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            gc_pending: BTreeSet::new(),
            listed: BTreeSet::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            seam_status: BTreeMap::new(),
            status_dirty: BTreeSet::new(),
            kube: None,
            tracked: BTreeMap::new(),
            next_status: Instant::now(),
            metrics: crate::metrics::AdapterMetrics::default(),
        }
    }

    /// Counts into `metrics` (the adapter's, served on `/metrics`).
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::AdapterMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes Seam's LoadBalancer addresses back into Kubernetes' Service status through `kube`.
    pub(crate) fn with_kube(mut self, kube: kube::Client) -> Self {
        self.kube = Some(kube);
        self
    }

    /// Folds inputs in and pushes changes until every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            while let Ok(input) = rx.try_recv() {
                self.handle(input);
            }
            let now = Instant::now();
            let due: Vec<Target> = self
                .retry_at
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(t, _)| t.clone())
                .collect();
            for target in due {
                self.retry_at.remove(&target);
                self.dirty.insert(target);
            }

            let outcome = if !self.gc_pending.is_empty() {
                self.collect_garbage().await
            } else if let Some(target) = self.dirty.pop_first() {
                let outcome = self.push(&target).await;
                match outcome {
                    Outcome::RetryLater => {
                        self.retry_at.insert(target, now + CONFLICT_RETRY);
                    }
                    Outcome::Unavailable => {
                        self.dirty.insert(target);
                    }
                    Outcome::Done | Outcome::Rejected => {}
                }
                outcome
            } else if let Some(key) = self.status_dirty.pop_first() {
                let outcome = self.write_status(&key).await;
                if outcome == Outcome::Unavailable {
                    self.status_dirty.insert(key);
                }
                outcome
            } else if self.wants_status() && self.next_status <= now {
                self.next_status = now + crate::realization::STATUS_INTERVAL;
                self.write_ready().await
            } else {
                let status_at = self.wants_status().then_some(self.next_status);
                let wake = self
                    .retry_at
                    .values()
                    .min()
                    .copied()
                    .into_iter()
                    .chain(status_at)
                    .min();
                let input = match wake {
                    Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                        Ok(input) => input,
                        Err(_) => continue,
                    },
                    None => rx.recv().await,
                };
                match input {
                    Some(input) => self.handle(input),
                    None => return,
                }
                continue;
            };
            if outcome == Outcome::Unavailable {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else {
                backoff = BACKOFF_MIN;
            }
        }
    }

    fn handle(&mut self, input: Input) {
        use crate::metrics::WatchEvent;
        match &input {
            Input::Relisted(kind, _) => self.metrics.event(*kind, WatchEvent::relist),
            Input::Applied(kind, _) => self.metrics.event(*kind, WatchEvent::apply),
            Input::Deleted(kind, _) => self.metrics.event(*kind, WatchEvent::delete),
            Input::ControllerSnapshot(_) => self.metrics.controller_read(),
            Input::ControllerEvent(_) => {}
        }
        match input {
            Input::Relisted(kind, objects) => self.relisted(kind, objects),
            Input::Applied(kind, obj) => {
                self.applied_object(kind, obj);
            }
            Input::Deleted(kind, obj) => self.deleted(kind, &obj),
            Input::ControllerSnapshot(snapshot) => self.controller_snapshot(*snapshot),
            Input::ControllerEvent(event) => self.controller_event(event),
        }
    }

    /// The controller was (re)connected: its endpoints replace the copy kept here, and every
    /// object this adapter applied that the controller no longer has (it lost its store, or
    /// someone deleted it) is applied again.
    fn controller_snapshot(&mut self, snapshot: Snapshot) {
        self.endpoints = snapshot
            .endpoints
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let mut present: BTreeSet<Target> = BTreeSet::new();
        present.extend(snapshot.tenants.into_iter().map(|t| Target::Tenant(t.name)));
        present.extend(
            snapshot
                .namespaces
                .into_iter()
                .map(|n| Target::Namespace(n.name)),
        );
        // A stored policy this version cannot read is still there (a newer Seam's): not lost.
        present.extend(
            snapshot
                .policies
                .iter()
                .map(seam_model::policy_object_name)
                .chain(
                    snapshot
                        .unreadable_policies
                        .iter()
                        .filter_map(|u| u.name.clone()),
                )
                .filter_map(|name| policy_target_of_name(&name)),
        );
        present.extend(snapshot.services.iter().map(|s| Target::Service(s.key())));
        present.extend(
            snapshot
                .endpoint_slices
                .iter()
                .map(|s| Target::EndpointSlice(s.key())),
        );
        let status: BTreeMap<String, Vec<seam_model::LoadBalancerIngress>> = snapshot
            .services
            .into_iter()
            .map(|s| (s.key(), s.status.load_balancer.ingress))
            .collect();
        for (key, ingress) in &status {
            if self.seam_status.get(key) != Some(ingress) {
                self.status_dirty.insert(key.clone());
            }
        }
        self.seam_status = status;
        let lost: Vec<Target> = self
            .applied
            .keys()
            .filter(|t| !matches!(t, Target::Pod(_)) && !present.contains(*t))
            .cloned()
            .collect();
        for target in lost {
            tracing::info!(%target, "the controller lost an object; applying it again");
            self.applied.remove(&target);
            self.dirty.insert(target);
        }
        let pods: Vec<Target> = self
            .desired
            .keys()
            .filter(|t| matches!(t, Target::Pod(_)))
            .cloned()
            .collect();
        self.dirty.extend(pods);
    }

    fn controller_event(&mut self, event: WatchEvent) {
        let target = match event.kind {
            ObjectKind::Endpoint => {
                let target = pod_target_of(&event.name);
                // Tolerant: a newer controller may send fields this adapter does not know.
                match event
                    .object
                    .map(seam_model::tolerant::from_value::<Endpoint>)
                {
                    Some(Ok(endpoint)) => {
                        for field in endpoint.first_sightings("endpoints") {
                            tracing::warn!(kind = "endpoints", field, "ignoring a field from the controller this version does not know (a newer Seam?)");
                        }
                        self.endpoints.insert(event.name, endpoint.value);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(endpoint = %event.name, error = %e, "cannot decode endpoint from the controller's watch");
                        return;
                    }
                    None => {
                        self.endpoints.remove(&event.name);
                    }
                }
                target
            }
            // Someone else deleted an object this adapter manages: apply it again.
            ObjectKind::Tenant if event.object.is_none() => Some(Target::Tenant(event.name)),
            ObjectKind::Namespace if event.object.is_none() => Some(Target::Namespace(event.name)),
            ObjectKind::Policy if event.object.is_none() => policy_target_of_name(&event.name),
            ObjectKind::Service => {
                match event
                    .object
                    .map(seam_model::tolerant::from_value::<seam_model::Service>)
                {
                    Some(Ok(service)) => {
                        let ingress = service.value.status.load_balancer.ingress;
                        if self.seam_status.get(&event.name) != Some(&ingress) {
                            self.seam_status.insert(event.name.clone(), ingress);
                            self.status_dirty.insert(event.name);
                        }
                        None
                    }
                    Some(Err(e)) => {
                        tracing::warn!(service = %event.name, error = %e, "cannot decode Service from the controller's watch");
                        None
                    }
                    None => {
                        self.seam_status.remove(&event.name);
                        Some(Target::Service(event.name))
                    }
                }
            }
            ObjectKind::EndpointSlice if event.object.is_none() => {
                Some(Target::EndpointSlice(event.name))
            }
            _ => None,
        };
        if let Some(target) = target.filter(|t| self.desired.contains_key(t)) {
            if !matches!(target, Target::Pod(_)) {
                self.applied.remove(&target);
            }
            self.dirty.insert(target);
        }
    }

    fn relisted(&mut self, kind: WatchedKind, objects: Vec<RawObject>) {
        let listed: BTreeSet<String> = objects.iter().map(RawObject::key).collect();
        tracing::debug!(%kind, objects = listed.len(), "re-listed");
        for obj in objects {
            self.applied_object(kind, obj);
        }
        // A malformed object still counts as listed: what was known of it stays until it is
        // either fixed or deleted.
        match kind {
            WatchedKind::Service | WatchedKind::EndpointSlice => {
                self.view.update(|v| {
                    if kind == WatchedKind::Service {
                        v.services.retain(|k, _| listed.contains(k));
                    } else {
                        v.endpoint_slices.retain(|k, _| listed.contains(k));
                    }
                });
                let gone: Vec<String> = self
                    .known
                    .entry(kind)
                    .or_default()
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    tracing::info!(%kind, %key, "gone while the watch was away");
                    self.forget(kind, &key);
                }
                // What Seam holds of the adapter's that Kubernetes no longer has is deleted once
                // both kinds were listed: before, a slice whose Service is not listed yet would
                // look unwanted, and deleting it would cut its Service's backends for a moment.
                self.listed.insert(kind);
                if kind == WatchedKind::Service {
                    self.gc_pending.insert(WatchedKind::Service);
                }
                if self.listed.contains(&WatchedKind::Service)
                    && self.listed.contains(&WatchedKind::EndpointSlice)
                {
                    self.gc_pending.insert(WatchedKind::EndpointSlice);
                }
            }
            WatchedKind::Node => self
                .view
                .update(|v| v.nodes.retain(|k, _| listed.contains(k))),
            _ => {
                let known = self.known.entry(kind).or_default();
                let gone: Vec<String> = known
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(target) = known.remove(&key) {
                        tracing::info!(%kind, %key, "gone while the watch was away");
                        self.tracked.remove(&target);
                        self.desired.remove(&target);
                        self.dirty.insert(target);
                    }
                }
            }
        }
        if is_policy(kind) {
            self.gc_pending.insert(kind);
        }
    }

    fn applied_object(&mut self, kind: WatchedKind, obj: RawObject) {
        let key = obj.key();
        let result = match kind {
            WatchedKind::Service => translate::decode(kind, &obj)
                .map(|s| {
                    self.view.update(|v| v.services.insert(key.clone(), s));
                })
                .and_then(|()| services::service(&obj))
                .map(|mapping| self.service_mapped(&key, mapping)),
            WatchedKind::EndpointSlice => translate::decode(kind, &obj)
                .map(|s| {
                    self.view
                        .update(|v| v.endpoint_slices.insert(key.clone(), s));
                })
                .and_then(|()| services::endpoint_slice(&obj))
                .map(|mapping| {
                    let service = services::service_key_of_slice(&obj);
                    self.slice_mapped(&key, service, mapping);
                }),
            WatchedKind::Node => translate::decode(kind, &obj).map(|n| {
                self.view.update(|v| v.nodes.insert(key.clone(), n));
            }),
            _ => translate_object(kind, &obj).map(|(target, desired)| {
                self.known
                    .entry(kind)
                    .or_default()
                    .insert(key.clone(), target.clone());
                if crate::realization::writes_status(kind) {
                    let tracked = self.tracked.entry(target.clone()).or_default();
                    tracked.kind = Some(kind);
                    tracked.current = obj.metadata.generation;
                }
                match desired {
                    Some(d) => {
                        self.desired.insert(target.clone(), d);
                    }
                    None => {
                        self.desired.remove(&target);
                    }
                }
                self.dirty.insert(target);
            }),
        };
        if let Err(e) = result {
            tracing::warn!(%kind, %key, error = %error_chain(&e), "skipping malformed object");
        }
    }

    fn deleted(&mut self, kind: WatchedKind, obj: &RawObject) {
        let key = obj.key();
        match kind {
            WatchedKind::Service => {
                self.view.update(|v| {
                    v.services.remove(&key);
                });
                self.forget(kind, &key);
            }
            WatchedKind::EndpointSlice => {
                self.view.update(|v| {
                    v.endpoint_slices.remove(&key);
                });
                self.forget(kind, &key);
            }
            WatchedKind::Node => self.view.update(|v| {
                v.nodes.remove(&key);
            }),
            _ => {
                let target = self
                    .known
                    .entry(kind)
                    .or_default()
                    .remove(&key)
                    .or_else(|| target_for(kind, obj));
                match target {
                    Some(target) => {
                        self.tracked.remove(&target);
                        self.desired.remove(&target);
                        self.dirty.insert(target);
                    }
                    None => tracing::warn!(%kind, %key, "deleted object has no name; ignored"),
                }
            }
        }
    }

    /// A Kubernetes Service was translated: forward it (or stop forwarding it), and re-decide its
    /// EndpointSlices (whether it has a selector may have changed).
    fn service_mapped(&mut self, key: &str, mapping: ServiceMapping) {
        let target = Target::Service(key.to_string());
        self.known
            .entry(WatchedKind::Service)
            .or_default()
            .insert(key.to_string(), target.clone());
        let skip_key = format!("Service {key}");
        match mapping {
            ServiceMapping::Forward(forwarded) => {
                self.view.update(|v| v.skipped.remove(&skip_key));
                self.services.insert(
                    key.to_string(),
                    ServiceInfo {
                        selectorless: !services::has_selector(&forwarded.service),
                        write_status: forwarded.write_status,
                    },
                );
                self.desired.insert(
                    target.clone(),
                    Desired::Service(Box::new(forwarded.service)),
                );
                self.status_dirty.insert(key.to_string());
            }
            ServiceMapping::Skip(reason) => {
                self.skip(skip_key, reason);
                self.services.remove(key);
                self.desired.remove(&target);
            }
        }
        self.dirty.insert(target);
        self.refresh_slices(key);
    }

    /// A Kubernetes EndpointSlice was translated.
    fn slice_mapped(&mut self, key: &str, service: Option<String>, mapping: SliceMapping) {
        self.drop_slice(key);
        self.known
            .entry(WatchedKind::EndpointSlice)
            .or_default()
            .insert(key.to_string(), Target::EndpointSlice(key.to_string()));
        let skip_key = format!("EndpointSlice {key}");
        let slice = match mapping {
            SliceMapping::Forward(slice) => {
                self.view.update(|v| v.skipped.remove(&skip_key));
                Some(slice)
            }
            SliceMapping::Skip(reason) => {
                self.skip(skip_key, reason);
                None
            }
        };
        if let Some(service) = service {
            self.slices_of
                .entry(service.clone())
                .or_default()
                .insert(key.to_string());
            self.slices
                .insert(key.to_string(), SliceState { service, slice });
        }
        self.refresh_slice(key);
    }

    /// Logs a skipped object the first time (and whenever its reason changes) and counts it.
    fn skip(&mut self, skip_key: String, reason: services::SkipReason) {
        let before = self
            .view
            .update(|v| v.skipped.insert(skip_key.clone(), reason));
        if before != Some(reason) {
            tracing::info!(object = %skip_key, %reason, "not forwarded to Seam");
        }
    }

    /// Forgets a slice's place under its Service (before it is replaced or deleted).
    fn drop_slice(&mut self, key: &str) {
        if let Some(old) = self.slices.remove(key) {
            if let Some(keys) = self.slices_of.get_mut(&old.service) {
                keys.remove(key);
                if keys.is_empty() {
                    self.slices_of.remove(&old.service);
                }
            }
        }
    }

    /// Re-decides every EndpointSlice of the Service `key`.
    fn refresh_slices(&mut self, service: &str) {
        let keys: Vec<String> = self
            .slices_of
            .get(service)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.refresh_slice(&key);
        }
    }

    /// An EndpointSlice is forwarded when it is not skipped and its Service is forwarded and has
    /// no selector: Seam computes the backends of a Service with a selector from its own inventory
    /// (pods, VMs, external endpoints), so the EndpointSlice controller's slices of it would only
    /// be written, and sent to every agent, for nothing. A slice whose Service is not known yet
    /// waits for it.
    fn refresh_slice(&mut self, key: &str) {
        let target = Target::EndpointSlice(key.to_string());
        let wanted = self.slices.get(key).and_then(|state| {
            let info = self.services.get(&state.service)?;
            info.selectorless.then(|| state.slice.clone()).flatten()
        });
        match wanted {
            Some(slice) => {
                self.desired
                    .insert(target.clone(), Desired::EndpointSlice(slice));
            }
            None => {
                self.desired.remove(&target);
            }
        }
        self.dirty.insert(target);
    }

    /// A Service or EndpointSlice is gone from Kubernetes.
    fn forget(&mut self, kind: WatchedKind, key: &str) {
        if let Some(known) = self.known.get_mut(&kind) {
            known.remove(key);
        }
        let skip_key = format!("{kind} {key}");
        self.view.update(|v| v.skipped.remove(&skip_key));
        match kind {
            WatchedKind::Service => {
                let target = Target::Service(key.to_string());
                self.services.remove(key);
                self.desired.remove(&target);
                self.dirty.insert(target);
                self.refresh_slices(key);
            }
            WatchedKind::EndpointSlice => {
                self.drop_slice(key);
                self.refresh_slice(key);
            }
            _ => {}
        }
    }

    /// Makes the Kubernetes Service's `status.loadBalancer.ingress` what Seam holds (a merge
    /// patch of the status subresource), for forwarded LoadBalancer Services of Seam's class
    /// once the controller holds them.
    async fn write_status(&mut self, key: &str) -> Outcome {
        let Some(kube) = self.kube.clone() else {
            return Outcome::Done;
        };
        if !self.services.get(key).is_some_and(|s| s.write_status) {
            return Outcome::Done;
        }
        let Some(want) = self.seam_status.get(key).cloned() else {
            return Outcome::Done;
        };
        let Some((namespace, name)) = key.split_once('/') else {
            return Outcome::Done;
        };
        let have: Vec<(Option<String>, Option<String>)> = self.view.update(|v| {
            v.services
                .get(key)
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|i| (i.ip, i.ip_mode))
                .collect()
        });
        let want_pairs: Vec<(Option<String>, Option<String>)> = want
            .iter()
            .map(|i| (Some(i.ip.to_string()), i.ip_mode.clone()))
            .collect();
        if have == want_pairs {
            return Outcome::Done;
        }
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": want}}});
        let api: kube::Api<RawObject> =
            kube::Api::namespaced_with(kube, namespace, &WatchedKind::Service.api_resource());
        let params = kube::api::PatchParams {
            field_manager: Some(translate::MANAGED_BY.to_string()),
            ..kube::api::PatchParams::default()
        };
        match api
            .patch_status(name, &params, &kube::api::Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(service = %key, ingress = ?want_pairs, "wrote the LoadBalancer address into the Kubernetes Service's status");
                Outcome::Done
            }
            Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
                // Gone meanwhile (404), or refused: the next change of the Service or of Seam's
                // status tries again.
                tracing::warn!(service = %key, error = %status.message, "cannot write the Service's status");
                Outcome::Rejected
            }
            Err(e) => {
                tracing::warn!(service = %key, error = %error_chain(&e), "cannot write the Service's status; retrying");
                Outcome::Unavailable
            }
        }
    }

    /// Whether the `Ready` conditions of Seam CRD objects are to be kept.
    fn wants_status(&self) -> bool {
        self.kube.is_some() && self.tracked.values().any(|t| t.forwarded.is_some())
    }

    /// Reads the realization status and writes the `Ready` condition of each Seam CRD object
    /// whose condition changed ([`crate::realization`]).
    async fn write_ready(&mut self) -> Outcome {
        let Some(kube) = self.kube.clone() else {
            return Outcome::Done;
        };
        let status = match self.client.realization().await {
            Ok(status) => status,
            // A controller that predates realization status: nothing to say.
            Err(e) if e.is_not_found() => return Outcome::Done,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the realization status");
                return classify(&e);
            }
        };
        let params = kube::api::PatchParams {
            field_manager: Some(translate::MANAGED_BY.to_string()),
            ..kube::api::PatchParams::default()
        };
        for (target, tracked) in self.tracked.iter_mut() {
            let (Some(kind), Some(forwarded)) = (tracked.kind, tracked.forwarded) else {
                continue;
            };
            let Some(object) = status.object(&realization_name(target)) else {
                continue;
            };
            let stored = *tracked.stored.get_or_insert(object.generation);
            let ready = ready_condition(object, stored, forwarded, tracked.realized);
            if ready.realized {
                tracked.realized = Some(forwarded);
            }
            let since = match &tracked.written {
                Some((old, _)) if *old == ready => continue,
                Some((old, at)) if old.realized == ready.realized => at.clone(),
                _ => crate::realization::now(),
            };
            let Some(name) = kube_name(target) else {
                continue;
            };
            let patch = serde_json::json!({"status": {"conditions": [ready.to_value(&since)]}});
            let api: kube::Api<RawObject> = kube::Api::all_with(kube.clone(), &kind.api_resource());
            match api
                .patch_status(name, &params, &kube::api::Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(%target, message = %ready.message, "wrote the Ready condition");
                    tracked.written = Some((ready, since));
                }
                Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
                    // Gone meanwhile (404), or a CRD without a status subresource: the next
                    // change tries again.
                    tracing::warn!(%target, error = %status.message, "cannot write the Ready condition");
                    tracked.written = Some((ready, since));
                }
                Err(e) => {
                    tracing::warn!(%target, error = %error_chain(&e), "cannot write the Ready condition; retrying");
                    return Outcome::Unavailable;
                }
            }
        }
        Outcome::Done
    }

    /// Marks for deletion the policy objects this adapter forwarded earlier (maybe in a previous
    /// run) whose Kubernetes object no longer exists.
    async fn collect_garbage(&mut self) -> Outcome {
        for kind in [WatchedKind::Service, WatchedKind::EndpointSlice] {
            if !self.gc_pending.contains(&kind) {
                continue;
            }
            let managed: Result<Vec<Target>, ClientError> = if kind == WatchedKind::Service {
                self.client.list_services().await.map(|list| {
                    list.into_iter()
                        .filter(|s| services::is_managed(&s.labels))
                        .map(|s| Target::Service(s.key()))
                        .collect()
                })
            } else {
                self.client.list_endpoint_slices().await.map(|list| {
                    list.into_iter()
                        .filter(|s| services::is_managed(&s.labels))
                        .map(|s| Target::EndpointSlice(s.key()))
                        .collect()
                })
            };
            match managed {
                Ok(targets) => {
                    self.gc_pending.remove(&kind);
                    for target in targets {
                        if !self.desired.contains_key(&target) {
                            tracing::info!(%target, "removing what Kubernetes no longer has");
                            self.dirty.insert(target);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %error_chain(&e), "cannot list for clean-up");
                    let outcome = classify(&e);
                    if outcome != Outcome::Unavailable {
                        self.gc_pending.remove(&kind);
                    }
                    return outcome;
                }
            }
        }
        if !self.gc_pending.iter().any(|k| is_policy(*k)) {
            return Outcome::Done;
        }
        let policies = match self.client.list_policies().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot list policies for clean-up");
                return classify(&e);
            }
        };
        let kinds = std::mem::take(&mut self.gc_pending);
        // Only policy kinds are left: Service and EndpointSlice were handled above.
        for object in policies.iter().filter(|o| translate::is_managed(o)) {
            let Some(target) = policy_target_of_object(object) else {
                continue;
            };
            let Target::Policy { kind, .. } = &target else {
                continue;
            };
            if !kinds.iter().any(|k| k.kind() == *kind) {
                continue;
            }
            if !self.desired.contains_key(&target) {
                tracing::info!(%target, "removing policy whose Kubernetes object is gone");
                self.dirty.insert(target);
            }
        }
        Outcome::Done
    }

    async fn push(&mut self, target: &Target) -> Outcome {
        let desired = self.desired.get(target).cloned();
        if let (Target::Pod(_), Some(Desired::Pod(labels))) = (target, &desired) {
            return self.relabel(labels).await;
        }
        if matches!(target, Target::Pod(_)) {
            return Outcome::Done;
        }
        if desired.is_some() && desired.as_ref() == self.applied.get(target) {
            if let Some(tracked) = self.tracked.get_mut(target) {
                tracked.forwarded(false);
            }
            return Outcome::Done;
        }
        let result = match &desired {
            Some(d) => self.put(target, d).await,
            None => self.delete(target).await,
        };
        let outcome = match &result {
            Ok(()) => Outcome::Done,
            Err(e) => classify(e),
        };
        self.metrics.write(
            if desired.is_some() {
                crate::metrics::WriteOp::put
            } else {
                crate::metrics::WriteOp::delete
            },
            write_result(outcome),
        );
        match (&result, outcome) {
            (Ok(()), _) => tracing::debug!(%target, deleted = desired.is_none(), "applied"),
            (Err(e), Outcome::Rejected) => tracing::error!(
                %target, error = %error_chain(e),
                "controller refused the object; skipped until it changes"
            ),
            (Err(e), Outcome::RetryLater) => tracing::info!(
                %target, error = %error_chain(e), "controller refused for now; retrying later"
            ),
            (Err(e), _) => tracing::warn!(
                %target, error = %error_chain(e), "controller unavailable; retrying with backoff"
            ),
        }
        if let (Ok(()), Some(tracked)) = (&result, self.tracked.get_mut(target)) {
            tracked.forwarded(true);
        }
        if matches!(outcome, Outcome::Done | Outcome::Rejected) {
            match desired {
                Some(d) => {
                    self.applied.insert(target.clone(), d);
                }
                None => {
                    self.applied.remove(target);
                }
            }
        }
        outcome
    }

    async fn put(&self, target: &Target, desired: &Desired) -> Result<(), ClientError> {
        match (target, desired) {
            (_, Desired::Tenant(tenant)) => self.client.put_tenant(tenant).await.map(drop),
            (_, Desired::Namespace(spec)) => {
                let mut namespace = spec.namespace.clone();
                if spec.tenant_from_annotation {
                    return self.client.put_namespace(&namespace).await.map(drop);
                }
                // The tenant is kept from the controller (`seam tenant join` sets it there): a
                // conditional write, so a join between the read and the write is not undone.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let written = match self
                        .client
                        .get_versioned::<seam_model::Namespace>(
                            ObjectKind::Namespace,
                            &namespace.name,
                        )
                        .await
                    {
                        Ok(current) => {
                            namespace.tenant = current.object.tenant;
                            self.client
                                .put_if(
                                    ObjectKind::Namespace,
                                    &namespace.name,
                                    &namespace,
                                    current.revision,
                                )
                                .await
                        }
                        Err(e) if e.is_not_found() => self.client.put_namespace(&namespace).await,
                        Err(e) => return Err(e),
                    };
                    match written {
                        Err(e) if e.is_revision_conflict() && attempts < 3 => continue,
                        other => return other.map(drop),
                    }
                }
            }
            (
                Target::Policy {
                    kind,
                    namespace,
                    name,
                },
                Desired::Policy(object),
            ) => self
                .client
                .put_policy(kind, namespace.as_deref(), name, object)
                .await
                .map(drop),
            (_, Desired::Service(service)) => self.client.put_service(service).await.map(drop),
            (_, Desired::EndpointSlice(slice)) => {
                self.client.put_endpoint_slice(slice).await.map(drop)
            }
            // Pods are relabelled, never put; other pairs cannot be built.
            _ => Ok(()),
        }
    }

    async fn delete(&self, target: &Target) -> Result<(), ClientError> {
        let result = match target {
            Target::Tenant(name) => self.client.delete_tenant(name).await,
            Target::Namespace(name) => self.client.delete_namespace(name).await,
            Target::Policy {
                kind,
                namespace,
                name,
            } => {
                self.client
                    .delete_policy(kind, namespace.as_deref(), name)
                    .await
            }
            Target::Pod(_) => Ok(()),
            Target::Service(key) => match key.split_once('/') {
                Some((namespace, name)) => self.client.delete_service(namespace, name).await,
                None => Ok(()),
            },
            Target::EndpointSlice(key) => match key.split_once('/') {
                Some((namespace, name)) => self.client.delete_endpoint_slice(namespace, name).await,
                None => Ok(()),
            },
        };
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Gives the pod's endpoints (`ns/pod` and `ns/pod/<ifname>`) the pod's labels and
    /// conditions (its readiness, its deletion). The agent owns the endpoint (it creates and
    /// deletes it on CNI ADD and DEL); the adapter only replaces its labels, named ports and
    /// conditions, and only once the agent published it.
    async fn relabel(&mut self, pod: &PodLabels) -> Outcome {
        let prefix = format!("{}/", pod.endpoint);
        let stale: Vec<Endpoint> = self
            .endpoints
            .range(pod.endpoint.clone()..)
            .take_while(|(name, _)| name.starts_with(&pod.endpoint))
            .filter(|(name, _)| **name == pod.endpoint || name.starts_with(&prefix))
            .map(|(_, e)| e)
            .filter(|e| e.kind == EndpointKind::Pod && pod.differs(e))
            // The primary interface carries the pod's IP: another IP is an earlier pod of the
            // same name whose endpoint the agent has not removed yet.
            .filter(|e| e.name != pod.endpoint || pod.pod_ip.is_none_or(|ip| ip == e.ip))
            .cloned()
            .collect();
        for endpoint in stale {
            // Read-modify-write on the controller's current record, conditional on its revision:
            // the cached copy may be older than what the agent published since (a new address),
            // and writing it back would undo that.
            let result = self
                .client
                .update::<Endpoint, _>(ObjectKind::Endpoint, &endpoint.name, 3, |current| {
                    let same_pod = current.name != pod.endpoint
                        || pod.pod_ip.is_none_or(|ip| ip == current.ip);
                    let change =
                        same_pod && current.kind == EndpointKind::Pod && pod.differs(current);
                    if change {
                        current.labels = pod.labels.clone();
                        current.conditions = pod.conditions;
                        if !pod.ports.is_empty() {
                            current.ports = pod.ports.clone();
                        }
                    }
                    change
                })
                .await;
            match result {
                Ok(stored) => {
                    tracing::debug!(endpoint = %stored.name, conditions = ?stored.conditions, "relabelled");
                    self.endpoints.insert(stored.name.clone(), stored);
                }
                // The agent removed it meanwhile (a terminating pod's DEL): nothing to relabel.
                Err(e) if e.is_not_found() => {
                    tracing::debug!(endpoint = %endpoint.name, "endpoint gone before its relabel");
                    self.endpoints.remove(&endpoint.name);
                }
                Err(e) => {
                    let outcome = classify(&e);
                    if outcome == Outcome::Rejected {
                        tracing::error!(endpoint = %endpoint.name, error = %error_chain(&e), "controller refused the endpoint's labels");
                    } else {
                        tracing::warn!(endpoint = %endpoint.name, error = %error_chain(&e), "cannot relabel endpoint; retrying");
                        return outcome;
                    }
                }
            }
        }
        Outcome::Done
    }
}

/// The target and desired state of a mapped (non-view) object.
/// The name realization status gives a target's object: a policy store name, or a tenant's.
fn realization_name(target: &Target) -> String {
    match target {
        Target::Tenant(name) => seam_model::tenant_realization_name(name),
        Target::Policy {
            kind,
            namespace,
            name,
        } => seam_model::policy_name(kind, namespace.as_deref(), name),
        other => other.to_string(),
    }
}

/// The Kubernetes name of a (cluster-scoped) Seam CRD object's target.
fn kube_name(target: &Target) -> Option<&str> {
    match target {
        Target::Tenant(name) => Some(name),
        Target::Policy {
            namespace: None,
            name,
            ..
        } => Some(name),
        _ => None,
    }
}

fn translate_object(
    kind: WatchedKind,
    obj: &RawObject,
) -> Result<(Target, Option<Desired>), TranslateError> {
    Ok(match kind {
        WatchedKind::Namespace => {
            let spec = translate::namespace(obj)?;
            (
                Target::Namespace(spec.namespace.name.clone()),
                Some(Desired::Namespace(spec)),
            )
        }
        WatchedKind::Tenant => {
            let tenant = translate::tenant(obj)?;
            (
                Target::Tenant(tenant.name.clone()),
                Some(Desired::Tenant(tenant)),
            )
        }
        WatchedKind::Pod => match translate::pod(obj)? {
            PodMapping::Labels(labels) => (
                Target::Pod(labels.endpoint.clone()),
                Some(Desired::Pod(labels)),
            ),
            PodMapping::Untouched(reason) => {
                tracing::debug!(pod = %obj.key(), reason, "endpoint not relabelled");
                (Target::Pod(obj.key()), None)
            }
        },
        _ => {
            let spec = translate::policy(kind, obj)?;
            (
                Target::Policy {
                    kind: spec.kind,
                    namespace: spec.namespace,
                    name: spec.name,
                },
                Some(Desired::Policy(spec.object)),
            )
        }
    })
}

/// The target of a deleted object whose body could not be translated (only its name is needed).
fn target_for(kind: WatchedKind, obj: &RawObject) -> Option<Target> {
    let name = obj.metadata.name.clone()?;
    let namespace = obj.metadata.namespace.clone();
    Some(match kind {
        WatchedKind::Namespace => Target::Namespace(name),
        WatchedKind::Tenant => Target::Tenant(name),
        WatchedKind::Pod => Target::Pod(format!("{}/{name}", namespace?)),
        _ if is_policy(kind) => Target::Policy {
            kind: kind.kind(),
            namespace: if kind.is_namespaced() {
                Some(namespace?)
            } else {
                None
            },
            name,
        },
        _ => return None,
    })
}

fn is_policy(kind: WatchedKind) -> bool {
    matches!(
        kind,
        WatchedKind::NetworkPolicy
            | WatchedKind::AdminNetworkPolicy
            | WatchedKind::BaselineAdminNetworkPolicy
            | WatchedKind::ClusterNetworkPolicy
            | WatchedKind::EndpointGroup
            | WatchedKind::Contract
    )
}

/// The target of a policy object as the controller returns it (canonical form).
fn policy_target_of_object(object: &Value) -> Option<Target> {
    let kind = policy_kind(object.get("kind")?.as_str()?)?;
    let meta = object.get("metadata")?;
    Some(Target::Policy {
        kind: kind.kind(),
        namespace: meta
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
        name: meta.get("name")?.as_str()?.to_string(),
    })
}

/// The target of a policy's store name `<Kind>/<namespace or _>/<name>` (seam_model::policy_name).
fn policy_target_of_name(name: &str) -> Option<Target> {
    let mut parts = name.splitn(3, '/');
    let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Target::Policy {
        kind: policy_kind(kind)?.kind(),
        namespace: (namespace != CLUSTER_SCOPE).then(|| namespace.to_string()),
        name: name.to_string(),
    })
}

fn policy_kind(kind: &str) -> Option<WatchedKind> {
    WatchedKind::ALL
        .into_iter()
        .find(|k| is_policy(*k) && k.kind() == kind)
}

/// The pod target of an endpoint name `ns/pod` or `ns/pod/<ifname>`.
fn pod_target_of(endpoint: &str) -> Option<Target> {
    let mut parts = endpoint.splitn(3, '/');
    let (ns, pod) = (parts.next()?, parts.next()?);
    Some(Target::Pod(format!("{ns}/{pod}")))
}

fn classify(e: &ClientError) -> Outcome {
    match e.status() {
        Some(409) => Outcome::RetryLater,
        Some(s) if s >= 500 => Outcome::Unavailable,
        Some(_) => Outcome::Rejected,
        None => match e {
            ClientError::Decode { .. } | ClientError::InvalidEndpoint { .. } => Outcome::Rejected,
            _ => Outcome::Unavailable,
        },
    }
}

/// An error and its causes, `: `-separated, for one log field.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy the controller holds in a form this version cannot read (a newer Seam wrote it)
    /// is still there: it is not taken for lost and applied again over the newer object.
    #[test]
    fn a_stored_policy_this_version_cannot_read_is_not_taken_for_lost() {
        let client = ControllerClient::new("unix:/nonexistent/seam-k8s-test.sock")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sync = Sync::new(client, ViewHandle::default());
        let target = |name: &str| Target::Policy {
            kind: "NetworkPolicy",
            namespace: Some("shop".into()),
            name: name.into(),
        };
        for name in ["newer", "gone"] {
            sync.applied
                .insert(target(name), Desired::Policy(Value::Null));
        }
        sync.controller_snapshot(Snapshot {
            unreadable_policies: vec![seam_model::UnreadablePolicy {
                name: Some("NetworkPolicy/shop/newer".into()),
                kind: Some("NetworkPolicy".into()),
                error: "unsupported object kind".into(),
            }],
            ..Snapshot::default()
        });
        assert_eq!(sync.dirty, BTreeSet::from([target("gone")]));
        assert!(sync.applied.contains_key(&target("newer")));
    }

    fn obj(value: Value) -> RawObject {
        RawObject::from_value(value)
    }

    fn svc(namespace: &str, name: &str, selector: Option<Value>) -> RawObject {
        let mut spec = serde_json::json!({"ports": [{"port": 443, "targetPort": 6443}], "clusterIP": "10.96.0.1"});
        if let Some(selector) = selector {
            spec["selector"] = selector;
        }
        obj(serde_json::json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}))
    }

    fn slice(namespace: &str, name: &str, service: &str, address_type: &str) -> RawObject {
        obj(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type,
            "endpoints": [{"addresses": ["192.168.10.2"]}],
            "ports": [{"name": "", "port": 6443}]
        }))
    }

    fn sync() -> Sync {
        let client = ControllerClient::new("unix:/nonexistent/seam-k8s-test.sock")
            .unwrap_or_else(|e| panic!("{e}"));
        Sync::new(client, ViewHandle::default())
    }

    fn wanted(sync: &Sync) -> BTreeSet<String> {
        sync.desired
            .keys()
            .filter(|t| matches!(t, Target::Service(_) | Target::EndpointSlice(_)))
            .map(ToString::to_string)
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Slices are forwarded for Services without a selector only, whichever arrives first, and
    /// follow their Service's selector and existence.
    #[test]
    fn only_slices_of_services_without_a_selector_are_forwarded() {
        let mut sync = sync();
        // The slice first: held until its Service is known.
        sync.handle(Input::Relisted(
            WatchedKind::EndpointSlice,
            vec![
                slice("default", "kubernetes", "kubernetes", "IPv4"),
                slice("shop", "web-abcde", "web", "IPv4"),
                slice("shop", "web-v6", "web", "IPv6"),
            ],
        ));
        assert_eq!(wanted(&sync), set(&[]));
        sync.handle(Input::Relisted(
            WatchedKind::Service,
            vec![
                svc("default", "kubernetes", None),
                svc("shop", "web", Some(serde_json::json!({"app": "web"}))),
            ],
        ));
        assert_eq!(
            wanted(&sync),
            set(&[
                "Service default/kubernetes",
                "Service shop/web",
                "EndpointSlice default/kubernetes"
            ])
        );
        let skipped = sync.view.snapshot().skipped;
        assert_eq!(
            skipped.get("EndpointSlice shop/web-v6"),
            Some(&services::SkipReason::Ipv6Slice)
        );
        assert!(sync.gc_pending.contains(&WatchedKind::EndpointSlice));
        assert!(sync.gc_pending.contains(&WatchedKind::Service));

        // web loses its selector: its IPv4 slice is forwarded.
        sync.handle(Input::Applied(
            WatchedKind::Service,
            svc("shop", "web", None),
        ));
        assert!(wanted(&sync).contains("EndpointSlice shop/web-abcde"));
        // The kubernetes Service goes: so does its slice.
        sync.handle(Input::Deleted(
            WatchedKind::Service,
            svc("default", "kubernetes", None),
        ));
        assert_eq!(
            wanted(&sync),
            set(&["Service shop/web", "EndpointSlice shop/web-abcde"])
        );
        assert!(sync
            .dirty
            .contains(&Target::EndpointSlice("default/kubernetes".into())));
        // A re-list without the slice: gone.
        sync.handle(Input::Relisted(
            WatchedKind::EndpointSlice,
            vec![slice("default", "kubernetes", "kubernetes", "IPv4")],
        ));
        assert_eq!(wanted(&sync), set(&["Service shop/web"]));
        assert!(!sync
            .view
            .snapshot()
            .skipped
            .contains_key("EndpointSlice shop/web-v6"));
        // An ExternalName Service is not forwarded, and counted.
        sync.handle(Input::Applied(
            WatchedKind::Service,
            obj(
                serde_json::json!({"metadata": {"name": "web", "namespace": "shop"},
                                   "spec": {"type": "ExternalName", "externalName": "x.example"}}),
            ),
        ));
        assert_eq!(wanted(&sync), set(&[]));
        assert_eq!(
            sync.view.snapshot().skipped.get("Service shop/web"),
            Some(&services::SkipReason::ExternalName)
        );
    }
}
