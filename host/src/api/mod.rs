//! The admin REST API, served on the admin listener (`--admin-listen`) next
//! to `/healthz` and `/readyz`.
//!
//! | method and path | what | success |
//! |---|---|---|
//! | `PUT /v1/apps/{name}` | deploy or replace an app; the body is the JSON form of an `[apps.NAME]` table ([`AppConfig`]), `wasm` an absolute path on the server; `?traffic=N` makes it a canary taking N % of new requests | `201` new, `200` replaced: the app |
//! | `GET /v1/apps` | every app | `200` `{"apps": [...]}` |
//! | `GET /v1/apps/{name}` | one app: settings, pinned digest, kind, revision, instances, queue, cold starts, last error ([`AppView`]) | `200` |
//! | `DELETE /v1/apps/{name}` | remove an app; in-flight requests finish | `204` |
//! | `POST /v1/apps/{name}/scale` | change `min_scale`/`max_scale` (`{"min_scale":1,"max_scale":5}`); redeploys the same code as a new revision | `200` the app |
//! | `POST /v1/apps/{name}/traffic` | move the split: `{"latest_percent": N}` gives the latest revision N %, the one before it the rest (100 retires the older) | `200` the app |
//! | `GET /v1/apps/{name}/logs[?follow=true]` | the app's guest output; `follow` streams new lines | `200` `text/plain` |
//! | `GET /v1/apps/{name}/keyvalue` | each declared `wasi:keyvalue` bucket: its store, keys and bytes (never a key or value) ([`KeyvalueView`]) | `200` |
//! | `POST /v1/gc` | remove blobs no app references, unpacked images no app uses, temporary files of interrupted pulls and unpacks | `200` `{"removed_blobs": N, "removed_rootfs": N, "removed_temp": N}` |
//! | `GET /v1/secrets` | every secret's name, update time and users (never a value) | `200` `{"secrets": [...]}` |
//! | `PUT /v1/secrets/{name}` | set a secret; the body is the value (UTF-8, at most 64 KiB) | `201` new, `200` replaced |
//! | `DELETE /v1/secrets/{name}` | remove a secret no app names (`409` naming the apps otherwise) | `204` |
//! | `GET /metrics` | Prometheus text format (OpenMetrics when the `Accept` header asks for it) | `200` |
//!
//! Errors are JSON, `{"error": "…"}`, built in one place
//! ([`error_response`]), with `"key"` naming the refused
//! setting where there is one: `400` bad JSON or settings, `401` missing or
//! wrong token ([`AdminAuth`]), `404` unknown app or endpoint, `405` wrong
//! method, `409` a route another app serves, `413` a body over 1 MiB, `422`
//! a valid app that cannot be deployed (not a component, fails to start),
//! `500` state that cannot be saved, `502` an image that cannot be pulled.
//!
//! The handlers are thin: each reads its request into a typed one and calls
//! the domain method the console calls too ([`crate::apps::ops`]: changes to
//! one app are serialised there, so a scale and a deploy of the same app
//! cannot lose one another's settings); [`OpError`]s map to statuses in one
//! place.

mod auth;
pub mod logs;
mod model;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use serde::Serialize;

pub use auth::{
    AdminAuth, Attempt, MIN_TOKEN_CHARS, TOKEN_ENV, TOKEN_FILE, random_token, read_token_file,
    same_secret,
};
pub use model::{
    AppList, AppState, AppView, BucketView, ErrorBody, Instances, KeyvalueView, RevisionView,
    ScaleRequest, SecretList, SecretView,
};

