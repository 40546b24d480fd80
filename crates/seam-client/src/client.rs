//! [`ControllerClient`]: one typed method per controller route.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use seam_model::{
    ApiError, Applied, ApplyObject, Block, ClaimBlock, Endpoint, EnsureSegment, JoinTenant,
    Namespace, Node, ObjectKind, Segment, Snapshot, Tenant, TenantChange, TenantOperation,
    UnreadablePolicy, CLUSTER_SCOPE,
};

use crate::error::{ClientError, Result};
use crate::transport::{encode_segment, read_body, ClientTls, Pool, Target};
use crate::watch::WatchStream;

/// Timeout of every request except the watch stream, unless changed with
/// [`ControllerClient::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a watch may stay silent (the controller sends a heartbeat every ~10 s) before
/// [`WatchStream::next`] fails with [`ClientError::Timeout`].
pub const DEFAULT_WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(35);

/// A response as received, for callers that send bodies the typed methods cannot express
/// (tests, the CLI's raw mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
}

/// A controller replica's answer to `GET /v1/leader`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LeaderInfo {
    /// `leader`, `standby` or `single` (a controller without replicas).
    pub role: String,
    /// The replica's id (`None` for a single controller).
    pub id: Option<String>,
    /// The leader's advertised address, when known.
    pub leader: Option<String>,
}

/// A client for a controller, or for a list of controller replicas. Cheap to clone (clones
/// share which replica they prefer); holds no connection.
///
/// With several endpoints, a request goes to the replica that answered last; when that one
/// cannot be reached, times out or answers 503 (a standby's `NotLeader`, or its store is
/// unreachable), the request moves on to the next endpoint, once around the list.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    endpoints: Arc<[(String, Target)]>,
    /// Index into `endpoints` of the replica to try first.
    current: Arc<AtomicUsize>,
    timeout: Duration,
    watch_idle_timeout: Duration,
    /// For `https://` endpoints.
    tls: Option<ClientTls>,
    /// Connections kept between requests, one pool per endpoint (same index); shared by clones.
    pools: Arc<[Pool]>,
}

