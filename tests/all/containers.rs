//! Container images through the runc shim, behind the same front door: real
//! runc, a real registry, images built here and pushed with skopeo.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth::config::{AppSpec, NetworkMode};
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::image::{Image, ImageExt as _, Layer, busybox_base};
use crate::support::registry::Registry;
use crate::support::serve::Served;
use crate::support::{app_url, client, get, status, wait_until};

fn container_app(reference: &str) -> AppSpec {
    let mut spec = AppSpec::image(reference);
    spec.container.shutdown_grace = Duration::from_secs(2);
    spec.container.startup_timeout = Duration::from_secs(20);
    spec
}

/// Container ids runc knows under the host's private root.
fn runc_list(data_dir: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(data_dir.join("containers/runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_with_skopeo_deploys_and_sees_the_cloud_run_contract() {
    let registry = Registry::start();
    let reference = registry.reference("web:v1");
    Image::httpd().push(&reference);
    let mut spec = container_app(&reference);
    spec.env.insert("GREETING".into(), "hi".into());
    let host = TestHost::builder().app("web", spec).start().await.unwrap();

    assert_eq!(
        get(&host, "web", "/").await,
        (200, "hello from a container\n".into())
    );
    let (status, env) = get(&host, "web", "/cgi-bin/env").await;
    assert_eq!(status, 200, "{env}");
    let port = env
        .lines()
        .find_map(|l| l.strip_prefix("PORT="))
        .expect("PORT is set");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{env}");
    for line in [
        "K_SERVICE=web",
        "K_CONFIGURATION=web",
        "GREETING=hi",
        "UID=0",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line}: {env}");
    }
    assert!(env.contains("K_REVISION=web-"), "{env}");
    assert_eq!(runc_list(host.data_dir()).len(), 1);

    // Host stop leaves no container behind.
    let data = host.data_dir().to_path_buf();
    host.apps().stop_all().await;
    assert!(runc_list(&data).is_empty(), "{:?}", runc_list(&data));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_opaque_directories_in_an_upper_layer() {
    let registry = Registry::start();
    let reference = registry.reference("layers:v1");
    let upper = Layer::default()
        .file("www/.wh.index.html", 0o644, "")
        .file("www/cgi-bin/.wh..wh..opq", 0o644, "")
        .file(
            "www/cgi-bin/new",
            0o755,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho new\n",
        )
        .file("www/kept.txt", 0o644, "kept\n");
    let mut image = Image::httpd();
    image.layers = vec![busybox_base(), upper];
    image.push(&reference);
    let host = TestHost::builder()
        .app("layers", container_app(&reference))
        .start()
        .await
        .unwrap();
    assert_eq!(get(&host, "layers", "/index.html").await.0, 404, "whiteout");
    assert_eq!(
        get(&host, "layers", "/cgi-bin/env").await.0,
        404,
        "opaque dir"
    );
    assert_eq!(
        get(&host, "layers", "/cgi-bin/new").await,
        (200, "new\n".into())
    );
    assert_eq!(
        get(&host, "layers", "/kept.txt").await,
        (200, "kept\n".into())
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_ignores_sigterm_is_killed_after_the_grace() {
    let registry = Registry::start();
    let reference = registry.reference("stubborn:v1");
    let mut image = Image::httpd();
    // PID 1 is a shell that says when it gets TERM, ignores it and keeps
    // running after httpd.
    image.cmd = vec![
        "trap 'echo got-sigterm >&2' TERM; httpd -p 0.0.0.0:$PORT -h /www; \
         while true; do sleep 1; done"
            .into(),
    ];
    image.push(&reference);
    let mut spec = container_app(&reference);
    spec.container.shutdown_grace = Duration::from_secs(2);
    let host = TestHost::builder()
        .app("stubborn", spec)
        .start()
        .await
        .unwrap();
    assert_eq!(get(&host, "stubborn", "/").await.0, 200);
    let data = host.data_dir().to_path_buf();
    assert_eq!(runc_list(&data).len(), 1);
    assert!(host.apps().remove("stubborn"));
    // Removal drains and stops in the background. The container sees
    // SIGTERM, and outlives it (it is not killed at once)...
    let log = data.join("logs/stubborn.log");
    wait_until(
        "the container to see SIGTERM",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("got-sigterm") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert_eq!(runc_list(&data).len(), 1, "killed before the grace");
    // ...until SIGKILL after the grace, then runc forgets it.
    wait_until(
        "the container to be killed",
        Duration::from_secs(20),
        || {
            let left = runc_list(&data);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_at_start_gives_a_clear_error_and_the_host_goes_on() {
    let registry = Registry::start();
    let reference = registry.reference("crash:v1");
    let mut image = Image::httpd();
    image.cmd = vec!["echo 'boom: no database' >&2; exit 3".into()];
    image.push(&reference);
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();

    // At deploy (an initial instance is started): refused with the reason.
    let err = host
        .apps()
        .deploy("crash", &container_app(&reference))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("boom: no database"), "{msg}");
    assert!(msg.contains("exit"), "{msg}");

    // Deployed at zero: the first request gets a prompt 503 naming the cause.
    let mut lazy = container_app(&reference);
    lazy.scaling.autoscale.initial_scale = 0;
    host.apps().deploy("crash", &lazy).await.unwrap();
    let (status, body) = get(&host, "crash", "/").await;
    assert_eq!(status, 503, "{body}");
    // Told why at once (not "no capacity" after the queue timeout).
    assert!(body.contains("could not start"), "{body}");
    assert!(body.contains("boom: no database"), "{body}");
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    assert!(runc_list(host.data_dir()).is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_instance_cannot_reach_the_admin_port() {
    let registry = Registry::start();
    let reference = registry.reference("probe:v1");
    let mut image = Image::httpd();
    image.layers.push(Layer::default().file(
        "www/cgi-bin/probe",
        0o755,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nif wget -q -O /dev/null \"http://127.0.0.1:$ADMIN_PORT/healthz\" 2>/dev/null; then echo reached; else echo blocked; fi\n",
    ));
    image.push(&reference);
    let host = TestHost::builder().start().await.unwrap();
    let admin_port = host.admin_addr.port().to_string();
    for (name, mode, expect) in [
        ("open", NetworkMode::Host, "reached\n"),
        ("closed", NetworkMode::Isolated, "blocked\n"),
    ] {
        let mut spec = container_app(&reference);
        spec.container.network = mode;
        spec.env.insert("ADMIN_PORT".into(), admin_port.clone());
        if mode == NetworkMode::Host {
            // On the host's network, stay on loopback.
            spec.env.insert("LISTEN_ADDR".into(), "127.0.0.1".into());
        }
        host.apps().deploy(name, &spec).await.unwrap();
        assert_eq!(
            get(&host, name, "/cgi-bin/probe").await,
            (200, expect.into()),
            "{name}"
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_scales_a_container_app_to_max_and_back_to_zero() {
    let registry = Registry::start();
    let reference = registry.reference("slow:v1");
    Image::httpd().push(&reference);
    let mut spec = container_app(&reference);
    spec.scaling.autoscale.concurrency = Some(1);
    spec.scaling.autoscale.max_scale = 4;
    let a = &mut spec.scaling.autoscale;
    a.initial_scale = 0;
    a.stable_window = Duration::from_secs(2);
    a.scale_to_zero_grace = Duration::ZERO;
    a.tick = Duration::from_millis(200);
    spec.scaling.queue_timeout = Duration::from_secs(30);
    let host = TestHost::builder().app("slow", spec).start().await.unwrap();
    assert_eq!(status(&host, "slow").ready, 0);

    let c = client(host.addr, &["slow"]);
    let reqs: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let url = app_url(host.addr, "slow", "/cgi-bin/slow");
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    // Watch the whole burst: until every request is answered.
    let mut peak = 0;
    while !reqs.iter().all(|r| r.is_finished()) {
        let s = status(&host, "slow");
        assert!(s.ready + s.starting <= 4, "over max_scale: {s:?}");
        assert!(runc_list(host.data_dir()).len() <= 4);
        peak = peak.max(s.ready);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in reqs {
        assert_eq!(r.await.unwrap(), (200, "slept\n".to_string()));
    }
    assert_eq!(peak, 4, "reaches max_scale");
    wait_until("scale to zero", Duration::from_secs(20), || {
        let s = status(&host, "slow");
        if s.ready == 0 && runc_list(host.data_dir()).is_empty() {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_the_next_start_removes_the_old_containers() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let registry = Registry::start();
    let reference = registry.reference("web:v1");
    Image::httpd().push(&reference);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let with_app = dir.path().join("with-app.toml");
    std::fs::write(
        &with_app,
        format!("[apps.web]\nimage = \"{reference}\"\nmin_scale = 2\n"),
    )
    .unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let (bridge_args, bridge) = crate::support::bridge_args();

    let serve = |config: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(&bridge_args)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&data)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("berth serve exited before serving")
                .unwrap();
            if line.contains("berth: serving") {
                break;
            }
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    };

    let mut first = serve(&with_app);
    let before = runc_list(&data);
    assert_eq!(before.len(), 2, "{before:?}");
    first.kill().unwrap(); // SIGKILL: no cleanup at all
    first.wait().unwrap();
    assert_eq!(
        runc_list(&data),
        before,
        "the containers outlive a SIGKILLed host"
    );

    let mut second = serve(&empty);
    assert!(runc_list(&data).is_empty(), "{:?}", runc_list(&data));
    // Their directories went too, the tmpfs holding each bundle unmounted
    // (below); no output file was ever made.
    assert_eq!(
        crate::support::dir_names(&data.join("containers/instances")),
        Vec::<String>::new()
    );
    assert!(!data.join("containers/logs").exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&data.display().to_string()),
        "overlays and pinned network namespaces left mounted"
    );
    // The leftovers' addresses went back to the pool.
    let leases: Vec<_> = std::fs::read_dir(data.join("containers/cni"))
        .unwrap()
        .flatten()
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    // A clean stop removes the bridge and berth's firewall chains.
    let pid = rustix::process::Pid::from_raw(second.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(second.wait().unwrap().success());
    assert_eq!(
        crate::support::bridge_leftovers(&bridge),
        Vec::<String>::new()
    );
}

/// A host with only Wasm apps leaves the host's network alone, from start
/// to a clean stop: it runs no `iptables`, `ip6tables` or `ip` (each
/// wrapped here to record its calls), makes no bridge, no firewall chain
/// and no IPAM directory, though containers are available (its shim is
/// open). The container network is made when a container app first needs
/// it (the tests above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_only_host_makes_no_container_network() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = dir.path().join("calls");
    for tool in ["iptables", "ip6tables", "ip"] {
        let real = berth_bench::find_on_path(tool).unwrap_or_else(|| panic!("no {tool}"));
        let wrapper = bin.join(tool);
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                calls.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The wrappers work: a call through one is recorded.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let probe = Command::new("ip")
        .args(["link", "show", "lo"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(probe.status.success());
    assert!(
        std::fs::read_to_string(&calls)
            .unwrap()
            .contains("ip link show lo")
    );
    std::fs::remove_file(&calls).unwrap();

    let config = dir.path().join("berth.toml");
    std::fs::write(&config, format!("[apps.hello]\nwasm = {:?}\n", art::HELLO)).unwrap();
    let data = dir.path().join("data");
    let served = Served::start_with_env(
        &data,
        &["--config", config.to_str().unwrap()],
        &[("PATH", &path)],
    );
    let bridge = served.bridge.clone();
    let answer = client(served.addr, &["hello"])
        .get(app_url(served.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", served.stderr());
    assert!(
        data.join("containers/runc").is_dir(),
        "containers are unavailable here, so this proves nothing:\n{}",
        served.stderr()
    );
    let stderr = served.stderr();
    let (status, _) = served.terminate_within(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(recorded, "", "{stderr}");
    assert!(!data.join("containers/cni").exists(), "{stderr}");
    assert!(!stderr.contains("isolated container network"), "{stderr}");
    assert_eq!(
        crate::support::bridge_leftovers(&bridge),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_right_after_a_removal_leaves_no_container() {
    let registry = Registry::start();
    let reference = registry.reference("gone:v1");
    Image::httpd().push(&reference);
    // The test owns the data dir, so runc's state outlives the host.
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::builder()
        .data_dir(dir.path())
        .app("gone", container_app(&reference))
        .start()
        .await
        .unwrap();
    let data = host.data_dir().to_path_buf();
    let ids = runc_list(&data);
    assert_eq!(ids.len(), 1);
    let pid = container_pid(&data, &ids[0]);
    // Removal stops the instance in the background (httpd as PID 1 ignores
    // SIGTERM, so this takes the whole grace); stopping the host waits for it.
    assert!(host.apps().remove("gone"));
    host.stop().await;
    assert!(runc_list(&data).is_empty(), "{:?}", runc_list(&data));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the container's process {pid} is still running"
    );
}

/// The host pid of a running container's init process.
fn container_pid(data_dir: &Path, id: &str) -> u32 {
    let out = Command::new("runc")
        .arg("--root")
        .arg(data_dir.join("containers/runc"))
        .args(["state", id])
        .output()
        .expect("runc is installed");
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    state["pid"].as_u64().expect("a pid") as u32
}

/// A CGI script that reports, from inside the container, what it runs
/// under: its status flags and capabilities, whether it may make a user
/// namespace, its cgroup view and limits, its open-files limit, the masked
/// paths.
const INSIDE: &str = r#"#!/bin/sh
echo 'Content-Type: text/plain'
echo
grep -E '^(NoNewPrivs|CapEff|CapBnd|CapPrm|Seccomp):' /proc/self/status
unshare -U true 2>&1; echo "unshare-U=$?"
cat /proc/self/cgroup | sed 's/^/cgroup /'
echo "nofile=$(ulimit -n)/$(ulimit -Hn)"
cg=/sys/fs/cgroup
if [ -d $cg/pids ]; then
  pids=$(cat $cg/pids/pids.max); quota=$(cat $cg/cpu/cpu.cfs_quota_us)
  mem=$(cat $cg/memory/memory.limit_in_bytes)
  swap=$(( $(cat $cg/memory/memory.memsw.limit_in_bytes) - mem ))
else
  pids=$(cat $cg/pids.max); read quota period < $cg/cpu.max
  mem=$(cat $cg/memory.max); swap=$(cat $cg/memory.swap.max)
fi
echo "pids=$pids cpu=$quota mem=$mem swap=$swap"
for p in /sys/firmware /sys/devices/virtual/powercap; do
  if [ -e $p ]; then echo "$p=$(ls -A $p | wc -l)"; else echo "$p=absent"; fi
done
echo "timer_list=$(wc -c < /proc/timer_list)"
echo x > /proc/sys/kernel/hostname 2>/dev/null && echo "proc-sys=writable" || echo "proc-sys=read-only"
"#;

/// The line of `text` that starts with `key`, less the key.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_hardened_and_unconfined_lifts_only_seccomp() {
    use berth::config::spec::SeccompMode;

    let registry = Registry::start();
    let reference = registry.reference("inside:v1");
    let mut image = Image::httpd();
    image
        .layers
        .push(Layer::default().file("www/cgi-bin/inside", 0o755, INSIDE));
    image.push(&reference);
    let mut loose = container_app(&reference);
    loose.container.seccomp = SeccompMode::Unconfined;
    let host = TestHost::builder()
        .app("hardened", container_app(&reference))
        .app("loose", loose)
        .start()
        .await
        .unwrap();

    let (status, inside) = get(&host, "hardened", "/cgi-bin/inside").await;
    assert_eq!(status, 200, "{inside}");
    eprintln!("inside a default container:\n{inside}");
    // 1. no_new_privs.
    assert_eq!(field(&inside, "NoNewPrivs:"), "1");
    // 2. CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE (bits 0 1 3 4 5 6 7 8 10); no NET_RAW, MKNOD,
    // SETFCAP, SYS_CHROOT, AUDIT_WRITE.
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(&inside, set), "00000000000005fb", "{set}");
    }
    // 3. A seccomp filter, and the user namespace it refuses: unshare(2)
    // fails with EPERM.
    assert_eq!(field(&inside, "Seccomp:"), "2");
    assert!(
        inside.contains("unshare(0x10000000): Operation not permitted"),
        "{inside}"
    );
    assert_eq!(field(&inside, "unshare-U="), "1");
    // 4. Its own cgroup is the root of what it sees.
    let cgroups: Vec<&str> = inside
        .lines()
        .filter_map(|l| l.strip_prefix("cgroup "))
        .collect();
    assert!(!cgroups.is_empty(), "{inside}");
    for line in &cgroups {
        assert!(line.ends_with(":/"), "{line} (all: {cgroups:?})");
    }
    // 5. Masked paths are empty (powercap where the host has it).
    assert_eq!(field(&inside, "/sys/firmware="), "0");
    let powercap = if Path::new("/sys/devices/virtual/powercap").exists() {
        "0"
    } else {
        "absent"
    };
    assert_eq!(field(&inside, "/sys/devices/virtual/powercap="), powercap);
    assert_eq!(field(&inside, "timer_list="), "0");
    assert_eq!(field(&inside, "proc-sys="), "read-only");
    // 6. containerd's open-files limit, not berth's own.
    assert_eq!(field(&inside, "nofile="), "1024/1024");
    // 7. Default pids and CPU limits, no swap (memory: the 128 MiB default).
    assert_eq!(
        field(&inside, "pids="),
        format!("1024 cpu=100000 mem={} swap=0", 128u64 << 20)
    );

    // Unconfined: the same container but for the filter; the call passes.
    let (status, loose) = get(&host, "loose", "/cgi-bin/inside").await;
    assert_eq!(status, 200, "{loose}");
    assert_eq!(field(&loose, "Seccomp:"), "0");
    assert_eq!(field(&loose, "unshare-U="), "0", "{loose}");
    assert_eq!(field(&loose, "NoNewPrivs:"), "1");
    assert_eq!(field(&loose, "CapEff:"), "00000000000005fb");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_the_memory_limit_into_tmp_fails_and_the_host_goes_on() {
    let registry = Registry::start();
    let reference = registry.reference("fill:v1");
    let mut image = Image::httpd();
    image.layers.push(Layer::default().file(
        "www/cgi-bin/fill",
        0o755,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n\
         dd if=/dev/zero of=/tmp/fill bs=1M count=$MIB 2>&1; echo \"dd=$?\"\n\
         rm -f /tmp/fill\n",
    ));
    image.push(&reference);
    let mut spec = container_app(&reference);
    spec.limits.memory = 32 << 20;
    spec.env.insert("MIB".into(), "64".into());
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .app("fill", spec)
        .start()
        .await
        .unwrap();
    let data = host.data_dir().to_path_buf();
    let ids = runc_list(&data);
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    // The writable layer is a tmpfs of the instance's own, its memory limit
    // big.
    let scratch = data.join("containers/instances").join(id).join("scratch");
    let fs = rustix::fs::statfs(&scratch).unwrap();
    assert_eq!(fs.f_type, 0x0102_1994, "TMPFS_MAGIC");
    assert_eq!(fs.f_blocks * fs.f_bsize as u64, 32 << 20);

    // 64 MiB into /tmp of a 32 MiB instance: the writer is OOM-killed by the
    // instance's own cgroup (or the tmpfs is full), never a 64 MiB file.
    let (status, body) = get(&host, "fill", "/cgi-bin/fill").await;
    eprintln!("fill: {status} {body}");
    if status == 200 {
        let dd = field(&body, "dd=");
        assert_ne!(dd, "0", "{body}");
        assert!(
            dd == "137" || body.contains("No space left on device"),
            "{body}"
        );
    } else {
        assert!(status >= 500, "{status} {body}");
    }
    // The host charged the pages to the instance: its memory cgroup reached
    // its limit and OOM-killed (v1 memory.oom_control, v2 memory.events).
    let (v1, v2) = (
        Path::new("/sys/fs/cgroup/memory/berth").join(id),
        Path::new("/sys/fs/cgroup/berth").join(id),
    );
    let events = std::fs::read_to_string(v1.join("memory.oom_control"))
        .or_else(|_| std::fs::read_to_string(v2.join("memory.events")))
        .unwrap_or_default();
    eprintln!(
        "memory cgroup of the instance: max usage {:?}; {events}",
        std::fs::read_to_string(v1.join("memory.max_usage_in_bytes")).map(|s| s.trim().to_owned())
    );
    if runc_list(&data).contains(id) && body.contains("dd=137") {
        assert_ne!(field(&events, "oom_kill "), "0", "{events}");
    }
    // The host and the app go on.
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    assert_eq!(
        get(&host, "fill", "/").await,
        (200, "hello from a container\n".into())
    );
    host.stop().await;
    assert!(
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&data.display().to_string()),
        "nothing left mounted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_flooding_stdout_loses_the_excess_with_a_marker() {
    let registry = Registry::start();
    let reference = registry.reference("flood:v1");
    let mut image = Image::httpd();
    // 32768 lines of 1000 bytes (32 MB) before it serves: far more than
    // the burst of the output budget. The pause lets the budget refill, so
    // the closing line is forwarded however long the flood took (on a busy
    // machine it outlasted the burst and the line fell in the dropped part).
    let line = "x".repeat(999);
    image.cmd = vec![format!(
        "yes {line} | head -n 32768; sleep 2; echo flood-done; \
         exec httpd -f -p 0.0.0.0:$PORT -h /www"
    )];
    image.push(&reference);
    let host = TestHost::builder()
        .app("flood", container_app(&reference))
        .start()
        .await
        .unwrap();
    let data = host.data_dir().to_path_buf();
    let log = data.join("logs/flood.log");
    let read_log = || berth::logs::read_all(&data.join("logs"), "flood").unwrap_or_default();
    wait_until(
        "the flood's end in the app log",
        Duration::from_secs(60),
        || {
            let text = read_log();
            if text.contains("stdout flood-done") {
                Ok(())
            } else {
                Err(text.len())
            }
        },
    )
    .await;
    let text = read_log();
    let marker = text
        .lines()
        .find(|l| l.contains("berth: dropped"))
        .unwrap_or_else(|| panic!("no marker in {}", log.display()));
    assert!(marker.contains(" stdout berth: dropped "), "{marker}");
    let burst = berth::container::output::OUTPUT_BURST;
    assert!(
        marker.contains(&format!("(at most {burst} bytes at once")),
        "{marker}"
    );
    let forwarded = text.lines().filter(|l| l.ends_with(&line)).count();
    assert!(
        forwarded > 0 && forwarded < 32_768,
        "{forwarded} lines forwarded"
    );
    assert_eq!(get(&host, "flood", "/").await.0, 200);
    host.stop().await;
    // Its output never was a file of its own.
    assert!(!data.join("containers/logs").exists());
}

/// `du -sx` of `dir`: (bytes on disk, apparent bytes), this filesystem only
/// (an instance's tmpfs under it is memory, not disk).
fn disk_use(dir: &Path) -> (u64, u64) {
    let du = |flags: &[&str]| -> u64 {
        let out = Command::new("du").args(flags).arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    (du(&["-sx", "--block-size=1"]), du(&["-sxb"]))
}

/// How many pipes process `pid` holds open.
fn open_pipes(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

/// `berth logs NAME --data-dir DATA` (the raw bytes, as a pipe gets them).
fn berth_logs(data: &Path, app: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", app, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 21's attack, as written there, on the container's own stdout:
/// `truncate -s 100G /proc/1/fd/1; : > /proc/1/fd/1; dd if=/dev/zero
/// of=/proc/1/fd/1 bs=1M count=1024`. Its stdout is a pipe berth reads: the
/// truncation fails, the gigabyte goes through the pipe and all but the
/// budget is dropped with a marker; the data dir grows by at most the app
/// log's cap; the host and the app go on answering during the attack;
/// later lines still arrive; once the instance is gone, berth holds no pipe
/// of it and the data dir no file of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_truncating_and_flooding_its_stdout_cannot_fill_the_disk() {
    let registry = Registry::start();
    let reference = registry.reference("trick:v1");
    let mut image = Image::httpd();
    image.layers.push(
        Layer::default()
            .symlink("bin/truncate", "busybox")
            .file(
                "www/cgi-bin/trick",
                0o755,
                "#!/bin/sh
echo 'Content-Type: text/plain'
echo
                 truncate -s 100G /proc/1/fd/1 2>&1
                 ( : > /proc/1/fd/1;                  dd if=/dev/zero of=/proc/1/fd/1 bs=1M count=1024;                  sleep 2; echo trick-done > /proc/1/fd/1 ) </dev/null >/dev/null 2>/proc/1/fd/2 &
                 echo started
",
            )
            .file(
                "www/cgi-bin/say",
                0o755,
                "#!/bin/sh
echo 'Content-Type: text/plain'
echo
                 echo \"said $QUERY_STRING\" > /proc/1/fd/1
echo ok
",
            ),
    );
    image.push(&reference);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = Served::start(&data, &[]);
    for args in [
        &["deploy", "hello", "--wasm", art::HELLO][..],
        &["deploy", "trick", "--image", &reference, "--min-scale", "1"],
    ] {
        let (ok, _, err) = host.cli(args, b"");
        assert!(ok, "{args:?}: {err}");
    }
    let c = client(host.addr, &["hello", "trick"]);
    let get = async |app: &str, path: &str| -> (u16, String) {
        let r = c.get(app_url(host.addr, app, path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(
        get("trick", "/").await,
        (200, "hello from a container\n".into())
    );
    let pipes_before = open_pipes(host.pid());
    let before = disk_use(&data);

    // The truncation fails on the pipe (its error is the answer: a log
    // line written before the flood may be rotated away by the end).
    let (code, body) = get("trick", "/cgi-bin/trick").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("truncate: /proc/1/fd/1: ") && body.ends_with("\nstarted\n"),
        "{body}"
    );
    let t = std::time::Instant::now();
    let mut answered = 0;
    loop {
        assert_eq!(
            get("hello", "/").await.0,
            200,
            "another app answers during the attack"
        );
        assert_eq!(get("trick", "/").await.0, 200, "the app itself answers");
        answered += 2;
        if berth_logs(&data, "trick").contains(" stdout trick-done\n") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the flood never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t.elapsed();
    let after = disk_use(&data);
    let cap = 2 * berth::logs::MAX_LOG_BYTES;
    eprintln!(
        "1 GiB through stdout in {took:?}; data dir {before:?} -> {after:?} (on disk, apparent); \
         {answered} requests answered meanwhile"
    );
    assert!(
        after.0 <= before.0 + cap && after.1 <= before.1 + cap,
        "the data dir grew past the log cap ({cap}): {before:?} -> {after:?}"
    );
    let log = berth_logs(&data, "trick");
    // dd wrote all of its gigabyte (the closing line came 2 s later, with
    // the output budget refilled).
    assert!(
        log.contains(" stderr 1024+0 records out"),
        "dd did not finish"
    );
    let dropped: u64 = log
        .lines()
        .filter_map(|l| l.split(" stdout berth: dropped ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let forwarded = (1u64 << 30) - dropped;
    eprintln!("forwarded {forwarded} bytes of the flood, dropped {dropped}");
    assert!(
        dropped > 0 && forwarded >= berth::container::output::OUTPUT_BURST,
        "forwarded {forwarded}, dropped {dropped}"
    );

    // Later lines still arrive.
    assert_eq!(
        get("trick", "/cgi-bin/say?later-1").await,
        (200, "ok\n".into())
    );
    wait_until(
        "a later line in berth logs",
        Duration::from_secs(10),
        || match berth_logs(&data, "trick").contains(" stdout said later-1\n") {
            true => Ok(()),
            false => Err(()),
        },
    )
    .await;

    // Gone: no pipe of it in berth, no file of it in the data dir.
    let (ok, _, err) = host.cli(&["delete", "trick"], b"");
    assert!(ok, "{err}");
    // The delete stops the instance in the background: runc's container,
    // then its directory (the tmpfs with its bundle) go, and its pipes close.
    let instances = data.join("containers/instances");
    wait_until("the instance gone", Duration::from_secs(30), || {
        let left = (
            runc_list(&data),
            crate::support::dir_names(&instances),
            open_pipes(host.pid()),
        );
        match left.0.is_empty() && left.1.is_empty() && left.2 <= pipes_before - 2 {
            true => Ok(()),
            false => Err(left),
        }
    })
    .await;
    assert!(
        !data.join("containers/logs").exists(),
        "no raw output files"
    );
    let end = disk_use(&data);
    assert!(
        end.0 <= before.0 + cap && end.1 <= before.1 + cap,
        "{before:?} -> {end:?}"
    );
    assert_eq!(get("hello", "/").await.0, 200);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_working_dir_under_proc_or_unclean_is_refused_at_deploy() {
    let registry = Registry::start();
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    for (tag, dir, why) in [
        ("leaky", "/proc/self/fd/7", "under /proc"),
        ("relative", "srv", "absolute"),
        ("dotdot", "/srv/../..", "clean"),
    ] {
        let reference = registry.reference(&format!("{tag}:v1"));
        let mut image = Image::httpd();
        image.working_dir = dir.into();
        image.push(&reference);
        let err = host
            .apps()
            .deploy(tag, &container_app(&reference))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("image config `WorkingDir` \"{dir}\" is refused"))
                && msg.contains(why),
            "{msg}"
        );
    }
    assert!(runc_list(host.data_dir()).is_empty());
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_is_logged_and_an_unfixed_one_leaves_containers_unavailable() {
    use std::os::unix::fs::PermissionsExt as _;

    let registry = Registry::start();
    let reference = registry.reference("web:v1");
    Image::httpd().push(&reference);
    let dir = tempfile::tempdir().unwrap();

    // The real runc: its version is logged at start.
    let version = Command::new("runc").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let first = version
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("runc version ");
    let host = Served::start(&dir.path().join("ok"), &[]);
    let log = host.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(" runc ") && l.contains(&format!("version={first}"))),
        "{log}"
    );
    host.stop();

    // A runc before 1.1.12 without a known backport (here a stand-in that
    // prints what runc 1.1.11 prints): the host serves, containers do not.
    let old = dir.path().join("runc-1.1.11");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'runc version 1.1.11'\necho 'commit: v1.1.11-0-g4bccb38c'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = Served::start(&dir.path().join("old"), &["--runc", old.to_str().unwrap()]);
    assert!(host.stderr().contains("runc refused"), "{}", host.stderr());
    let (ok, _, err) = host.cli(&["deploy", "hello", "--wasm", art::HELLO], b"");
    assert!(ok, "{err}");
    let (ok, _, err) = host.cli(&["deploy", "web", "--image", &reference], b"");
    assert!(!ok);
    assert!(
        err.contains("containers are unavailable")
            && err.contains("runc 1.1.11")
            && err.contains("CVE-2024-21626"),
        "{err}"
    );
    let c = client(host.addr, &["hello"]);
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    host.stop();
}

/// What an instance start would refuse is refused at deploy, through the
/// admin API, naming the key: a variable berth sets itself (in `env` or
/// `secrets`), a CPU count below the kernel's smallest quota, a readiness
/// path no request can carry. With `initial_scale = 0` nothing starts at
/// deploy, so before these were checked there the deploy was accepted and
/// every instance start failed later. The same image with good settings
/// deploys (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_an_instance_start_would_refuse_are_refused_at_deploy() {
    use serde_json::json;

    use crate::support::admin;

    let registry = Registry::start();
    let reference = registry.reference("web:v1");
    Image::httpd().push(&reference);
    let host = TestHost::builder().start().await.unwrap();
    let app = |extra: serde_json::Value| {
        let mut body = json!({"image": reference, "autoscale": {"initial_scale": 0}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, key) in [
        (json!({"env": {"PORT": "1"}}), "env.PORT"),
        (json!({"env": {"K_SERVICE": "x"}}), "env.K_SERVICE"),
        (
            json!({"secrets": {"K_REVISION": "s"}}),
            "secrets.K_REVISION",
        ),
        (json!({"limits": {"cpu": 0.001}}), "limits.cpu"),
        (json!({"readiness_path": "/ready now"}), "readiness_path"),
    ] {
        let (status, err) = admin::put_json(&host, "/v1/apps/web", &app(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {err}");
        assert_eq!(err["key"], key, "{extra}: {err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.starts_with(&format!("key `{key}`: ")), "{text}");
        assert_eq!(
            admin::get_json(&host, "/v1/apps/web").await.0,
            404,
            "{extra}"
        );
    }
    // The image itself: a `User` it does not have, nothing to run.
    let mut ghost = Image::httpd();
    ghost.user = Some("ghost".into());
    let mut idle = Image::httpd();
    idle.entrypoint.clear();
    idle.cmd.clear();
    for (image, says) in [
        (ghost, "user \"ghost\""),
        (idle, "neither Entrypoint nor Cmd"),
    ] {
        let reference = registry.reference(&format!("bad-{}:v1", says.len()));
        image.push(&reference);
        let body = json!({"image": reference, "autoscale": {"initial_scale": 0}});
        let (status, err) = admin::put_json(&host, "/v1/apps/bad", &body).await;
        assert_eq!(status, 422, "{says}: {err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains(says), "{says}: {text}");
        assert_eq!(
            admin::get_json(&host, "/v1/apps/bad").await.0,
            404,
            "{says}"
        );
    }
    let control = app(json!({"env": {"PORTS": "1"}}));
    let (status, err) = admin::put_json(&host, "/v1/apps/web", &control).await;
    assert_eq!(status, 201, "{err}");
    assert_eq!(runc_list(host.data_dir()), Vec::<String>::new());
    host.stop().await;
}
