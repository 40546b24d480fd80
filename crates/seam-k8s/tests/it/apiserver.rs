//! A stand-in for kube-apiserver that speaks the list/watch protocol the way the real one does:
//! lists carry the collection's resourceVersion (and items of built-in kinds come without
//! apiVersion and kind), `?watch=true&resourceVersion=N` streams JSON lines of ADDED / MODIFIED /
//! DELETED events after N, BOOKMARKs when asked for, and a resourceVersion older than the
//! compaction point gets 410 Gone — as an ERROR event (what kube-apiserver sends) or as an HTTP
//! 410 answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kube::Resource;
use seam_k8s::{RawObject, WatchedKind};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a too-old resourceVersion is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneMode {
    /// HTTP 200 and one `ERROR` event with a Status of code 410 (kube-apiserver's way).
    Event,
    /// HTTP 410 with a Status body.
    Http,
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    /// (resourceVersion, event line) of every change, for watches that start in the past.
    log: Vec<(u64, Value)>,
    /// A watch from a resourceVersion below this is answered with 410.
    compacted: u64,
    lists: usize,
    /// resourceVersion of every watch request, in order.
    watch_versions: Vec<u64>,
    watchers: Vec<(mpsc::UnboundedSender<Bytes>, bool)>,
    /// How many status patches were made.
    status_patches: usize,
}

struct Inner {
    revision: u64,
    gone_mode: GoneMode,
    collections: BTreeMap<String, (WatchedKind, Collection)>,
}

/// The stand-in server; stops when dropped.
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn path_of(kind: WatchedKind) -> String {
    RawObject::url_path(&kind.api_resource(), None)
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

fn status_410(message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": "Expired", "code": 410
    })
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let mut collections = BTreeMap::new();
        for kind in WatchedKind::ALL {
            collections.insert(path_of(kind), (kind, Collection::default()));
        }
        let inner = Arc::new(Mutex::new(Inner {
            revision: 100,
            gone_mode: GoneMode::Event,
            collections,
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ApiServer { inner, url, task }
    }

    /// A kube client pointed at this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn set_gone_mode(&self, mode: GoneMode) {
        self.inner.lock().unwrap().gone_mode = mode;
    }

    /// Creates or replaces an object (ADDED or MODIFIED), stamping the server-side metadata a real
    /// API server adds (resourceVersion, uid, creationTimestamp, managedFields).
    pub fn apply(&self, kind: WatchedKind, object: Value) {
        self.change(kind, object, true);
    }

    /// Like [`ApiServer::apply`], but watchers are not told (as if the change happened while
    /// they were away and the log was compacted since).
    pub fn apply_unseen(&self, kind: WatchedKind, object: Value) {
        self.change(kind, object, false);
    }

    fn change(&self, kind: WatchedKind, mut object: Value, notify: bool) {
        let mut inner = self.inner.lock().unwrap();
        inner.revision += 1;
        let rv = inner.revision;
        let (_, c) = inner.collections.get_mut(&path_of(kind)).unwrap();
        let key = key_of(&object);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.insert("uid".into(), json!(format!("uid-{key}")));
            meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
            meta.insert(
                "managedFields".into(),
                json!([{"manager": "kubectl", "operation": "Apply"}]),
            );
        }
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), json!(kind.api_version()));
            map.insert("kind".into(), json!(kind.kind()));
        }
        let kind_of_event = if c.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.objects.insert(key, object.clone());
        let event = json!({"type": kind_of_event, "object": object});
        if notify {
            c.log.push((rv, event.clone()));
            c.watchers.retain(|(tx, _)| tx.send(line(&event)).is_ok());
        }
    }

    /// Deletes an object (DELETED, with the object at a new resourceVersion).
    pub fn delete(&self, kind: WatchedKind, key: &str) {
        self.remove(kind, key, true);
    }

    /// Deletes an object without telling watchers.
    pub fn delete_unseen(&self, kind: WatchedKind, key: &str) {
        self.remove(kind, key, false);
    }

    fn remove(&self, kind: WatchedKind, key: &str, notify: bool) {
        let mut inner = self.inner.lock().unwrap();
        inner.revision += 1;
        let rv = inner.revision;
        let (_, c) = inner.collections.get_mut(&path_of(kind)).unwrap();
        let Some(mut object) = c.objects.remove(key) else {
            panic!("no {kind} {key} to delete")
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = json!({"type": "DELETED", "object": object});
        if notify {
            c.log.push((rv, event.clone()));
            c.watchers.retain(|(tx, _)| tx.send(line(&event)).is_ok());
        }
    }

    /// Forgets the history of `kind` up to now (a watch from an older resourceVersion gets 410)
    /// and ends every open watch of it, so watchers reconnect from where they were.
    pub fn compact_and_disconnect(&self, kind: WatchedKind) {
        let mut inner = self.inner.lock().unwrap();
        let rv = inner.revision;
        let (_, c) = inner.collections.get_mut(&path_of(kind)).unwrap();
        c.compacted = rv;
        c.log.clear();
        c.watchers.clear();
    }

    /// Sends a BOOKMARK at the current resourceVersion to watchers of `kind` that asked for them.
    pub fn bookmark(&self, kind: WatchedKind) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        let rv = inner.revision;
        let (_, c) = inner.collections.get_mut(&path_of(kind)).unwrap();
        let event = json!({
            "type": "BOOKMARK",
            "object": {
                "kind": kind.kind(), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}
            }
        });
        c.watchers
            .retain(|(tx, bookmarks)| !*bookmarks || tx.send(line(&event)).is_ok());
        rv
    }

    /// The object as the server holds it.
    pub fn get(&self, kind: WatchedKind, key: &str) -> Option<Value> {
        self.inner.lock().unwrap().collections[&path_of(kind)]
            .1
            .objects
            .get(key)
            .cloned()
    }

    /// How many status patches of `kind` were made.
    pub fn status_patches(&self, kind: WatchedKind) -> usize {
        self.inner.lock().unwrap().collections[&path_of(kind)]
            .1
            .status_patches
    }

    /// How many times `kind` was listed.
    pub fn lists(&self, kind: WatchedKind) -> usize {
        self.inner.lock().unwrap().collections[&path_of(kind)]
            .1
            .lists
    }

    /// The resourceVersions watches of `kind` started from.
    pub fn watch_versions(&self, kind: WatchedKind) -> Vec<u64> {
        self.inner.lock().unwrap().collections[&path_of(kind)]
            .1
            .watch_versions
            .clone()
    }

    /// Number of open watches of `kind`.
    pub fn watchers(&self, kind: WatchedKind) -> usize {
        let mut inner = self.inner.lock().unwrap();
        let (_, c) = inner.collections.get_mut(&path_of(kind)).unwrap();
        c.watchers.retain(|(tx, _)| !tx.is_closed());
        c.watchers.len()
    }
}

