//! A small client of the admin API for the CLI subcommands (`deploy`,
//! `apps`, `app`, `delete`, `scale`), and the table printer they share.
//!
//! The server is found with `--admin URL` (`BERTH_ADMIN`, default
//! `http://127.0.0.1:8081`) and authenticated with `--token`
//! (`BERTH_ADMIN_TOKEN`), else with the token the server wrote into its data
//! directory (`--data-dir`, `BERTH_DATA_DIR`, default as `berth serve`'s):
//! on the same machine, as the same user, nothing needs to be passed.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use berth::api::{ErrorBody, TOKEN_ENV};

/// The default admin API address.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:8081";

/// How long a request may take (a deploy may pull and compile).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the admin API is and how to authenticate to it: the one pair of
/// flags every command that talks to the API flattens in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// The admin API of the berth server [default: http://127.0.0.1:8081].
    #[arg(long = "admin", env = "BERTH_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token [default: the server's DATA_DIR/admin-token].
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// The server's data directory, where its admin token is [default:
    /// $XDG_DATA_HOME/berth].
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

impl AdminArgs {
    /// The admin API's URL, given or the default.
    pub fn url(&self) -> &str {
        self.admin.as_deref().unwrap_or(DEFAULT_ADMIN)
    }
}

/// An error the admin API answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The server's message.
    pub message: String,
    /// The refused setting, if any.
    pub key: Option<String>,
}

/// A connection to one admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for `args`.
    ///
    /// # Errors
    /// A URL that is not `http://HOST[:PORT]`, or a token that cannot be sent
    /// in a header.
    pub fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let base = args.url().trim_end_matches('/').to_string();
        let uri: Uri = base
            .parse()
            .with_context(|| format!("--admin `{}` is not a URL", args.url()))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.authority().is_some(),
            "--admin `{}`: the admin API is plain HTTP; give http://HOST:PORT",
            args.url()
        );
        let token = match args.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => Some(t.to_string()),
            _ => {
                let dir = args
                    .data_dir
                    .clone()
                    .unwrap_or_else(berth::config::default_data_dir);
                berth::api::read_token_file(&dir)?
            }
        };
        let token = token
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .context("the admin token cannot be sent in a header")
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base,
            token,
            client,
        })
    }

    /// `GET path`, decoded.
    ///
    /// # Errors
    /// [`ApiError`] for an error status; the server unreachable; a body that
    /// is not the expected JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (_, body) = self.call(Method::GET, path, None).await?;
        decode(&body)
    }

    /// `method path` with a JSON body; returns the status and the decoded
    /// answer.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(StatusCode, T)> {
        let bytes = serde_json::to_vec(body).context("cannot encode the request")?;
        let (status, body) = self
            .call(method, path, Some((bytes, "application/json")))
            .await?;
        Ok((status, decode(&body)?))
    }

    /// `PUT path` with `bytes` as a plain body (a secret's value); returns
    /// the status and the decoded answer.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, T)> {
        let (status, body) = self
            .call(Method::PUT, path, Some((bytes, "application/octet-stream")))
            .await?;
        Ok((status, decode(&body)?))
    }

    /// `DELETE path`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, None).await.map(|_| ())
    }

    /// Copies the body of `GET path` to `out` as it arrives (for a followed
    /// log, until the server ends it or the process is stopped).
    ///
    /// # Errors
    /// As [`get`](Self::get), and write errors.
    pub async fn stream(&self, path: &str, out: &mut impl Write) -> anyhow::Result<()> {
        let body = self.open_stream(path).await?;
        copy_body(body, out).await
    }

    /// `GET path`, answered with success: its body, still to be read.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn open_stream(&self, path: &str) -> anyhow::Result<hyper::body::Incoming> {
        let resp = self.request(Method::GET, path, None).await?;
        let status = resp.status();
        let body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(api_error(status, &bytes).into());
        }
        Ok(body)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = self.request(method, path, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .with_context(|| format!("{what}: the answer broke off"))?
                .to_bytes();
            anyhow::Ok((status, bytes))
        })
        .await
        .with_context(|| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))??;
        if resp.0.is_success() {
            Ok(resp)
        } else {
            let mut err = api_error(resp.0, &resp.1);
            if err.status == StatusCode::UNAUTHORIZED && self.token.is_none() {
                err.message.push_str(
                    " (no token found: pass --token or BERTH_ADMIN_TOKEN, or --data-dir with \
                     the server's data directory, where it keeps `admin-token`)",
                );
            }
            Err(err.into())
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, token.clone());
        }
        let req = match body {
            Some((b, content_type)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(b))),
            None => req.body(Full::new(Bytes::new())),
        }
        .context("cannot build the request")?;
        self.client.request(req).await.with_context(|| {
            format!(
                "cannot reach the berth admin API at {} (is `berth serve` running? set --admin or BERTH_ADMIN)",
                self.base
            )
        })
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ApiError {
            status,
            message: e.error,
            key: e.key,
        },
        Err(_) => ApiError {
            status,
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
            key: None,
        },
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(body).context("the admin API answered with unexpected JSON")
}

/// Runs `f` on a current-thread runtime of its own.
///
/// # Errors
/// Whatever `f` returns, or a runtime that cannot start.
pub fn block_on<T, F: Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Copies `body` to `out` as it arrives (a reader that went away ends it
/// quietly).
///
/// # Errors
/// The body broke off, or a write failed.
pub async fn copy_body(
    mut body: hyper::body::Incoming,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            match out.write_all(&data).and_then(|()| out.flush()) {
                // The reader went away (`berth logs -f | head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
        }
    }
    Ok(())
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// When stdout cannot be written.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// Prints a table with left-aligned columns separated by two spaces.
///
/// # Errors
/// When stdout cannot be written.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    write_stdout(table(headers, rows).as_bytes())
}

/// Writes to stdout; a reader that went away (`berth apps | head`) is not
/// an error.
///
/// # Errors
/// Any other write error.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The text of [`print_table`].
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let line = |text: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(&mut text, &mut headers.iter().copied());
    for row in rows {
        line(&mut text, &mut row.iter().map(String::as_str));
    }
    text
}

/// `-` for nothing.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["hello".into(), "ready".into()],
                vec!["a".into(), "idle".into()],
            ],
        );
        assert_eq!(t, "NAME   STATE\nhello  ready\na      idle\n");
    }

    #[test]
    fn admin_urls_are_checked() {
        let args = |admin: &str| AdminArgs {
            admin: Some(admin.into()),
            token: Some("t".into()),
            data_dir: None,
        };
        assert!(AdminClient::new(&args("http://127.0.0.1:8081/")).is_ok());
        assert!(AdminClient::new(&args("https://127.0.0.1:8081")).is_err());
        assert!(AdminClient::new(&args("127.0.0.1:8081")).is_err());
    }

    #[test]
    fn api_errors_show_the_key() {
        let e = api_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"key `limits.memory`: too big","key":"limits.memory"}"#,
        );
        assert_eq!(e.key.as_deref(), Some("limits.memory"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream gone");
        assert!(e.to_string().contains("502"), "{e}");
    }
}
