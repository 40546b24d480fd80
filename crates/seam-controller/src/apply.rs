//! `POST /v1/apply`: namespaces, tenants, policy objects, Services, EndpointSlices and address
//! pools written in one store transaction, all or none, whatever the reason one of them is
//! refused. Services get their allocations in the same transaction, from the pools of the same
//! apply too.
//!
//! Each object is checked as its single `PUT` checks it (the same functions), every problem of
//! every object is reported with its document number, and only then, under the write lock, the
//! objects are read, checked against what is stored (a policy another manager owns), and written
//! with one transaction whose compares cover every key read (and the leader fence, added by
//! [`Controller::commit`]). A compare that fails writes nothing.

use seam_model::bounds::MAX_APPLY_OBJECTS;
use seam_model::{policy_name, Applied, ApplyObject, ObjectKind, ValidationError};
use seam_store::Txn;

use crate::controller::{encode, field_error, invalid_if_any, same_as_read, Controller};
use crate::error::{ApplyProblem, Error, Result};
use crate::keys::object_key;
use crate::policies::{admit_namespace, admit_policy, check_manager};
use crate::services::allocate;
use crate::services::{validate_pool, validate_service, validate_slice, with_changes};

/// One object checked as its single `PUT` checks it: where it goes and what is stored.
struct Admitted {
    kind: ObjectKind,
    name: String,
    stored: ApplyObject,
}

fn admit(object: ApplyObject, what: &str) -> Result<Admitted> {
    Ok(match object {
        ApplyObject::Namespace(ns) => {
            let ns = admit_namespace(ns)?;
            Admitted {
                kind: ObjectKind::Namespace,
                name: ns.name.clone(),
                stored: ApplyObject::Namespace(ns),
            }
        }
        ApplyObject::Tenant(t) => {
            t.validate()?;
            Admitted {
                kind: ObjectKind::Tenant,
                name: t.name.clone(),
                stored: ApplyObject::Tenant(t),
            }
        }
        ApplyObject::Service(s) => {
            validate_service(&s)?;
            Admitted {
                kind: ObjectKind::Service,
                name: s.key(),
                stored: ApplyObject::Service(s),
            }
        }
        ApplyObject::EndpointSlice(s) => {
            validate_slice(&s)?;
            Admitted {
                kind: ObjectKind::EndpointSlice,
                name: s.key(),
                stored: ApplyObject::EndpointSlice(s),
            }
        }
        ApplyObject::AddressPool(p) => {
            validate_pool(&p)?;
            Admitted {
                kind: ObjectKind::AddressPool,
                name: p.name.clone(),
                stored: ApplyObject::AddressPool(p),
            }
        }
        ApplyObject::Policy(value) => {
            let object = admit_policy(value, what)?;
            let key = object.key();
            Admitted {
                kind: ObjectKind::Policy,
                name: policy_name(key.kind.as_str(), key.namespace.as_deref(), &key.name),
                stored: ApplyObject::Policy(object.to_value()),
            }
        }
    })
}

fn stored_bytes(a: &Admitted) -> Result<Vec<u8>> {
    match &a.stored {
        ApplyObject::Namespace(ns) => encode(a.kind, &a.name, ns),
        ApplyObject::Tenant(t) => encode(a.kind, &a.name, t),
        ApplyObject::Policy(v) => encode(a.kind, &a.name, v),
        ApplyObject::Service(v) => encode(a.kind, &a.name, v),
        ApplyObject::EndpointSlice(v) => encode(a.kind, &a.name, v),
        ApplyObject::AddressPool(v) => encode(a.kind, &a.name, v),
    }
}

fn problem(index: usize, object: String, error: Error) -> ApplyProblem {
    ApplyProblem {
        document: index + 1,
        object,
        error: Box::new(error),
    }
}