use crate::apps::ops::{check_name, check_traffic};
use crate::apps::{Apps, OpError, Put, PutRequest, RouteConflict, TrafficRequest};
use crate::config::AppConfig;
use crate::http::{Body, BoxError, full};
use crate::oci::OciError;
use crate::state::StateError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves one admin API request (everything on the admin listener but
/// `/healthz` and `/readyz`). Never fails: every error is a response.
pub async fn handle<B>(apps: &Arc<Apps>, auth: &AdminAuth, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(resp) = auth.check(&req).await {
        return resp;
    }
    route(apps, req).await
}

/// Serves one admin API request that its caller has already authenticated.
/// Never fails: every error is a response, worded as [`handle`] words it.
async fn route<B>(apps: &Arc<Apps>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["metrics"], &Method::GET) => metrics(apps, &req),
        (["v1", "apps"], &Method::GET) => json(StatusCode::OK, &apps.list()),
        (["v1", "apps", name], &Method::GET) => answer(StatusCode::OK, apps.view(name)),
        (["v1", "apps", name], &Method::PUT) => put_app(apps, name, req).await,
        (["v1", "apps", name], &Method::DELETE) => match apps.delete(name).await {
            Ok(()) => no_content(),
            Err(e) => op_error(&e),
        },
        (["v1", "apps", name, "scale"], &Method::POST) => scale_app(apps, name, req).await,
        (["v1", "apps", name, "logs"], &Method::GET) => app_logs(apps, name, &req).await,
        (["v1", "apps", name, "traffic"], &Method::POST) => traffic(apps, name, req).await,
        (["v1", "apps", name, "keyvalue"], &Method::GET) => {
            answer(StatusCode::OK, apps.buckets(name).await)
        }
        (["v1", "apps", name, "config"], &Method::GET) => match apps.view(name) {
            Ok(_) => json(StatusCode::OK, &apps.live_config().values(name)),
            Err(e) => op_error(&e),
        },
        (["v1", "apps", name, "config", key], &Method::PUT) => {
            put_config(apps, name, key, Some(req)).await
        }
        (["v1", "apps", name, "config", key], &Method::DELETE) => {
            put_config::<B>(apps, name, key, None).await
        }
        (["v1", "secrets"], &Method::GET) => json(StatusCode::OK, &secret_list(apps)),
        (["v1", "secrets", name], &Method::PUT) => put_secret(apps, name, req).await,
        (["v1", "secrets", name], &Method::DELETE) => delete_secret(apps, name),
        (["v1", "gc"], &Method::POST) => match collect_garbage(apps).await {
            Ok(removed) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "removed_blobs": removed.blobs,
                    "removed_rootfs": removed.rootfs,
                    "removed_temp": removed.temp,
                }),
            ),
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"), None),
        },
        (["metrics"] | ["v1", "apps"], _) => method_not_allowed("GET"),
        (["v1", "apps", _], _) => method_not_allowed("GET, PUT, DELETE"),
        (["v1", "apps", _, "scale"], _) => method_not_allowed("POST"),
        (["v1", "apps", _, "logs"], _) => method_not_allowed("GET"),
        (["v1", "apps", _, "traffic"], _) => method_not_allowed("POST"),
        (["v1", "apps", _, "config"], _) => method_not_allowed("GET"),
        (["v1", "apps", _, "keyvalue"], _) => method_not_allowed("GET"),
        (["v1", "apps", _, "config", _], _) => method_not_allowed("PUT, DELETE"),
        (["v1", "gc"], _) => method_not_allowed("POST"),
        (["v1", "secrets"], _) => method_not_allowed("GET"),
        (["v1", "secrets", _], _) => method_not_allowed("PUT, DELETE"),
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint `{method} {path}`"),
            None,
        ),
    }
}

/// Garbage collection walks and deletes files: it runs on a blocking thread so
/// the admin API's worker keeps serving meanwhile.
async fn collect_garbage(apps: &Arc<Apps>) -> anyhow::Result<crate::apps::Collected> {
    let apps = Arc::clone(apps);
    tokio::task::spawn_blocking(move || apps.collect_garbage()).await?
}