impl ControllerClient {
    /// A client for `endpoint`: `unix:/path/to/socket`, `http://host:port` or
    /// `https://host:port`, or a comma-separated list of them (controller replicas).
    /// `https://` endpoints need [`Self::with_tls`].
    pub fn new(endpoint: &str) -> Result<Self> {
        let endpoints = endpoint
            .split(',')
            .map(|e| {
                let e = e.trim();
                Target::parse(e).map(|t| (e.to_string(), t)).ok_or_else(|| {
                    ClientError::InvalidEndpoint {
                        endpoint: endpoint.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pools = endpoints.iter().map(|_| Pool::default()).collect();
        Ok(ControllerClient {
            endpoints: endpoints.into(),
            current: Arc::new(AtomicUsize::new(0)),
            timeout: DEFAULT_TIMEOUT,
            watch_idle_timeout: DEFAULT_WATCH_IDLE_TIMEOUT,
            tls: None,
            pools,
        })
    }

    /// The endpoint tried first now and its target.
    fn current(&self) -> (usize, &str, &Target) {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        match self.endpoints.get(i) {
            Some((e, t)) => (i, e, t),
            // `new` never builds an empty list (split yields at least one item).
            None => (0, "", &self.endpoints[0].1),
        }
    }

    /// Moves on from replica `from` to the next one (unless another request already did).
    fn rotate(&self, from: usize) {
        let next = (from + 1) % self.endpoints.len().max(1);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client with TLS settings for its `https://` endpoints (the CA that verifies the
    /// controller, the client certificate it presents).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        // Connections kept so far were made with other settings.
        self.pools = self.endpoints.iter().map(|_| Pool::default()).collect();
        self
    }

    /// Closes the connections kept for the next request, to every endpoint (clones share
    /// them): after the node's own address changed they come from one it no longer has, and a
    /// request sent on one would wait for its timeout.
    pub fn forget_idle_connections(&self) {
        for pool in self.pools.iter() {
            pool.clear();
        }
    }

    /// The same client with another watch idle timeout.
    pub fn with_watch_idle_timeout(mut self, timeout: Duration) -> Self {
        self.watch_idle_timeout = timeout;
        self
    }

    /// How long a stream (watch, followed flows) may stay silent before it fails.
    pub(crate) fn watch_idle_timeout(&self) -> Duration {
        self.watch_idle_timeout
    }

    /// The endpoint this client talks to now (with several replicas, the one it tries first).
    pub fn endpoint(&self) -> &str {
        self.current().1
    }

    /// `GET /healthz`: succeeds when the controller answers 200.
    pub async fn healthz(&self) -> Result<()> {
        self.call_unit(Method::GET, "/healthz".to_string(), None)
            .await
    }

    /// `POST /v1/join-tokens` (admin): a one-time join token valid for `ttl` (whole seconds),
    /// usable only by `node` when given. The token is shown once: the controller keeps a hash.
    pub async fn create_join_token(
        &self,
        ttl: Duration,
        node: Option<&str>,
    ) -> Result<seam_model::JoinToken> {
        self.create_join_token_with(&seam_model::CreateJoinToken {
            ttl_seconds: ttl.as_secs(),
            node: node.map(str::to_string),
            uses: None,
        })
        .await
    }

    /// `POST /v1/join-tokens` with every option (e.g. a token several nodes join with).
    pub async fn create_join_token_with(
        &self,
        request: &seam_model::CreateJoinToken,
    ) -> Result<seam_model::JoinToken> {
        self.call(
            Method::POST,
            "/v1/join-tokens".to_string(),
            Some(encode(request)?),
            "JoinToken",
        )
        .await
    }

    /// `POST /v1/join`: spends `token` to get `node`'s certificate for the key of `csr` (PEM).
    /// Needs no client certificate (the token authenticates), so a client built with
    /// [`crate::ClientTls::from_files`]`(ca, None)` can join. A refused token is
    /// [`ClientError::is_invalid_token`].
    pub async fn join(
        &self,
        token: &str,
        node: &str,
        csr: &str,
    ) -> Result<seam_model::JoinResponse> {
        let body = encode(&seam_model::JoinRequest {
            token: token.to_string(),
            node: node.to_string(),
            csr: csr.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/join".to_string(),
            Some(body),
            "JoinResponse",
        )
        .await
    }

    /// `POST /v1/renew` (a node, with its current certificate): a new certificate of the same
    /// name and epoch for the key of `csr` (PEM).
    pub async fn renew(&self, csr: &str) -> Result<seam_model::RenewResponse> {
        let body = encode(&seam_model::RenewRequest {
            csr: csr.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/renew".to_string(),
            Some(body),
            "RenewResponse",
        )
        .await
    }

    /// `POST /v1/revocations` (admin): every certificate of `node` is refused from now on,
    /// until it joins again. Answers the node's identity as it is now.
    pub async fn revoke(&self, node: &str) -> Result<seam_model::NodeIdentity> {
        let body = encode(&seam_model::Revocation {
            node: node.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/revocations".to_string(),
            Some(body),
            "NodeIdentity",
        )
        .await
    }

    /// `GET /v1/leader` of the replica tried first: its role and who leads, as it knows.
    pub async fn leader(&self) -> Result<LeaderInfo> {
        self.call(Method::GET, "/v1/leader".to_string(), None, "LeaderInfo")
            .await
    }

    /// `GET /v1/snapshot`: every object, read at one store revision.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let request = "GET /v1/snapshot".to_string();
        let (status, bytes, endpoint) = self.exchange(Method::GET, "/v1/snapshot", None).await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        decode_snapshot(&bytes).map_err(|source| ClientError::Decode {
            endpoint,
            request,
            what: "Snapshot".to_string(),
            source,
        })
    }

    /// `PUT /v1/nodes/{name}`: creates or replaces a node.
    pub async fn put_node(&self, node: &Node) -> Result<Node> {
        let path = object_path(ObjectKind::Node, &node.name);
        self.call(Method::PUT, path, Some(encode(node)?), "Node")
            .await
    }

    /// `GET /v1/nodes/{name}`.
    pub async fn get_node(&self, name: &str) -> Result<Node> {
        self.call(
            Method::GET,
            object_path(ObjectKind::Node, name),
            None,
            "Node",
        )
        .await
    }

    /// `DELETE /v1/nodes/{name}`: refused (409) while blocks or endpoints use the node.
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, object_path(ObjectKind::Node, name), None)
            .await
    }

    /// `GET /v1/nodes`.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.list(ObjectKind::Node, "Node list").await
    }

    /// `PUT /v1/segments/{name}`: creates or replaces an explicit segment.
    pub async fn put_segment(&self, segment: &Segment) -> Result<Segment> {
        let path = object_path(ObjectKind::Segment, &segment.name);
        self.call(Method::PUT, path, Some(encode(segment)?), "Segment")
            .await
    }

    /// `GET /v1/segments/{name}`.
    pub async fn get_segment(&self, name: &str) -> Result<Segment> {
        let path = object_path(ObjectKind::Segment, name);
        self.call(Method::GET, path, None, "Segment").await
    }

    /// `DELETE /v1/segments/{name}`: refused (409) while blocks or endpoints use it.
    pub async fn delete_segment(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, object_path(ObjectKind::Segment, name), None)
            .await
    }

    /// `GET /v1/segments`.
    pub async fn list_segments(&self) -> Result<Vec<Segment>> {
        self.list(ObjectKind::Segment, "Segment list").await
    }

    /// `POST /v1/ensure-segment`: the segment that serves `namespace`, created on first use.
    pub async fn ensure_segment(&self, namespace: &str) -> Result<Segment> {
        let body = encode(&EnsureSegment {
            namespace: namespace.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/ensure-segment".to_string(),
            Some(body),
            "Segment",
        )
        .await
    }

    /// `POST /v1/claim-block`: a new address block of `segment` owned by `node`.
    pub async fn claim_block(&self, segment: &str, node: &str) -> Result<Block> {
        let body = encode(&ClaimBlock {
            segment: segment.to_string(),
            node: node.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/claim-block".to_string(),
            Some(body),
            "Block",
        )
        .await
    }

    /// `DELETE /v1/blocks/{key}` ([`Block::key`]) without naming the holder: refused (400) by
    /// the controller, which releases a block only for the node holding it; use
    /// [`ControllerClient::release_block_held_by`].
    pub async fn release_block(&self, key: &str) -> Result<()> {
        self.call_unit(Method::DELETE, object_path(ObjectKind::Block, key), None)
            .await
    }

    /// `DELETE /v1/blocks/{key}?node={node}`: how a node gives a block back; refused (409)
    /// unless `node` holds it, and while endpoints use it.
    pub async fn release_block_held_by(&self, key: &str, node: &str) -> Result<()> {
        let path = format!(
            "{}?node={}",
            object_path(ObjectKind::Block, key),
            encode_segment(node)
        );
        self.call_unit(Method::DELETE, path, None).await
    }

    /// `GET /v1/blocks`.
    pub async fn list_blocks(&self) -> Result<Vec<Block>> {
        self.list(ObjectKind::Block, "Block list").await
    }

    /// `PUT /v1/endpoints/{name}`: creates or replaces an endpoint.
    pub async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint> {
        let path = object_path(ObjectKind::Endpoint, &endpoint.name);
        self.call(Method::PUT, path, Some(encode(endpoint)?), "Endpoint")
            .await
    }

    /// `GET /v1/endpoints/{name}`.
    pub async fn get_endpoint(&self, name: &str) -> Result<Endpoint> {
        let path = object_path(ObjectKind::Endpoint, name);
        self.call(Method::GET, path, None, "Endpoint").await
    }

    /// `DELETE /v1/endpoints/{name}`: succeeds also when the endpoint is already gone.
    pub async fn delete_endpoint(&self, name: &str) -> Result<()> {
        self.call_unit(
            Method::DELETE,
            object_path(ObjectKind::Endpoint, name),
            None,
        )
        .await
    }

    /// `GET /v1/endpoints`.
    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        self.list(ObjectKind::Endpoint, "Endpoint list").await
    }

    /// `POST /v1/externals`: registers or replaces an external endpoint (a server reached through
    /// a gateway node); answers its endpoint records, one per address.
    pub async fn put_external(&self, external: &seam_model::External) -> Result<Vec<Endpoint>> {
        self.call(
            Method::POST,
            "/v1/externals".to_string(),
            Some(encode(external)?),
            "External",
        )
        .await
    }

    /// `DELETE /v1/externals/{namespace}/{name}`: removes every record of an external endpoint
    /// (404 when there is none).
    pub async fn delete_external(&self, namespace: &str, name: &str) -> Result<()> {
        self.call_unit(
            Method::DELETE,
            format!("/v1/externals/{namespace}/{name}"),
            None,
        )
        .await
    }

    /// `PUT /v1/namespaces/{name}`: creates or replaces a namespace (the controller sets its
    /// `kubernetes.io/metadata.name` label).
    pub async fn put_namespace(&self, namespace: &Namespace) -> Result<Namespace> {
        let path = object_path(ObjectKind::Namespace, &namespace.name);
        self.call(Method::PUT, path, Some(encode(namespace)?), "Namespace")
            .await
    }

    /// `GET /v1/namespaces/{name}`.
    pub async fn get_namespace(&self, name: &str) -> Result<Namespace> {
        let path = object_path(ObjectKind::Namespace, name);
        self.call(Method::GET, path, None, "Namespace").await
    }

    /// `DELETE /v1/namespaces/{name}`: refused (409) while endpoints are in it.
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        self.call_unit(
            Method::DELETE,
            object_path(ObjectKind::Namespace, name),
            None,
        )
        .await
    }

    /// `GET /v1/namespaces`.
    pub async fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        self.list(ObjectKind::Namespace, "Namespace list").await
    }

    /// `PUT /v1/tenants/{name}`: creates or replaces a tenant.
    pub async fn put_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        let path = object_path(ObjectKind::Tenant, &tenant.name);
        self.call(Method::PUT, path, Some(encode(tenant)?), "Tenant")
            .await
    }

    /// `GET /v1/tenants/{name}`.
    pub async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        let path = object_path(ObjectKind::Tenant, name);
        self.call(Method::GET, path, None, "Tenant").await
    }

    /// `DELETE /v1/tenants/{name}`: refused (409) while a namespace names it.
    pub async fn delete_tenant(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, object_path(ObjectKind::Tenant, name), None)
            .await
    }

