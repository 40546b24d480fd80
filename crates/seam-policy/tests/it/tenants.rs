//! Tenant operations on the inventory (OpenShift SDN's join-projects, isolate-projects, make-projects-global)
//! and what multitenant mode makes of them.

use seam_policy::{
    evaluate, Inventory, IsolationMode, PolicySet, Protocol, Reason, Tenant, TenantError,
};

use crate::eval::{flow, inventory, set};

fn allowed(inv: &Inventory, pol: &PolicySet, src: &str, dst: &str) -> bool {
    evaluate(pol, inv, &flow(src, dst, Protocol::Tcp, 80))
        .unwrap()
        .allowed()
}

/// Both directions of the pair.
fn both(inv: &Inventory, pol: &PolicySet, a: &str, b: &str) -> (bool, bool) {
    (allowed(inv, pol, a, b), allowed(inv, pol, b, a))
}

#[test]
fn join_isolate_and_make_global_in_multitenant_mode() {
    // shop, lab, ext: tenant blue; bank: red; infra: ops (global). All multitenant.
    let mut inv = inventory();
    let none = PolicySet::new();
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (false, false));

    // join: bank joins shop's tenant.
    inv.join("shop", "bank").unwrap();
    assert_eq!(inv.tenant_name("bank"), "blue");
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (true, true));
    assert_eq!(both(&inv, &none, "lab/vm1", "bank/db"), (true, true));
    inv.validate().unwrap();

    // isolate: bank gets a tenant of its own, multitenant like the one it left.
    assert_eq!(inv.isolate("bank").unwrap(), "bank");
    assert_eq!(
        inv.tenant("bank"),
        Tenant {
            isolation: IsolationMode::Multitenant,
            global: false
        }
    );
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (false, false));
    let v = evaluate(
        &none,
        &inv,
        &flow("shop/client", "bank/db", Protocol::Tcp, 80),
    )
    .unwrap();
    assert_eq!(
        v.ingress.reason,
        Reason::IsolationMode {
            mode: IsolationMode::Multitenant,
            tenant: "bank".into(),
            peer_tenant: Some("blue".into())
        }
    );
    // isolate cuts a namespace from the ones it was joined with, and only that one.
    inv.isolate("shop").unwrap();
    assert_eq!(both(&inv, &none, "shop/client", "lab/vm1"), (false, false));
    assert_eq!(inv.tenant_name("lab"), "blue");
    assert_eq!(inv.tenant_name("ext"), "blue");

    // make_global: bank reaches and is reached by everybody, in both directions.
    assert_eq!(inv.make_global("bank").unwrap(), "bank");
    assert!(inv.tenant("bank").global);
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (true, true));
    assert_eq!(both(&inv, &none, "lab/vm1", "bank/db"), (true, true));
    // ... and nobody else changed.
    assert_eq!(both(&inv, &none, "shop/client", "lab/vm1"), (false, false));
    // isolate undoes make_global.
    inv.isolate("bank").unwrap();
    assert!(!inv.tenant("bank").global);
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (false, false));
    // joining a global namespace's tenant makes the joiner global too.
    inv.join("infra", "lab").unwrap();
    assert_eq!(both(&inv, &none, "lab/vm1", "bank/db"), (true, true));
    inv.validate().unwrap();
}

#[test]
fn make_global_moves_only_the_namespace_not_its_joined_peers() {
    let mut inv = inventory();
    let none = PolicySet::new();
    // lab leaves blue as a global tenant; shop (still blue) is not global.
    let t = inv.make_global("lab").unwrap();
    assert_eq!(t, "lab");
    assert!(!inv.tenant(inv.tenant_name("shop")).global);
    assert_eq!(both(&inv, &none, "lab/vm1", "bank/db"), (true, true));
    assert_eq!(both(&inv, &none, "shop/client", "bank/db"), (false, false));
}

#[test]
fn new_tenant_names_do_not_capture_other_namespaces() {
    let mut inv = inventory();
    // ext uses a tenant that happens to be called "lab": isolating lab must not join it to ext.
    inv.tenants.insert(
        "lab".into(),
        Tenant {
            isolation: IsolationMode::Flat,
            global: false,
        },
    );
    inv.namespaces.get_mut("ext").unwrap().tenant = Some("lab".into());
    assert_eq!(inv.isolate("lab").unwrap(), "lab-2");
    assert_eq!(inv.tenant_name("ext"), "lab");
    assert_eq!(inv.tenant("lab-2").isolation, IsolationMode::Multitenant);
    // The mode is carried over: a namespace of a flat tenant stays flat.
    assert_eq!(inv.isolate("ext").unwrap(), "ext");
    assert_eq!(inv.tenant("ext").isolation, IsolationMode::Flat);
    // A namespace without a tenant (the default tenant, default mode) gets one named after it.
    inv.namespaces.insert("plain".into(), Default::default());
    assert_eq!(inv.tenant_name("plain"), "default");
    assert_eq!(inv.isolate("plain").unwrap(), "plain");
    assert_eq!(inv.tenant("plain").isolation, inv.default_isolation);
    inv.validate().unwrap();
}

#[test]
fn unknown_namespaces_are_refused_and_change_nothing() {
    let mut inv = inventory();
    let before = inv.clone();
    assert_eq!(
        inv.join("shop", "nope"),
        Err(TenantError::UnknownNamespace("nope".into()))
    );
    assert_eq!(
        inv.join("nope", "shop"),
        Err(TenantError::UnknownNamespace("nope".into()))
    );
    assert!(inv.isolate("nope").is_err());
    let e = inv.make_global("nope").unwrap_err();
    assert!(e.to_string().contains("unknown namespace \"nope\""), "{e}");
    assert_eq!(inv, before);
}

#[test]
fn policies_still_apply_over_the_tenant_modes() {
    let mut inv = inventory();
    // A NetworkPolicy isolating bank/db to bank clients only: joining bank to blue does not open it.
    let pol = set(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: bank}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
"#);
    inv.join("shop", "bank").unwrap();
    assert_eq!(both(&inv, &pol, "shop/client", "bank/db"), (false, true));
    // A global tenant does not override an admin deny either.
    let pol = set(r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-infra}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: bank}}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: infra}}}]}]
"#);
    assert!(!allowed(&inv, &pol, "infra/mon", "bank/db"));
    assert!(allowed(&inv, &pol, "bank/db", "infra/mon"));
}
