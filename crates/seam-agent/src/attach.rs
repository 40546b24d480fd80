//! The CNI verbs, on the agent's side of the socket.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::Ipv4Net;
use seam_dataplane::{host_ifname, Firewall, LinkOp, NodeKernel, PodAttach, SegmentSpec};
use seam_ipam::{IpamError, Lease, LeaseKey};
use seam_model::agent_rpc::{
    AgentError as RpcError, AgentOp, AgentReply, AttachResult, Attachment, AttachmentId,
};
use seam_model::{
    endpoint_mac, gateway_mac, is_valid_name, namespace_segment_name, pod_endpoint_name, Endpoint,
    EndpointKind, Segment,
};

use crate::error::AgentError;
use crate::sync::{is_refusal, Publish};
use crate::Agent;

/// CNI error codes the agent uses.
mod code {
    pub const INVALID_CONFIG: u32 = 7;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const IO: u32 = 5;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plug-in specific (100+): the attachment is not as ADD left it.
    pub const DRIFT: u32 = 100;
    /// Plug-in specific: the controller refused the attachment's endpoint or segment (a 4xx
    /// other than the transient ones, see `controller_code`); the same ADD fails the same way.
    pub const REFUSED: u32 = 101;
    pub const INTERNAL: u32 = 999;
}

fn rpc_error(
    code: u32,
    msg: impl Into<String>,
    cause: Option<&dyn std::error::Error>,
) -> AgentReply {
    let mut details = String::new();
    let mut next = cause;
    while let Some(e) = next {
        if !details.is_empty() {
            details.push_str(": ");
        }
        details.push_str(&e.to_string());
        next = e.source();
    }
    AgentReply::Error(RpcError {
        code,
        msg: msg.into(),
        details,
    })
}

/// How long ADD waits for the controller to accept the endpoint before it replies anyway and
/// leaves the endpoint to the background publisher. A healthy controller answers in
/// milliseconds, and an unreachable one fails at once (connection refused, 503 with no leader);
/// the wait only bounds what a hung controller or a black-holed TCP peer (the client's own
/// timeout is 10 s per replica) adds to every ADD, at a tenth of the plug-in's 30 s timeout.
const PUBLISH_WAIT: Duration = Duration::from_secs(3);

/// The CNI code for a controller failure. The runtime retries ADD on 11, so only what a retry
/// can cure gets it: an outage (no answer, timeout, 5xx, 503 with no leader), and the 4xx that
/// describe the controller's state rather than the request: 404 (a segment or node record
/// missing for now: the retry ensures it again), 409 (a conflict with another record — a
/// concurrent write, an address a deleted pod's stale record still holds — or no free block,
/// which a DEL or a reclaimed block ends; Kubernetes keeps such a pod pending and retries, as
/// it does with every IPAM exhaustion), 408 and 429. Every other 4xx (400/422 invalid, 413 too
/// large) refuses the request itself: permanent.
fn controller_code(source: &seam_client::ClientError) -> u32 {
    match source.status() {
        Some(404 | 408 | 409 | 425 | 429) => code::TRY_AGAIN,
        Some(status) if (400..500).contains(&status) => code::REFUSED,
        _ => code::TRY_AGAIN,
    }
}

/// Maps an internal failure to the CNI code a runtime can act on.
fn reply_for(err: &AgentError, what: &str) -> AgentReply {
    let code = match err {
        AgentError::Controller { source, .. } => controller_code(source),
        // The node's blocks are full and no block could be claimed: retried like a 409.
        AgentError::Ipam(IpamError::Exhausted { .. }) => code::TRY_AGAIN,
        AgentError::Kernel(seam_dataplane::Error::Netns { .. }) => code::IO,
        AgentError::Kernel(seam_dataplane::Error::Drift { .. }) => code::DRIFT,
        _ => code::INTERNAL,
    };
    rpc_error(code, format!("{what}: {err}"), Some(err))
}

/// What the controller made of an ADD's endpoint.
enum Published {
    /// Stored.
    Accepted,
    /// Refused (a 4xx): the ADD is undone with this reply.
    Refused(AgentReply),
    /// Not reached or not answering in time: the background publisher sends it.
    Outage(String),
}