    /// `GET /v1/tenants`.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.list(ObjectKind::Tenant, "Tenant list").await
    }

    /// `POST /v1/tenants/join`: `namespace` joins the tenant of namespace `into`.
    pub async fn join_tenant(&self, namespace: &str, into: &str) -> Result<TenantChange> {
        let body = encode(&JoinTenant {
            namespace: namespace.to_string(),
            into: into.to_string(),
        })?;
        self.call(
            Method::POST,
            "/v1/tenants/join".to_string(),
            Some(body),
            "TenantChange",
        )
        .await
    }

    /// `POST /v1/tenants/isolate`: `namespace` gets a tenant of its own (named after it), with
    /// the isolation mode of the tenant it leaves.
    pub async fn isolate_namespace(&self, namespace: &str) -> Result<TenantChange> {
        self.tenant_operation("/v1/tenants/isolate", namespace)
            .await
    }

    /// `POST /v1/tenants/make-global`: `namespace` gets a global tenant of its own.
    pub async fn make_namespace_global(&self, namespace: &str) -> Result<TenantChange> {
        self.tenant_operation("/v1/tenants/make-global", namespace)
            .await
    }

    async fn tenant_operation(&self, path: &str, namespace: &str) -> Result<TenantChange> {
        let body = encode(&TenantOperation {
            namespace: namespace.to_string(),
        })?;
        self.call(Method::POST, path.to_string(), Some(body), "TenantChange")
            .await
    }

    /// `PUT /v1/policies/{kind}/{namespace}/{name}`: creates or replaces a policy object
    /// (`object` with `apiVersion`, `kind`, `metadata`, `spec`). `kind` is the object's kind
    /// (`NetworkPolicy`) or its plural (`networkpolicies`); `namespace` is `None` for
    /// cluster-scoped kinds. Returns the object as stored (canonical form). A bad object is
    /// refused with 400 `Invalid` naming the field, and nothing is stored.
    pub async fn put_policy(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let path = policy_path(kind, namespace, name);
        self.call(Method::PUT, path, Some(encode(object)?), "policy object")
            .await
    }

    /// `GET /v1/policies/{kind}/{namespace}/{name}`.
    pub async fn get_policy(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<serde_json::Value> {
        let path = policy_path(kind, namespace, name);
        self.call(Method::GET, path, None, "policy object").await
    }

    /// `DELETE /v1/policies/{kind}/{namespace}/{name}`: 404 when it does not exist.
    pub async fn delete_policy(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<()> {
        self.call_unit(Method::DELETE, policy_path(kind, namespace, name), None)
            .await
    }

    /// `POST /v1/apply`: writes every object (namespaces, tenants, policy objects) in one
    /// transaction, or none. Each is checked as its single `PUT` checks it; a refusal lists every
    /// problem with the object's 1-based document number, and nothing is stored. Returns the
    /// objects as stored, in order.
    pub async fn apply(&self, objects: &[ApplyObject]) -> Result<Applied> {
        #[derive(Serialize)]
        struct Body<'a> {
            objects: &'a [ApplyObject],
        }
        let body = encode(&Body { objects })?;
        self.call(Method::POST, "/v1/apply".to_string(), Some(body), "Applied")
            .await
    }

    /// `GET /v1/policies`: every policy object, in kind, namespace, name order.
    pub async fn list_policies(&self) -> Result<Vec<serde_json::Value>> {
        self.list(ObjectKind::Policy, "policy list").await
    }

    /// `GET /v1/watch?revision={from_revision}`: every change with revision ≥ `from_revision`,
    /// then live changes. Fails with [`ClientError::Gone`] when that revision was compacted.
    pub async fn watch(&self, from_revision: u64) -> Result<WatchStream> {
        let path = format!("/v1/watch?revision={from_revision}");
        let request = format!("GET {path}");
        // Every replica serves watches: move on only from one that cannot be reached.
        let mut attempts = self.endpoints.len();
        let response = loop {
            let (index, endpoint, target) = self.current();
            let http = self.build(target, Method::GET, &path, None)?;
            let sent = self
                .timed(endpoint, &request, async {
                    target
                        .send(http, self.tls.as_ref())
                        .await
                        .map_err(|source| ClientError::Transport {
                            endpoint: endpoint.to_string(),
                            request: request.clone(),
                            source,
                        })
                })
                .await;
            attempts -= 1;
            match sent {
                Ok(response) => break response,
                Err(e) if attempts > 0 => {
                    tracing::debug!(error = %e, "controller replica unreachable, trying the next");
                    self.rotate(index);
                }
                Err(e) => {
                    self.rotate(index);
                    return Err(e);
                }
            }
        };
        let endpoint = self.endpoint().to_string();
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            let bytes = self
                .timed(&endpoint, &request, async {
                    read_body(body)
                        .await
                        .map_err(|source| ClientError::Transport {
                            endpoint: endpoint.clone(),
                            request: request.clone(),
                            source,
                        })
                })
                .await?;
            return Err(api_error(&endpoint, &request, parts.status, &bytes));
        }
        Ok(WatchStream::new(
            body,
            self.watch_idle_timeout,
            endpoint,
            request,
        ))
    }

    /// Opens a streamed `GET path`: on 200, the endpoint that answered, the headers and the body, to be read
    /// as it comes (no timeout here: the reader bounds its silences). Moves on to the next
    /// replica while one cannot be reached or answers 503 (a standby's `NotLeader`); another
    /// error status is [`ClientError::Api`].
    pub(crate) async fn open_stream(
        &self,
        path: &str,
    ) -> Result<(String, hyper::HeaderMap, hyper::body::Incoming)> {
        let request = format!("GET {path}");
        let mut attempts = self.endpoints.len();
        loop {
            let (index, endpoint, target) = self.current();
            let http = self.build(target, Method::GET, path, None)?;
            let sent = self
                .timed(endpoint, &request, async {
                    let response =
                        target
                            .send(http, self.tls.as_ref())
                            .await
                            .map_err(|source| ClientError::Transport {
                                endpoint: endpoint.to_string(),
                                request: request.clone(),
                                source,
                            })?;
                    let (parts, body) = response.into_parts();
                    if parts.status == StatusCode::OK {
                        return Ok(Ok((parts.headers, body)));
                    }
                    let bytes = read_body(body)
                        .await
                        .map_err(|source| ClientError::Transport {
                            endpoint: endpoint.to_string(),
                            request: request.clone(),
                            source,
                        })?;
                    Ok(Err(api_error(endpoint, &request, parts.status, &bytes)))
                })
                .await;
            attempts -= 1;
            let failed_over = match &sent {
                Ok(Ok(_)) => false,
                Ok(Err(e)) => e.status() == Some(503),
                Err(ClientError::Transport { .. } | ClientError::Timeout { .. }) => true,
                Err(_) => false,
            };
            if failed_over && attempts > 0 && self.endpoints.len() > 1 {
                tracing::debug!(%endpoint, %request, "controller replica unavailable, trying the next");
                self.rotate(index);
                continue;
            }
            if failed_over {
                self.rotate(index);
            }
            let endpoint = endpoint.to_string();
            return match sent {
                Ok(Ok((headers, body))) => Ok((endpoint, headers, body)),
                Ok(Err(e)) | Err(e) => Err(e),
            };
        }
    }

    /// `POST /v1/vms/{name}/attach`: defines the VM if new (address and MAC leased) and
    /// attaches it on its hypervisor host; an existing VM keeps its address and MAC.
    pub async fn attach_vm(&self, request: &seam_model::VmAttach) -> Result<seam_model::Vm> {
        let path = format!("/v1/vms/{}/attach", encode_segment(&request.name));
        self.call(Method::POST, path, Some(encode(request)?), "Vm")
            .await
    }

    /// `POST /v1/vms/{name}/detach`: stops the VM (its endpoint goes; the lease stays).
    pub async fn detach_vm(&self, name: &str) -> Result<seam_model::Vm> {
        let path = format!("/v1/vms/{}/detach", encode_segment(name));
        self.call(Method::POST, path, Some(b"{}".to_vec()), "Vm")
            .await
    }

    /// `POST /v1/vms/{name}/move`: the VM now runs on `host`, same address and MAC.
    pub async fn move_vm(&self, name: &str, host: &str) -> Result<seam_model::Vm> {
        let path = format!("/v1/vms/{}/move", encode_segment(name));
        let body = seam_model::VmMove {
            host: host.to_string(),
        };
        self.call(Method::POST, path, Some(encode(&body)?), "Vm")
            .await
    }

    /// `DELETE /v1/vms/{name}`: deletes the VM and releases its address and MAC.
    pub async fn delete_vm(&self, name: &str) -> Result<()> {
        let path = format!("/v1/vms/{}", encode_segment(name));
        self.call_unit(Method::DELETE, path, None).await
    }

    /// `GET /v1/vms/{name}`.
    pub async fn get_vm(&self, name: &str) -> Result<seam_model::Vm> {
        let path = format!("/v1/vms/{}", encode_segment(name));
        self.call(Method::GET, path, None, "Vm").await
    }

    /// `GET /v1/vms`.
    pub async fn list_vms(&self) -> Result<Vec<seam_model::Vm>> {
        self.call(Method::GET, "/v1/vms".to_string(), None, "Vm list")
            .await
    }

    /// `GET /v1/audit?limit={limit}`: the newest `limit` audit records (one per object a write
    /// changed), oldest first; `None` for the controller's default (100). The controller allows
    /// at most 10000.
    pub async fn audit(&self, limit: Option<usize>) -> Result<Vec<seam_model::AuditRecord>> {
        let path = match limit {
            Some(n) => format!("/v1/audit?limit={n}"),
            None => "/v1/audit".to_string(),
        };
        self.call(Method::GET, path, None, "AuditRecord list").await
    }

    /// Sends `body` as-is to `path` (which must start with `/`) and returns status and body
    /// without interpreting them.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<RawResponse> {
        let request = format!("{method} {path}");
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Transport {
            endpoint: self.endpoint().to_string(),
            request: request.clone(),
            source: Box::new(e),
        })?;
        let (status, body, _) = self.exchange(method, path, Some(body)).await?;
        Ok(RawResponse {
            status: status.as_u16(),
            body: body.to_vec(),
        })
    }

    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        what: &str,
    ) -> Result<Vec<T>> {
        self.call(Method::GET, format!("/v1/{}", kind.plural()), None, what)
            .await
    }

    /// Sends a request and decodes a 2xx body as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<T> {
        let request = format!("{method} {path}");
        let (status, bytes, endpoint) = self.exchange(method, &path, body).await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        decode_tolerant(&bytes, what).map_err(|source| ClientError::Decode {
            endpoint,
            request,
            what: what.to_string(),
            source,
        })
    }

    /// `GET` of one object with its revision (the answer's `ETag`), for a read-modify-write
    /// through [`Self::put_if`] or [`Self::delete_if`].
    pub async fn get_versioned<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Versioned<T>> {
        let path = object_path(kind, name);
        let request = format!("GET {path}");
        let (status, bytes, endpoint, revision) =
            self.exchange_if(Method::GET, &path, None, None).await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        let what = format!("{} (versioned)", kind.plural());
        let object = decode_tolerant(&bytes, &what).map_err(|source| ClientError::Decode {
            endpoint: endpoint.clone(),
            request: request.clone(),
            what: what.clone(),
            source,
        })?;
        let revision = revision.ok_or_else(|| ClientError::Decode {
            endpoint,
            request,
            what: "ETag header (the object's revision)".to_string(),
            source: serde::de::Error::custom("missing or not a revision"),
        })?;
        Ok(Versioned { object, revision })
    }

    /// `PUT` of one object only if it is still at `revision` (`If-Match`); a concurrent change
    /// is refused with 409 `RevisionConflict` ([`ClientError::is_revision_conflict`]).
    pub async fn put_if<T: Serialize + DeserializeOwned>(
        &self,
        kind: ObjectKind,
        name: &str,
        object: &T,
        revision: u64,
    ) -> Result<T> {
        let path = object_path(kind, name);
        let request = format!("PUT {path}");
        let (status, bytes, endpoint, _) = self
            .exchange_if(Method::PUT, &path, Some(encode(object)?), Some(revision))
            .await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        decode_tolerant(&bytes, kind.plural()).map_err(|source| ClientError::Decode {
            endpoint,
            request,
            what: kind.plural().to_string(),
            source,
        })
    }

    /// A read-modify-write that loses no concurrent change: reads `kind`/`name` with its
    /// revision, lets `change` modify it (`false`: nothing to write) and writes it back only if
    /// it is still at that revision; when someone else wrote in between, reads again and retries,
    /// `attempts` times in all. Then the last [`ClientError::is_revision_conflict`] error is
    /// returned (and nothing of this update was written). Returns the object as stored.
    pub async fn update<T, F>(
        &self,
        kind: ObjectKind,
        name: &str,
        attempts: u32,
        mut change: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> bool,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let Versioned {
                mut object,
                revision,
            } = self.get_versioned::<T>(kind, name).await?;
            if !change(&mut object) {
                return Ok(object);
            }
            match self.put_if(kind, name, &object, revision).await {
                Err(e) if e.is_revision_conflict() && tries < attempts => {
                    tracing::debug!(
                        kind = kind.plural(),
                        name,
                        revision,
                        "changed concurrently; reading it again"
                    );
                }
                other => return other,
            }
        }
    }

    /// `DELETE` of one object only if it is still at `revision` (`If-Match`).
    pub async fn delete_if(&self, kind: ObjectKind, name: &str, revision: u64) -> Result<()> {
        let path = object_path(kind, name);
        let request = format!("DELETE {path}");
        let (status, bytes, endpoint, _) = self
            .exchange_if(Method::DELETE, &path, None, Some(revision))
            .await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        Ok(())
    }

    /// Sends a request whose 2xx body is not needed.
    pub(crate) async fn call_unit(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<()> {
        let request = format!("{method} {path}");
        let (status, bytes, endpoint) = self.exchange(method, &path, body).await?;
        if !status.is_success() {
            return Err(api_error(&endpoint, &request, status, &bytes));
        }
        Ok(())
    }

    /// One timed request/response exchange, moving on to the next replica while the one tried
    /// cannot be reached, times out or answers 503.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes, String)> {
        self.exchange_if(method, path, body, None)
            .await
            .map(|(status, bytes, endpoint, _)| (status, bytes, endpoint))
    }

    /// [`Self::exchange`], sending `If-Match: "<revision>"` when given, and returning the
    /// revision of the answer's `ETag`, if any.
    async fn exchange_if(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_match: Option<u64>,
    ) -> Result<(StatusCode, Bytes, String, Option<u64>)> {
        let request = format!("{method} {path}");
        let mut attempts = self.endpoints.len();
        loop {
            let (index, endpoint, target) = self.current();
            let mut http = self.build(target, method.clone(), path, body.clone())?;
            if let Some(revision) = if_match {
                if let Ok(value) = hyper::header::HeaderValue::from_str(&format!("\"{revision}\""))
                {
                    http.headers_mut().insert(hyper::header::IF_MATCH, value);
                }
            }
            let result = self
                .timed(endpoint, &request, async {
                    let transport = |source| ClientError::Transport {
                        endpoint: endpoint.to_string(),
                        request: request.clone(),
                        source,
                    };
                    let pool = self.pools.get(index);
                    let (response, kept) = match pool {
                        Some(pool) => target.send_reusing(http, self.tls.as_ref(), pool).await,
                        None => target
                            .send(http, self.tls.as_ref())
                            .await
                            .map(|r| (r, None)),
                    }
                    .map_err(transport)?;
                    let (parts, body) = response.into_parts();
                    let revision = parts
                        .headers
                        .get(hyper::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok());
                    let bytes = read_body(body).await.map_err(transport)?;
                    // Read to the end: the connection may serve the next request.
                    if let (Some(pool), Some(kept)) = (pool, kept) {
                        pool.give_back(kept);
                    }
                    Ok((parts.status, bytes, endpoint.to_string(), revision))
                })
                .await;
            attempts -= 1;
            let failed_over = match &result {
                Ok((status, ..)) => *status == StatusCode::SERVICE_UNAVAILABLE,
                Err(ClientError::Transport { .. } | ClientError::Timeout { .. }) => true,
                Err(_) => false,
            };
            if !failed_over || self.endpoints.len() < 2 {
                return result;
            }
            self.rotate(index);
            if attempts == 0 {
                return result;
            }
            tracing::debug!(%endpoint, %request, "controller replica unavailable, trying the next");
        }
    }

    fn build(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        if matches!(target, Target::Https { .. }) && self.tls.is_none() {
            return Err(ClientError::NoTls {
                endpoint: self.endpoint().to_string(),
            });
        }
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, target.host())
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport {
                endpoint: self.endpoint().to_string(),
                request: format!("{method} {path}"),
                source: Box::new(e),
            })
    }

    async fn timed<T>(
        &self,
        endpoint: &str,
        request: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    endpoint: endpoint.to_string(),
                    request: request.to_string(),
                    after: self.timeout,
                })
            })
    }
}

