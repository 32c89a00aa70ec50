//! Tenants cannot reach the host or each other. A real image (pushed to a
//! real registry) probes from inside its container, on berth's default
//! isolated network: the fake internet answers (egress works), while a
//! port of the host, the admin API and another tenant's instance are all
//! out of reach. Every address probed is on this machine: the fake
//! internet is a network namespace this test makes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;

use crate::support::image::{Image, ImageExt as _, Layer};
use crate::support::internet::FakeInternet;
use crate::support::registry::Registry;
use crate::support::{get, upstream_on};

/// `GET /cgi-bin/probe?HOST:PORT` connects from inside the container and
/// prints the first line of the answer, or `blocked` (nothing within 3 s).
const PROBE: &str = "#!/bin/sh
echo 'Content-Type: text/plain'
echo
target=\"$QUERY_STRING\"
answer=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"${target%:*}\" \"${target##*:}\" 2>/dev/null | head -n 1)
if [ -n \"$answer\" ]; then echo \"reached: $answer\"; else echo blocked; fi
";

fn app(reference: &str) -> AppSpec {
    let mut spec = AppSpec::image(reference);
    spec.container.startup_timeout = Duration::from_secs(30);
    spec.container.shutdown_grace = Duration::from_secs(1);
    spec.scaling.autoscale.min_scale = 1;
    spec
}

/// The addresses of the bridge's instances, from berth's IPAM leases.
fn leased(host: &TestHost) -> Vec<Ipv4Addr> {
    let dir = host.data_dir().join("containers/cni");
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|f| f.file_name().to_string_lossy().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_container_reaches_the_internet_and_nothing_of_the_host() {
    let registry = Registry::start();
    let reference = registry.reference("prober:v1");
    let mut image = Image::httpd();
    image
        .layers
        .push(Layer::default().file("www/cgi-bin/probe", 0o755, PROBE));
    image.push(&reference);
    let internet = FakeInternet::start("the internet\n");

    let host = TestHost::builder().start().await.unwrap();
    // The other tenant first: its instance makes the bridge (gateway .1).
    host.apps().deploy("other", &app(&reference)).await.unwrap();
    let [other_ip] = leased(&host)[..] else {
        panic!("one instance, one address: {:?}", leased(&host));
    };
    let subnet = &host.bridge().subnet;
    let gateway: Ipv4Addr = {
        let base: Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
        Ipv4Addr::from(u32::from(base) + 1)
    };
    // A service of the host on the bridge's own address: reachable from the
    // host, and it would be from the containers without berth's rules.
    let host_service = upstream_on(SocketAddr::from((gateway, 0)), "host service\n").await;
    host.apps()
        .deploy("prober", &app(&reference))
        .await
        .unwrap();

    let probe = |target: SocketAddr| {
        let host = &host;
        async move { get(host, "prober", &format!("/cgi-bin/probe?{target}")).await }
    };
    let (status, body) = probe(internet.addr).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("reached: HTTP/1."), "egress: {body}");
    for (what, target) in [
        ("a port of the host", host_service),
        (
            "the admin API on the host's bridge address",
            SocketAddr::from((gateway, host.admin_addr.port())),
        ),
        (
            "the admin API on loopback",
            SocketAddr::from((Ipv4Addr::LOCALHOST, host.admin_addr.port())),
        ),
        ("another tenant", SocketAddr::from((other_ip, 8080))),
    ] {
        let (status, body) = probe(target).await;
        assert_eq!((status, body.trim()), (200, "blocked"), "{what} ({target})");
    }
    // The host itself still reaches both (berth's proxy does, through the
    // bridge): the other tenant serves.
    assert_eq!(get(&host, "other", "/").await.0, 200);
    let bridge = host.bridge().bridge.clone();
    host.stop().await;
    // Its bridge and firewall chains go with the host.
    assert_eq!(
        crate::support::bridge_leftovers(&bridge),
        Vec::<String>::new()
    );
}

/// By default an isolated container reaches the public internet only: a
/// private network off the host (a namespace this test makes, on
/// 10.199.100.0/24) is refused, and reached once the app's
/// `allowed_networks` lists it; the host's own addresses (one this test
/// assigns from TEST-NET-3, a public-looking range) stay refused either
/// way. The per-instance rules go with the instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_egress_to_private_networks_needs_allowed_networks() {
    use crate::support::internet::HostAddrs;

    let registry = Registry::start();
    let reference = registry.reference("prober:v1");
    let mut image = Image::httpd();
    image
        .layers
        .push(Layer::default().file("www/cgi-bin/probe", 0o755, PROBE));
    image.push(&reference);
    let lan = FakeInternet::start_private("a private network\n");
    let lan_net = format!("{}/30", lan.host_ip() & Ipv4Addr::new(255, 255, 255, 252));
    let own_iface = HostAddrs::new();
    let mine = own_iface.add();
    let own = upstream_on(SocketAddr::from((mine, 0)), "the host itself\n").await;

    let host = TestHost::builder().start().await.unwrap();
    host.apps()
        .deploy("closed", &app(&reference))
        .await
        .unwrap();
    let mut open = app(&reference);
    open.allowed_networks = vec![lan_net.clone()];
    host.apps().deploy("open", &open).await.unwrap();

    let probe = |app: &'static str, target: SocketAddr| {
        let host = &host;
        async move { get(host, app, &format!("/cgi-bin/probe?{target}")).await }
    };
    let (status, body) = probe("closed", lan.addr).await;
    assert_eq!(
        (status, body.trim()),
        (200, "blocked"),
        "closed → {lan_net}"
    );
    let (status, body) = probe("open", lan.addr).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("reached: HTTP/1."),
        "open → {lan_net}: {body}"
    );
    for app in ["closed", "open"] {
        let (status, body) = probe(app, own).await;
        assert_eq!((status, body.trim()), (200, "blocked"), "{app} → own {own}");
    }

    let bridge = host.bridge().bridge.clone();
    host.stop().await;
    assert_eq!(
        crate::support::bridge_leftovers(&bridge),
        Vec::<String>::new()
    );
}
