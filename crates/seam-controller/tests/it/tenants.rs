//! Tenants and the tenant operations through the client: CRUD, validation, 409 on delete while a
//! namespace names the tenant, join / isolate / make-global, snapshot and watch.

use seam_model::{IsolationMode, Namespace, ObjectKind, Tenant};
use serde_json::json;

use crate::server::Server;

fn tenant(name: &str, isolation: IsolationMode) -> Tenant {
    Tenant {
        name: name.to_string(),
        isolation,
        global: false,
    }
}

fn in_tenant(name: &str, tenant: &str) -> Namespace {
    let mut ns = Namespace::named(name);
    ns.tenant = Some(tenant.to_string());
    ns
}

#[tokio::test]
async fn tenant_crud_validation_and_in_use() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let start = c.snapshot().await.unwrap().revision;
    let mut w = c.watch(start + 1).await.unwrap();

    let t1 = tenant("t1", IsolationMode::Multitenant);
    assert_eq!(c.put_tenant(&t1).await.unwrap(), t1);
    assert_eq!(c.get_tenant("t1").await.unwrap(), t1);
    c.put_tenant(&tenant("t2", IsolationMode::Flat))
        .await
        .unwrap();
    let names: Vec<String> = c
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["t1", "t2"]);
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!((ev.kind, ev.name.as_str()), (ObjectKind::Tenant, "t1"));

    // Invalid name: 400, nothing stored.
    let err = c.put_tenant(&Tenant::named("Bad_Name")).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    // Unknown fields and bad modes are rejected with the field.
    for body in [
        json!({"name": "t3", "isolation": "subnet"}),
        json!({"name": "t3", "mode": "flat"}),
    ] {
        let resp = c
            .request_raw("PUT", "/v1/tenants/t3", serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&resp.body));
    }
    // The name in the path must be the body's.
    let resp = c
        .request_raw(
            "PUT",
            "/v1/tenants/t3",
            serde_json::to_vec(&json!({"name": "t4"})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(
        c.get_tenant("t3").await.unwrap_err().status(),
        Some(404),
        "nothing stored"
    );

    // A namespace names t1: deleting t1 is refused.
    c.put_namespace(&in_tenant("blue", "t1")).await.unwrap();
    let err = c.delete_tenant("t1").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("blue"), "{err}");
    c.delete_tenant("t2").await.unwrap();
    assert_eq!(c.delete_tenant("t2").await.unwrap_err().status(), Some(404));

    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.tenants, vec![t1]);
    c.put_namespace(&Namespace::named("blue")).await.unwrap();
    c.delete_tenant("t1").await.unwrap();
    assert!(c.list_tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn join_isolate_and_make_global() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_tenant(&tenant("tb", IsolationMode::Multitenant))
        .await
        .unwrap();
    c.put_tenant(&tenant("tg", IsolationMode::Flat))
        .await
        .unwrap();
    c.put_namespace(&in_tenant("blue", "tb")).await.unwrap();
    c.put_namespace(&in_tenant("green", "tg")).await.unwrap();
    c.put_namespace(&Namespace::named("plain")).await.unwrap();

    // green joins blue's tenant; blue is unchanged; labels are kept.
    let change = c.join_tenant("green", "blue").await.unwrap();
    assert_eq!(change.namespace.tenant.as_deref(), Some("tb"));
    assert_eq!(
        change.namespace.labels["kubernetes.io/metadata.name"],
        "green"
    );
    assert_eq!(change.tenant, tenant("tb", IsolationMode::Multitenant));
    assert_eq!(
        c.get_namespace("green").await.unwrap().tenant.as_deref(),
        Some("tb")
    );
    assert_eq!(
        c.get_namespace("blue").await.unwrap().tenant.as_deref(),
        Some("tb")
    );

    // Joining a namespace of the default tenant: no tenant, the default mode.
    let change = c.join_tenant("plain", "plain").await.unwrap();
    assert_eq!(change.namespace.tenant, None);
    assert_eq!(change.tenant, Tenant::named("default"));

    // isolate: a tenant named after the namespace, with the mode of the tenant it leaves.
    let change = c.isolate_namespace("green").await.unwrap();
    assert_eq!(change.tenant, tenant("green", IsolationMode::Multitenant));
    assert_eq!(change.namespace.tenant.as_deref(), Some("green"));
    assert_eq!(
        c.get_tenant("green").await.unwrap(),
        tenant("green", IsolationMode::Multitenant)
    );
    // Isolating blue, which is alone in tb now, keeps the name free of clashes: "blue".
    let change = c.isolate_namespace("blue").await.unwrap();
    assert_eq!(change.tenant.name, "blue");

    // A tenant name another namespace uses is not taken: blue joins green, green isolates to
    // "green-2" since blue still uses "green".
    c.join_tenant("blue", "green").await.unwrap();
    let change = c.isolate_namespace("green").await.unwrap();
    assert_eq!(change.tenant.name, "green-2");
    assert_eq!(
        c.get_namespace("blue").await.unwrap().tenant.as_deref(),
        Some("green")
    );

    // make-global: a global tenant of its own, same mode.
    let change = c.make_namespace_global("blue").await.unwrap();
    assert_eq!(
        change.tenant,
        Tenant {
            name: "blue".into(),
            isolation: IsolationMode::Multitenant,
            global: true,
        }
    );
    assert!(c.get_tenant("blue").await.unwrap().global);
    // Joining a global namespace's tenant makes the joiner global too.
    let change = c.join_tenant("plain", "blue").await.unwrap();
    assert!(change.tenant.global);

    // Unknown namespaces: 404, nothing changed; bad names: 400.
    let before = c.snapshot().await.unwrap();
    assert_eq!(
        c.join_tenant("nope", "blue").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        c.join_tenant("blue", "nope").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        c.isolate_namespace("nope").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        c.make_namespace_global("Bad_NS")
            .await
            .unwrap_err()
            .status(),
        Some(400)
    );
    let resp = c
        .request_raw(
            "POST",
            "/v1/tenants/join",
            br#"{"namespace":"blue"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 400, "missing `into`");
    let after = c.snapshot().await.unwrap();
    assert_eq!(before.revision, after.revision, "nothing written");
}
