//! `berth serve`: run the front door and admin listener for a config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use berth::config::{self, Config};
use berth::server::{DataDirLock, Server, ServerOptions};

/// Arguments of `berth serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTP front door (HTTP/1.1 and h2c).
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin API and `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "BERTH_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// File holding the admin API's bearer token (or set BERTH_ADMIN_TOKEN)
    /// [default: DATA_DIR/admin-token, created at first start].
    #[arg(long, env = "BERTH_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Where compiled components and logs live [default: $XDG_DATA_HOME/berth].
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The apps to serve (TOML).
    #[arg(long, short, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Apps answer at `<app>.<domain>`; overrides the config's `domain`.
    #[arg(long, env = "BERTH_DOMAIN")]
    pub domain: Option<String>,
    /// Serve the front door over HTTPS with this certificate chain (PEM).
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How to reach registries for `image = "REF"` apps.
    #[command(flatten)]
    pub registry: super::push::RegistryArgs,
    /// The runc binary for container apps [default: `runc` on PATH].
    #[arg(long, env = "BERTH_RUNC")]
    pub runc: Option<PathBuf>,
    /// The key that encrypts secrets at rest (32 bytes); keep it apart from
    /// the data directory [default: DATA_DIR/secrets.key, created at first
    /// use].
    #[arg(long, env = "BERTH_SECRETS_KEY", value_name = "FILE")]
    pub secrets_key: Option<PathBuf>,
    /// The bridge of the isolated container network (berth owns it and its
    /// firewall chains, and removes them at exit).
    #[arg(long, env = "BERTH_CONTAINER_BRIDGE", default_value = berth::container::bridge::DEFAULT_BRIDGE)]
    pub container_bridge: String,
    /// The isolated container network's IPv4 subnet.
    #[arg(long, env = "BERTH_CONTAINER_SUBNET", default_value = berth::container::bridge::DEFAULT_SUBNET)]
    pub container_subnet: String,
    /// Wasm instances that may run at once across all apps.
    #[arg(long, env = "BERTH_MAX_INSTANCES", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_instances: u32,
    /// Wasm instances one app may run at once [default: half of
    /// --max-instances].
    #[arg(long, env = "BERTH_MAX_INSTANCES_PER_APP", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_instances_per_app: Option<u32>,
    /// Linear memory all Wasm guests may hold together, e.g. `8GiB`
    /// [default: half the machine's memory].
    #[arg(long, env = "BERTH_WASM_MEMORY_BUDGET", value_parser = parse_size_arg)]
    pub wasm_memory_budget: Option<u64>,
    /// Mapped bytes of compiled Wasm components kept in memory, those of
    /// apps at zero included (shared by apps of the same component); past
    /// it the least recently used idle ones go back to disk, e.g. `256MiB`.
    #[arg(long, env = "BERTH_WASM_RESIDENT_BUDGET", value_parser = parse_size_arg)]
    pub wasm_resident_budget: Option<u64>,
    /// Pre-instantiated Wasm instances each app keeps per instance the
    /// autoscaler wants (at most 32 per app, and an eighth of
    /// --max-instances in all); 0 turns the stock off.
    #[arg(long, env = "BERTH_WASM_STOCK_PER_INSTANCE", default_value_t = berth::wasm::stock::DEFAULT_STOCK_PER_INSTANCE, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub wasm_stock_per_instance: u32,
    /// Outbound connections all Wasm guests may hold at once (each app
    /// also has its own `limits.outbound_connections`) [default: a quarter
    /// of the open-files limit, within 64..=16384].
    #[arg(long, env = "BERTH_MAX_OUTBOUND_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_outbound_connections: Option<u32>,
    /// How a Wasm pool slot is reset for its next instance: `madvise`
    /// (memset of the first 64 KiB, madvise past it) or `dirty-pages`
    /// (Linux's PAGEMAP_SCAN; slower with this wasmtime, see README).
    #[arg(
        long,
        env = "BERTH_WASM_SLOT_RESET",
        default_value = "madvise",
        hide = true
    )]
    pub wasm_slot_reset: berth::wasm::SlotReset,
    /// Exit when an app of the config file cannot be deployed, instead of
    /// serving the others and retrying it in the background.
    #[arg(long, env = "BERTH_STRICT")]
    pub strict: bool,
    /// The most bytes one image pull may receive (what its manifest
    /// declares is checked first), e.g. `2GiB`.
    #[arg(long, env = "BERTH_MAX_IMAGE_SIZE", default_value = "10GiB", value_parser = parse_size_arg)]
    pub max_image_size: u64,
    /// The most bytes one container image's layers may unpack to, e.g.
    /// `4GiB`.
    #[arg(long, env = "BERTH_MAX_UNPACKED_SIZE", default_value = "8GiB", value_parser = parse_size_arg)]
    pub max_unpacked_size: u64,
    /// Connections the front door keeps open at once; more are refused
    /// with 503.
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Front-door connections one client address (an IPv6 /64) keeps open
    /// at once; more are refused with 503 [default: a sixteenth of
    /// --max-connections, at least 8].
    #[arg(long, env = "BERTH_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Time a client has from accept to send its first request head (a TLS
    /// handshake included), and to send each later one; a silent
    /// connection, and an idle HTTP/1.1 keep-alive one, is closed after it.
    #[arg(long, env = "BERTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg)]
    pub header_read_timeout: std::time::Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration_arg)]
    pub idle_timeout: std::time::Duration,
    /// Write one line per front-door request to berth's log (target
    /// `berth::access`): app, revision, method, path, status, bytes,
    /// duration, queued time, cold start, request id, trace id.
    #[arg(long, env = "BERTH_ACCESS_LOG")]
    pub access_log: bool,
    /// Send traces over OTLP to this base URL (`http://HOST:4318`; spans
    /// go to `/v1/traces` under it). Unset: no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The full URL traces are sent to (wins over --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_name = "URL")]
    pub otlp_traces_endpoint: Option<String>,
    /// The OTLP protocol; berth speaks `http/protobuf`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: String,
    /// `service.name` of berth's spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "berth")]
    pub otel_service_name: String,
    /// Which requests are traced: always_on, always_off, traceidratio,
    /// parentbased_always_on, parentbased_always_off,
    /// parentbased_traceidratio.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on"
    )]
    pub traces_sampler: String,
    /// The ratio of the *traceidratio samplers (0 to 1; default 1).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub traces_sampler_arg: Option<String>,
    /// Ended spans waiting for export at most; more are dropped and counted
    /// in `berth_trace_spans_dropped_total`.
    #[arg(long, env = "OTEL_BSP_MAX_QUEUE_SIZE", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=berth::trace::MAX_QUEUE as u64))]
    pub trace_queue: u64,
    /// Milliseconds between two exports of the spans waiting (sooner when
    /// 512 wait).
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub trace_export_delay_ms: u64,
}

