//! Policy realization: nodes report what they enforce, the controller counts per object.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use seam_controller::{Caller, Controller, ControllerConfig};
use seam_model::{
    ApplyObject, CallerRole, Identity, NodeRealization, ObjectRealization, RealizationStatus,
};
use serde_json::{json, Value};

use crate::authz::{assert_forbidden, joined_store, json, node_caller, send};
use crate::server::node;

const WEB: &str = "Contract/_/web";
const T1: &str = "Tenant/_/t1";

fn contract(port: u16) -> Value {
    json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "Contract",
        "metadata": {"name": "web"},
        "spec": {
            "consumers": ["cluster"],
            "providers": ["cluster"],
            "subjects": [{"filters": [{"protocol": "TCP", "ports": [port]}]}],
            "action": "allow"
        }
    })
}

fn report(node: &str, objects: &[(&str, u64, Option<&str>)]) -> NodeRealization {
    NodeRealization {
        node: node.to_string(),
        objects: objects
            .iter()
            .map(|(name, generation, error)| {
                (
                    name.to_string(),
                    ObjectRealization {
                        generation: *generation,
                        error: error.map(str::to_string),
                    },
                )
            })
            .collect(),
        error: None,
    }
}

/// Two nodes, a contract and a tenant written by one apply; the apply's revision.
async fn cluster() -> (Controller, u64) {
    let store = joined_store(&["n1", "n2"]).await;
    let c = Controller::new(ControllerConfig::default(), store).unwrap();
    c.put_node(node("n1", 1)).await.unwrap();
    c.put_node(node("n2", 2)).await.unwrap();
    let applied = c
        .apply(vec![
            ApplyObject::Policy(contract(80)),
            ApplyObject::Tenant(seam_model::Tenant::named("t1")),
        ])
        .await
        .unwrap();
    let revision = applied.revision.expect("the apply's revision");
    (c, revision)
}

async fn status(c: &Controller) -> RealizationStatus {
    let reader = Caller::Known(Identity::of(CallerRole::Reader, "alice"));
    let answer = send(c, reader, "GET", "/v1/realization", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_value(answer.body).unwrap()
}

fn fractions(status: &RealizationStatus) -> BTreeMap<String, String> {
    status
        .objects
        .iter()
        .map(|o| (o.name.clone(), o.fraction()))
        .collect()
}

#[tokio::test]
async fn nodes_report_what_they_enforce_and_the_controller_counts_per_object() {
    let (c, revision) = cluster().await;
    // The apply's revision is the generation of what it wrote, as the snapshot tells agents.
    let snapshot = c.snapshot().await.unwrap();
    assert_eq!(snapshot.generations.get(WEB), Some(&revision));
    assert_eq!(snapshot.generations.get(T1), Some(&revision));

    // Nobody has reported: nothing is realized, and both nodes are named.
    let before = status(&c).await;
    assert_eq!(before.nodes, ["n1", "n2"]);
    let web = before.object(WEB).unwrap();
    assert_eq!(
        (web.generation, web.fraction()),
        (revision, "0/2".to_string())
    );
    assert_eq!(web.laggards[1].describe(), "has not reported");

    // n1 enforces both.
    let mine = report("n1", &[(WEB, revision, None), (T1, revision, None)]);
    let answer = send(
        &c,
        node_caller("n1"),
        "PUT",
        "/v1/realization/n1",
        json(&mine),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    // n2 cannot compile the contract.
    let broken = report(
        "n2",
        &[
            (WEB, revision, Some("stored policy object ignored: x")),
            (T1, revision, None),
        ],
    );
    let answer = send(
        &c,
        node_caller("n2"),
        "PUT",
        "/v1/realization/n2",
        json(&broken),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let now = status(&c).await;
    assert_eq!(
        fractions(&now),
        BTreeMap::from([
            (WEB.to_string(), "1/2".to_string()),
            (T1.to_string(), "2/2".to_string())
        ])
    );
    let web = now.object(WEB).unwrap();
    assert_eq!(web.laggards.len(), 1);
    assert_eq!(
        web.laggards[0].describe(),
        format!("at generation {revision}: stored policy object ignored: x")
    );

    // A new generation of the contract: nobody enforces it yet.
    c.put_policy("contracts", "web", contract(443))
        .await
        .unwrap();
    let changed = status(&c).await;
    let web = changed.object(WEB).unwrap();
    assert!(web.generation > revision);
    assert_eq!(web.fraction(), "0/2");
    assert!(!web.is_realized_at(revision), "n2 has an error");
    assert_eq!(changed.object(T1).unwrap().fraction(), "2/2");
}

#[tokio::test]
async fn a_node_reports_only_for_itself_and_only_changes_are_written() {
    let (c, revision) = cluster().await;
    let theirs = report("n1", &[(WEB, revision, None)]);
    // Another node's report, at its path or at one's own: refused, nothing stored.
    let answer = send(
        &c,
        node_caller("n2"),
        "PUT",
        "/v1/realization/n1",
        json(&theirs),
    )
    .await;
    assert_forbidden(&answer, "node n2 may not report the realization of node n1");
    let answer = send(
        &c,
        node_caller("n2"),
        "PUT",
        "/v1/realization/n2",
        json(&theirs),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(status(&c).await.object(WEB).unwrap().fraction(), "0/2");
    // Unknown fields are refused at the door.
    let mut odd = serde_json::to_value(&theirs).unwrap();
    odd["extra"] = json!(1);
    let answer = send(
        &c,
        node_caller("n1"),
        "PUT",
        "/v1/realization/n1",
        Some(odd),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);

    // The same report twice is written once.
    let answer = send(
        &c,
        node_caller("n1"),
        "PUT",
        "/v1/realization/n1",
        json(&theirs),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let written = c.snapshot().await.unwrap().revision;
    let answer = send(
        &c,
        node_caller("n1"),
        "PUT",
        "/v1/realization/n1",
        json(&theirs),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(c.snapshot().await.unwrap().revision, written);
    assert_eq!(status(&c).await.object(WEB).unwrap().fraction(), "1/2");
}

#[tokio::test]
async fn a_deleted_node_no_longer_counts_and_its_report_goes_with_it() {
    let (c, revision) = cluster().await;
    for n in ["n1", "n2"] {
        c.put_realization(n, report(n, &[(WEB, revision, None)]))
            .await
            .unwrap();
    }
    let both = status(&c).await;
    assert_eq!(both.object(WEB).unwrap().fraction(), "2/2");
    c.delete_node("n2").await.unwrap();
    let one = status(&c).await;
    assert_eq!(one.nodes, ["n1"]);
    assert_eq!(one.object(WEB).unwrap().fraction(), "1/1");
    // A node of the same name starts with no report; a report without a node record is refused.
    let err = c
        .put_realization("n2", report("n2", &[(WEB, revision, None)]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 404, "{err}");
    c.put_node(node("n2", 2)).await.unwrap();
    let again = status(&c).await;
    let web = again.object(WEB).unwrap();
    assert_eq!(web.fraction(), "1/2");
    assert_eq!(web.laggards[0].describe(), "has not reported");
}
