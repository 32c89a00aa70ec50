//! `wasi:keyvalue` and `wasi:config` for Wasm apps, through a real `berth
//! serve` and the `kv` component (built against wasmtime's own keyvalue
//! WIT). The same body runs on the embedded store and on a real
//! `redis-server` (Debian's) started here on a free loopback port.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_test_artifacts as art;

use crate::support::registry::free_addr;
use crate::support::serve::Served;
use crate::support::{app_url, client};

/// A `redis-server` on a free loopback port, killed when dropped.
pub(crate) struct RedisServer {
    pub(crate) addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `berth.toml`: apps `a` (buckets `default` and `sessions`, small quotas)
/// and `b` (`default` only); with `redis`, both buckets live there.
fn write_config(path: &Path, redis: Option<SocketAddr>) {
    let mut toml = String::new();
    if let Some(addr) = redis {
        for store in ["default", "sessions"] {
            toml.push_str(&format!(
                "[keyvalue.stores.{store}]\nbackend = \"redis\"\nurl = \"redis://{addr}\"\n\n"
            ));
        }
    }
    toml.push_str(&format!(
        r#"[apps.a]
wasm = "{kv}"
keyvalue = ["default", "sessions"]

[apps.a.keyvalue_limits]
keys = 300
value_size = 4096
total_size = "8KiB"
batch = 200

[apps.b]
wasm = "{kv}"
keyvalue = ["default"]
"#,
        kv = art::KV
    ));
    std::fs::write(path, toml).unwrap();
}

struct Kv {
    client: reqwest::Client,
    addr: SocketAddr,
}

impl Kv {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: client(addr, &["a", "b"]),
            addr,
        }
    }

    async fn call(&self, method: &str, app: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .client
            .request(method, app_url(self.addr, app, path))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, app: &str, path: &str) -> (u16, String) {
        self.call("GET", app, path, Vec::new()).await
    }

    async fn post(&self, app: &str, path: &str) -> (u16, String) {
        self.call("POST", app, path, Vec::new()).await
    }

    async fn put(&self, app: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.call("PUT", app, path, body.to_vec()).await
    }

    async fn ok(&self, method: &str, app: &str, path: &str, body: &[u8]) -> String {
        let (status, text) = self.call(method, app, path, body.to_vec()).await;
        assert_eq!(status, 200, "{method} {app}{path}: {text}");
        text
    }
}

/// A `/list-page` answer: its cursor (`None` at the end) and its keys.
fn parse_page(page: &str) -> (Option<u64>, Vec<String>) {
    let mut lines = page.lines();
    let head = lines.next().unwrap_or_default();
    let cursor = match head.strip_prefix("cursor ") {
        Some("none") => None,
        Some(c) => Some(c.parse().unwrap_or_else(|_| panic!("{page}"))),
        None => panic!("no cursor line: {page}"),
    };
    (cursor, lines.map(str::to_owned).collect())
}