fn metrics<B>(apps: &Apps, req: &Request<B>) -> Response<Body> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (text, content_type) = crate::metrics::negotiate(apps.metrics(), &apps.snapshots(), accept);
    let mut resp = Response::new(full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `PUT /v1/apps/{name}[?traffic=N]`: deploys the body's settings;
/// `?traffic=N` makes it a canary that gets N percent of new requests.
async fn put_app<B>(apps: &Arc<Apps>, name: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(e) = check_name(name) {
        return op_error(&e);
    }
    // Not a number is refused as a share out of range is.
    let traffic = query_value(req.uri().query(), "traffic").map(|v| v.parse().unwrap_or(u32::MAX));
    let traffic_percent = match traffic.map(check_traffic) {
        None => 100,
        Some(Ok(p)) => p,
        Some(Err(e)) => return op_error(&e),
    };
    let config: AppConfig = match read_json(req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let put = PutRequest {
        config,
        traffic_percent,
    };
    let Put { app, created } = match apps.put(name, put).await {
        Ok(put) => put,
        Err(e) => return op_error(&e),
    };
    tracing::info!(app = name, revision = %app.revision, "deployed through the admin API");
    if !created {
        return json(StatusCode::OK, &app);
    }
    let mut resp = json(StatusCode::CREATED, &app);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/apps/{name}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `POST /v1/apps/{name}/traffic` with `{"latest_percent": N}`: the latest
/// revision gets N percent of new requests, the one before it the rest (at
/// 100 the older one is retired). A canary is deployed with
/// `PUT /v1/apps/{name}?traffic=N`.
async fn traffic<B>(apps: &Arc<Apps>, name: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(e) = check_name(name) {
        return op_error(&e);
    }
    match read_json::<TrafficRequest, _>(req).await {
        Ok(t) => answer(StatusCode::OK, apps.set_traffic(name, t)),
        Err(resp) => resp,
    }
}

/// `POST /v1/apps/{name}/scale`: new scale bounds, the same code, a new
/// revision.
async fn scale_app<B>(apps: &Arc<Apps>, name: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(e) = check_name(name) {
        return op_error(&e);
    }
    match read_json::<ScaleRequest, _>(req).await {
        Ok(scale) => answer(StatusCode::OK, apps.scale(name, scale).await),
        Err(resp) => resp,
    }
}

async fn app_logs<B>(apps: &Arc<Apps>, name: &str, req: &Request<B>) -> Response<Body> {
    if let Err(e) = check_name(name) {
        return op_error(&e);
    }
    let follow = match query_flag(req.uri().query(), "follow") {
        Ok(f) => f,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, &msg, Some("follow")),
    };
    match logs::response(apps, name, follow).await {
        Ok(resp) => resp,
        Err(e @ logs::LogError::UnknownApp(_)) => {
            error_response(StatusCode::NOT_FOUND, &e.to_string(), None)
        }
        Err(e @ logs::LogError::Io { .. }) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None)
        }
    }
}

fn secret_list(apps: &Apps) -> SecretList {
    SecretList {
        secrets: apps
            .secrets()
            .list()
            .into_iter()
            .map(|info| SecretView {
                used_by: apps.secret_users(&info.name),
                name: info.name,
                updated_at: info.updated_at,
            })
            .collect(),
    }
}

/// `PUT /v1/secrets/{name}`: the body is the value. The value never
/// appears in an answer, a log line or an error.
/// Sets (a body) or removes (`None`) a `wasi:config` value of `name`:
/// seen by its guests' next read, no new revision.
async fn put_config<B>(
    apps: &Arc<Apps>,
    name: &str,
    key: &str,
    req: Option<Request<B>>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(e) = apps.view(name) {
        return op_error(&e);
    }
    let value = match req {
        None => None,
        Some(req) => {
            let bytes = match read_body(req, crate::config::spec::MAX_CONFIG_VALUE).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match String::from_utf8(bytes.to_vec()) {
                Ok(v) => Some(v),
                Err(_) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "a config value must be UTF-8",
                        Some("value"),
                    );
                }
            }
        }
    };
    match apps.live_config().set(name, key, value) {
        Ok(()) => {
            tracing::info!(
                app = name,
                key,
                "config value changed through the admin API"
            );
            json(StatusCode::OK, &apps.live_config().values(name))
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, &e, Some("value")),
    }
}

