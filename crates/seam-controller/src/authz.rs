//! Authorization: what each caller may ask, decided from who asks, the method and the route
//! ([`authorize`], pure), and, for a node, from the object it writes ([`check_own`], called
//! where the object is known: the handlers and the controller's write operations).
//!
//! The rules, least privilege in the spirit of Kubernetes' NodeRestriction:
//! - anonymous: `GET /healthz`, `GET /readyz` and `POST /v1/join` only (everything else: 401);
//! - reader: every GET (snapshot, watch, the audit log, the metrics, flow records,
//!   `/v1/explain` and the page `/ui/` included);
//! - node: the GETs an agent needs (snapshot, watch, leader, nodes, segments, blocks, endpoints,
//!   namespaces, policies, tenants, services, endpoint slices, address pools, node leases);
//!   writes its own Node, endpoints on itself, block claims for itself, releases of blocks it
//!   holds, its own node lease, its own realization report, `ensure-segment` and `renew`, and
//!   its own flow records (`POST /v1/flows`, each record checked by the handler: [`check_own`]);
//! - adapter (seam-k8s): every GET but the audit log, the metrics and flow records; writes
//!   namespaces, tenants (and their
//!   operations), policies, Services, EndpointSlices and `ensure-segment`: what it translates
//!   from Kubernetes; and the labels, named ports and conditions (readiness) of existing
//!   endpoints (a pod's, which its agent published: [`check_relabel`]), never anything else of
//!   an endpoint;
//! - admin: everything.
//!
//! [`enforce`] is the router's outermost middleware: it applies the rate limit, checks a node's
//! identity against the registry ([`Controller::check_identity`]), refuses what [`authorize`]
//! refuses (logged with caller, method, path and rule) and serves the rest with the caller as
//! the current request ([`crate::caller::scope`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use seam_model::{CallerRole, Identity};

use crate::caller::{Caller, Serving};
use crate::controller::Controller;
use crate::error::{Error, Result};

/// What [`authorize`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go ahead (object-level checks may still refuse a node's write).
    Allow,
    /// An anonymous caller asked for more than joining or health: 401.
    Unauthenticated,
    /// The caller's role does not allow it: 403, with the rule in words.
    Forbidden(String),
}

