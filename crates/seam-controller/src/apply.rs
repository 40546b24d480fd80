//! `POST /v1/apply`: namespaces, tenants and policy objects written in one store transaction,
//! all or none, whatever the reason one of them is refused.
//!
//! Each object is checked as its single `PUT` checks it (the same functions), every problem of
//! every object is reported with its document number, and only then, under the write lock, the
//! objects are read, checked against what is stored (a policy another manager owns), and written
//! with one transaction whose compares cover every key read (and the leader fence, added by
//! [`Controller::commit`]). A compare that fails writes nothing.

use seam_model::bounds::MAX_APPLY_OBJECTS;
use seam_model::{policy_name, ApplyObject, ObjectKind, ValidationError};
use seam_store::Txn;

use crate::controller::{encode, field_error, invalid_if_any, same_as_read, Controller};
use crate::error::{ApplyProblem, Error, Result};
use crate::keys::object_key;
use crate::policies::{admit_namespace, admit_policy, check_manager};

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
        // Admitted by the Services work of issue 12 (helper CONTROLLER replaces this).
        ApplyObject::Service(_) | ApplyObject::EndpointSlice(_) | ApplyObject::AddressPool(_) => {
            return Err(Error::Invalid(ValidationError {
                kind: "Apply",
                name: String::new(),
                errors: vec![field_error(
                    "objects",
                    format!("{what}: not supported by this controller yet"),
                )],
            }))
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
    /// written in one store transaction. Returns the objects as stored, in order.
    pub async fn apply(&self, objects: Vec<ApplyObject>) -> Result<Vec<ApplyObject>> {
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

        let _guard = self.write_lock().await?;
        let mut txn = Txn::new();
        for (i, a) in &admitted {
            let current = self.read::<serde_json::Value>(a.kind, &a.name).await?;
            if let ApplyObject::Policy(new) = &a.stored {
                if let Err(e) = check_manager(&a.name, current.as_ref().map(|c| &c.object), new) {
                    problems.push(problem(*i, a.stored.describe(), e));
                    continue;
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
        if !self.commit(txn, "apply").await? {
            return Err(Error::ApplyContended { count });
        }
        tracing::info!(
            objects = %admitted.iter().map(|(_, a)| a.stored.describe()).collect::<Vec<_>>().join(", "),
            "applied"
        );
        Ok(admitted.into_iter().map(|(_, a)| a.stored).collect())
    }
}
