use super::*;
use seam_model::{StoredPolicy, UnreadablePolicy};

fn contract() -> StoredPolicy {
    let value = serde_json::json!({
        "apiVersion": "seam.dev/v1alpha1", "kind": "Contract",
        "metadata": {"name": "web"},
        "spec": {"consumers": ["cluster"], "providers": ["cluster"],
                 "subjects": [{"filters": [{"protocol": "TCP"}]}], "action": "allow"}
    });
    StoredPolicy::Readable(seam_policy::PolicyObject::from_value(value).unwrap())
}

fn view() -> ClusterView {
    let mut view = ClusterView::default();
    view.policies.insert("Contract/_/web".into(), contract());
    view.tenants
        .insert("t1".into(), seam_model::Tenant::named("t1"));
    view.generations.insert("Contract/_/web".into(), 7);
    view.generations.insert("Tenant/_/t1".into(), 5);
    view
}

fn generations(r: &Realization) -> Vec<(String, u64, Option<String>)> {
    r.report()
        .objects
        .iter()
        .map(|(n, o)| (n.clone(), o.generation, o.error.clone()))
        .collect()
}

#[test]
fn what_a_pass_observed_is_reported_only_once_its_table_is_in_the_kernel() {
    let mut r = Realization::new("n1");
    let mut view = view();
    r.observe(&view, &ViewChanges::everything());
    assert!(r.report().objects.is_empty(), "nothing written yet");
    assert!(r.enforced());
    assert_eq!(
        generations(&r),
        [
            ("Contract/_/web".to_string(), 7, None),
            ("Tenant/_/t1".to_string(), 5, None)
        ]
    );
    assert!(r.unsent().is_some());
    r.accepted(r.unsent().unwrap());
    assert!(r.unsent().is_none());

    // A new generation whose write fails: the report keeps the old one and says why.
    view.generations.insert("Contract/_/web".into(), 9);
    let mut changes = ViewChanges::default();
    changes.documents.insert("Contract/_/web".into());
    r.observe(&view, &changes);
    assert!(r.failed("applying the firewall failed: EPERM"));
    assert!(
        !r.failed("applying the firewall failed: EPERM"),
        "same error, no change"
    );
    assert_eq!(generations(&r)[0].1, 7);
    assert_eq!(
        r.unsent().unwrap().error.as_deref(),
        Some("applying the firewall failed: EPERM")
    );
    // The next pass writes it.
    r.observe(&view, &ViewChanges::default());
    assert!(r.enforced());
    assert_eq!(generations(&r)[0].1, 9);
    assert_eq!(r.report().error, None);
    // A pass that changes nothing changes no report.
    r.observe(&view, &ViewChanges::default());
    assert!(!r.enforced());

    // Deleted objects leave the report.
    view.tenants.clear();
    view.generations.remove("Tenant/_/t1");
    let mut changes = ViewChanges::default();
    changes.tenants.insert("t1".into());
    r.observe(&view, &changes);
    assert!(r.enforced());
    assert_eq!(generations(&r).len(), 1);
}

#[test]
fn a_policy_this_node_cannot_read_is_reported_with_its_error() {
    let mut r = Realization::new("n1");
    let mut view = view();
    let raw = serde_json::json!({"apiVersion": "seam.dev/v1beta9", "kind": "Contract",
                                 "metadata": {"name": "new"}});
    view.policies.insert(
        "Contract/_/new".into(),
        StoredPolicy::Unreadable(UnreadablePolicy::new(&raw, "unsupported apiVersion")),
    );
    view.generations.insert("Contract/_/new".into(), 8);
    r.observe(&view, &ViewChanges::everything());
    assert!(r.enforced());
    let new = &r.report().objects["Contract/_/new"];
    assert_eq!(new.generation, 8);
    assert_eq!(
        new.error.as_deref(),
        Some("stored policy object ignored: unsupported apiVersion")
    );
    assert_eq!(r.report().objects["Contract/_/web"].error, None);
}
