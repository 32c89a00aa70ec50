//! A [`TestHost`]'s admin API: its URLs, calls with the host's token, and
//! `/metrics`. Every call panics on a transport error or a body that is not
//! what it should be (JSON), naming the path.

use berth::testing::TestHost;
use serde_json::Value;

/// `http://127.0.0.1:PORT{path}` on the admin listener (through loopback
/// whatever address it is bound to).
pub fn url(host: &TestHost, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", host.admin_addr.port())
}

/// `method` on `path` with the host's token and `body` as JSON, if any:
/// (status, the response).
pub async fn call(
    host: &TestHost,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, reqwest::Response) {
    let mut req = super::client(host.admin_addr, &[])
        .request(method.clone(), url(host, path))
        .bearer_auth(host.admin_token());
    if let Some(body) = body {
        req = req.json(body);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status().as_u16(), r)
}

/// `method` on `path` (with `body`): (status, the JSON it answered).
pub async fn call_json(
    host: &TestHost,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, r) = call(host, method.clone(), path, body).await;
    let text = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {status}, not JSON ({e}): {text}"));
    (status, json)
}

/// GET `path`: (status, JSON).
pub async fn get_json(host: &TestHost, path: &str) -> (u16, Value) {
    call_json(host, reqwest::Method::GET, path, None).await
}

/// PUT `body` to `path`: (status, JSON).
pub async fn put_json(host: &TestHost, path: &str, body: &Value) -> (u16, Value) {
    call_json(host, reqwest::Method::PUT, path, Some(body)).await
}

/// POST `body` to `path`: (status, JSON).
pub async fn post_json(host: &TestHost, path: &str, body: &Value) -> (u16, Value) {
    call_json(host, reqwest::Method::POST, path, Some(body)).await
}

/// DELETE `path`: the status.
pub async fn delete(host: &TestHost, path: &str) -> u16 {
    call(host, reqwest::Method::DELETE, path, None).await.0
}

/// `/metrics` in the Prometheus text format.
pub async fn metrics(host: &TestHost) -> String {
    let (_, r) = call(host, reqwest::Method::GET, "/metrics", None).await;
    r.text().await.expect("GET /metrics: the body")
}

/// The value of the first sample of `/metrics` whose line starts with
/// `prefix`.
pub async fn metric(host: &TestHost, prefix: &str) -> Option<f64> {
    metrics(host)
        .await
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