/// Turns a non-2xx answer into [`ClientError::Api`] or [`ClientError::Gone`].
fn api_error(endpoint: &str, request: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<ApiError> = serde_json::from_slice(body).ok();
    let (reason, message) = match parsed {
        Some(e) => (e.reason, e.message),
        None => (
            status
                .canonical_reason()
                .unwrap_or("Unknown")
                .replace(' ', ""),
            String::from_utf8_lossy(body).trim().to_string(),
        ),
    };
    if status == StatusCode::GONE || reason == "Gone" {
        return ClientError::Gone {
            endpoint: endpoint.to_string(),
            request: request.to_string(),
            message,
        };
    }
    ClientError::Api {
        endpoint: endpoint.to_string(),
        request: request.to_string(),
        status: status.as_u16(),
        reason,
        message,
    }
}

/// An object with the store revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The object.
    pub object: T,
    /// Its revision, for `If-Match`.
    pub revision: u64,
}

/// Decodes an answer, tolerating fields this version does not know (a newer controller may send
/// them during a rolling upgrade): they are dropped and said once per kind and field in the log.
pub(crate) fn decode_tolerant<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> std::result::Result<T, serde_json::Error> {
    let decoded = seam_model::tolerant::from_slice::<T>(bytes)?;
    for field in decoded.first_sightings(what) {
        tracing::warn!(
            kind = what,
            field,
            "ignoring a field from the controller this version does not know (a newer Seam?)"
        );
    }
    Ok(decoded.value)
}