async fn put_secret<B>(apps: &Arc<Apps>, name: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(e) = crate::secrets::validate_name(name) {
        return error_response(StatusCode::BAD_REQUEST, &e.to_string(), Some("name"));
    }
    let bytes = match read_body(req, crate::secrets::MAX_VALUE_BYTES).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Ok(value) = std::str::from_utf8(&bytes) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "a secret's value must be UTF-8 (it is given as an environment variable)",
            Some("value"),
        );
    };
    match apps.secrets().set(name, value) {
        Ok(new) => {
            tracing::info!(secret = name, "secret set through the admin API");
            let info = secret_list(apps)
                .secrets
                .into_iter()
                .find(|i| i.name == name);
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(status, &info)
        }
        Err(e @ crate::secrets::SecretError::Io(_)) => {
            tracing::error!("{e}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None)
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, &e.to_string(), Some("value")),
    }
}

fn delete_secret(apps: &Apps, name: &str) -> Response<Body> {
    if let Err(e) = crate::secrets::validate_name(name) {
        return error_response(StatusCode::BAD_REQUEST, &e.to_string(), Some("name"));
    }
    let users = apps.secret_users(name);
    if !users.is_empty() {
        return error_response(
            StatusCode::CONFLICT,
            &format!(
                "secret `{name}` is used by app(s) {}: remove it from their `secrets` first",
                users.join(", ")
            ),
            None,
        );
    }
    match apps.secrets().delete(name) {
        Ok(true) => {
            tracing::info!(secret = name, "secret deleted through the admin API");
            let mut resp = Response::new(full(""));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Ok(false) => error_response(StatusCode::NOT_FOUND, &format!("no secret `{name}`"), None),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None),
    }
}

