//! Services, EndpointSlices and address pools: `GET /v1/services`, `GET|PUT|DELETE
//! /v1/services/{namespace}/{name}`, the same for `/v1/endpointslices`, and `GET|PUT|DELETE
//! /v1/addresspools[/{name}]`.
//!
//! A Service is written in one store transaction with its allocations ([`allocate`]): the
//! ClusterIP, the node ports and the LoadBalancer address are index keys under
//! `/seam/v1/allocations/` created with `Absent` compares, kept with `ModRevision` compares and
//! deleted with the Service, so no two Services ever hold one of them, across replicas too. A
//! LoadBalancer Service whose pool is missing or exhausted is stored without an address and
//! with an `AddressAllocated=False` condition; after every pool write, every Service write or
//! delete that frees an address, and when a controller starts leading (the previous leader may
//! have stopped in between), the controller tries the pending ones again
//! ([`Controller::retry_pending_services`]).
//!
//! Address pools may not overlap each other, the service range, a segment or the controller's
//! pool, nor hold a node's or an endpoint's address; a pool cannot lose (or be deleted with)
//! addresses Services hold. Nodes and external endpoints may not take the Services' addresses
//! ([`service_space_holder`]).

pub(crate) mod allocate;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ipnet::Ipv4Net;
use seam_model::{
    overlaps, AddressPool, Endpoint, EndpointSlice, FieldError, Node, ObjectKind, Segment, Service,
    ServiceType,
};
use seam_store::{Compare, Datastore, Txn};

use crate::controller::{decode, encode, field_error, not_found, same_as_read, Controller};
use crate::error::{Error, Result};
use crate::keys::object_key;
use crate::precondition::{if_match, with_if_match};
use allocate::{Change, Held, Inputs, Reserved, Taken, ALLOCATIONS};

/// The Service, EndpointSlice, address pool and node lease routes, merged into
/// [`crate::router`].
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v1/services", get(list_services))
        .route(
            "/v1/services/{*name}",
            get(get_service).put(put_service).delete(delete_service),
        )
        .route("/v1/endpointslices", get(list_slices))
        .route(
            "/v1/endpointslices/{*name}",
            get(get_slice).put(put_slice).delete(delete_slice),
        )
        .route("/v1/addresspools", get(list_pools))
        .route(
            "/v1/addresspools/{name}",
            get(get_pool).put(put_pool).delete(delete_pool),
        )
        .route("/v1/nodeleases", get(list_leases))
        .route("/v1/nodeleases/{node}", axum::routing::put(put_lease))
}

/// A Service as seam-model checks it (every field, with its path); the node port range and the
/// service range are checked by the allocation, which knows the flags.
pub(crate) fn validate_service(service: &Service) -> Result<()> {
    Ok(service.validate()?)
}

/// An EndpointSlice as seam-model checks it.
pub(crate) fn validate_slice(slice: &EndpointSlice) -> Result<()> {
    Ok(slice.validate()?)
}

/// An address pool as seam-model checks it (prefixes not overlapping each other included).
pub(crate) fn validate_pool(pool: &AddressPool) -> Result<()> {
    Ok(pool.validate()?)
}

fn invalid(kind: &'static str, name: &str, errors: Vec<FieldError>) -> Result<()> {
    crate::controller::invalid_if_any(kind, name, errors)
}

/// `namespace/name` from a request path's name, refused unless it is exactly that.
fn namespaced(kind: &'static str, name: &str) -> Result<()> {
    match name.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => Ok(()),
        _ => invalid(
            kind,
            name,
            vec![field_error(
                "name",
                format!("{name:?} is not namespace/name"),
            )],
        ),
    }
}

async fn list_services(State(c): State<Controller>) -> Result<Response> {
    crate::http::list(&c, ObjectKind::Service).await
}

async fn get_service(State(c): State<Controller>, Path(name): Path<String>) -> Result<Response> {
    crate::http::get_one(&c, ObjectKind::Service, &name).await
}

async fn put_service(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let revision = if_match(&headers)?;
    let service: Service = crate::http::decode_body("Service", &body)?;
    crate::http::check_name("Service", &name, &service.key())?;
    let stored =
        with_if_match(ObjectKind::Service, &name, revision, c.put_service(service)).await?;
    Ok(Json(stored).into_response())
}