/// Decodes a snapshot object by object: an object this version cannot read at all (say, a kind
/// of endpoint or a node role a newer Seam added) is left out and said in the log, as the watch
/// stream skips such an event, so that one object does not stop every reader's sync during a
/// rolling upgrade. Fields it does not know are dropped as in [`decode_tolerant`].
pub(crate) fn decode_snapshot(bytes: &[u8]) -> std::result::Result<Snapshot, serde_json::Error> {
    use serde::de::Error as _;
    use serde_json::Value;

    let mut doc: serde_json::Map<String, Value> = serde_json::from_slice(bytes)?;
    let revision = doc
        .get("revision")
        .and_then(Value::as_u64)
        .ok_or_else(|| serde_json::Error::custom("revision: missing or not a revision number"))?;
    fn list<T: DeserializeOwned>(
        doc: &mut serde_json::Map<String, Value>,
        field: &str,
        kind: &str,
        required: bool,
    ) -> std::result::Result<Vec<T>, serde_json::Error> {
        let items = match doc.remove(field) {
            Some(Value::Array(items)) => items,
            None if !required => return Ok(Vec::new()),
            None => return Err(serde_json::Error::custom(format!("{field}: missing"))),
            Some(_) => return Err(serde_json::Error::custom(format!("{field}: not a list"))),
        };
        Ok(items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                match seam_model::tolerant::from_value::<T>(item) {
                    Ok(decoded) => {
                        for unknown in decoded.first_sightings(kind) {
                            tracing::warn!(kind, field = unknown, "ignoring a field from the controller this version does not know (a newer Seam?)");
                        }
                        Some(decoded.value)
                    }
                    Err(e) => {
                        tracing::warn!(kind, index = i, error = %e, "leaving out an object of the snapshot this version cannot read (a newer Seam?)");
                        None
                    }
                }
            })
            .collect())
    }
    let mut snapshot = Snapshot {
        revision,
        nodes: list(&mut doc, "nodes", "Node", true)?,
        segments: list(&mut doc, "segments", "Segment", true)?,
        blocks: list(&mut doc, "blocks", "Block", true)?,
        endpoints: list(&mut doc, "endpoints", "Endpoint", true)?,
        namespaces: list(&mut doc, "namespaces", "Namespace", false)?,
        tenants: list(&mut doc, "tenants", "Tenant", false)?,
        address_pools: list(&mut doc, "addressPools", "AddressPool", false)?,
        services: list(&mut doc, "services", "Service", false)?,
        endpoint_slices: list(&mut doc, "endpointSlices", "EndpointSlice", false)?,
        node_leases: list(&mut doc, "nodeLeases", "NodeLease", false)?,
        ..Snapshot::default()
    };
    (snapshot.policies, snapshot.unreadable_policies) = policies(&mut doc)?;
    // Absent from an older controller's snapshot; unreadable, it is left out as well (its
    // readers then take the snapshot's revision for every object).
    if let Some(generations) = doc.remove("generations") {
        match serde_json::from_value(generations) {
            Ok(generations) => snapshot.generations = generations,
            Err(e) => {
                tracing::warn!(error = %e, "leaving out the snapshot's generations this version cannot read")
            }
        }
    }
    Ok(snapshot)
}