/// Runs `berth serve` until SIGINT or SIGTERM.
///
/// # Errors
/// A data directory another `berth serve` holds, a bad config, an app that
/// cannot be deployed, or an address in use.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    berth::files::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create data directory `{}`", data_dir.display()))?;
    // Before anything touches the directory; held until the process exits.
    let _lock = DataDirLock::acquire(&data_dir)?;
    let env_token = std::env::var(berth::api::TOKEN_ENV).ok();
    let admin_auth = berth::api::AdminAuth::from_sources(
        args.admin_token_file.as_deref(),
        env_token.as_deref(),
    )?;
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config {
            domain: config::DEFAULT_DOMAIN.into(),
            ..Config::default()
        },
    };
    if let Some(domain) = args.domain {
        config::validate_label(domain.split('.').next().unwrap_or(""))
            .map_err(|r| anyhow::anyhow!("--domain: {r}"))?;
        cfg.domain = domain;
    }
    let mut options = ServerOptions::new(data_dir.clone());
    options.engine.max_instances = args.max_instances;
    options.engine.max_instances_per_app = args.max_instances_per_app;
    options.engine.memory_budget = args.wasm_memory_budget;
    options.engine.resident_budget = args.wasm_resident_budget;
    options.engine.stock_per_instance = Some(args.wasm_stock_per_instance);
    options.engine.max_outbound_connections = args.max_outbound_connections;
    options.engine.slot_reset = args.wasm_slot_reset;
    options.engine.keyvalue_stores = cfg.keyvalue_stores.clone();
    options.connections = berth::server::ConnectionLimits {
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        ..berth::server::ConnectionLimits::default()
    };
    options
        .connections
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    options.registry = args
        .registry
        .client()?
        .with_max_image_bytes(args.max_image_size);
    options.unpack.max_bytes = args.max_unpacked_size;
    options.access_log = args.access_log;
    options.traces = berth::trace::TraceSettings {
        endpoint: berth::trace::TraceSettings::endpoint_from(
            args.otlp_endpoint.as_deref(),
            args.otlp_traces_endpoint.as_deref(),
            &args.otlp_protocol,
        )
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint: {e}"))?,
        service_name: args.otel_service_name.clone(),
        sampler: berth::trace::SamplerSetting::parse(
            &args.traces_sampler,
            args.traces_sampler_arg.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("--traces-sampler: {e}"))?,
        queue: args.trace_queue as usize,
        delay: std::time::Duration::from_millis(args.trace_export_delay_ms),
    };
    options.progress = true;
    options.admin_auth = admin_auth;
    options.runc = args.runc.clone();
    options.secrets_key = args.secrets_key.clone();
    options.strict = args.strict;
    options.bridge = berth::container::BridgeOptions {
        bridge: args.container_bridge.clone(),
        subnet: args.container_subnet.clone(),
        ..berth::container::BridgeOptions::default()
    };
    options
        .bridge
        .validate()
        .map_err(|e| anyhow::anyhow!("--container-bridge/--container-subnet: {e}"))?;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options.tls = Some(berth::tls::server_config(cert, key)?);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Before any app is pulled or compiled: a port in use fails the
        // start at once, not after minutes of compiling. Connections made
        // meanwhile wait in the backlog; `/readyz` says when apps serve.
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let admin = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
        let admin_url = write_admin_url(&data_dir, admin.local_addr()?);
        let server = Arc::new(Server::open(&cfg, options).await?);
        // SIGTERM while apps are being pulled, unpacked or started: stop
        // what was started, leave nothing behind, exit.
        let stop = shutdown_signal();
        tokio::pin!(stop);
        tokio::select! {
            restored = server.restore(&cfg) => {
                if let Err(e) = restored {
                    server.apps().stop_all().await;
                    return Err(e);
                }
            }
            () = &mut stop => {
                eprintln!("berth: stopping before serving (signal during start)");
                server.apps().stop_all().await;
                return Ok(());
            }
        }
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!(
            "berth: serving {} app(s) on {scheme}://{} (admin http://{})",
            server.apps().status().len(),
            listener.local_addr()?,
            admin.local_addr()?
        );
        for name in server.apps().status().into_iter().map(|a| a.deployed.name) {
            eprintln!(
                "  {name}: {scheme}://{name}.{}:{}/",
                cfg.domain,
                listener.local_addr()?.port()
            );
        }
        let served = server.run(listener, admin, stop).await;
        if let Some(file) = admin_url {
            let _ = std::fs::remove_file(file);
        }
        served
    })
}

/// The file in the data directory naming the admin API of the `berth serve`
/// that holds it (`http://HOST:PORT`), for `berth logs -f`; removed when the
/// server stops (a killed server leaves it: readers must cope with a URL
/// nothing answers on).
pub const ADMIN_URL_FILE: &str = "admin-url";

/// Writes [`ADMIN_URL_FILE`] for the admin API on `addr` (an unspecified
/// address is reached on loopback); the file's path, or `None` when it
/// could not be written (said, and nothing else depends on it).
fn write_admin_url(data_dir: &std::path::Path, addr: SocketAddr) -> Option<PathBuf> {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let path = data_dir.join(ADMIN_URL_FILE);
    let url = format!("http://{}\n", SocketAddr::new(ip, addr.port()));
    match std::fs::write(&path, url) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot write the admin URL file: {e}");
            None
        }
    }
}

/// The admin URL [`ADMIN_URL_FILE`] in `data_dir` names, if there is one.
pub fn read_admin_url(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(ADMIN_URL_FILE)).ok()?;
    let url = text.trim();
    (url.starts_with("http://") && url.len() < 256).then(|| url.to_owned())
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    config::parse_size(s)
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