async fn delete_service(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let revision = if_match(&headers)?;
    namespaced("Service", &name)?;
    with_if_match(
        ObjectKind::Service,
        &name,
        revision,
        c.delete_service(&name),
    )
    .await?;
    // Its LoadBalancer address may be the one a pending Service waits for.
    c.retry_pending_logged().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_slices(State(c): State<Controller>) -> Result<Response> {
    crate::http::list(&c, ObjectKind::EndpointSlice).await
}

async fn get_slice(State(c): State<Controller>, Path(name): Path<String>) -> Result<Response> {
    crate::http::get_one(&c, ObjectKind::EndpointSlice, &name).await
}

async fn put_slice(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let revision = if_match(&headers)?;
    let slice: EndpointSlice = crate::http::decode_body("EndpointSlice", &body)?;
    crate::http::check_name("EndpointSlice", &name, &slice.key())?;
    let stored = with_if_match(
        ObjectKind::EndpointSlice,
        &name,
        revision,
        c.put_endpoint_slice(slice),
    )
    .await?;
    Ok(Json(stored).into_response())
}

async fn delete_slice(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let revision = if_match(&headers)?;
    namespaced("EndpointSlice", &name)?;
    with_if_match(
        ObjectKind::EndpointSlice,
        &name,
        revision,
        c.delete_endpoint_slice(&name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_pools(State(c): State<Controller>) -> Result<Response> {
    crate::http::list(&c, ObjectKind::AddressPool).await
}

async fn get_pool(State(c): State<Controller>, Path(name): Path<String>) -> Result<Response> {
    crate::http::get_one(&c, ObjectKind::AddressPool, &name).await
}

async fn put_pool(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let revision = if_match(&headers)?;
    let pool: AddressPool = crate::http::decode_body("AddressPool", &body)?;
    crate::http::check_name("AddressPool", &name, &pool.name)?;
    let stored = with_if_match(
        ObjectKind::AddressPool,
        &name,
        revision,
        c.put_address_pool(pool),
    )
    .await?;
    c.retry_pending_logged().await;
    Ok(Json(stored).into_response())
}

async fn delete_pool(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(
        ObjectKind::AddressPool,
        &name,
        revision,
        c.delete_address_pool(&name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_leases(State(c): State<Controller>) -> Result<Response> {
    crate::http::list(&c, ObjectKind::NodeLease).await
}

/// `PUT /v1/nodeleases/{node}`: the node renews its liveness record. The body may be empty or
/// the [`seam_model::NodeLease`] itself.
async fn put_lease(
    State(c): State<Controller>,
    Path(node): Path<String>,
    body: Bytes,
) -> Result<Response> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let lease: seam_model::NodeLease = crate::http::decode_body("NodeLease", &body)?;
        crate::http::check_name("NodeLease", &node, &lease.node)?;
    }
    Ok(Json(c.renew_node_lease(&node).await?).into_response())
}

/// What allocation reads from the store.
pub(crate) struct AllocationState {
    pub(crate) taken: Taken,
    pub(crate) pools: Vec<AddressPool>,
    pub(crate) reserved: Reserved,
}

/// Adds a plan's index key changes to `txn`; the value of each key is its owner's key.
pub(crate) fn with_changes(mut txn: Txn, changes: &[Change], owner: &str) -> Result<Txn> {
    let value = encode(ObjectKind::Service, owner, &owner)?;
    for change in changes {
        txn = match change {
            Change::Take(key) => txn
                .when(Compare::Absent(key.clone()))
                .put(key.as_str(), value.clone()),
            Change::Keep(key, revision) => txn.when(Compare::ModRevision(key.clone(), *revision)),
            Change::Free(key, revision) => txn
                .when(Compare::ModRevision(key.clone(), *revision))
                .delete(key.as_str()),
        };
    }
    Ok(txn)
}

impl Controller {
    /// Reads every allocation, pool and reserved address (segments, the pool, nodes,
    /// endpoints).
    pub(crate) async fn allocation_state(&self) -> Result<AllocationState> {
        let (_, kvs) = self
            .store()
            .list(ALLOCATIONS)
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: ALLOCATIONS.to_string(),
                source,
            })?;
        let mut taken = Taken::default();
        for kv in kvs {
            let owner: String = decode(&kv.key, &kv.value)?;
            taken.keys.insert(
                kv.key,
                Held {
                    owner,
                    revision: Some(kv.mod_revision),
                },
            );
        }
        let pools = self
            .read_all::<AddressPool>(ObjectKind::AddressPool)
            .await?
            .into_iter()
            .map(|s| s.object)
            .collect();
        let reserved = Reserved {
            segments: self
                .read_all::<Segment>(ObjectKind::Segment)
                .await?
                .into_iter()
                .map(|s| (s.object.name, s.object.subnet))
                .collect(),
            pool: Some(self.config().pool),
            nodes: self
                .read_all::<Node>(ObjectKind::Node)
                .await?
                .into_iter()
                .map(|n| (n.object.name, n.object.underlay_ip))
                .collect(),
            endpoints: self
                .read_all::<Endpoint>(ObjectKind::Endpoint)
                .await?
                .into_iter()
                .map(|e| (e.object.name, e.object.ip))
                .collect(),
        };
        Ok(AllocationState {
            taken,
            pools,
            reserved,
        })
    }

    /// Plans `service` against `state` (what is stored, plus earlier plans of the same txn).
    pub(crate) fn plan_service(
        &self,
        state: &mut AllocationState,
        current: Option<&Service>,
        service: Service,
    ) -> Result<allocate::Plan> {
        let inputs = Inputs {
            config: self.config(),
            pools: &state.pools,
            reserved: &state.reserved,
        };
        allocate::plan(&inputs, &mut state.taken, current, service)
    }

    /// Creates or replaces a Service, with its allocations; returns it as stored (ClusterIP,
    /// node ports and LoadBalancer address filled in, or the condition saying why not). A
    /// change that frees a LoadBalancer address (a type change away from LoadBalancer, another
    /// pool) retries the pending Services after it.
    pub async fn put_service(&self, service: Service) -> Result<Service> {
        let (stored, freed) = self.write_service(service).await?;
        if freed {
            self.retry_pending_logged().await;
        }
        Ok(stored)
    }

    /// Writes a Service with its allocations; returns it as stored and whether it freed a
    /// LoadBalancer address.
    async fn write_service(&self, service: Service) -> Result<(Service, bool)> {
        validate_service(&service)?;
        let _guard = self.write_lock().await?;
        let name = service.key();
        let current = self.read::<Service>(ObjectKind::Service, &name).await?;
        let mut state = self.allocation_state().await?;
        let plan = self.plan_service(&mut state, current.as_ref().map(|c| &c.object), service)?;
        let key = object_key(ObjectKind::Service, &name);
        let txn = Txn::new().when(same_as_read(&key, current.map(|c| c.mod_revision)));
        let txn = with_changes(txn, &plan.changes, &name)?
            .put(&key, encode(ObjectKind::Service, &name, &plan.service)?);
        self.commit_once(txn, ObjectKind::Service, &name).await?;
        Ok((plan.service, allocate::frees_lb_address(&plan.changes)))
    }

    /// Deletes the Service `namespace/name` and frees what it held.
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Service, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Service, name))?;
        let mut state = self.allocation_state().await?;
        let changes = allocate::release(&mut state.taken, name);
        let key = object_key(ObjectKind::Service, name);
        let txn = Txn::new().when(Compare::ModRevision(key.clone(), current.mod_revision));
        let txn = with_changes(txn, &changes, name)?.delete(&key);
        self.commit_once(txn, ObjectKind::Service, name).await
    }

    /// Creates or replaces an EndpointSlice.
    pub async fn put_endpoint_slice(&self, slice: EndpointSlice) -> Result<EndpointSlice> {
        validate_slice(&slice)?;
        let _guard = self.write_lock().await?;
        let name = slice.key();
        let key = object_key(ObjectKind::EndpointSlice, &name);
        let current = self.get_kv(&key).await?;
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(&key, encode(ObjectKind::EndpointSlice, &name, &slice)?);
        self.commit_once(txn, ObjectKind::EndpointSlice, &name)
            .await?;
        Ok(slice)
    }

    /// Deletes the EndpointSlice `namespace/name`.
    pub async fn delete_endpoint_slice(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let key = object_key(ObjectKind::EndpointSlice, name);
        let current = self
            .get_kv(&key)
            .await?
            .ok_or_else(|| not_found(ObjectKind::EndpointSlice, name))?;
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        self.commit_once(txn, ObjectKind::EndpointSlice, name).await
    }

    /// Checks a pool against the other pools, the service range and the reserved ranges, and
    /// that it keeps every address Services hold from its previous version.
    pub(crate) fn check_pool(
        &self,
        pool: &AddressPool,
        state: &AllocationState,
        services: &[Service],
    ) -> Result<()> {
        let services_cidr = self.config().service_cidr;
        let mut errors = Vec::new();
        for (i, net) in pool.addresses.iter().enumerate() {
            let path = format!("addresses[{i}]");
            if let Some(why) = state.reserved.net_collision(*net) {
                errors.push(field_error(&path, why));
            }
            if overlaps(*net, services_cidr) {
                errors.push(field_error(
                    &path,
                    format!("{net} overlaps the service range {services_cidr} (--service-cidr)"),
                ));
            }
            for other in state.pools.iter().filter(|p| p.name != pool.name) {
                if let Some(o) = other.addresses.iter().find(|o| overlaps(*net, **o)) {
                    errors.push(field_error(
                        &path,
                        format!("{net} overlaps {o} of address pool {:?}", other.name),
                    ));
                }
            }
        }
        invalid("AddressPool", &pool.name, errors)?;
        let Some(old) = state.pools.iter().find(|p| p.name == pool.name) else {
            return Ok(());
        };
        let users = holders(services, |ip| {
            old.addresses.iter().any(|n| n.contains(&ip))
                && !pool.addresses.iter().any(|n| n.contains(&ip))
        });
        in_use_by(&pool.name, users)
    }

    /// Creates or replaces an address pool. Pending LoadBalancer Services are not retried
    /// here: call [`Controller::retry_pending_services`] after it (the HTTP route does).
    pub async fn put_address_pool(&self, pool: AddressPool) -> Result<AddressPool> {
        validate_pool(&pool)?;
        let _guard = self.write_lock().await?;
        let state = self.allocation_state().await?;
        let services = self.services().await?;
        self.check_pool(&pool, &state, &services)?;
        let key = object_key(ObjectKind::AddressPool, &pool.name);
        let current = self.get_kv(&key).await?;
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(&key, encode(ObjectKind::AddressPool, &pool.name, &pool)?);
        self.commit_once(txn, ObjectKind::AddressPool, &pool.name)
            .await?;
        Ok(pool)
    }

    /// Deletes an address pool; refused while Services hold addresses of it.
    pub async fn delete_address_pool(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<AddressPool>(ObjectKind::AddressPool, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::AddressPool, name))?;
        let services = self.services().await?;
        let users = holders(&services, |ip| {
            current.object.addresses.iter().any(|n| n.contains(&ip))
        });
        in_use_by(name, users)?;
        let key = object_key(ObjectKind::AddressPool, name);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        self.commit_once(txn, ObjectKind::AddressPool, name).await
    }

    /// Refuses a segment whose subnet overlaps the service range or an address pool: its pods
    /// would share addresses with Services.
    pub(crate) async fn check_segment_against_services(&self, segment: &Segment) -> Result<()> {
        let mut errors = Vec::new();
        let services_cidr = self.config().service_cidr;
        if overlaps(segment.subnet, services_cidr) {
            errors.push(field_error(
                "subnet",
                format!(
                    "{} overlaps the service range {services_cidr} (--service-cidr)",
                    segment.subnet
                ),
            ));
        }
        for pool in self
            .read_all::<AddressPool>(ObjectKind::AddressPool)
            .await?
        {
            if let Some(net) = pool
                .object
                .addresses
                .iter()
                .find(|n| overlaps(**n, segment.subnet))
            {
                errors.push(field_error(
                    "subnet",
                    format!(
                        "{} overlaps {net} of address pool {:?}",
                        segment.subnet, pool.object.name
                    ),
                ));
            }
        }
        invalid("Segment", &segment.name, errors)
    }

    /// [`service_space_holder`] of `ip`, from what is stored.
    pub(crate) async fn service_space_holder(
        &self,
        ip: std::net::Ipv4Addr,
    ) -> Result<Option<(Ipv4Net, String)>> {
        let pools: Vec<AddressPool> = self
            .read_all::<AddressPool>(ObjectKind::AddressPool)
            .await?
            .into_iter()
            .map(|p| p.object)
            .collect();
        let services = self.services().await?;
        Ok(service_space_holder(
            ip,
            self.config().service_cidr,
            &pools,
            &services,
        ))
    }

    pub(crate) async fn services(&self) -> Result<Vec<Service>> {
        Ok(self
            .read_all::<Service>(ObjectKind::Service)
            .await?
            .into_iter()
            .map(|s| s.object)
            .collect())
    }

    /// Gives pending LoadBalancer Services (no address yet) one if a pool now has it; returns
    /// how many got one. Called after every pool write, every Service write or delete that
    /// frees an address, and when this controller starts leading.
    pub async fn retry_pending_services(&self) -> Result<usize> {
        let pending: Vec<Service> = self
            .services()
            .await?
            .into_iter()
            .filter(|s| {
                s.spec.service_type == ServiceType::LoadBalancer
                    && s.status.load_balancer.ingress.is_empty()
            })
            .collect();
        let mut allocated = 0;
        for service in pending {
            let name = service.key();
            match self.write_service(service).await {
                Ok((s, _)) if !s.status.load_balancer.ingress.is_empty() => {
                    tracing::info!(service = %name, address = %s.status.load_balancer.ingress[0].ip, "allocated a pending LoadBalancer address");
                    allocated += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "cannot retry a pending LoadBalancer Service")
                }
            }
        }
        Ok(allocated)
    }

    /// [`Controller::retry_pending_services`], its failure logged (the pool write itself
    /// succeeded).
    pub(crate) async fn retry_pending_logged(&self) {
        if let Err(e) = self.retry_pending_services().await {
            tracing::warn!(error = %e, "cannot retry pending LoadBalancer Services");
        }
    }
}

