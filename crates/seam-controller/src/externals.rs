//! External endpoints (`POST /v1/externals`, `DELETE /v1/externals/<namespace>/<name>`): servers
//! outside the overlay, known by their addresses and reached through a gateway node. They are
//! stored as [`Endpoint`] records of kind `external` (see [`seam_model::External`]), so policies
//! and watchers see them like any other endpoint; agents route their addresses to the gateway.
//!
//! Refused (nothing written): a gateway that is not a node of role `gateway`; an address inside a
//! segment's subnet or the controller's pool (pod and VM addresses come from there, so the
//! gateway's static routes would shadow them), a node's underlay address, an address of the
//! Services (the service range, an address pool, a Service's externalIP), or an address another
//! endpoint holds.

use seam_model::{
    Endpoint, EndpointKind, External, FieldError, Node, NodeRole, ObjectKind, Segment,
    EXTERNAL_SEGMENT, TRANSIT_VNI,
};
use seam_store::{Compare, Txn};

use crate::controller::{
    encode, field_error, invalid_if_any, not_found, same_as_read, Controller, Stored,
};
use crate::error::{Error, Result};
use crate::keys::object_key;

impl Controller {
    /// Registers or replaces an external endpoint: all its records in one txn (records of a
    /// previous version with more addresses are removed). Returns the records.
    pub async fn put_external(&self, external: External) -> Result<Vec<Endpoint>> {
        external.validate()?;
        let records = external.endpoints();
        let _guard = self.write_lock().await?;
        let node = self.read_gateway(&external.name, &external.gateway).await?;
        let segments = self.read_all::<Segment>(ObjectKind::Segment).await?;
        let nodes = self.read_all::<Node>(ObjectKind::Node).await?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let mine = |e: &Endpoint| {
            e.kind == EndpointKind::External
                && External::owns_record(&external.namespace, &external.name, &e.name)
        };
        let mut problems: Vec<FieldError> = Vec::new();
        for (i, ip) in external.addresses.iter().enumerate() {
            let path = format!("addresses[{i}]");
            let pool = self.config().pool;
            if let Some(seg) = segments.iter().find(|s| s.object.subnet.contains(ip)) {
                problems.push(field_error(
                    &path,
                    format!(
                        "{ip} is inside segment {:?} subnet {} (pod and VM addresses); an external endpoint must be outside every segment",
                        seg.object.name, seg.object.subnet
                    ),
                ));
            } else if pool.contains(ip) {
                problems.push(field_error(
                    &path,
                    format!("{ip} is inside the controller's pool {pool}, from which segments are carved"),
                ));
            }
            if let Some(n) = nodes.iter().find(|n| n.object.underlay_ip == *ip) {
                problems.push(field_error(
                    &path,
                    format!("{ip} is the underlay address of node {:?}", n.object.name),
                ));
            }
            if let Some((range, owner)) = self.service_space_holder(*ip).await? {
                problems.push(field_error(
                    &path,
                    format!("{ip} is in {owner} ({range}); Services' addresses are translated on every node"),
                ));
            }
        }
        invalid_if_any("External", &external.name, problems)?;
        for (ep, ip) in records.iter().zip(&external.addresses) {
            if let Some(other) = endpoints
                .iter()
                .map(|e| &e.object)
                .find(|o| o.ip == *ip && !mine(o))
            {
                return Err(Error::AddressTaken {
                    endpoint: ep.name.clone(),
                    ip: *ip,
                    segment: other.segment.clone(),
                    other: other.name.clone(),
                });
            }
        }
        let mut txn = Txn::new().when(Compare::ModRevision(
            object_key(ObjectKind::Node, &external.gateway),
            node.mod_revision,
        ));
        for record in &records {
            let key = object_key(ObjectKind::Endpoint, &record.name);
            let current = endpoints.iter().find(|e| e.object.name == record.name);
            txn = txn
                .when(same_as_read(&key, current.map(|c| c.mod_revision)))
                .put(&key, encode(ObjectKind::Endpoint, &record.name, record)?);
        }
        for stale in endpoints
            .iter()
            .filter(|e| mine(&e.object) && !records.iter().any(|r| r.name == e.object.name))
        {
            let key = object_key(ObjectKind::Endpoint, &stale.object.name);
            txn = txn
                .when(Compare::ModRevision(key.clone(), stale.mod_revision))
                .delete(&key);
        }
        self.commit_once(txn, ObjectKind::Endpoint, &external.record_name(0))
            .await?;
        Ok(records)
    }