/// What a request path names, as far as authorization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    /// `GET /metrics`: readers and admins (Prometheus' certificate is a reader's).
    Metrics,
    Join,
    Renew,
    JoinTokens,
    Revocations,
    Audit,
    Leader,
    Snapshot,
    Watch,
    EnsureSegment,
    ClaimBlock,
    Apply,
    /// `/v1/nodes` (`None`) or `/v1/nodes/<name>`.
    Nodes(Option<&'a str>),
    Segments,
    Blocks,
    Endpoints,
    Namespaces,
    /// `/v1/tenants[/<name>]` and the tenant operations (join, isolate, make-global).
    Tenants,
    Policies,
    Externals,
    Vms,
    Services,
    EndpointSlices,
    AddressPools,
    /// `/v1/nodeleases` (`None`) or `/v1/nodeleases/<node>`.
    NodeLeases(Option<&'a str>),
    /// `/v1/explain`: the engine's verdict for a flow.
    Explain,
    /// `/ui` and `/ui/…`: the topology and flows page.
    Ui,
    /// `/v1/flows`: agents post, readers read.
    Flows,
    /// `/v1/realization` (`None`) or `/v1/realization/<node>`.
    Realization(Option<&'a str>),
    /// No route of the API (answered 404 to whoever may reach it).
    Unknown,
}

impl Route<'_> {
    fn of(path: &str) -> Route<'_> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return match path {
                "/healthz" => Route::Healthz,
                "/readyz" => Route::Readyz,
                "/metrics" => Route::Metrics,
                "/ui" => Route::Ui,
                _ if path.starts_with("/ui/") => Route::Ui,
                _ => Route::Unknown,
            };
        };
        let (first, tail) = match rest.split_once('/') {
            Some((first, tail)) => (first, Some(tail)),
            None => (rest, None),
        };
        match (first, tail) {
            ("join", None) => Route::Join,
            ("renew", None) => Route::Renew,
            ("join-tokens", _) => Route::JoinTokens,
            ("revocations", _) => Route::Revocations,
            ("audit", None) => Route::Audit,
            ("leader", None) => Route::Leader,
            ("snapshot", None) => Route::Snapshot,
            ("watch", None) => Route::Watch,
            ("ensure-segment", None) => Route::EnsureSegment,
            ("claim-block", None) => Route::ClaimBlock,
            ("apply", None) => Route::Apply,
            ("nodes", tail) => Route::Nodes(tail),
            ("segments", _) => Route::Segments,
            ("blocks", _) => Route::Blocks,
            ("endpoints", _) => Route::Endpoints,
            ("namespaces", _) => Route::Namespaces,
            ("tenants", _) => Route::Tenants,
            ("policies", _) => Route::Policies,
            ("externals", _) => Route::Externals,
            ("vms", _) => Route::Vms,
            ("services", _) => Route::Services,
            ("endpointslices", _) => Route::EndpointSlices,
            ("addresspools", _) => Route::AddressPools,
            ("nodeleases", tail) => Route::NodeLeases(tail),
            ("explain", None) => Route::Explain,
            ("flows", None) => Route::Flows,
            ("realization", tail) => Route::Realization(tail),
            _ => Route::Unknown,
        }
    }

    /// What the route is about, in a refusal's words.
    fn what(self) -> &'static str {
        match self {
            Route::Healthz => "health",
            Route::Readyz => "readiness",
            Route::Metrics => "metrics",
            Route::Join => "join",
            Route::Renew => "renew certificates",
            Route::JoinTokens => "join tokens",
            Route::Revocations => "revocations",
            Route::Audit => "the audit log",
            Route::Leader => "the leader",
            Route::Snapshot => "snapshots",
            Route::Watch => "watches",
            Route::EnsureSegment => "ensure-segment",
            Route::ClaimBlock => "block claims",
            Route::Apply => "apply",
            Route::Nodes(_) => "nodes",
            Route::Segments => "segments",
            Route::Blocks => "blocks",
            Route::Endpoints => "endpoints",
            Route::Namespaces => "namespaces",
            Route::Tenants => "tenants",
            Route::Policies => "policies",
            Route::Externals => "external endpoints",
            Route::Vms => "VMs",
            Route::Services => "services",
            Route::EndpointSlices => "endpoint slices",
            Route::AddressPools => "address pools",
            Route::NodeLeases(_) => "node leases",
            Route::Explain => "explanations",
            Route::Ui => "the page",
            Route::Flows => "flow records",
            Route::Realization(_) => "realization reports",
            Route::Unknown => "this route",
        }
    }
}

