//! Arbitrary bodies to every PUT/POST route never produce a 5xx.

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use seam_controller::{router_as, Caller, Controller, ControllerConfig};
use seam_store::AnyStore;
use serde_json::{Map, Value};
use tower::ServiceExt;

use crate::server::{node, segment};

const ROUTES: &[(&str, &str)] = &[
    ("PUT", "/v1/nodes/n1"),
    ("PUT", "/v1/nodes/n2"),
    ("PUT", "/v1/segments/s1"),
    ("PUT", "/v1/segments/s2"),
    ("PUT", "/v1/endpoints/default/p1"),
    ("PUT", "/v1/endpoints/p1"),
    ("POST", "/v1/ensure-segment"),
    ("POST", "/v1/claim-block"),
];

const FIELDS: &[&str] = &[
    "name",
    "tenant",
    "subnet",
    "gateway",
    "vni",
    "blockPrefix",
    "namespace",
    "underlayIp",
    "role",
    "kind",
    "segment",
    "node",
    "ip",
    "mac",
    "labels",
    "containerId",
    "ifname",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u32..40).prop_map(Value::from),
        (4090u32..4100).prop_map(Value::from),
        prop::sample::select(vec![
            "n1",
            "n2",
            "s1",
            "s2",
            "p1",
            "default/p1",
            "default",
            "pod",
            "vm",
            "worker",
            "10.1.0.0/16",
            "10.1.0.1",
            "10.1.0.5",
            "10.1.0.0",
            "10.240.0.0/12",
            "0a:58:0a:01:00:05",
            "01:00:5e:00:00:01",
            "198.18.0.9",
            "0.0.0.0",
            "",
            "ns-default",
            "A_B",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let object =
        prop::collection::vec((prop::sample::select(FIELDS), leaf()), 0..10).prop_map(|pairs| {
            let mut m = Map::new();
            for (k, v) in pairs {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        });
    let value = object.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            inner,
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bodies_never_cause_5xx(
        route in prop::sample::select(ROUTES),
        body in json_body(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let status = rt.block_on(async {
            let c = Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
            c.put_node(node("n1", 1)).await.unwrap();
            c.put_segment(segment("s1", "10.1.0.0/16", 4096)).await.unwrap();
            let request = Request::builder()
                .method(route.0)
                .uri(route.1)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            router_as(c, Caller::Known(seam_model::Identity::local_admin()))
                .oneshot(request)
                .await
                .unwrap()
                .status()
        });
        prop_assert!(
            !status.is_server_error(),
            "{} {} {:?} -> {}", route.0, route.1, String::from_utf8_lossy(&body), status
        );
    }
}