/// What of the Services' address space holds `ip`, as the range that holds it and a name for
/// the holder: a Service's ClusterIP, externalIP or LoadBalancer address, an address pool or the
/// service range; `None` when none does. A node or an external endpoint may not take such an
/// address: the Service tables would translate traffic meant for it.
pub(crate) fn service_space_holder(
    ip: std::net::Ipv4Addr,
    service_cidr: Ipv4Net,
    pools: &[AddressPool],
    services: &[Service],
) -> Option<(Ipv4Net, String)> {
    let host = Ipv4Net::from(ip);
    for service in services {
        let key = service.key();
        if service.spec.cluster_ip == seam_model::ClusterIp::Address(ip) {
            return Some((host, format!("the ClusterIP of Service {key}")));
        }
        if service.spec.external_ips.contains(&ip) {
            return Some((host, format!("an externalIP of Service {key}")));
        }
        if service
            .status
            .load_balancer
            .ingress
            .iter()
            .any(|i| i.ip == ip)
        {
            return Some((host, format!("the LoadBalancer address of Service {key}")));
        }
    }
    if let Some((pool, net)) = pools
        .iter()
        .find_map(|p| p.addresses.iter().find(|n| n.contains(&ip)).map(|n| (p, n)))
    {
        return Some((*net, format!("address pool {:?}", pool.name)));
    }
    service_cidr.contains(&ip).then(|| {
        (
            service_cidr,
            "the service range (--service-cidr)".to_string(),
        )
    })
}

/// The Services holding a LoadBalancer address `inside` accepts.
fn holders(services: &[Service], inside: impl Fn(std::net::Ipv4Addr) -> bool) -> Vec<String> {
    services
        .iter()
        .filter(|s| s.status.load_balancer.ingress.iter().any(|i| inside(i.ip)))
        .map(Service::key)
        .collect()
}

fn in_use_by(pool: &str, users: Vec<String>) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let total = users.len();
    Err(Error::InUseBy {
        kind: ObjectKind::AddressPool,
        name: pool.to_string(),
        users: users
            .into_iter()
            .take(crate::error::MAX_LISTED_USERS)
            .map(|u| (ObjectKind::Service, u))
            .collect(),
        total,
    })
}
