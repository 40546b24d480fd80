//! Node identities through the router, in-process: the caller each request carries is what a
//! TLS listener would attach for the certificate it verified.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use seam_model::{CallerRole, Identity};
use seam_store::AnyStore;
use tower::ServiceExt;

use super::*;
use crate::{router, ControllerConfig};

fn ca() -> seam_pki::Ca {
    seam_pki::Ca::generate("seam test CA", Duration::from_secs(3600)).unwrap()
}

fn controller(store: AnyStore, ca: &seam_pki::Ca) -> Controller {
    // Each controller gets its own copy of the CA, as each replica loads it from its files.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    ca.save(&cert, &key).unwrap();
    let copy = seam_pki::Ca::load(&cert, &key).unwrap();
    Controller::new(ControllerConfig::default(), store)
        .unwrap()
        .with_signing(crate::Signing {
            ca: std::sync::Arc::new(copy),
            node_cert_validity: Duration::from_secs(600),
        })
}

fn admin() -> Identity {
    Identity::of(CallerRole::Admin, "alice")
}

async fn call(
    c: &Controller,
    method: Method,
    path: &str,
    caller: Option<&Identity>,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    if let Some(id) = caller {
        request.extensions_mut().insert(Caller::Known(id.clone()));
    }
    let response = router(c.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn new_token(c: &Controller, node: Option<&str>) -> String {
    let body = match node {
        Some(n) => serde_json::json!({"ttlSeconds": 600, "node": n}),
        None => serde_json::json!({"ttlSeconds": 600}),
    };
    let (status, answer) = call(c, Method::POST, "/v1/join-tokens", Some(&admin()), body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

/// Joins `node` with `token`; the status, the body and the identity the certificate names.
async fn join(
    c: &Controller,
    token: &str,
    node: &str,
) -> (StatusCode, serde_json::Value, Option<Identity>) {
    let (csr, _key) = seam_pki::new_csr(&Identity::node(node, 0)).unwrap();
    let body = serde_json::json!({"token": token, "node": node, "csr": csr});
    let (status, answer) = call(c, Method::POST, "/v1/join", None, body).await;
    let identity = answer["certificate"].as_str().map(identity_in);
    (status, answer, identity)
}

fn identity_in(pem: &str) -> Identity {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    seam_pki::identity_of(der.as_ref()).unwrap()
}

async fn stored(c: &Controller, key: &str) -> Option<(Vec<u8>, u64)> {
    c.get_kv(key)
        .await
        .unwrap()
        .map(|kv| (kv.value, kv.mod_revision))
}

#[tokio::test]
async fn a_node_joins_with_a_token_once_and_gets_a_certificate_of_epoch_one() {
    let c = controller(AnyStore::memory(), &ca());
    let token = new_token(&c, None).await;
    assert_eq!(token.len(), 23);
    let (status, answer, identity) = join(&c, &token, "n1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(identity, Some(Identity::node("n1", 1)));
    assert!(answer["ca"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    // The token was spent with the join; its secret is nowhere in the store.
    let (id, secret) = token.split_once('.').unwrap();
    let (record, _) = stored(&c, &join_token_key(id)).await.unwrap();
    let record = String::from_utf8(record).unwrap();
    assert!(record.contains(r#""usedBy":"n1""#), "{record}");
    assert!(!record.contains(secret));

    let before = stored(&c, &identity_key("n1")).await;
    let (status, answer, _) = join(&c, &token, "n1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["reason"], "InvalidToken");
    assert!(answer["message"].as_str().unwrap().contains("already used"));
    assert_eq!(
        stored(&c, &identity_key("n1")).await,
        before,
        "nothing changed"
    );
    let (status, _, _) = join(&c, &token, "n2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(stored(&c, &identity_key("n2")).await.is_none());

    // Another token, bound to no node, may not take over n1's name; one made for n1 may.
    let other = new_token(&c, None).await;
    let (status, answer, _) = join(&c, &other, "n1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("seam node revoke n1"),
        "{answer}"
    );
    assert_eq!(
        stored(&c, &identity_key("n1")).await,
        before,
        "nothing changed"
    );

    // The node's certificate is accepted.
    let (status, _) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        identity.as_ref(),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A reinstalled node joins again with a token made for it: epoch 2, epoch 1 refused.
    let bound = new_token(&c, Some("n1")).await;
    let (status, answer, again) = join(&c, &bound, "n1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(again, Some(Identity::node("n1", 2)));
    let (status, _) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        identity.as_ref(),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_tokens_and_names_are_refused_and_spend_nothing() {
    let c = controller(AnyStore::memory(), &ca());
    let token = new_token(&c, Some("n1")).await;
    let (status, answer, _) = join(&c, &token, "n2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("is for node \"n1\""));
    let (status, answer, _) = join(&c, &token, "Not_A_Name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (id, _) = token.split_once('.').unwrap();
    for bad in [
        "",
        "abc",
        &format!("{id}.0000000000000000"),
        "zzzzzz.0123456789abcdef",
        &token.to_uppercase(),
    ] {
        let (status, answer, _) = join(&c, bad, "n1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {answer}");
        assert_eq!(answer["reason"], "InvalidToken");
        assert!(
            !answer["message"]
                .as_str()
                .unwrap()
                .contains(bad.split('.').nth(1).unwrap_or("-"))
                || bad.is_empty()
        );
    }
    let body = serde_json::json!({"token": token, "node": "n1", "csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"});
    let (status, _) = call(&c, Method::POST, "/v1/join", None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // None of that spent the token.
    let (status, answer, identity) = join(&c, &token, "n1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(identity, Some(Identity::node("n1", 1)));

    for ttl in [0, MAX_JOIN_TOKEN_TTL_SECS + 1] {
        let body = serde_json::json!({"ttlSeconds": ttl});
        let (status, _) = call(&c, Method::POST, "/v1/join-tokens", Some(&admin()), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let c = controller(AnyStore::memory(), &ca());
    let body = serde_json::json!({"ttlSeconds": 1});
    let (_, answer) = call(&c, Method::POST, "/v1/join-tokens", Some(&admin()), body).await;
    let token = answer["token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, answer, _) = join(&c, &token, "n1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    assert!(stored(&c, &identity_key("n1")).await.is_none());
}

#[tokio::test]
async fn without_the_ca_key_join_answers_503_and_keeps_the_token() {
    let store = AnyStore::memory();
    let plain = Controller::new(ControllerConfig::default(), store.clone()).unwrap();
    let token = new_token(&plain, None).await;
    let (status, answer, _) = join(&plain, &token, "n1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["reason"], "SigningUnavailable");
    let signing = controller(store, &ca());
    let (status, _, _) = join(&signing, &token, "n1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_node_is_refused_at_once_and_its_watch_ends_until_it_joins_again() {
    let c = controller(AnyStore::memory(), &ca());
    let token = new_token(&c, None).await;
    let (_, _, old) = join(&c, &token, "n1").await;
    let old = old.unwrap();

    let mut request = Request::get("/v1/watch").body(Body::empty()).unwrap();
    request.extensions_mut().insert(Caller::Known(old.clone()));
    let response = router(c.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = response.into_body();

    let (status, answer) = call(
        &c,
        Method::POST,
        "/v1/revocations",
        Some(&admin()),
        serde_json::json!({"node": "n1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["epoch"], 2);
    assert_eq!(answer["revoked"], true);

    // The open watch ends (no heartbeat is due for 10 s, so the end is the revocation's).
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(frame) = watch.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked node's watch stayed open");

    let (status, answer) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        Some(&old),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["reason"], "Revoked");
    let (csr, _) = seam_pki::new_csr(&old).unwrap();
    let (status, _) = call(
        &c,
        Method::POST,
        "/v1/renew",
        Some(&old),
        serde_json::json!({"csr": csr}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked node cannot renew"
    );

    // Joining again (its old certificate still configured) gives epoch 2; epoch 1 stays refused.
    let token = new_token(&c, Some("n1")).await;
    let (status, answer, new) = join(&c, &token, "n1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let new = new.unwrap();
    assert_eq!(new, Identity::node("n1", 2));
    let (status, _) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        Some(&new),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        Some(&old),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Revoking a node that never joined names it.
    let (status, _) = call(
        &c,
        Method::POST,
        "/v1/revocations",
        Some(&admin()),
        serde_json::json!({"node": "n9"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn renewal_gives_a_new_certificate_of_the_same_epoch() {
    let c = controller(AnyStore::memory(), &ca());
    let token = new_token(&c, None).await;
    let (_, first, id) = join(&c, &token, "n1").await;
    let id = id.unwrap();
    let (csr, _) = seam_pki::new_csr(&id).unwrap();
    let (status, answer) = call(
        &c,
        Method::POST,
        "/v1/renew",
        Some(&id),
        serde_json::json!({"csr": csr}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let renewed = answer["certificate"].as_str().unwrap();
    assert_ne!(renewed, first["certificate"].as_str().unwrap());
    assert_eq!(identity_in(renewed), Identity::node("n1", 1));

    // Only nodes renew.
    let (status, _) = call(
        &c,
        Method::POST,
        "/v1/renew",
        Some(&admin()),
        serde_json::json!({"csr": csr}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_certificate_for_a_node_that_never_joined_is_refused_other_roles_pass() {
    let c = controller(AnyStore::memory(), &ca());
    let ghost = Identity::node("ghost", 1);
    let (status, answer) = call(
        &c,
        Method::GET,
        "/v1/nodes",
        Some(&ghost),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("has not joined"));
    for id in [
        admin(),
        Identity::of(CallerRole::Reader, "bob"),
        Identity::of(CallerRole::Adapter, "seam-k8s"),
    ] {
        assert!(c.check_identity(&id).await.is_ok());
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_refused_by_another_at_once() {
    let store = AnyStore::memory();
    let authority = ca();
    let a = controller(store.clone(), &authority);
    let b = controller(store, &authority);
    let token = new_token(&a, None).await;
    let (_, _, id) = join(&a, &token, "n1").await;
    let id = id.unwrap();
    // b learns the join from the store.
    let mut passed = false;
    for _ in 0..100 {
        if b.check_identity(&id).await.is_ok() {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(passed, "replica b never saw the join");
    let (status, _) = call(
        &a,
        Method::POST,
        "/v1/revocations",
        Some(&admin()),
        serde_json::json!({"node": "n1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut refused = false;
    for _ in 0..100 {
        if b.check_identity(&id).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "replica b still accepts the revoked node");
}

#[test]
fn tokens_have_kubeadms_shape_and_are_checked_in_order() {
    let rng = ring::rand::SystemRandom::new();
    let id = random_word(&rng, TOKEN_ID_LEN).unwrap();
    let secret = random_word(&rng, TOKEN_SECRET_LEN).unwrap();
    let token = format!("{id}.{secret}");
    assert_eq!(parse_token(&token), Some((id.as_str(), secret.as_str())));
    assert_eq!(parse_token("abcdef.0123456789abcdeF"), None);
    assert_eq!(parse_token("abcdef0123456789abcdef"), None);
    assert_eq!(parse_token("abcde.0123456789abcdefg"), None);

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let record = TokenRecord {
        secret_sha256: secret_hash(&secret),
        expires_at: rfc3339(now + Duration::from_secs(60)).unwrap(),
        node: Some("n1".to_string()),
        used_by: None,
    };
    assert!(check_token(&id, &secret, &record, "n1", now).is_ok());
    let problem = |r: Result<(), IdentityError>| match r {
        Err(IdentityError::InvalidToken(p)) => Some(p),
        _ => None,
    };
    assert!(matches!(
        problem(check_token(&id, "x", &record, "n1", now)),
        Some(TokenProblem::Unknown { .. })
    ));
    assert!(matches!(
        problem(check_token(
            &id,
            &secret,
            &record,
            "n1",
            now + Duration::from_secs(60)
        )),
        Some(TokenProblem::Expired { .. })
    ));
    assert!(matches!(
        check_token(&id, &secret, &record, "n2", now),
        Err(IdentityError::TokenForOtherNode { .. })
    ));
    let used = TokenRecord {
        used_by: Some("n1".to_string()),
        ..record.clone()
    };
    assert!(matches!(
        problem(check_token(&id, &secret, &used, "n1", now)),
        Some(TokenProblem::Used { .. })
    ));
    let garbled = TokenRecord {
        expires_at: "soon".to_string(),
        ..record
    };
    assert!(matches!(
        problem(check_token(&id, &secret, &garbled, "n1", now)),
        Some(TokenProblem::Expired { .. })
    ));
    assert_eq!(parse_rfc3339(&rfc3339(now).unwrap()), Some(now));
}

#[test]
fn verdicts_follow_the_record() {
    let record = |epoch, revoked| IdentityRecord {
        epoch,
        revoked,
        joined_at: String::new(),
    };
    let id = Identity::node("n1", 2);
    assert!(verdict(&id, Some(&record(2, false))).is_ok());
    assert!(matches!(
        verdict(&id, Some(&record(3, false))),
        Err(IdentityError::StaleEpoch { .. })
    ));
    assert!(matches!(
        verdict(&id, Some(&record(1, false))),
        Err(IdentityError::StaleEpoch { .. })
    ));
    assert!(matches!(
        verdict(&id, Some(&record(2, true))),
        Err(IdentityError::Revoked { .. })
    ));
    assert!(matches!(
        verdict(&id, None),
        Err(IdentityError::UnknownNode { .. })
    ));
    assert!(verdict(&admin(), None).is_ok());
}

#[tokio::test]
async fn tokens_expired_long_ago_are_forgotten_when_a_new_one_is_made() {
    let c = controller(AnyStore::memory(), &ca());
    let now = SystemTime::now();
    for (id, age) in [("oldold", 7200), ("recent", 60)] {
        let record = TokenRecord {
            secret_sha256: secret_hash("0123456789abcdef"),
            expires_at: rfc3339(now - Duration::from_secs(age)).unwrap(),
            node: None,
            used_by: Some("n1".to_string()),
        };
        let key = join_token_key(id);
        let txn = Txn::new().put(&key, serde_json::to_vec(&record).unwrap());
        assert!(c.commit(txn, &key).await.unwrap());
    }
    new_token(&c, None).await;
    assert!(stored(&c, &join_token_key("oldold")).await.is_none());
    assert!(stored(&c, &join_token_key("recent")).await.is_some());
    // A reuse of the recently expired one still says why.
    let (_, answer, _) = join(&c, "recent.0123456789abcdef", "n1").await;
    assert!(
        answer["message"].as_str().unwrap().contains("already used"),
        "{answer}"
    );
}
