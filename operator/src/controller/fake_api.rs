//! An API server in memory, for reconcile tests without a cluster: the controller's client talks
//! to it through kube's own `Client`, as kube-rs's controller-rs tests do with a mocked service.
//! It answers from state rather than from a script of expected calls, so that a test says what
//! the cluster holds and what it should hold afterwards, not in which order the reconciler asks.
//!
//! Enough of the REST semantics the controller uses: get, list (with label selectors), create,
//! server-side apply (fields this manager applied before and leaves out are removed), merge
//! patches (a stale `metadata.resourceVersion` is a 409), the status subresource, a Secret's
//! `stringData`, delete, pod eviction, and events. Every request is recorded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// Objects by their path, e.g. `/api/v1/namespaces/ns/secrets/name`.
    objects: BTreeMap<String, Value>,
    /// The last configuration applied to each object (server-side apply's managed fields).
    applied: BTreeMap<String, Value>,
    /// `METHOD path?query`, in order.
    requests: Vec<String>,
    version: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        Client::new(service, "default")
    }

    /// Puts an object in the store as if it had been created.
    pub fn insert(&self, object: Value) -> Value {
        let path = object_path(&object);
        let mut state = self.state.lock().unwrap();
        let object = state.stamp(object, None);
        state.objects.insert(path, object.clone());
        object
    }

    /// The object `kind` `namespace/name`, if the store has it.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let path = path_of(kind, namespace, name);
        self.state.lock().unwrap().objects.get(&path).cloned()
    }

    /// Deletes an object, as `kubectl delete` would.
    pub fn remove(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(&path_of(kind, namespace, name))
    }

    /// The requests so far, `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut state = self.state.lock().unwrap();
        state.requests.push(format!("{} {path}?{query}", parts.method));
        let (status, value) = state.handle(&parts.method, &path, &query, &content_type, body);
        let body = Body::from(serde_json::to_vec(&value).expect("JSON"));
        Response::builder().status(status).header("content-type", "application/json").body(body).expect("a response")
    }
}

impl State {
    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        if let Some(object) = path.strip_suffix("/status") {
            let previous = match (method, content_type.starts_with("application/apply-patch")) {
                (&Method::PATCH, true) => self.applied.insert(path.to_string(), body.clone()),
                _ => None,
            };
            return match (method, self.objects.get_mut(object)) {
                // A JSON patch: all its operations, `test` included, or none.
                (&Method::PATCH, Some(existing)) if content_type.starts_with("application/json-patch") => {
                    let patch: json_patch::Patch = serde_json::from_value(body).expect("a JSON patch");
                    match json_patch::patch(existing, &patch) {
                        Ok(()) => (StatusCode::OK, existing.clone()),
                        Err(error) => (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            json!({ "kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "Invalid", "message": error.to_string(), "code": 422 }),
                        ),
                    }
                }
                (&Method::PATCH, Some(existing)) => {
                    if let Some(previous) = previous {
                        prune(&mut existing["status"], &previous["status"], &body["status"]);
                    }
                    merge(&mut existing["status"], &body["status"]);
                    (StatusCode::OK, existing.clone())
                }
                (_, Some(existing)) => (StatusCode::OK, existing.clone()),
                (_, None) => not_found(object),
            };
        }
        if let Some(pod) = path.strip_suffix("/eviction") {
            return match self.objects.remove(pod) {
                Some(_) => (StatusCode::CREATED, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
                None => not_found(pod),
            };
        }
        match *method {
            Method::GET if self.objects.contains_key(path) => (StatusCode::OK, self.objects[path].clone()),
            Method::GET if is_collection(path) => (StatusCode::OK, self.list(path, query)),
            Method::GET => not_found(path),
            Method::POST => {
                let mut object = body;
                if object["metadata"]["name"].is_null() {
                    let name =
                        format!("{}{}", object["metadata"]["generateName"].as_str().unwrap_or("x-"), self.version);
                    object["metadata"]["name"] = name.into();
                }
                let object_path = format!("{path}/{}", object["metadata"]["name"].as_str().unwrap_or_default());
                if self.objects.contains_key(&object_path) {
                    return conflict("AlreadyExists", &object_path);
                }
                let object = self.stamp(object, None);
                self.objects.insert(object_path, object.clone());
                (StatusCode::CREATED, object)
            }
            Method::PATCH if content_type.starts_with("application/apply-patch") => {
                let previous = self.applied.insert(path.to_string(), body.clone()).unwrap_or(Value::Null);
                let mut object = self.objects.get(path).cloned().unwrap_or(Value::Null);
                if object.is_null() {
                    object = body.clone();
                } else {
                    prune(&mut object, &previous, &body);
                    merge(&mut object, &body);
                }
                let existing = self.objects.get(path).cloned();
                let object = self.stamp(object, existing.as_ref());
                self.objects.insert(path.to_string(), object.clone());
                (StatusCode::OK, object)
            }
            Method::PATCH => {
                let Some(existing) = self.objects.get(path).cloned() else { return not_found(path) };
                let wanted = &body["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != existing["metadata"]["resourceVersion"] {
                    return conflict("Conflict", path);
                }
                let mut object = existing.clone();
                merge(&mut object, &body);
                let object = self.stamp(object, Some(&existing));
                self.objects.insert(path.to_string(), object.clone());
                (StatusCode::OK, object)
            }
            Method::DELETE => match self.objects.remove(path) {
                Some(object) => (StatusCode::OK, object),
                None => not_found(path),
            },
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        }
    }

    /// Gives an object what the API server adds: uid, resourceVersion, creationTimestamp; and a
    /// Secret's `stringData` becomes `data`, as the API server stores it.
    fn stamp(&mut self, mut object: Value, existing: Option<&Value>) -> Value {
        if let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
            for (key, value) in strings {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
                object["data"][key] = encoded.into();
            }
        }
        self.version += 1;
        let metadata = &mut object["metadata"];
        let old = existing.map(|e| &e["metadata"]);
        metadata["uid"] = old.map(|m| m["uid"].clone()).unwrap_or_else(|| format!("uid-{}", self.version).into());
        metadata["creationTimestamp"] =
            old.map(|m| m["creationTimestamp"].clone()).unwrap_or_else(|| "2026-12-01T00:00:00Z".into());
        metadata["resourceVersion"] = self.version.to_string().into();
        object
    }

    fn list(&self, collection: &str, query: &str) -> Value {
        let selector = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("labelSelector="))
            .map(|s| s.replace("%3D", "=").replace("%2F", "/").replace("%2C", ","))
            .unwrap_or_default();
        let matches = |object: &Value| {
            selector.split(',').filter(|t| !t.is_empty()).all(|term| {
                let labels = &object["metadata"]["labels"];
                match term.split_once('=') {
                    Some((key, value)) => labels[key] == value,
                    None => !labels[term].is_null(),
                }
            })
        };
        // Across namespaces for `/api/v1/secrets`, one namespace for `/api/v1/namespaces/ns/secrets`.
        let plural = collection.rsplit('/').next().unwrap_or_default();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(path, _)| {
                let (parent, _) = path.rsplit_once('/').unwrap_or_default();
                parent == collection
                    || (!collection.contains("/namespaces/") && parent.ends_with(&format!("/{plural}")))
            })
            .map(|(_, object)| object.clone())
            .filter(|object| matches(object))
            .collect();
        json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": self.version.to_string() }, "items": items })
    }
}