/// Whether `caller` may send `method` to `path`. Pure: the rules of the module documentation.
/// A node's writes of endpoints and blocks are allowed here and checked against the object by
/// [`check_own`]; its writes of Node objects are decided here, from the name in the path (the
/// handler refuses a body whose name differs from the path's).
pub(crate) fn authorize(caller: &Caller, method: &Method, path: &str) -> Decision {
    let route = Route::of(path);
    let read = matches!(*method, Method::GET | Method::HEAD);
    let Caller::Known(identity) = caller else {
        return match (read, route) {
            (true, Route::Healthz | Route::Readyz) | (false, Route::Join) => Decision::Allow,
            _ => Decision::Unauthenticated,
        };
    };
    // Joining needs no identity, so one that has one may join too (a node re-joining).
    if !read && route == Route::Join {
        return Decision::Allow;
    }
    let allowed = match identity.role {
        CallerRole::Admin => true,
        CallerRole::Reader => read,
        CallerRole::Adapter if read => {
            !matches!(route, Route::Audit | Route::Flows | Route::Metrics)
        }
        CallerRole::Adapter => matches!(
            (method, route),
            (
                &Method::PUT | &Method::DELETE,
                Route::Namespaces | Route::Policies | Route::Services | Route::EndpointSlices
            ) | (
                &Method::PUT | &Method::DELETE | &Method::POST,
                Route::Tenants
            ) | (&Method::POST, Route::EnsureSegment)
                // Relabelling pods' endpoints; the object is checked by check_relabel.
                | (&Method::PUT, Route::Endpoints)
        ),
        CallerRole::Node if read => matches!(
            route,
            Route::Healthz
                | Route::Readyz
                | Route::Leader
                | Route::Snapshot
                | Route::Watch
                | Route::Nodes(_)
                | Route::Segments
                | Route::Blocks
                | Route::Endpoints
                | Route::Namespaces
                | Route::Policies
                | Route::Tenants
                | Route::Services
                | Route::EndpointSlices
                | Route::AddressPools
                | Route::NodeLeases(_)
        ),
        CallerRole::Node => match (method, route) {
            (&Method::PUT | &Method::DELETE, Route::Nodes(Some(name))) => {
                if name != identity.name {
                    return Decision::Forbidden(format!(
                        "node {} may not write node {name}",
                        identity.name
                    ));
                }
                true
            }
            (&Method::PUT, Route::NodeLeases(Some(name))) => {
                if name != identity.name {
                    return Decision::Forbidden(format!(
                        "node {} may not renew the lease of node {name}",
                        identity.name
                    ));
                }
                true
            }
            (&Method::PUT, Route::Realization(Some(name))) => {
                if name != identity.name {
                    return Decision::Forbidden(format!(
                        "node {} may not report the realization of node {name}",
                        identity.name
                    ));
                }
                true
            }
            (&Method::PUT | &Method::DELETE, Route::Endpoints)
            | (&Method::DELETE, Route::Blocks)
            | (
                &Method::POST,
                Route::ClaimBlock | Route::EnsureSegment | Route::Renew | Route::Flows,
            ) => true,
            _ => false,
        },
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbidden(refusal(identity, read, method, route))
    }
}

/// The rule a role-level refusal names.
fn refusal(identity: &Identity, read: bool, method: &Method, route: Route<'_>) -> String {
    let who = format!("{} {}", identity.role, identity.name);
    match (identity.role, read) {
        (CallerRole::Reader, false) => {
            format!("{who} may only read ({method} {} refused)", route.what())
        }
        (_, true) => format!("{who} may not read {}", route.what()),
        (_, false) => format!("{who} may not {method} {}", route.what()),
    }
}

/// For a node, refuses an object that is not its own: `owner` is the node the object belongs
/// to (an endpoint's `node`, a block's holder, the node a claim is for), `what` says what the
/// node tried (`write endpoint "web/a" of node n1`). Other roles were decided by [`authorize`];
/// outside a request (the controller's own writes, direct library calls) nothing is refused.
pub(crate) fn check_own(owner: &str, what: impl FnOnce() -> String) -> Result<()> {
    let Some(serving) = crate::caller::serving() else {
        return Ok(());
    };
    match serving.caller.identity() {
        Some(identity) if identity.role == CallerRole::Node && identity.name != owner => {
            Err(forbidden(
                &serving,
                format!("node {} may not {}", identity.name, what()),
            ))
        }
        _ => Ok(()),
    }
}

/// For the adapter, refuses an endpoint write that does more than change the labels, named
/// ports and conditions of an existing endpoint (what it maps from the pod: its labels, its
/// containers' ports, its readiness and deletion): the agent creates endpoints and owns
/// everything else of them (above all the address, which the adapter never moves). `current` is the stored endpoint, if any. Other roles were
/// decided by [`authorize`] and [`check_own`].
pub(crate) fn check_relabel(
    current: Option<&seam_model::Endpoint>,
    new: &seam_model::Endpoint,
) -> Result<()> {
    let Some(serving) = crate::caller::serving() else {
        return Ok(());
    };
    match serving.caller.identity() {
        Some(identity) if identity.role == CallerRole::Adapter => {
            let only_labels = current.is_some_and(|c| {
                let mut relabelled = c.clone();
                relabelled.labels = new.labels.clone();
                relabelled.ports = new.ports.clone();
                relabelled.conditions = new.conditions;
                relabelled == *new
            });
            if only_labels {
                Ok(())
            } else {
                Err(forbidden(
                    &serving,
                    format!(
                        "adapter {} may only change the labels, ports and conditions of an existing endpoint ({:?})",
                        identity.name, new.name
                    ),
                ))
            }
        }
        _ => Ok(()),
    }
}