/// The policy objects of a snapshot (served as stored), each decoded into its wire type once,
/// here: fields outside `spec` this version does not know are dropped
/// ([`seam_model::tolerant::policy`]); an object it cannot read (a kind or version a newer Seam
/// added, an unknown field inside `spec`) is kept apart, typed as an [`UnreadablePolicy`] with its
/// name and the decode error, and said in the log: it is never in force, but its readers still
/// count it, find it by name and report it.
type Policies = (Vec<seam_policy::PolicyObject>, Vec<UnreadablePolicy>);

fn policies(
    doc: &mut serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Policies, serde_json::Error> {
    use serde::de::Error as _;

    let items = match doc.remove("policies") {
        Some(serde_json::Value::Array(items)) => items,
        None => return Ok(Default::default()),
        Some(_) => return Err(serde_json::Error::custom("policies: not a list")),
    };
    let mut readable = Vec::with_capacity(items.len());
    let mut unreadable = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        // What the object says of itself, read before the decode consumes it.
        let known = UnreadablePolicy::new(&item, "");
        match seam_model::tolerant::policy(item) {
            Ok(decoded) => {
                let kind = decoded.value.kind().as_str();
                for unknown in decoded.first_sightings(kind) {
                    tracing::warn!(kind, field = unknown, "ignoring a field from the controller this version does not know (a newer Seam?)");
                }
                readable.push(decoded.value);
            }
            Err(e) => {
                tracing::warn!(kind = "Policy", index = i, name = known.name.as_deref().unwrap_or(""), error = %e, "a policy object of the snapshot this version cannot read is not enforced (a newer Seam?)");
                unreadable.push(UnreadablePolicy {
                    error: e.to_string(),
                    ..known
                });
            }
        }
    }
    Ok((readable, unreadable))
}