/// `?follow=true`: absent or `false`/`0` = false, `true`/`1`/empty = true.
/// The value of `key` in a query string, if present.
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn query_flag(query: Option<&str>, key: &str) -> Result<bool, String> {
    let Some(query) = query else {
        return Ok(false);
    };
    let mut flag = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            flag = match v {
                "" | "true" | "1" => true,
                "false" | "0" => false,
                other => return Err(format!("`{key}={other}`: use true or false")),
            };
        }
    }
    Ok(flag)
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`], naming the key of a bad
/// value.
#[allow(clippy::result_large_err)] // The error is the response to send.
async fn read_json<T, B>(req: Request<B>) -> Result<T, Response<Body>>
where
    T: serde::de::DeserializeOwned,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let bytes = read_body(req, MAX_BODY_BYTES).await?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = crate::http::excerpt(&e.path().to_string());
        let key = (key != ".").then_some(key);
        error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "the body is not a valid document: {}",
                crate::http::excerpt(&e.inner().to_string())
            ),
            key.as_deref(),
        )
    })?;
    de.end().map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "the body is not a valid document: {}",
                crate::http::excerpt(&e.to_string())
            ),
            None,
        )
    })?;
    Ok(value)
}

/// Reads a body of at most `limit` bytes.
#[allow(clippy::result_large_err)] // The error is the response to send.
async fn read_body<B>(req: Request<B>, limit: usize) -> Result<Bytes, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes"),
            None,
        )),
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {e}"),
            None,
        )),
    }
}

/// The status a failed deploy is reported with.
fn deploy_status(e: &anyhow::Error) -> (StatusCode, Option<&'static str>) {
    if e.chain().any(|c| c.is::<RouteConflict>()) {
        return (StatusCode::CONFLICT, Some("routes"));
    }
    if e.chain().any(|c| c.is::<StateError>()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, None);
    }
    if let Some(err) = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::secrets::SecretError>())
    {
        return match err {
            crate::secrets::SecretError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
            _ => (StatusCode::BAD_REQUEST, Some("secrets")),
        };
    }
    match e.chain().find_map(|c| c.downcast_ref::<OciError>()) {
        Some(OciError::InvalidReference { .. } | OciError::InvalidDigest { .. }) => {
            (StatusCode::BAD_REQUEST, Some("image"))
        }
        Some(
            OciError::UnsupportedArtifact { .. }
            | OciError::MultipleWasmLayers { .. }
            | OciError::CoreModule { .. }
            | OciError::NotAComponent { .. }
            | OciError::NoMatchingPlatform { .. },
        ) => (StatusCode::UNPROCESSABLE_ENTITY, Some("image")),
        Some(_) => (StatusCode::BAD_GATEWAY, Some("image")),
        // A valid app that cannot run: not a component, not a wasi:http
        // proxy, or an instance that fails to start.
        None => (StatusCode::UNPROCESSABLE_ENTITY, None),
    }
}

fn deploy_error(e: &anyhow::Error) -> Response<Body> {
    let (status, key) = deploy_status(e);
    tracing::warn!(status = status.as_u16(), "admin API deploy failed: {e:#}");
    error_response(status, &format!("{e:#}"), key)
}

fn state_error(e: &StateError) -> Response<Body> {
    tracing::error!("{e}");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None)
}

/// The one mapping of an [`OpError`] to a status and a JSON error.
fn op_error(e: &OpError) -> Response<Body> {
    let (status, key) = match e {
        OpError::UnknownApp(_) => (StatusCode::NOT_FOUND, None),
        OpError::Invalid { key, .. } => (StatusCode::BAD_REQUEST, key.as_deref()),
        OpError::Deploy(e) => return deploy_error(e),
        OpError::State(e) => return state_error(e),
        OpError::Removed(_) => (StatusCode::CONFLICT, None),
    };
    error_response(status, &e.to_string(), key)
}

/// `value` as JSON with `status`, or its error.
fn answer<T: Serialize>(status: StatusCode, value: Result<T, OpError>) -> Response<Body> {
    match value {
        Ok(v) => json(status, &v),
        Err(e) => op_error(&e),
    }
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("use {allow}"),
        None,
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A JSON error response: `{"error": msg, "key": key}`.
pub fn error_response(status: StatusCode, msg: &str, key: Option<&str>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: msg.to_string(),
            key: key.map(str::to_string),
        },
    )
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let (status, body) = match serde_json::to_vec_pretty(value) {
        Ok(mut b) => {
            b.push(b'\n');
            (status, b)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\": \"cannot encode the response: {e}\"}}\n").into_bytes(),
        ),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_flags_parse() {
        assert_eq!(query_flag(None, "follow"), Ok(false));
        assert_eq!(query_flag(Some("follow=true"), "follow"), Ok(true));
        assert_eq!(query_flag(Some("x=1&follow"), "follow"), Ok(true));
        assert_eq!(query_flag(Some("follow=0"), "follow"), Ok(false));
        assert!(query_flag(Some("follow=yes"), "follow").is_err());
    }

    #[test]
    fn op_errors_map_to_statuses() {
        let state = StateError::Invalid {
            path: "/d/state.json".into(),
            reason: "bad".into(),
        };
        let conflict = anyhow::Error::new(RouteConflict {
            route: "/a".into(),
            owner: "other".into(),
        });
        for (e, status) in [
            (OpError::UnknownApp("x".into()), StatusCode::NOT_FOUND),
            (
                OpError::invalid(Some("name"), "bad"),
                StatusCode::BAD_REQUEST,
            ),
            (OpError::setting("", "bad"), StatusCode::BAD_REQUEST),
            (OpError::Removed("x".into()), StatusCode::CONFLICT),
            (OpError::Deploy(conflict), StatusCode::CONFLICT),
            (OpError::State(state), StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            assert_eq!(op_error(&e).status(), status, "{e}");
        }
    }

    #[test]
    fn deploy_failures_map_to_statuses() {
        let conflict = anyhow::Error::new(RouteConflict {
            route: "/a".into(),
            owner: "other".into(),
        })
        .context("cannot deploy app `x`");
        assert_eq!(deploy_status(&conflict).0, StatusCode::CONFLICT);
        let pull = anyhow::Error::new(OciError::Unreachable {
            registry: "r".into(),
            detail: "refused".into(),
        })
        .context("cannot pull image `r/x:1`")
        .context("cannot deploy app `x`");
        assert_eq!(
            deploy_status(&pull),
            (StatusCode::BAD_GATEWAY, Some("image"))
        );
        let bad = anyhow::anyhow!("not a component").context("cannot deploy app `x`");
        assert_eq!(deploy_status(&bad).0, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