impl Controller {
    /// Writes every object or none: each is checked as its single `PUT` checks it, then all are
    /// written in one store transaction. Returns the objects as stored, in order, and the
    /// transaction's revision (every object's new generation).
    pub async fn apply(&self, objects: Vec<ApplyObject>) -> Result<Applied> {
        let count = objects.len();
        let mut errors = Vec::new();
        if count == 0 {
            errors.push(field_error("objects", "holds no object".to_string()));
        }
        if count > MAX_APPLY_OBJECTS {
            errors.push(field_error(
                "objects",
                format!("{count} objects, over the bound of {MAX_APPLY_OBJECTS} per apply (MAX_APPLY_OBJECTS: one store transaction must stay within etcd's operation limit); split the manifest"),
            ));
        }
        invalid_if_any("Apply", "", errors)?;

        let mut admitted = Vec::with_capacity(count);
        let mut problems = Vec::new();
        for (i, object) in objects.into_iter().enumerate() {
            let what = object.describe();
            match admit(object, &what) {
                Ok(a) => match admitted
                    .iter()
                    .find(|(_, b): &&(usize, Admitted)| b.kind == a.kind && b.name == a.name)
                {
                    Some((earlier, _)) => problems.push(problem(
                        i,
                        what,
                        Error::Invalid(ValidationError {
                            kind: "Apply",
                            name: String::new(),
                            errors: vec![field_error(
                                "objects",
                                format!("names the same object as document {}", earlier + 1),
                            )],
                        }),
                    )),
                    None => admitted.push((i, a)),
                },
                Err(e) => problems.push(problem(i, what, e)),
            }
        }
        if !problems.is_empty() {
            return Err(Error::ApplyRefused { count, problems });
        }

        let guard = self.write_lock().await?;
        let allocates = admitted.iter().any(|(_, a)| {
            matches!(
                a.stored,
                ApplyObject::Service(_) | ApplyObject::AddressPool(_)
            )
        });
        let pools_written = admitted
            .iter()
            .any(|(_, a)| matches!(a.stored, ApplyObject::AddressPool(_)));
        // Pools first, whatever their place in the manifest: the Services of the same apply
        // take their addresses from them.
        let mut state = match allocates {
            true => Some(self.allocation_state().await?),
            false => None,
        };
        if let Some(state) = state.as_mut().filter(|_| pools_written) {
            let services: Vec<seam_model::Service> = self
                .read_all::<seam_model::Service>(ObjectKind::Service)
                .await?
                .into_iter()
                .map(|s| s.object)
                .collect();
            for (i, a) in &admitted {
                let ApplyObject::AddressPool(pool) = &a.stored else {
                    continue;
                };
                match self.check_pool(pool, state, &services) {
                    Ok(()) => {
                        state.pools.retain(|p| p.name != pool.name);
                        state.pools.push(pool.clone());
                    }
                    Err(e) => problems.push(problem(*i, a.stored.describe(), e)),
                }
            }
        }
        let mut txn = Txn::new();
        // A Service of this apply that gives up its LoadBalancer address frees it for a
        // pending one.
        let mut frees_address = false;
        for (i, a) in admitted.iter_mut() {
            let current = self.read::<serde_json::Value>(a.kind, &a.name).await?;
            if let ApplyObject::Policy(new) = &a.stored {
                if let Err(e) = check_manager(&a.name, current.as_ref().map(|c| &c.object), new) {
                    problems.push(problem(*i, a.stored.describe(), e));
                    continue;
                }
            }
            if let (ApplyObject::Service(service), Some(state)) = (&a.stored, state.as_mut()) {
                let old = self.read::<seam_model::Service>(a.kind, &a.name).await?;
                match self.plan_service(state, old.as_ref().map(|o| &o.object), service.clone()) {
                    Ok(plan) => {
                        frees_address |= allocate::frees_lb_address(&plan.changes);
                        txn = with_changes(txn, &plan.changes, &a.name)?;
                        a.stored = ApplyObject::Service(plan.service);
                    }
                    Err(e) => {
                        problems.push(problem(*i, a.stored.describe(), e));
                        continue;
                    }
                }
            }
            let key = object_key(a.kind, &a.name);
            txn = txn
                .when(same_as_read(&key, current.map(|c| c.mod_revision)))
                .put(&key, stored_bytes(a)?);
        }
        if !problems.is_empty() {
            return Err(Error::ApplyRefused { count, problems });
        }
        let Some(revision) = self.commit_at(txn, "apply").await? else {
            return Err(Error::ApplyContended { count });
        };
        drop(guard);
        if pools_written || frees_address {
            self.retry_pending_logged().await;
        }
        tracing::info!(
            objects = %admitted.iter().map(|(_, a)| a.stored.describe()).collect::<Vec<_>>().join(", "),
            "applied"
        );
        Ok(Applied {
            objects: admitted.into_iter().map(|(_, a)| a.stored).collect(),
            revision: Some(revision),
        })
    }
}