pub(crate) fn object_path(kind: ObjectKind, name: &str) -> String {
    format!("/v1/{}/{}", kind.plural(), encode_segment(name))
}

fn policy_path(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!(
        "/v1/policies/{}/{}/{}",
        encode_segment(kind),
        encode_segment(namespace.unwrap_or(CLUSTER_SCOPE)),
        encode_segment(name)
    )
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // Serializing the model's own types to JSON cannot fail (string keys, no custom errors);
    // the error is still mapped rather than unwrapped.
    serde_json::to_vec(value).map_err(|source| ClientError::Decode {
        endpoint: String::new(),
        request: String::new(),
        what: "request body (encoding)".to_string(),
        source,
    })
}

#[cfg(test)]
mod snapshot_tests {
    use serde_json::json;

    use super::decode_snapshot;

    #[test]
    fn a_snapshot_object_this_version_cannot_read_is_left_out_not_the_whole_snapshot() {
        let ep = |name: &str, kind: &str| {
            json!({"name": name, "kind": kind, "namespace": "web", "segment": "ns-web",
                   "node": "n1", "ip": "10.96.0.5", "mac": "0a:58:0a:60:00:05"})
        };
        let snapshot = json!({
            "revision": 7,
            "nodes": [
                {"name": "n1", "underlayIp": "198.18.0.11"},
                {"name": "n2", "underlayIp": "198.18.0.12", "role": "router"},
            ],
            "segments": [],
            "blocks": [],
            "endpoints": [ep("web/a", "pod"), ep("web/b", "container"), ep("web/c", "vm")],
            "namespaces": [{"name": "web", "zone": "a"}],
            "futureList": [1, 2],
        });
        let decoded = decode_snapshot(&serde_json::to_vec(&snapshot).unwrap()).unwrap();
        assert_eq!(decoded.revision, 7);
        let nodes: Vec<_> = decoded.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nodes, ["n1"]);
        let endpoints: Vec<_> = decoded.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(endpoints, ["web/a", "web/c"]);
        assert_eq!(decoded.namespaces[0].name, "web");
        assert!(decoded.policies.is_empty());