impl<K: NodeKernel + Firewall + 'static> Agent<K> {
    /// Handles one request from the plug-in.
    pub async fn handle(&self, op: AgentOp) -> AgentReply {
        match op {
            AgentOp::Add(a) => self.add(a).await,
            AgentOp::Del(id) => self.del(id).await,
            AgentOp::Check(a) => self.check(a).await,
            AgentOp::Gc { network, valid } => self.gc(&network, valid).await,
            AgentOp::Status { .. } => {
                if self.is_ready() {
                    AgentReply::Done
                } else {
                    rpc_error(
                        code::NOT_AVAILABLE,
                        "seam agent has not completed its first sync with the controller",
                        None,
                    )
                }
            }
        }
    }

    async fn segment_for(&self, a: &Attachment) -> Result<Segment, AgentReply> {
        if let Some(name) = &a.segment {
            return self
                .view
                .read()
                .await
                .segments
                .get(name)
                .cloned()
                .ok_or_else(|| {
                    rpc_error(
                        code::INVALID_CONFIG,
                        format!("segment {name:?} named in the network config does not exist"),
                        None,
                    )
                });
        }
        if let Some(seg) = self.view.read().await.segment_for_namespace(&a.namespace) {
            return Ok(seg.clone());
        }
        let seg = self
            .client
            .ensure_segment(&a.namespace)
            .await
            .map_err(|source| {
                reply_for(
                    &AgentError::Controller {
                        step: "ensure segment",
                        source,
                    },
                    "find segment",
                )
            })?;
        let mut view = self.view.write().await;
        view.namespace_segment
            .insert(a.namespace.clone(), seg.name.clone());
        view.segments.insert(seg.name.clone(), seg.clone());
        Ok(seg)
    }

    fn segment_spec(&self, seg: &Segment) -> SegmentSpec {
        SegmentSpec {
            vni: seg.vni,
            gateway: Ipv4Net::new(seg.gateway, seg.subnet.prefix_len()).unwrap_or(seg.subnet),
            gateway_mac: gateway_mac(seg.vni),
            mtu: self.config.mtu,
        }
    }

    /// Makes sure the segment's bridge and VXLAN device exist before a port is plugged in.
    async fn ensure_segment_devices(&self, seg: &Segment) -> Result<(), AgentError> {
        // Once a segment's devices have been seen or made, ADD trusts that they stay: a full
        // observe per ADD would dump every link on the node. If someone removes them, the
        // attach fails, the segment is forgotten here, and the reconcile loop rebuilds them.
        if self.ready_segments.lock().await.contains(&seg.vni) {
            return Ok(());
        }
        let _guard = self.segment_lock.lock().await;
        let observed = self.kernel.observe().await?;
        let ready = observed
            .segments
            .get(&seg.vni)
            .is_some_and(|s| s.bridge_ok && s.vxlan_ok && s.gateway_ok);
        if !ready {
            let op = LinkOp::EnsureSegment {
                spec: self.segment_spec(seg),
                underlay: self.underlay().underlay,
            };
            self.kernel.apply(&op).await?;
        }
        self.ready_segments.lock().await.insert(seg.vni);
        Ok(())
    }

    fn pod_attach(&self, lease: &Lease, seg: &Segment, netns: &str) -> PodAttach {
        PodAttach {
            host_ifname: host_ifname(
                &lease.key.network,
                &lease.key.container_id,
                &lease.key.ifname,
            ),
            netns: netns.to_string(),
            ifname: lease.key.ifname.clone(),
            address: Ipv4Net::new(lease.ip, seg.subnet.prefix_len()).unwrap_or(seg.subnet),
            gateway: seg.gateway,
            mac: endpoint_mac(lease.ip),
            vni: seg.vni,
            mtu: self.config.mtu,
        }
    }

    /// Reserves an address, claiming a new block from the controller when the node's are full.
    async fn reserve(
        &self,
        key: LeaseKey,
        seg: &Segment,
        netns: &str,
    ) -> Result<Lease, AgentError> {
        let mut book = self.leases.lock().await;
        book.learn_segment(seg).await?;
        match book.reserve(key.clone(), &seg.name, netns).await {
            Err(AgentError::Ipam(IpamError::Exhausted { quarantined, .. })) => {
                let block = match self.client.claim_block(&seg.name, &self.config.node).await {
                    Ok(block) => block,
                    // No block for this node now (the controller counts this node's blocks as
                    // mostly unused: their freed addresses sit in quarantine here, or the
                    // segment is full): an address out of quarantine early beats a failed pod.
                    Err(source) if quarantined > 0 && source.status() == Some(409) => {
                        tracing::warn!(segment = %seg.name, error = %source, "no further address block granted; reusing a quarantined address early");
                        return book.reserve_reusing_early(key, &seg.name, netns).await;
                    }
                    Err(source) => {
                        return Err(AgentError::Controller {
                            step: "claim address block",
                            source,
                        })
                    }
                };
                tracing::info!(segment = %seg.name, cidr = %block.cidr, "claimed address block");
                book.add_block(&block).await?;
                book.reserve(key, &seg.name, netns).await
            }
            other => other,
        }
    }

    async fn add(&self, a: Attachment) -> AgentReply {
        // Everything the agent can check is checked before anything is made: a name the
        // controller would refuse fails here, not after a lease and a port exist.
        let mut endpoint = match self.draft_endpoint(&a) {
            Ok(endpoint) => endpoint,
            Err(problem) => {
                return rpc_error(
                    code::INVALID_CONFIG,
                    format!("the attachment cannot be published: {problem}"),
                    None,
                )
            }
        };
        let seg = match self.segment_for(&a).await {
            Ok(seg) => seg,
            Err(reply) => return reply,
        };
        let key = LeaseKey::new(&a.network, &a.key.container_id, &a.key.ifname);
        let t0 = std::time::Instant::now();
        let lease = match self.reserve(key.clone(), &seg, &a.netns).await {
            Ok(lease) => lease,
            Err(e) => return reply_for(&e, &format!("reserve address in segment {}", seg.name)),
        };
        let spec = self.pod_attach(&lease, &seg, &a.netns);
        // A repeated ADD of a complete attachment returns the same result without touching it.
        if lease.state == seam_ipam::LeaseState::Bound
            && lease.netns == a.netns
            && self.kernel.check(&spec).await.is_ok()
        {
            return self.attached(&spec, &seg).await;
        }
        let t_reserved = t0.elapsed();
        endpoint.segment = seg.name.clone();
        endpoint.ip = lease.ip;
        endpoint.mac = spec.mac;
        // The record is complete once the address is reserved, so the controller checks it
        // while the kernel builds the port: its round trip (a durable store write) overlaps
        // the port's creation and the lease's fsync instead of adding to them. Until ADD
        // replies nobody knows the address, so a record briefly ahead of its port is harmless.
        let (built, published) = tokio::join!(
            self.build_port(&key, &spec, &seg, &endpoint),
            self.try_publish(&endpoint)
        );
        tracing::debug!(
            reserve_us = t_reserved.as_micros() as u64,
            attach_bind_publish_us = (t0.elapsed() - t_reserved).as_micros() as u64,
            "add phases"
        );
        let port = match built {
            Ok(port) => port,
            Err(reply) => {
                // The lease is gone: the publisher removes the record the controller accepted
                // (it deletes only what no lease backs).
                if matches!(published, Published::Accepted | Published::Outage(_)) {
                    let _ = self.publish_tx.send(Publish::Delete(endpoint.name.clone()));
                }
                return reply;
            }
        };
        match published {
            Published::Accepted => {}
            Published::Refused(reply) => {
                self.roll_back(&key, &spec.host_ifname).await;
                return reply;
            }
            Published::Outage(why) => {
                tracing::warn!(endpoint = %endpoint.name, error = %why, "controller unavailable; the endpoint is published in the background");
                // Queued only now that the lease is bound: the publisher sends what the lease
                // book holds when the change's turn comes.
                let _ = self.publish_tx.send(Publish::Put(endpoint.clone()));
            }
        }
        attach_result(&spec, port.host_mac, &seg)
    }

    /// Builds an ADD's port and binds its lease to the endpoint record; on failure nothing of
    /// either is left and the reply says why.
    async fn build_port(
        &self,
        key: &LeaseKey,
        spec: &PodAttach,
        seg: &Segment,
        endpoint: &Endpoint,
    ) -> Result<seam_dataplane::AttachedPort, AgentReply> {
        let attached = match self.ensure_segment_devices(seg).await {
            Ok(()) => {
                // A leftover port of an earlier attempt (or one a DEL retired and the reaper
                // has not deleted yet) would make the create fail.
                let _ = self.kernel.detach(&spec.host_ifname).await;
                match self.kernel.attach(spec).await {
                    // The sandbox may still hold the interface of a retired port (a runtime
                    // that reuses a namespace): delete retired ports now and try once more.
                    Err(e) if e.is_exists() => {
                        let _ = self.kernel.reap().await;
                        self.kernel.attach(spec).await.map_err(AgentError::from)
                    }
                    other => other.map_err(AgentError::from),
                }
            }
            Err(e) => Err(e),
        };
        let port = match attached {
            Ok(port) => port,
            Err(e) => {
                self.ready_segments.lock().await.remove(&seg.vni);
                // All or nothing: the lease goes too, so a failed ADD leaves nothing behind.
                if let Err(release) = self.leases.lock().await.release(key).await {
                    tracing::error!(%key, error = %release, "could not release the lease of a failed ADD");
                }
                return Err(reply_for(&e, "attach sandbox"));
            }
        };
        if let Err(e) = self.leases.lock().await.bind(key, endpoint.clone()).await {
            let _ = self.kernel.detach(&spec.host_ifname).await;
            let _ = self.leases.lock().await.release(key).await;
            return Err(reply_for(&e, "record attachment"));
        }
        Ok(port)
    }

    /// The endpoint an ADD will publish, with everything but its segment, address and MAC, and
    /// validated as the controller will (with a stand-in segment name of the same length rules).
    fn draft_endpoint(&self, a: &Attachment) -> Result<Endpoint, String> {
        // The endpoint's own check would report a bad namespace too; a bad namespace must not
        // reach the controller's ensure-segment either.
        let segment = a
            .segment
            .clone()
            .unwrap_or_else(|| namespace_segment_name(&a.namespace));
        let endpoint = Endpoint {
            name: pod_endpoint_name(
                &a.namespace,
                a.pod_name.as_deref(),
                &a.key.container_id,
                &a.key.ifname,
            ),
            kind: EndpointKind::Pod,
            namespace: a.namespace.clone(),
            segment,
            node: self.config.node.clone(),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            mac: endpoint_mac(std::net::Ipv4Addr::UNSPECIFIED),
            labels: a.labels.clone(),
            container_id: Some(a.key.container_id.clone()),
            ifname: Some(a.key.ifname.clone()),
            ports: a.ports.clone(),
            conditions: None,
        };
        let invalid = if is_valid_name(&a.namespace) {
            endpoint.validate().err().map(|e| e.to_string())
        } else {
            Some(format!(
                "namespace {:?} is not a valid namespace name (1-63 of a-z, 0-9, '-', '.', alphanumeric at both ends)",
                a.namespace
            ))
        };
        match invalid {
            None => Ok(endpoint),
            Some(problem) => Err(problem),
        }
    }

    /// Publishes an ADD's endpoint, waiting up to [`PUBLISH_WAIT`]. An outage is the caller's
    /// to hand to the background publisher (after the lease is bound).
    async fn try_publish(&self, endpoint: &Endpoint) -> Published {
        match tokio::time::timeout(PUBLISH_WAIT, self.client.put_endpoint(endpoint)).await {
            Ok(Ok(_)) => {
                self.refused.lock().await.remove(&endpoint.name);
                Published::Accepted
            }
            Ok(Err(e)) if is_refusal(&e) => {
                tracing::warn!(endpoint = %endpoint.name, error = %e, "controller refused the endpoint of an ADD; undoing the ADD");
                Published::Refused(rpc_error(
                    controller_code(&e),
                    format!("the controller refused endpoint {:?}: {e}", endpoint.name),
                    None,
                ))
            }
            Ok(Err(e)) => Published::Outage(e.to_string()),
            Err(_) => {
                Published::Outage(format!("no answer within {} ms", PUBLISH_WAIT.as_millis()))
            }
        }
    }

    /// Undoes an ADD whose devices and lease exist: the port goes, the lease is released
    /// durably.
    async fn roll_back(&self, key: &LeaseKey, host_ifname: &str) {
        if let Err(e) = self.kernel.detach(host_ifname).await {
            tracing::error!(%key, error = %e, "could not remove the port of an undone ADD");
        }
        if let Err(e) = self.leases.lock().await.release(key).await {
            tracing::error!(%key, error = %e, "could not release the lease of an undone ADD");
        }
    }

    async fn attached(&self, spec: &PodAttach, seg: &Segment) -> AgentReply {
        let port = match self.kernel.check(spec).await {
            Ok(port) => port,
            Err(e) => return reply_for(&AgentError::from(e), "check attachment"),
        };
        attach_result(spec, port.host_mac, seg)
    }

    async fn del(&self, id: AttachmentId) -> AgentReply {
        let key = LeaseKey::new(&id.network, &id.key.container_id, &id.key.ifname);
        // The port name is derived from the identity, so DEL cleans up even without a lease.
        let port = host_ifname(&key.network, &key.container_id, &key.ifname);
        let reply = match self.leases.lock().await.release(&key).await {
            Ok(Some((_, Some(endpoint)))) => {
                let _ = self.publish_tx.send(Publish::Delete(endpoint.name));
                AgentReply::Done
            }
            Ok(_) => AgentReply::Done,
            Err(e) => return reply_for(&e, "release lease"),
        };
        // Retiring is cheap (a link group on the host end; the sandbox end set down and
        // renamed out of the way); the reaper deletes retired ports in batches, so
        // the kernel's per-deletion grace period (≈16 ms here) is paid once per batch, not
        // once per DEL. The lease is already released (into quarantine), an ADD of the same
        // attachment deletes a retired port of the same name first, and after a crash the
        // reaper runs again at start.
        let sandbox = Some((id.netns.as_str(), id.key.ifname.as_str()));
        if let Err(e) = self.kernel.retire(&port, sandbox).await {
            return reply_for(&AgentError::from(e), "retire host veth");
        }
        self.reap_now.notify_one();
        reply
    }

    async fn check(&self, a: Attachment) -> AgentReply {
        let key = LeaseKey::new(&a.network, &a.key.container_id, &a.key.ifname);
        let Some(lease) = self.leases.lock().await.lease(&key).cloned() else {
            return rpc_error(
                code::UNKNOWN_CONTAINER,
                format!("no attachment recorded for {key}"),
                None,
            );
        };
        let Some(seg) = self.view.read().await.segments.get(&lease.segment).cloned() else {
            return rpc_error(
                code::INTERNAL,
                format!("segment {:?} of {key} is unknown", lease.segment),
                None,
            );
        };
        let spec = self.pod_attach(&lease, &seg, &a.netns);
        let endpoint = self
            .leases
            .lock()
            .await
            .endpoint(&key)
            .map(|e| e.name.clone());
        if let Some(name) = endpoint {
            if let Some(why) = self.refused.lock().await.get(&name) {
                return rpc_error(
                    code::REFUSED,
                    format!("the controller refuses endpoint {name:?}, so no other endpoint can reach this one (the agent keeps publishing it): {why}"),
                    None,
                );
            }
        }
        self.attached(&spec, &seg).await
    }

    async fn gc(
        &self,
        network: &str,
        valid: Vec<seam_model::agent_rpc::AttachmentKey>,
    ) -> AgentReply {
        let valid: BTreeSet<(String, String)> = valid
            .into_iter()
            .map(|k| (k.container_id, k.ifname))
            .collect();
        let stale = self.leases.lock().await.not_in(network, &valid);
        let mut failures = Vec::new();
        for key in stale {
            let port = host_ifname(&key.network, &key.container_id, &key.ifname);
            if let Err(e) = self.kernel.retire(&port, None).await {
                failures.push(format!("{key}: {e}"));
                continue;
            }
            match self.leases.lock().await.release(&key).await {
                Ok(Some((_, Some(endpoint)))) => {
                    let _ = self.publish_tx.send(Publish::Delete(endpoint.name));
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{key}: {e}")),
            }
        }
        self.reap_now.notify_one();
        if failures.is_empty() {
            AgentReply::Done
        } else {
            // Teardown keeps going past a failure and reports every one.
            rpc_error(
                code::INTERNAL,
                format!("gc could not release {} attachment(s)", failures.len()),
                None,
            )
            .with_details(failures.join("; "))
        }
    }
}

/// The reply for an attachment that is in place.
fn attach_result(spec: &PodAttach, host_mac: seam_model::MacAddr, seg: &Segment) -> AgentReply {
    AgentReply::Attached(AttachResult {
        host_ifname: spec.host_ifname.clone(),
        host_mac,
        container_ifname: spec.ifname.clone(),
        container_mac: spec.mac,
        sandbox: spec.netns.clone(),
        address: spec.address,
        gateway: spec.gateway,
        mtu: spec.mtu,
        segment: seg.name.clone(),
    })
}

trait WithDetails {
    fn with_details(self, details: String) -> Self;
}

impl WithDetails for AgentReply {
    fn with_details(self, details: String) -> Self {
        match self {
            AgentReply::Error(mut e) => {
                e.details = details;
                AgentReply::Error(e)
            }
            other => other,
        }
    }
}