/// The key-value suite, on whichever store `redis` says.
async fn suite(redis: Option<&RedisServer>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    write_config(&config, redis.map(|r| r.addr));
    let cfg = config.to_str().unwrap();
    let host = Served::start(&data, &["--config", cfg]);
    let kv = Kv::new(host.addr);

    // get / set / exists / delete.
    assert_eq!(kv.get("a", "/get/default/greeting").await.0, 404);
    kv.ok("PUT", "a", "/set/default/greeting", b"hello").await;
    assert_eq!(
        kv.ok("GET", "a", "/get/default/greeting", b"").await,
        "hello"
    );
    assert_eq!(
        kv.ok("GET", "a", "/exists/default/greeting", b"").await,
        "true"
    );
    assert_eq!(
        kv.ok("GET", "a", "/exists/default/nope", b"").await,
        "false"
    );
    // Overwrite.
    kv.ok("PUT", "a", "/set/default/greeting", b"hi again")
        .await;
    assert_eq!(
        kv.ok("GET", "a", "/get/default/greeting", b"").await,
        "hi again"
    );

    // Isolation: app b's `default` is its own; a's other bucket is its own;
    // an undeclared bucket is refused, naming the declared ones.
    assert_eq!(kv.get("b", "/get/default/greeting").await.0, 404);
    assert_eq!(
        kv.ok("GET", "b", "/exists/default/greeting", b"").await,
        "false"
    );
    assert_eq!(kv.get("a", "/get/sessions/greeting").await.0, 404);
    let (status, text) = kv.get("b", "/open/sessions").await;
    assert_eq!(status, 500);
    assert!(
        text.contains("bucket `sessions` is not declared by app `b` (its keyvalue = [`default`])"),
        "{text}"
    );
    let (status, text) = kv.get("a", "/open/other-app-bucket").await;
    assert_eq!(status, 500);
    assert!(text.contains("is not declared by app `a`"), "{text}");
    kv.ok("PUT", "b", "/set/default/greeting", b"from b").await;
    assert_eq!(
        kv.ok("GET", "a", "/get/default/greeting", b"").await,
        "hi again"
    );

    // Batch, and list-keys in pages of at most 100 keys, in byte order.
    kv.ok("POST", "a", "/set-many/default?prefix=k&n=150&size=1", b"")
        .await;
    let listed = kv.ok("GET", "a", "/list/default", b"").await;
    let mut lines = listed.lines();
    assert_eq!(lines.next(), Some("pages 2"), "{listed}");
    let keys: Vec<&str> = lines.collect();
    let mut want: Vec<String> = (0..150).map(|i| format!("k{i}")).collect();
    want.push("greeting".into());
    want.sort_unstable();
    assert_eq!(keys, want);
    // A cursor stands for the last key of its page: deleting keys the first
    // page showed and adding one before it shift nothing on the next page.
    let page = kv.ok("GET", "a", "/list-page/default", b"").await;
    let (cursor, first) = parse_page(&page);
    let cursor = cursor.expect("a second page");
    assert_eq!(first, want[..100], "{page}");
    kv.ok("POST", "a", "/delete-many/default?keys=greeting,k0,k1", b"")
        .await;
    kv.ok("PUT", "a", "/set/default/a-new", b"v").await;
    let next_path = format!("/list-page/default?cursor={cursor}");
    let page = kv.ok("GET", "a", &next_path, b"").await;
    let (next, rest) = parse_page(&page);
    assert_eq!(next, None, "{page}");
    assert_eq!(rest, want[100..], "{page}");
    // The same cursor again gives the same page.
    assert_eq!(kv.ok("GET", "a", &next_path, b"").await, page);
    // A cursor is good for its app and bucket only; made-up ones are refused.
    for (app, path) in [
        ("b", next_path.clone()),
        ("a", format!("/list-page/sessions?cursor={cursor}")),
        ("a", "/list-page/default?cursor=100".into()),
    ] {
        let (status, text) = kv.get(app, &path).await;
        assert_eq!(status, 500, "{app}{path}: {text}");
        assert!(text.contains("was not handed out for bucket"), "{text}");
    }
    // Back to 150 `k` keys and `greeting`.
    kv.ok("DELETE", "a", "/delete/default/a-new", b"").await;
    kv.ok("POST", "a", "/set-many/default?prefix=k&n=2&size=1", b"")
        .await;
    kv.ok("PUT", "a", "/set/default/greeting", b"hi again")
        .await;
    // b sees only its own key.
    assert_eq!(
        kv.ok("GET", "b", "/list/default", b"").await,
        "pages 1\ngreeting\n"
    );
    assert_eq!(
        kv.ok("GET", "a", "/get-many/default?keys=k0,k1,nope", b"")
            .await,
        "k0=v\nk1=v\nnope absent\n"
    );
    kv.ok("POST", "a", "/delete-many/default?keys=k0,k1", b"")
        .await;
    assert_eq!(
        kv.ok("GET", "a", "/get-many/default?keys=k0,k1,k2", b"")
            .await,
        "k0 absent\nk1 absent\nk2=v\n"
    );
    kv.ok("DELETE", "a", "/delete/default/greeting", b"").await;
    assert_eq!(kv.get("a", "/get/default/greeting").await.0, 404);
    assert_eq!(
        kv.ok("GET", "a", "/exists/default/greeting", b"").await,
        "false"
    );
    // a holds 148 keys of 2-4 bytes with 1-byte values now.

    // Quotas, each named; a refused write leaves nothing behind.
    let (status, text) = kv.post("a", "/set-many/default?prefix=z&n=201").await;
    assert_eq!(status, 500);
    assert!(
        text.contains("201 keys in one call is over keyvalue_limits.batch (200)"),
        "{text}"
    );
    let (status, text) = kv.put("a", "/set/default/big", &[b'x'; 4097]).await;
    assert_eq!(status, 500);
    assert!(
        text.contains("a value of 4097 bytes is over keyvalue_limits.value_size (4096 bytes)"),
        "{text}"
    );
    let (status, text) = kv.post("a", "/set-many/default?prefix=q&n=160").await;
    assert_eq!(status, 500);
    assert!(
        text.contains("app `a` would hold 308 keys, over keyvalue_limits.keys (300)"),
        "{text}"
    );
    assert_eq!(
        kv.ok("GET", "a", "/get-many/default?keys=q0,q159", b"")
            .await,
        "q0 absent\nq159 absent\n"
    );
    kv.ok("PUT", "a", "/set/default/big1", &[b'x'; 4000]).await;
    let (status, text) = kv.put("a", "/set/default/big2", &[b'x'; 4000]).await;
    assert_eq!(status, 500);
    assert!(
        text.contains("over keyvalue_limits.total_size (8192 bytes)"),
        "{text}"
    );
    assert_eq!(kv.get("a", "/get/default/big2").await.0, 404);
    let long_key = "k".repeat(1025);
    let (status, text) = kv.put("a", &format!("/set/default/{long_key}"), b"v").await;
    assert_eq!(status, 500);
    assert!(
        text.contains("over the key length limit of 1024 bytes"),
        "{text}"
    );
    // Deleting frees the quota again.
    kv.ok("DELETE", "a", "/delete/default/big1", b"").await;
    kv.ok("PUT", "a", "/set/default/big2", &[b'x'; 4000]).await;
    // b's quota is its own (the default one).
    kv.ok("POST", "b", "/set-many/default?prefix=q&n=400", b"")
        .await;

    // increment: 50 at once, no lost update, each result seen once.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = kv.client.clone();
        let url = app_url(host.addr, "a", "/incr/sessions/counter");
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            text.parse::<u64>().unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
    assert_eq!(kv.ok("GET", "a", "/get/sessions/counter", b"").await, "50");
    assert_eq!(
        kv.ok("POST", "a", "/incr/sessions/counter?by=5", b"").await,
        "55"
    );
    assert_eq!(
        kv.ok("POST", "a", "/incr/default/fresh?by=7", b"").await,
        "7"
    );
    let (status, text) = kv.post("a", "/incr/default/k2").await;
    assert_eq!(status, 500, "`v` is no number: {text}");
    kv.ok("PUT", "a", "/set/sessions/word", b"abc").await;
    let (status, text) = kv.post("a", "/incr/sessions/word").await;
    assert_eq!(status, 500);
    assert!(text.contains("key `word`"), "{text}");

    // Restart: a kill, not a clean stop; the data is there after.
    host.kill();
    let host = Served::start(&data, &["--config", cfg]);
    let kv = Kv::new(host.addr);
    assert_eq!(kv.ok("GET", "a", "/get/sessions/counter", b"").await, "55");
    assert_eq!(
        kv.ok("GET", "b", "/get/default/greeting", b"").await,
        "from b"
    );
    assert_eq!(kv.get("a", "/get/default/greeting").await.0, 404);
    let listed = kv.ok("GET", "a", "/list/default", b"").await;
    assert_eq!(listed.lines().count(), 1 + 150, "{listed}");
    assert!(listed.lines().any(|k| k == "fresh"), "{listed}");

    // What each bucket holds, by count and bytes (never a value), through
    // GET /v1/apps/{name}/keyvalue and `berth app`. b: `greeting` = `from
    // b` and q0..q399 = `v`; a's `sessions`: counter = 55, word = abc.
    let (store_d, store_s) = match redis {
        Some(_) => ("default", "sessions"),
        None => ("embedded", "embedded"),
    };
    let (ok, out, err) = host.cli(&["app", "b"], b"");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "bucket:      default ({store_d}): 401 keys, {} bytes\n",
            8 + 6 + 10 * 2 + 90 * 3 + 300 * 4 + 400
        )),
        "{out}"
    );
    assert!(!out.contains("from b"), "{out}");
    let (ok, out, err) = host.cli(&["app", "a"], b"");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("bucket:      default ({store_d}): 150 keys, ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "bucket:      sessions ({store_s}): 2 keys, {} bytes\n",
            7 + 2 + 4 + 3
        )),
        "{out}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_on_the_embedded_store() {
    suite(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_on_redis() {
    let redis = RedisServer::start();
    suite(Some(&redis)).await;
}

/// `wasi:config/store`: the app's `config` table, a secret resolved when it
/// is read (set after the deploy, seen without one), and a value changed
/// through the admin API seen by the next request, same revision, kept
/// across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn wasi_config_values_secrets_and_live_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"[apps.c]
wasm = "{kv}"
[apps.c.config]
greeting = "hello"
"log.level" = "info"
[apps.c.config_secrets]
api_key = "api-key"
"#,
            kv = art::KV
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let host = Served::start(&data, &["--config", cfg]);
    let c = client(host.addr, &["c"]);
    let get = |path: &str| {
        let (c, url) = (c.clone(), app_url(host.addr, "c", path));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/config/greeting").await, (200, "hello".into()));
    assert_eq!(get("/config/log.level").await, (200, "info".into()));
    assert_eq!(get("/config/missing").await.0, 404);
    // A component that declares no bucket gets a clear refusal.
    let (status, text) = get("/get/default/k").await;
    assert_eq!(status, 500);
    assert!(
        text.contains("this app declares no key-value buckets"),
        "{text}"
    );

    // The secret does not exist yet: the read fails, naming it.
    let (status, text) = get("/config/api_key").await;
    assert_eq!(status, 500);
    assert!(text.contains("api-key"), "{text}");
    let (ok, _, err) = host.cli(&["secret", "set", "api-key"], b"s3cret-value");
    assert!(ok, "{err}");
    assert_eq!(get("/config/api_key").await, (200, "s3cret-value".into()));

    // A change through the admin API: the next request sees it, on the same
    // revision.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let admin = client(host.admin, &[]);
    let api = |method: reqwest::Method, path: &str, body: &'static str| {
        admin
            .request(method, format!("http://{}{path}", host.admin))
            .bearer_auth(token.trim())
            .body(body)
            .send()
    };
    let revision = |v: serde_json::Value| v["revision"].as_str().unwrap().to_string();
    let before = revision(
        api(reqwest::Method::GET, "/v1/apps/c", "")
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    let r = api(
        reqwest::Method::PUT,
        "/v1/apps/c/config/greeting",
        "bonjour",
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!(get("/config/greeting").await, (200, "bonjour".into()));
    let r = api(reqwest::Method::PUT, "/v1/apps/c/config/new.key", "added")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(get("/config/new.key").await, (200, "added".into()));
    let r = api(reqwest::Method::PUT, "/v1/apps/c/config/bad%20key", "x")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("is not a config key"));
    let r = api(reqwest::Method::PUT, "/v1/apps/nope/config/k", "x")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let after = revision(
        api(reqwest::Method::GET, "/v1/apps/c", "")
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(before, after, "no new revision");
    assert_eq!(
        get("/config-all").await,
        (
            200,
            "api_key=s3cret-value\ngreeting=bonjour\nlog.level=info\nnew.key=added\n".into()
        )
    );

    // Kept across a restart; removing it brings the table's value back.
    host.kill();
    let host = Served::start(&data, &["--config", cfg]);
    let c = client(host.addr, &["c"]);
    let r = c
        .get(app_url(host.addr, "c", "/config/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "bonjour");
    let admin = client(host.admin, &[]);
    let r = admin
        .delete(format!("http://{}/v1/apps/c/config/greeting", host.admin))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(app_url(host.addr, "c", "/config/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    let log = host.stderr();
    assert!(
        !log.contains("s3cret-value"),
        "the secret's value was logged"
    );
    host.stop();
}

/// A WASIp3 component imports the same `wasi:keyvalue` synchronously;
/// 50 concurrent increments on a reused instance lose nothing.
#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_from_a_wasip3_component() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[apps.p]\nwasm = \"{}\"\nkeyvalue = [\"default\"]\n",
            art::P3_KV
        ),
    )
    .unwrap();
    let host = Served::start(&data, &["--config", config.to_str().unwrap()]);
    let c = client(host.addr, &["p"]);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url) = (c.clone(), app_url(host.addr, "p", "/incr/default/n"));
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            text.parse::<u64>().unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
    let r = c
        .get(app_url(host.addr, "p", "/get/default/n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "50");
    let r = c
        .get(app_url(host.addr, "p", "/get/other/n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("bucket `other` is not declared by app `p`")
    );
    host.stop();
}