        // Policies arrive typed: one of a kind or version this Seam does not know, or with a field
        // it does not know inside `spec`, is not among them; one outside `spec` is dropped.
        let np = |name: &str, spec: serde_json::Value| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": name, "namespace": "web"}, "spec": spec})
        };
        let mut newer = np("c", json!({"podSelector": {}}));
        newer["status"] = json!({"applied": true});
        let snapshot = json!({
            "revision": 8, "nodes": [], "segments": [], "blocks": [], "endpoints": [],
            "policies": [
                np("a", json!({"podSelector": {}})),
                {"apiVersion": "networking.k8s.io/v2", "kind": "NetworkPolicy",
                 "metadata": {"name": "b", "namespace": "web"}, "spec": {}},
                newer,
                np("d", json!({"podSelector": {}, "futureMode": "strict"})),
                "not an object",
            ],
        });
        let decoded = decode_snapshot(&serde_json::to_vec(&snapshot).unwrap()).unwrap();
        let names: Vec<_> = decoded
            .policies
            .iter()
            .map(|p| p.metadata().name.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
        // The ones it cannot read are kept apart, with their names and why.
        let unreadable: Vec<_> = decoded
            .unreadable_policies
            .iter()
            .map(|u| (u.name.as_deref(), u.kind.as_deref()))
            .collect();
        assert_eq!(
            unreadable,
            [
                (Some("NetworkPolicy/web/b"), Some("NetworkPolicy")),
                (Some("NetworkPolicy/web/d"), Some("NetworkPolicy")),
                (None, None)
            ]
        );
        let errors: Vec<&str> = decoded
            .unreadable_policies
            .iter()
            .map(|u| u.error.as_str())
            .collect();
        assert!(errors[0].contains("unsupported object kind"), "{errors:?}");
        assert!(errors[1].contains("futureMode"), "{errors:?}");
        let order: Vec<_> = decoded
            .stored_policies()
            .iter()
            .map(|p| p.map(|o| o.metadata().name.as_str()).is_ok())
            .collect();
        assert_eq!(order, [true, false, true, false, false]);
        assert!(decode_snapshot(br#"{"revision": 1, "nodes": [], "segments": [], "blocks": [], "endpoints": [], "policies": {}}"#).is_err());

        // What is not a snapshot at all is still an error.
        assert!(decode_snapshot(br#"{"nodes": []}"#).is_err());
        assert!(decode_snapshot(
            br#"{"revision": 1, "nodes": {}, "segments": [], "blocks": [], "endpoints": []}"#
        )
        .is_err());
    }
}