/// The node a node caller of the current request is, if it is one.
pub(crate) fn calling_node() -> Option<String> {
    crate::caller::serving()
        .and_then(|s| s.caller.identity().cloned())
        .filter(|id| id.role == CallerRole::Node)
        .map(|id| id.name)
}

/// A 403 for `rule`, logged with who asked for what.
pub(crate) fn forbidden(serving: &Serving, rule: String) -> Error {
    tracing::warn!(caller = %serving.caller, method = %serving.method, path = %serving.path, %rule, "request forbidden");
    Error::Forbidden { rule }
}

/// The router's outermost middleware: rate limit, identity check, [`authorize`]; then the
/// request runs as the current one ([`crate::caller::serving`]).
pub(crate) async fn enforce(
    State(controller): State<Controller>,
    request: Request,
    next: Next,
) -> Response {
    let serving = Serving {
        caller: Caller::of(&request),
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
    };
    if let Err(e) = controller
        .limits()
        .admit(&serving.caller, peer_ip(&request))
    {
        tracing::warn!(caller = %serving.caller, method = %serving.method, path = %serving.path, error = %e, "request refused by the rate limit");
        return e.into_response();
    }
    // A join is authenticated by its token, not by whatever certificate the node still holds
    // (a revoked node joins again with its old certificate still configured).
    let joining = request.method() == Method::POST && serving.path == "/v1/join";
    if let Some(identity) = serving
        .caller
        .identity()
        .filter(|id| id.role == CallerRole::Node && !joining)
    {
        if let Err(e) = controller.check_identity(identity).await {
            tracing::warn!(caller = %serving.caller, method = %serving.method, path = %serving.path, error = %e, "identity refused");
            return e.into_response();
        }
    }
    match authorize(&serving.caller, request.method(), &serving.path) {
        Decision::Allow => {}
        Decision::Unauthenticated => {
            tracing::warn!(caller = %serving.caller, method = %serving.method, path = %serving.path, rule = "anonymous callers may only join", "request unauthenticated");
            return Error::Unauthenticated {
                method: serving.method,
                path: serving.path,
            }
            .into_response();
        }
        Decision::Forbidden(rule) => return forbidden(&serving, rule).into_response(),
    }
    crate::caller::scope(serving, next.run(request)).await
}