    /// Removes every record of the external endpoint `namespace/name`; returns how many there were.
    pub async fn delete_external(&self, namespace: &str, name: &str) -> Result<usize> {
        let _guard = self.write_lock().await?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let mine: Vec<&Stored<Endpoint>> = endpoints
            .iter()
            .filter(|e| {
                e.object.kind == EndpointKind::External
                    && External::owns_record(namespace, name, &e.object.name)
            })
            .collect();
        if mine.is_empty() {
            return Err(not_found(
                ObjectKind::Endpoint,
                &format!("{namespace}/{name}"),
            ));
        }
        let mut txn = Txn::new();
        for e in &mine {
            let key = object_key(ObjectKind::Endpoint, &e.object.name);
            txn = txn
                .when(Compare::ModRevision(key.clone(), e.mod_revision))
                .delete(&key);
        }
        self.commit_once(txn, ObjectKind::Endpoint, &format!("{namespace}/{name}"))
            .await?;
        Ok(mine.len())
    }

    /// The gateway node an external endpoint names: it must exist and have role `gateway`.
    async fn read_gateway(&self, external: &str, gateway: &str) -> Result<Stored<Node>> {
        let node = self
            .read::<Node>(ObjectKind::Node, gateway)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Node, gateway))?;
        if node.object.role != NodeRole::Gateway {
            invalid_if_any(
                "External",
                external,
                vec![field_error(
                    "gateway",
                    format!(
                        "node {gateway:?} has role {:?}, not gateway (start its seamd with --role gateway)",
                        node.object.role
                    ),
                )],
            )?;
        }
        Ok(node)
    }

    /// Refuses a record of kind `external` written through `PUT /v1/endpoints`: external
    /// endpoints are registered whole, with their checks, by [`Controller::put_external`].
    pub(crate) fn refuse_external_record(endpoint: &Endpoint) -> Result<()> {
        if endpoint.kind != EndpointKind::External {
            return Ok(());
        }
        invalid_if_any(
            "Endpoint",
            &endpoint.name,
            vec![field_error(
                "kind",
                "external endpoints are registered with POST /v1/externals (`seam external add`)"
                    .to_string(),
            )],
        )
    }

    /// Refuses a segment that would hold an external endpoint's address or use a reserved name
    /// or VNI ([`EXTERNAL_SEGMENT`], [`TRANSIT_VNI`]).
    pub(crate) async fn check_segment_against_externals(&self, segment: &Segment) -> Result<()> {
        let mut problems = Vec::new();
        if segment.name == EXTERNAL_SEGMENT {
            problems.push(field_error(
                "name",
                format!("{EXTERNAL_SEGMENT:?} is reserved for external endpoints"),
            ));
        }
        if segment.vni == TRANSIT_VNI {
            problems.push(field_error(
                "vni",
                format!("{TRANSIT_VNI} is reserved for the gateway transit"),
            ));
        }
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        if let Some(e) = endpoints
            .iter()
            .map(|e| &e.object)
            .find(|e| e.kind == EndpointKind::External && segment.subnet.contains(&e.ip))
        {
            problems.push(field_error(
                "subnet",
                format!(
                    "{} holds {}, the address of external endpoint {:?}",
                    segment.subnet, e.ip, e.name
                ),
            ));
        }
        invalid_if_any("Segment", &segment.name, problems)
    }
}