/// The path of an object from its apiVersion, kind, namespace and name.
fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let group = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    format!("{group}/namespaces/{namespace}/{}s/{name}", kind.to_ascii_lowercase())
}

/// The path of a kind the controller uses (`Secret`, `ConfigMap`, `Role`, ...).
fn path_of(kind: &str, namespace: &str, name: &str) -> String {
    let api_version = match kind {
        "Role" | "RoleBinding" => "rbac.authorization.k8s.io/v1",
        "RemoteSigner" => "sigil.dev/v1alpha1",
        _ => "v1",
    };
    object_path(
        &json!({ "apiVersion": api_version, "kind": kind, "metadata": { "namespace": namespace, "name": name } }),
    )
}

fn is_collection(path: &str) -> bool {
    // `/api/v1/namespaces/ns/secrets` and `/apis/g/v/namespaces/ns/x` end in a plural, not a name.
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let namespaced = parts.iter().position(|p| *p == "namespaces");
    match namespaced {
        Some(i) => parts.len() == i + 3,
        None => parts.len() == if parts[0] == "api" { 3 } else { 4 },
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ if patch.is_object() => {
            *target = json!({});
            merge(target, patch);
        }
        _ => *target = patch.clone(),
    }
}

/// Server-side apply's removal: what the manager applied before and applies no longer goes.
fn prune(object: &mut Value, previous: &Value, now: &Value) {
    let (Some(object), Some(previous)) = (object.as_object_mut(), previous.as_object()) else { return };
    for (key, before) in previous {
        match now.get(key) {
            None => {
                object.remove(key);
            }
            Some(after) => {
                if let Some(child) = object.get_mut(key) {
                    prune(child, before, after);
                }
            }
        }
    }
}

fn not_found(path: &str) -> (StatusCode, Value) {
    let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
        "message": format!("{path} not found"), "code": 404 });
    (StatusCode::NOT_FOUND, status)
}

fn conflict(reason: &str, path: &str) -> (StatusCode, Value) {
    let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
        "message": format!("{path}: {reason}"), "code": 409 });
    (StatusCode::CONFLICT, status)
}