/// The peer address the listener attached (`ConnectInfo`), for limiting anonymous callers.
fn peer_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::CallerRole as R;

    fn known(role: R, name: &str) -> Caller {
        Caller::Known(Identity::of(role, name))
    }

    const GET: Method = Method::GET;
    const PUT: Method = Method::PUT;
    const POST: Method = Method::POST;
    const DELETE: Method = Method::DELETE;

    /// Every route of the API (and the ones the join helper adds), with what each role may do:
    /// (method, path, anonymous, reader, node n1, adapter). Admin may do everything.
    #[rustfmt::skip]
    const TABLE: &[(Method, &str, bool, bool, bool, bool)] = &[
        // method   path                                   anon   reader node   adapter
        (GET,    "/healthz",                               true,  true,  true,  true),
        (GET,    "/readyz",                                true,  true,  true,  true),
        (POST,   "/v1/join",                               true,  true,  true,  true),
        (POST,   "/v1/renew",                              false, false, true,  false),
        (POST,   "/v1/join-tokens",                        false, false, false, false),
        (POST,   "/v1/revocations",                        false, false, false, false),
        (GET,    "/v1/audit",                              false, true,  false, false),
        (GET,    "/v1/leader",                             false, true,  true,  true),
        (GET,    "/v1/snapshot",                           false, true,  true,  true),
        (GET,    "/v1/explain",                            false, true,  false, true),
        (GET,    "/ui/",                                   false, true,  false, true),
        (GET,    "/ui/app.js",                             false, true,  false, true),
        (GET,    "/v1/watch",                              false, true,  true,  true),
        (POST,   "/v1/ensure-segment",                     false, false, true,  true),
        (POST,   "/v1/claim-block",                        false, false, true,  false),
        (POST,   "/v1/apply",                              false, false, false, false),
        (GET,    "/v1/nodes",                              false, true,  true,  true),
        (GET,    "/v1/nodes/n2",                           false, true,  true,  true),
        (PUT,    "/v1/nodes/n1",                           false, false, true,  false),
        (DELETE, "/v1/nodes/n1",                           false, false, true,  false),
        (PUT,    "/v1/nodes/n2",                           false, false, false, false),
        (DELETE, "/v1/nodes/n2",                           false, false, false, false),
        (GET,    "/v1/segments",                           false, true,  true,  true),
        (GET,    "/v1/segments/s1",                        false, true,  true,  true),
        (PUT,    "/v1/segments/s1",                        false, false, false, false),
        (DELETE, "/v1/segments/s1",                        false, false, false, false),
        (GET,    "/v1/blocks",                             false, true,  true,  true),
        (GET,    "/v1/blocks/s1/10.0.0.0-26",              false, true,  true,  true),
        (DELETE, "/v1/blocks/s1/10.0.0.0-26",              false, false, true,  false),
        (GET,    "/v1/endpoints",                          false, true,  true,  true),
        (GET,    "/v1/endpoints/web/a",                    false, true,  true,  true),
        (PUT,    "/v1/endpoints/web/a",                    false, false, true,  true),
        (DELETE, "/v1/endpoints/web/a",                    false, false, true,  false),
        (GET,    "/v1/namespaces",                         false, true,  true,  true),
        (GET,    "/v1/namespaces/web",                     false, true,  true,  true),
        (PUT,    "/v1/namespaces/web",                     false, false, false, true),
        (DELETE, "/v1/namespaces/web",                     false, false, false, true),
        (GET,    "/v1/tenants",                            false, true,  true,  true),
        (GET,    "/v1/tenants/t1",                         false, true,  true,  true),
        (PUT,    "/v1/tenants/t1",                         false, false, false, true),
        (DELETE, "/v1/tenants/t1",                         false, false, false, true),
        (POST,   "/v1/tenants/join",                       false, false, false, true),
        (POST,   "/v1/tenants/isolate",                    false, false, false, true),
        (POST,   "/v1/tenants/make-global",                false, false, false, true),
        (GET,    "/v1/policies",                           false, true,  true,  true),
        (GET,    "/v1/policies/networkpolicies/web/deny",  false, true,  true,  true),
        (PUT,    "/v1/policies/networkpolicies/web/deny",  false, false, false, true),
        (DELETE, "/v1/policies/networkpolicies/web/deny",  false, false, false, true),
        (PUT,    "/v1/policies/adminnetworkpolicies/all",  false, false, false, true),
        (POST,   "/v1/externals",                          false, false, false, false),
        (DELETE, "/v1/externals/web/bm1",                  false, false, false, false),
        (GET,    "/v1/vms",                                false, true,  false, true),
        (GET,    "/v1/vms/vm1",                            false, true,  false, true),
        (DELETE, "/v1/vms/vm1",                            false, false, false, false),
        (POST,   "/v1/vms/vm1/attach",                     false, false, false, false),
        (POST,   "/v1/vms/vm1/detach",                     false, false, false, false),
        (POST,   "/v1/vms/vm1/move",                       false, false, false, false),
        (GET,    "/v1/services",                           false, true,  true,  true),
        (GET,    "/v1/services/web/front",                 false, true,  true,  true),
        (PUT,    "/v1/services/web/front",                 false, false, false, true),
        (DELETE, "/v1/services/web/front",                 false, false, false, true),
        (GET,    "/v1/endpointslices",                     false, true,  true,  true),
        (GET,    "/v1/endpointslices/web/front-1",         false, true,  true,  true),
        (PUT,    "/v1/endpointslices/web/front-1",         false, false, false, true),
        (DELETE, "/v1/endpointslices/web/front-1",         false, false, false, true),
        (GET,    "/v1/addresspools",                       false, true,  true,  true),
        (GET,    "/v1/addresspools/public",                false, true,  true,  true),
        (PUT,    "/v1/addresspools/public",                false, false, false, false),
        (DELETE, "/v1/addresspools/public",                false, false, false, false),
        (GET,    "/v1/nodeleases",                         false, true,  true,  true),
        (PUT,    "/v1/nodeleases/n1",                      false, false, true,  false),
        (PUT,    "/v1/nodeleases/n2",                      false, false, false, false),
        (PUT,    "/v1/nodeleases",                         false, false, false, false),
        (DELETE, "/v1/nodeleases/n1",                      false, false, false, false),
        (POST,   "/v1/flows",                              false, false, true,  false),
        (GET,    "/v1/flows",                              false, true,  false, false),
        (DELETE, "/v1/flows",                              false, false, false, false),
        (POST,   "/v1/flows/n1",                           false, false, false, false),
        (GET,    "/v1/realization",                        false, true,  false, true),
        (PUT,    "/v1/realization/n1",                     false, false, true,  false),
        (PUT,    "/v1/realization/n2",                     false, false, false, false),
        (PUT,    "/v1/realization",                        false, false, false, false),
        (DELETE, "/v1/realization/n1",                     false, false, false, false),
        (GET,    "/v1/nope",                               false, true,  false, true),
        (POST,   "/v1/nope",                               false, false, false, false),
        (GET,    "/metrics",                               false, true,  false, false),
        (GET,    "/metricsz",                              false, true,  false, true),
    ];

    #[test]
    fn every_role_on_every_route() {
        for (method, path, anonymous, reader, node, adapter) in TABLE {
            let cases = [
                (Caller::Anonymous, *anonymous),
                (known(R::Reader, "alice"), *reader),
                (Caller::Known(Identity::node("n1", 1)), *node),
                (known(R::Adapter, "seam-k8s"), *adapter),
                (known(R::Admin, "root"), true),
                (Caller::Known(Identity::local_admin()), true),
            ];
            for (caller, allowed) in cases {
                let decision = authorize(&caller, method, path);
                assert_eq!(
                    decision == Decision::Allow,
                    allowed,
                    "{caller} {method} {path}: {decision:?}"
                );
                // Anonymous callers are told to authenticate, the others what is forbidden.
                if !allowed {
                    match caller {
                        Caller::Anonymous => assert_eq!(decision, Decision::Unauthenticated),
                        Caller::Known(_) => {
                            assert!(matches!(decision, Decision::Forbidden(_)), "{decision:?}")
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_refusal_names_the_rule() {
        let n2 = Caller::Known(Identity::node("n2", 1));
        assert_eq!(
            authorize(&n2, &PUT, "/v1/nodes/n1"),
            Decision::Forbidden("node n2 may not write node n1".to_string())
        );
        assert_eq!(
            authorize(&n2, &PUT, "/v1/segments/s1"),
            Decision::Forbidden("node n2 may not PUT segments".to_string())
        );
        assert_eq!(
            authorize(&known(R::Reader, "alice"), &PUT, "/v1/nodes/n1"),
            Decision::Forbidden("reader alice may only read (PUT nodes refused)".to_string())
        );
        assert_eq!(
            authorize(&n2, &PUT, "/v1/nodeleases/n1"),
            Decision::Forbidden("node n2 may not renew the lease of node n1".to_string())
        );
        assert_eq!(
            authorize(&n2, &PUT, "/v1/realization/n1"),
            Decision::Forbidden("node n2 may not report the realization of node n1".to_string())
        );
        assert_eq!(
            authorize(&known(R::Adapter, "k8s"), &PUT, "/v1/addresspools/public"),
            Decision::Forbidden("adapter k8s may not PUT address pools".to_string())
        );
        assert_eq!(
            authorize(&known(R::Adapter, "k8s"), &GET, "/v1/audit"),
            Decision::Forbidden("adapter k8s may not read the audit log".to_string())
        );
    }

    #[test]
    fn a_node_named_like_a_path_prefix_is_not_another_node() {
        let n1 = Caller::Known(Identity::node("n1", 1));
        for path in [
            "/v1/nodes/n10",
            "/v1/nodes/n",
            "/v1/nodes/n1/x",
            "/v1/nodes",
        ] {
            assert_ne!(authorize(&n1, &PUT, path), Decision::Allow, "{path}");
        }
        assert_eq!(authorize(&n1, &PUT, "/v1/nodes/n1"), Decision::Allow);
    }

    #[tokio::test]
    async fn the_adapter_only_relabels_and_sets_conditions_of_existing_endpoints() {
        let ip = std::net::Ipv4Addr::new(10, 240, 0, 5);
        let stored = seam_model::Endpoint {
            name: "web/a".into(),
            kind: seam_model::EndpointKind::Pod,
            namespace: "web".into(),
            segment: "web".into(),
            node: "n1".into(),
            ip,
            mac: seam_model::endpoint_mac(ip),
            labels: Default::default(),
            container_id: Some("c1".into()),
            ifname: Some("eth0".into()),
            ports: Vec::new(),
            conditions: None,
        };
        let mut relabelled = stored.clone();
        relabelled.labels.insert("app".into(), "web".into());
        relabelled.ports.push(seam_model::ContainerPort {
            name: "http".into(),
            port: 8080,
            protocol: seam_model::PortProtocol::Tcp,
        });
        // A pod failing its readiness probe, then in its grace period.
        let mut not_ready = relabelled.clone();
        not_ready.conditions = Some(seam_model::EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
        });
        let mut terminating = not_ready.clone();
        terminating.conditions = Some(seam_model::EndpointConditions {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
        });
        // Conditions do not carry an address change along.
        let mut readdressed = not_ready.clone();
        readdressed.ip = std::net::Ipv4Addr::new(10, 240, 0, 6);
        let mut moved = relabelled.clone();
        moved.node = "n2".into();
        let adapter = || Serving {
            caller: known(R::Adapter, "seam-k8s"),
            method: "PUT".to_string(),
            path: "/v1/endpoints/web/a".to_string(),
        };
        for (current, new) in [
            (&stored, &relabelled),
            (&stored, &not_ready),
            (&not_ready, &terminating),
            (&terminating, &stored),
        ] {
            crate::caller::scope(adapter(), async { check_relabel(Some(current), new) })
                .await
                .unwrap();
        }
        for (current, new) in [
            (Some(&stored), &moved),
            (None, &relabelled),
            (None, &not_ready),
            (Some(&stored), &readdressed),
        ] {
            let err = crate::caller::scope(adapter(), async { check_relabel(current, new) })
                .await
                .unwrap_err();
            assert_eq!(err.status(), 403);
        }
        // Nodes and admins are decided elsewhere.
        as_node("n2", async { check_relabel(Some(&stored), &moved) })
            .await
            .unwrap();
        check_relabel(None, &moved).unwrap();
    }

    async fn as_node<F: std::future::Future>(name: &str, f: F) -> F::Output {
        let serving = Serving {
            caller: Caller::Known(Identity::node(name, 1)),
            method: "PUT".to_string(),
            path: "/v1/x".to_string(),
        };
        crate::caller::scope(serving, f).await
    }

    #[tokio::test]
    async fn nodes_write_only_their_own_objects() {
        // Node n2 writing an endpoint, claiming a block or releasing a block of n1.
        for what in [
            "write endpoint \"web/a\" of node n1",
            "claim a block for node n1",
            "release block \"s1/10.0.0.0-26\" held by node n1",
        ] {
            let err = as_node("n2", async { check_own("n1", || what.to_string()) })
                .await
                .unwrap_err();
            assert_eq!(err.status(), 403);
            assert_eq!(err.reason(), "Forbidden");
            assert_eq!(err.message(), format!("forbidden: node n2 may not {what}"));
        }
        // Its own: fine; and so for every other role, and outside a request.
        as_node("n1", async { check_own("n1", String::new) })
            .await
            .unwrap();
        check_own("n1", String::new).unwrap();
        let admin = Serving {
            caller: Caller::Known(Identity::local_admin()),
            method: "PUT".to_string(),
            path: "/v1/x".to_string(),
        };
        crate::caller::scope(admin, async { check_own("n1", String::new) })
            .await
            .unwrap();
        assert_eq!(
            as_node("n3", async { calling_node() }).await.as_deref(),
            Some("n3")
        );
        assert_eq!(calling_node(), None);
    }
}
