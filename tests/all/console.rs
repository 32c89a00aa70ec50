//! The web console at `/ui`: in a real browser (Debian's chromium, headless,
//! through chromedriver and fantoccini), and over plain HTTP for what an
//! attacker would try. Screenshots land in `<target>/tmp/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth::testing::TestHost;
use berth_test_artifacts as art;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::registry::free_addr;
use crate::support::{admin, app_url, client, poll, wait_for};

/// Where screenshots go: under the target directory, kept after the run.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// chromedriver on a free loopback port and a headless chromium session.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    async fn start() -> Self {
        let addr = free_addr();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={}", addr.port()))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/setup.sh installs chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    "--no-proxy-server", "--disable-extensions",
                    "--no-first-run", "--disable-background-networking",
                ],
            }),
        );
        let url = format!("http://{addr}");
        let client = wait_for(
            "a browser session from chromedriver",
            Duration::from_secs(60),
            async || {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
            },
        )
        .await;
        Self { client, driver }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save");
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits (up to `limit`) until the element's text satisfies `ok`.
    async fn wait_text(&self, css: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let seen = poll(limit, Duration::from_millis(250), async || {
            let text = self.text(css).await;
            if ok(&text) { Ok(text) } else { Err(text) }
        })
        .await;
        match seen {
            Ok(text) => text,
            Err(t) => {
                self.shot("timeout").await;
                panic!("timed out waiting on `{css}`; last text: {:?}", t.last);
            }
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.client.find(Locator::Css(css)).await.expect(css);
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .expect("click");
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_string()
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The value of `name{app="APP"}` in `/metrics` (0 when absent).
async fn metric(host: &TestHost, name: &str, app: &str) -> f64 {
    admin::metric(host, &format!("{name}{{app=\"{app}\"}} "))
        .await
        .unwrap_or(0.0)
}

fn api(_host: &TestHost) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_runs_an_app_from_the_console_in_a_real_browser() {
    let host = TestHost::builder().start().await.unwrap();
    let b = Browser::start().await;
    let ui = format!("http://{}/ui/", host.admin_addr);
    let long = Duration::from_secs(30);

    // Every page sends a stranger to the sign-in form; a wrong token is refused.
    b.client.goto(&ui).await.unwrap();
    assert_eq!(b.path().await, "/ui/login");
    b.fill("#token", "not-the-token").await;
    b.click("#sign-in").await;
    let refused = b.wait_text("#error", long, |t| !t.is_empty()).await;
    assert!(refused.contains("not the admin token"), "{refused}");
    b.shot("01-wrong-token").await;
    b.fill("#token", host.admin_token()).await;
    b.click("#sign-in").await;
    b.wait_text("h1", long, |t| t == "Apps").await;
    assert_eq!(b.path().await, "/ui/");

    // An error worded as the API words it.
    b.click("#nav-deploy").await;
    b.fill("#name", "logs").await;
    b.fill("#wasm", "relative.wasm").await;
    b.click("#deploy").await;
    let error = b.wait_text("#error", long, |t| !t.is_empty()).await;
    assert!(error.contains("relative path"), "{error}");
    b.shot("02-deploy-error").await;

    // Deploy through the form, see it listed.
    b.fill("#wasm", art::LOGGER).await;
    b.fill("#routes", "/logs").await;
    b.click("#deploy").await;
    b.wait_text("h1", long, |t| t.starts_with("logs")).await;
    assert_eq!(b.path().await, "/ui/apps/logs");
    b.client.goto(&ui).await.unwrap();
    b.wait_text("#app-logs", long, |t| t.contains("wasm")).await;

    // Call it: the request is counted and an instance is ready (the list
    // refreshes itself: no reload here).
    let c = client(host.addr, &["logs"]);
    let r = c.get(app_url(host.addr, "logs", "/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "logged");
    b.wait_text("#app-logs [data-field=requests]", long, |t| t == "1")
        .await;
    let instances = b
        .wait_text("#app-logs [data-field=instances]", long, |t| {
            t.starts_with(|c: char| c.is_ascii_digit() && c != '0')
        })
        .await;
    b.shot("03-apps-listed-and-counted").await;

    // The same moment in /metrics and the API: nothing else calls the app.
    assert_eq!(metric(&host, "berth_app_requests_total", "logs").await, 1.0);
    let view = admin::get_json(&host, "/v1/apps/logs").await.1;
    let i = &view["instances"];
    assert_eq!(
        instances,
        format!("{} / {} / {}", i["ready"], i["starting"], i["desired"]),
        "console and API disagree: {view}"
    );
    let cold = b.text("#app-logs [data-field=cold_starts]").await;
    assert_eq!(cold, view["cold_starts"].to_string());

    // Detail: the log line arrives over server-sent events.
    b.client.goto(&format!("{ui}apps/logs")).await.unwrap();
    b.wait_text("#log", long, |t| t.contains("stdout line"))
        .await;
    b.wait_text("#chart-now", long, |t| t.contains("ready"))
        .await;
    b.shot("04-app-detail-log").await;

    // Scale bounds.
    b.fill("#min_scale", "1").await;
    b.fill("#max_scale", "3").await;
    b.click("#scale").await;
    b.wait_text("#metering", long, |t| !t.is_empty()).await;
    let view = admin::get_json(&host, "/v1/apps/logs").await.1;
    assert_eq!(view["config"]["min_scale"], 1, "{view}");
    assert_eq!(view["config"]["max_scale"], 3, "{view}");
    assert_eq!(b.path().await, "/ui/apps/logs");

    // A canary through the deploy form, then move the split.
    b.client.goto(&format!("{ui}deploy")).await.unwrap();
    b.fill("#name", "logs").await;
    b.fill("#wasm", art::HELLO).await;
    b.fill("#routes", "/logs").await;
    b.fill("#traffic", "30").await;
    b.click("#deploy").await;
    b.wait_text("#revisions", long, |t| {
        t.contains("30 %") && t.contains("70 %")
    })
    .await;
    b.shot("05-canary-30").await;
    b.fill("#latest_percent", "100").await;
    b.click("#move-traffic").await;
    let revisions = b
        .wait_text("#revisions", long, |t| t.contains("100 %"))
        .await;
    assert!(!revisions.contains("70 %"), "{revisions}");
    let view = admin::get_json(&host, "/v1/apps/logs").await.1;
    assert_eq!(view["revisions"].as_array().unwrap().len(), 1, "{view}");
    let r = c.get(app_url(host.addr, "logs", "/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from logs");
    b.shot("06-promoted").await;

    // Cold starts page: both numbers from this server.
    b.click("#nav-cold-starts").await;
    b.wait_text("#kinds", long, |t| t.contains("wasm")).await;
    b.shot("07-cold-starts").await;

    // Sign out: the cookie no longer opens anything.
    b.click("#sign-out").await;
    b.wait_text("h1", long, |t| t == "Sign in").await;
    b.client.goto(&ui).await.unwrap();
    assert_eq!(b.path().await, "/ui/login");
    b.stop().await;
    host.stop().await;
}

/// A urlencoded form body, as a browser sends one.
trait WithForm {
    fn with_form(self, pairs: &[(&str, &str)]) -> Self;
}

impl WithForm for reqwest::RequestBuilder {
    fn with_form(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// Signs in over plain HTTP; returns the cookie pair and the CSRF token.
pub async fn sign_in(host: &TestHost) -> (String, String) {
    let http = api(host);
    let base = format!("http://{}/ui", host.admin_addr);
    let r = http
        .post(format!("{base}/login"))
        .with_form(&[("token", host.admin_token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    let pair = set.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}/deploy"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
        .to_string();
    (pair, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_strangers_forged_forms_and_shows_no_secret() {
    let host = TestHost::builder().start().await.unwrap();
    let http = api(&host);
    let base = format!("http://{}/ui", host.admin_addr);

    // No session: pages go to sign-in, everything that shows state is 401.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    for path in [
        "/fragments/apps",
        "/apps/x/events",
        "/apps/x/stats.json",
        "/cold-starts/chart.svg",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // The bearer token opens the API, not the console; a cookie opens the
    // console, not the API.
    let r = http
        .get(format!("{base}/"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .post(format!("{base}/login"))
        .with_form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let (cookie, csrf) = sign_in(&host).await;
    let r = http
        .get(format!("http://{}/v1/apps", host.admin_addr))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Forms without the CSRF token, or from another origin, change nothing.
    let deploy = [("name", "x"), ("wasm", art::HELLO)];
    let r = http
        .post(format!("{base}/deploy"))
        .header("cookie", &cookie)
        .with_form(&deploy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/deploy"))
        .header("cookie", &cookie)
        .header("origin", "http://attacker.example")
        .with_form(&[("name", "x"), ("wasm", art::HELLO), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(host.apps().status().is_empty());

    // A secret's value never reaches a page; hostile text is escaped.
    let r = http
        .put(format!("http://{}/v1/secrets/db", host.admin_addr))
        .bearer_auth(host.admin_token())
        .body("s3cr3t-value-never-shown")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (status, body) = admin::put_json(
        &host,
        "/v1/apps/env",
        &serde_json::json!({
            "wasm": art::ENV,
            "env": { "NOTE": "<script>alert(1)</script>" },
            "secrets": { "DB_PASSWORD": "db" },
        }),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    let c = client(host.addr, &["env"]);
    let body = c
        .get(app_url(host.addr, "env", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("s3cr3t-value-never-shown"), "the app sees it");
    for path in ["/apps/env", "/fragments/apps", "/fragments/apps/env", "/"] {
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let page = r.text().await.unwrap();
        assert!(!page.contains("s3cr3t-value-never-shown"), "{path}");
        assert!(!page.contains("<script>alert"), "{path}");
    }
    let page = http
        .get(format!("{base}/apps/env"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("&lt;script&gt;alert(1)&lt;"), "{page}");
    assert!(page.contains("DB_PASSWORD"), "the secret is named");

    // The latest bench result, as `berth bench cold-start --table --svg`
    // leaves it in the data dir: escaped, and the chart as a sandboxed image.
    let bench = host.data_dir().join("bench");
    std::fs::create_dir_all(&bench).unwrap();
    std::fs::write(bench.join("cold-start.txt"), "wasm p50 <b>1 ms</b>\n").unwrap();
    std::fs::write(
        bench.join("cold-start.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    )
    .unwrap();
    let page = http
        .get(format!("{base}/cold-starts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("wasm p50 &lt;b&gt;1 ms"), "{page}");
    assert!(page.contains("src=\"/ui/cold-starts/chart.svg\""), "{page}");
    let svg = http
        .get(format!("{base}/cold-starts/chart.svg"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let csp = svg.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );

    // Signing out ends the session server-side too.
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &cookie)
        .with_form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .get(format!("{base}/fragments/apps"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    host.stop().await;
}

/// The app page lists the app's key-value buckets with their store, key
/// count and bytes (from `GET /v1/apps/{name}/keyvalue`), never a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_page_shows_buckets_by_count_and_bytes_not_values() {
    let host = TestHost::builder().start().await.unwrap();
    let (status, body) = admin::put_json(
        &host,
        "/v1/apps/kv",
        &serde_json::json!({ "wasm": art::KV, "keyvalue": ["default", "sessions"] }),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    let c = client(host.addr, &["kv"]);
    for (key, value) in [("greeting", "value-never-shown"), ("n", "1")] {
        let r = c
            .put(app_url(host.addr, "kv", &format!("/set/default/{key}")))
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    let (status, kv) = admin::get_json(&host, "/v1/apps/kv/keyvalue").await;
    assert_eq!(status, 200, "{kv}");
    assert_eq!(
        kv,
        serde_json::json!({ "buckets": [
            { "bucket": "default", "store": "embedded", "keys": 2, "bytes": 8 + 17 + 1 + 1 },
            { "bucket": "sessions", "store": "embedded", "keys": 0, "bytes": 0 },
        ]})
    );

    let (cookie, _) = sign_in(&host).await;
    let page = api(&host)
        .get(format!("http://{}/ui/apps/kv", host.admin_addr))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(
            "<tr><td><code>default</code></td><td>embedded</td><td>2</td><td>27</td></tr>"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "<tr><td><code>sessions</code></td><td>embedded</td><td>0</td><td>0</td></tr>"
        ),
        "{page}"
    );
    assert!(!page.contains("value-never-shown"), "{page}");
    host.stop().await;
}

/// A read that fails is shown on the page, not taken for "nothing yet": a
/// benchmark table that exists but cannot be read is named with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_read_that_failed() {
    let host = TestHost::builder().start().await.unwrap();
    let (cookie, _) = sign_in(&host).await;
    let page = |cookie: String| {
        let http = api(&host);
        let url = format!("http://{}/ui/cold-starts", host.admin_addr);
        async move {
            let r = http.get(url).header("cookie", cookie).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let before = page(cookie.clone()).await;
    assert!(before.contains("No result yet"), "{before}");
    assert!(!before.contains("bench-error"), "{before}");
    // A directory where the table should be: reading it fails.
    std::fs::create_dir_all(host.data_dir().join("bench").join("cold-start.txt")).unwrap();
    let after = page(cookie).await;
    assert!(after.contains("id=\"bench-error\""), "{after}");
    assert!(after.contains("cold-start.txt"), "{after}");
    assert!(!after.contains("No result yet"), "{after}");
    host.stop().await;
}
