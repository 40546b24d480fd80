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
use crate::resource::{RawObject, WatchedKind};
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
    /// Policy kinds re-listed since their last garbage collection.
    gc_pending: BTreeSet<WatchedKind>,
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
        }
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
            } else {
                let wake = self.retry_at.values().min().copied();
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
            WatchedKind::Service => self
                .view
                .update(|v| v.services.retain(|k, _| listed.contains(k))),
            WatchedKind::EndpointSlice => self
                .view
                .update(|v| v.endpoint_slices.retain(|k, _| listed.contains(k))),
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
            WatchedKind::Service => translate::decode(kind, &obj).map(|s| {
                self.view.update(|v| v.services.insert(key.clone(), s));
            }),
            WatchedKind::EndpointSlice => translate::decode(kind, &obj).map(|s| {
                self.view
                    .update(|v| v.endpoint_slices.insert(key.clone(), s));
            }),
            WatchedKind::Node => translate::decode(kind, &obj).map(|n| {
                self.view.update(|v| v.nodes.insert(key.clone(), n));
            }),
            _ => translate_object(kind, &obj).map(|(target, desired)| {
                self.known
                    .entry(kind)
                    .or_default()
                    .insert(key.clone(), target.clone());
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
            WatchedKind::Service => self.view.update(|v| {
                v.services.remove(&key);
            }),
            WatchedKind::EndpointSlice => self.view.update(|v| {
                v.endpoint_slices.remove(&key);
            }),
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
                        self.desired.remove(&target);
                        self.dirty.insert(target);
                    }
                    None => tracing::warn!(%kind, %key, "deleted object has no name; ignored"),
                }
            }
        }
    }

    /// Marks for deletion the policy objects this adapter forwarded earlier (maybe in a previous
    /// run) whose Kubernetes object no longer exists.
    async fn collect_garbage(&mut self) -> Outcome {
        let policies = match self.client.list_policies().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot list policies for clean-up");
                return classify(&e);
            }
        };
        let kinds = std::mem::take(&mut self.gc_pending);
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
        };
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Gives the pod's endpoints (`ns/pod` and `ns/pod/<ifname>`) the pod's labels. The agent owns
    /// the endpoint (it creates and deletes it on CNI ADD and DEL); the adapter only replaces its
    /// labels, and only once the agent published it.
    async fn relabel(&mut self, pod: &PodLabels) -> Outcome {
        let prefix = format!("{}/", pod.endpoint);
        let stale: Vec<Endpoint> = self
            .endpoints
            .range(pod.endpoint.clone()..)
            .take_while(|(name, _)| name.starts_with(&pod.endpoint))
            .filter(|(name, _)| **name == pod.endpoint || name.starts_with(&prefix))
            .map(|(_, e)| e)
            .filter(|e| e.kind == EndpointKind::Pod && e.labels != pod.labels)
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
                    let change = same_pod
                        && current.kind == EndpointKind::Pod
                        && current.labels != pod.labels;
                    if change {
                        current.labels = pod.labels.clone();
                    }
                    change
                })
                .await;
            match result {
                Ok(stored) => {
                    tracing::debug!(endpoint = %stored.name, "relabelled");
                    self.endpoints.insert(stored.name.clone(), stored);
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
}