/// `PATCH /api/v1/namespaces/{ns}/{plural}/{name}/status` (a core kind in a namespace) or
/// `PATCH /apis/{group}/{version}/{plural}/{name}/status` (a cluster-scoped custom resource)
/// with a JSON merge patch (RFC 7386) of the object's `status`, as kube-apiserver's status
/// subresource: the rest of the patch is ignored, watchers see MODIFIED.
fn patch_status(inner: &Arc<Mutex<Inner>>, path: &str, body: &[u8]) -> Response {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (collection, key) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, plural, name, "status"] => {
            (format!("/api/v1/{plural}"), format!("{ns}/{name}"))
        }
        ["apis", group, version, plural, name, "status"] => (
            format!("/apis/{group}/{version}/{plural}"),
            name.to_string(),
        ),
        _ => return (StatusCode::NOT_FOUND, "not a status subresource").into_response(),
    };
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let mut guard = inner.lock().unwrap();
    guard.revision += 1;
    let rv = guard.revision;
    let Some((_, c)) = guard.collections.get_mut(&collection) else {
        return (StatusCode::NOT_FOUND, "no such resource").into_response();
    };
    let Some(object) = c.objects.get_mut(&key) else {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{key} not found"), "reason": "NotFound", "code": 404});
        return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
    };
    merge(&mut object["status"], &patch["status"]);
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let object = object.clone();
    c.status_patches += 1;
    let event = json!({"type": "MODIFIED", "object": object});
    c.log.push((rv, event.clone()));
    c.watchers.retain(|(tx, _)| tx.send(line(&event)).is_ok());
    axum::Json(object).into_response()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else {
                    merge(target.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (None, Some(_)) => {
            *target = json!({});
            merge(target, patch);
        }
        _ => *target = patch.clone(),
    }
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    if method == Method::PATCH {
        return patch_status(&inner, uri.path(), &body);
    }
    let params = query(&uri);
    let mut guard = inner.lock().unwrap();
    let revision = guard.revision;
    let gone_mode = guard.gone_mode;
    let Some((kind, c)) = guard.collections.get_mut(uri.path()) else {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404});
        return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
    };
    let kind = *kind;
    if params.get("watch").map(String::as_str) != Some("true") {
        c.lists += 1;
        let items: Vec<Value> = c
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                // kube-apiserver leaves these out of list items of built-in kinds.
                if let Some(map) = o.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                o
            })
            .collect();
        let list = json!({
            "kind": format!("{}List", kind.kind()), "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": items,
        });
        return axum::Json(list).into_response();
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    c.watch_versions.push(from);
    let bookmarks = params.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if from < c.compacted {
        let message = format!("too old resource version: {from} ({})", c.compacted);
        match gone_mode {
            GoneMode::Http => {
                return (StatusCode::GONE, axum::Json(status_410(&message))).into_response()
            }
            GoneMode::Event => {
                let _ = tx.send(line(
                    &json!({"type": "ERROR", "object": status_410(&message)}),
                ));
                drop(tx);
            }
        }
    } else {
        for (rv, event) in &c.log {
            if *rv > from {
                let _ = tx.send(line(event));
            }
        }
        c.watchers.push((tx, bookmarks));
    }
    drop(guard);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}
