//! Start, readiness, stop, failures and reaping of real containers.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::super::spec::SpecError;
use super::super::{ContainerError, NetworkMode, Probe, Shim, overlay};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_serves_and_sees_the_contract() {
    let env = setup();
    let (host_port, hits) = host_listener().await;
    let mut spec = httpd(
        "host",
        "echo $K_SERVICE > /www/k\n\
         echo $PORT,$K_REVISION,$K_CONFIGURATION,$GREETING,$EXTRA > /www/env\n\
         hostname > /www/hostname\n\
         cp /etc/hosts /www/hosts; cp /etc/resolv.conf /www/resolv\n\
         wget -q -O /dev/null http://127.0.0.1:$HOST_PORT/; echo $? > /www/egress\n\
         echo to-stdout; echo to-stderr >&2",
    );
    spec.env.insert("GREETING".into(), "app".into());
    spec.env.insert("EXTRA".into(), "x".into());
    spec.env.insert("HOST_PORT".into(), host_port.to_string());
    let (id, port) = (spec.id.clone(), spec.port);
    let inst = env.start(spec).await.unwrap();
    let split = inst.start_timings();
    eprintln!("host network cold start: {split}");
    assert_eq!((inst.id(), inst.port()), (id.as_str(), port));
    assert!(!inst.has_exited());

    assert_eq!(
        host_get(port, "/").await,
        (200, "hello from berth\n".into())
    );
    assert_eq!(
        get(inst.connect().await.unwrap(), "/k").await,
        (200, "hello\n".into())
    );
    let env_line = format!("{port},hello-00001,hello,app,x\n");
    assert_eq!(host_get(port, "/env").await, (200, env_line));
    assert_eq!(host_get(port, "/hostname").await.1, format!("{id}\n"));
    assert!(
        host_get(port, "/hosts")
            .await
            .1
            .contains(&format!("127.0.1.1\t{id}\n"))
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(
        host_get(port, "/resolv").await.1,
        host_resolv,
        "the host's resolv.conf"
    );
    assert_eq!(
        host_get(port, "/egress").await.1,
        "0\n",
        "host network reaches host ports"
    );
    assert!(hits.load(Ordering::SeqCst) >= 1);
    // The image layer is untouched.
    assert!(!env.rootfs.join("www/k").exists());

    let pid = inst.pid();
    let t = Instant::now();
    inst.stop(Duration::from_secs(10)).await.unwrap();
    let took = t.elapsed();
    eprintln!("stop of a container that handles SIGTERM: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM should have stopped it well before the 10 s grace: {took:?}"
    );
    assert_gone(&env, &id, Some(pid)).await;
    // Its output went through the pipes into the log, tagged; no file of
    // its own is left anywhere under the state directory.
    let lines = env.output_of(&id);
    assert!(lines.contains(&"stdout to-stdout".to_owned()), "{lines:?}");
    assert!(lines.contains(&"stderr to-stderr".to_owned()), "{lines:?}");
}

#[tokio::test]
async fn user_workdir_and_limits() {
    let env = setup();
    let mut spec = httpd(
        "user",
        "id -u > /www/uid; id -g > /www/gid; id -G > /www/groups; pwd > /www/cwd",
    );
    spec.image.user = Some("www".into());
    spec.image.working_dir = Some("/tmp".into());
    spec.limits = ContainerLimits {
        memory: Some(48 << 20),
        cpus: Some(0.5),
        pids: Some(64),
    };
    let (id, port) = (spec.id.clone(), spec.port);
    let inst = env.start(spec).await.unwrap();
    assert_eq!(host_get(port, "/uid").await.1, "33\n");
    assert_eq!(host_get(port, "/gid").await.1, "33\n");
    assert_eq!(host_get(port, "/groups").await.1, "33 50\n");
    assert_eq!(host_get(port, "/cwd").await.1, "/tmp\n");
    // The limits reached the cgroups (v1 hierarchies, or v2 if unified).
    let v1 = Path::new("/sys/fs/cgroup/memory/berth").join(&id);
    if v1.exists() {
        let read = |p: String| std::fs::read_to_string(p).unwrap().trim().to_owned();
        assert_eq!(
            read(format!(
                "/sys/fs/cgroup/memory/berth/{id}/memory.limit_in_bytes"
            )),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            read(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us")),
            "50000"
        );
        assert_eq!(
            read(format!("/sys/fs/cgroup/pids/berth/{id}/pids.max")),
            "64"
        );
    } else {
        let read = |f: &str| {
            std::fs::read_to_string(Path::new("/sys/fs/cgroup/berth").join(&id).join(f))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(read("memory.max"), (48u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "64");
    }
    inst.stop(Duration::from_secs(5)).await.unwrap();
    assert_gone(&env, &id, None).await;
    assert!(!v1.exists(), "runc delete removes the cgroup");
}

#[tokio::test]
async fn ignoring_sigterm_gets_sigkill_after_the_grace() {
    let env = setup();
    // PID 1 of a pid namespace ignores signals it has no handler for; the
    // trap makes that explicit (SIG_IGN survives exec).
    let spec = sh("term", "trap '' TERM; exec httpd -f -p $PORT -h /www");
    let id = spec.id.clone();
    let inst = env.start(spec).await.unwrap();
    let pid = inst.pid();
    let t = Instant::now();
    inst.stop(Duration::from_secs(1)).await.unwrap();
    let took = t.elapsed();
    eprintln!("stop of a container ignoring SIGTERM, grace 1 s: {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "killed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert_gone(&env, &id, Some(pid)).await;
}

#[tokio::test]
async fn exit_at_start_is_reported_with_stderr() {
    let env = setup();
    let spec = sh("exit", "echo 'cannot open /etc/app.conf' >&2; exit 3");
    let id = spec.id.clone();
    let t = Instant::now();
    let err = env.start(spec).await.unwrap_err();
    eprintln!("exit at start reported after {:?}: {err}", t.elapsed());
    match &err {
        ContainerError::Exited { status, stderr, .. } => {
            assert_eq!(status.and_then(|s| s.code()), Some(3));
            assert!(stderr.contains("cannot open /etc/app.conf"), "{stderr}");
        }
        e => panic!("expected Exited, got {e}"),
    }
    assert!(err.to_string().contains("exit status: 3"), "{err}");
    assert_gone(&env, &id, None).await;
}

#[tokio::test]
async fn missing_executable_is_a_create_error() {
    let env = setup();
    let mut spec = sh("noexec", "");
    spec.image.entrypoint = vec!["/no/such/server".into()];
    spec.image.cmd.clear();
    let id = spec.id.clone();
    let err = env.start(spec).await.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, ContainerError::Create { stderr, .. }
            if stderr.contains("/no/such/server") && !stderr.contains("level=error")),
        "{err}"
    );
    assert_gone(&env, &id, None).await;
}

#[tokio::test]
async fn never_ready_times_out_and_leaves_nothing() {
    let env = setup();
    let mut spec = sh("never", "exec sleep 1000");
    spec.startup_timeout = Duration::from_millis(500);
    let id = spec.id.clone();
    let t = Instant::now();
    let err = env.start(spec).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("not ready after {took:?}: {err}");
    assert!(
        matches!(&err, ContainerError::NotReady { last_probe, .. } if last_probe.contains("refused")),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(3),
        "{took:?} (500 ms timeout + teardown)"
    );
    assert_gone(&env, &id, None).await;
    assert!(env.shim.runc().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn http_probe_needs_a_2xx_or_3xx() {
    let env = setup();
    let mut ok = httpd("http-ok", "");
    ok.readiness = Probe::Http {
        path: "/index.html".into(),
    };
    let inst = env.start(ok).await.unwrap();
    eprintln!("HTTP probe cold start: {}", inst.start_timings());
    inst.stop(Duration::from_secs(5)).await.unwrap();

    let mut missing = httpd("http-404", "");
    missing.readiness = Probe::Http {
        path: "/healthz".into(),
    };
    missing.startup_timeout = Duration::from_millis(400);
    let id = missing.id.clone();
    let err = env.start(missing).await.unwrap_err();
    assert!(
        matches!(&err, ContainerError::NotReady { last_probe, .. } if last_probe.contains("status 404")),
        "{err}"
    );
    assert_gone(&env, &id, None).await;
}

#[tokio::test]
async fn exit_after_ready_is_observed_and_stop_still_works() {
    let env = setup();
    // httpd without -f daemonises; PID 1 (sh) exits 7 a moment later,
    // taking the whole pid namespace with it.
    let spec = sh("later", "httpd -p $PORT -h /www; sleep 0.5; exit 7");
    let id = spec.id.clone();
    let inst = env.start(spec).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), inst.exited())
        .await
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(7));
    assert!(inst.has_exited());
    let t = Instant::now();
    inst.stop(Duration::from_secs(5)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "no grace wait for an exited container"
    );
    assert_gone(&env, &id, None).await;
}

#[tokio::test]
async fn instances_share_only_the_image() {
    let env = setup();
    let a = httpd("a", "hostname > /www/who");
    let b = httpd("b", "hostname > /www/who");
    let (a_id, b_id, a_port, b_port) = (a.id.clone(), b.id.clone(), a.port, b.port);
    let (ia, ib) = tokio::join!(env.start(a), env.start(b));
    let (ia, ib) = (ia.unwrap(), ib.unwrap());
    assert_eq!(host_get(a_port, "/who").await.1, format!("{a_id}\n"));
    assert_eq!(host_get(b_port, "/who").await.1, format!("{b_id}\n"));
    assert!(!env.rootfs.join("www/who").exists());

    // Same id twice; same port twice.
    let mut dup = httpd("dup", "");
    dup.id = a_id.clone();
    assert!(matches!(
        env.start(dup).await,
        Err(ContainerError::AlreadyExists(_))
    ));
    let mut clash = httpd("clash", "");
    clash.port = a_port;
    assert!(matches!(
        env.start(clash).await,
        Err(ContainerError::PortInUse { .. })
    ));
    assert_eq!(
        host_get(a_port, "/").await.0,
        200,
        "the first instance is unharmed"
    );
    let mut bad = httpd("bad", "");
    bad.id = "Not Valid".into();
    assert!(matches!(
        env.start(bad).await,
        Err(ContainerError::Spec(SpecError::InvalidId(_)))
    ));

    let (ra, rb) = tokio::join!(
        ia.stop(Duration::from_secs(5)),
        ib.stop(Duration::from_secs(5))
    );
    ra.unwrap();
    rb.unwrap();
    // A new instance starts from the image again.
    let mut again = httpd(
        "again",
        "cat /www/who > /www/seen 2>/dev/null || echo none > /www/seen",
    );
    again.id = a_id.clone();
    let port = again.port;
    let inst = env.start(again).await.unwrap();
    assert_eq!(
        host_get(port, "/seen").await.1,
        "none\n",
        "nothing persists across instances"
    );
    inst.stop(Duration::ZERO).await.unwrap();
    assert_gone(&env, &a_id, None).await;
    assert_gone(&env, &b_id, None).await;
}

#[tokio::test]
async fn leftovers_of_a_crashed_run_are_reaped() {
    let env = setup();
    let spec = httpd("crash", "");
    let id = spec.id.clone();
    let inst = env.start(spec).await.unwrap();
    let pid = inst.pid();
    // A crash: no stop(), no Drop.
    std::mem::forget(inst);
    // And a crash between the overlay mount and `runc run`.
    let half = env.state_dir().join("instances/half-made");
    for d in ["upper", "work", "bundle/rootfs"] {
        std::fs::create_dir_all(half.join(d)).unwrap();
    }
    overlay::mount(
        &env.rootfs,
        &half.join("upper"),
        &half.join("work"),
        &half.join("bundle/rootfs"),
    )
    .unwrap();

    let shim = Shim::new(&env.state_dir(), runc_bin()).unwrap();
    assert_eq!(shim.runc().list().await.unwrap().len(), 1);
    let t = Instant::now();
    assert_eq!(shim.reap_leftovers().await.unwrap(), 2);
    eprintln!("reap_leftovers: {:?}", t.elapsed());
    assert!(shim.runc().list().await.unwrap().is_empty());
    let instances = env.state_dir().join("instances");
    assert!(overlay::mounts_under(&instances).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&instances).unwrap().count(), 0);
    // The forgotten instance's exit watcher reaps the killed init.
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_gone(&env, &id, Some(pid)).await;
    assert_eq!(shim.reap_leftovers().await.unwrap(), 0, "idempotent");
}

#[tokio::test]
async fn dropped_instance_is_torn_down() {
    let env = setup();
    let spec = sh("dropped", "exec httpd -f -p $PORT -h /www");
    let id = spec.id.clone();
    let inst = env.start(spec).await.unwrap();
    drop(inst);
    for _ in 0..200 {
        if env.shim.runc().state(&id).await.unwrap().is_none()
            && !env.state_dir().join("instances").join(&id).exists()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_gone(&env, &id, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_none_network_is_reachable_only_through_berth() {
    let env = setup();
    let (host_port, hits) = host_listener().await;
    let mut spec = httpd(
        "iso",
        "cat /sys/class/net/lo/flags > /www/lo-flags\n\
         wget -q -O /dev/null http://127.0.0.1:$HOST_PORT/ 2> /www/egress-err; echo $? > /www/egress\n\
         ls /sys/class/net > /www/ifaces",
    );
    spec.network = NetworkMode::None;
    spec.env.insert("HOST_PORT".into(), host_port.to_string());
    let (id, port) = (spec.id.clone(), spec.port);
    let inst = env.start(spec).await.unwrap();
    eprintln!("isolated cold start: {}", inst.start_timings());

    assert_eq!(
        get(inst.connect().await.unwrap(), "/").await,
        (200, "hello from berth\n".into())
    );
    assert_eq!(
        get(inst.connect().await.unwrap(), "/ifaces").await.1,
        "lo\n"
    );
    let egress = get(inst.connect().await.unwrap(), "/egress").await.1;
    let why = get(inst.connect().await.unwrap(), "/egress-err").await.1;
    assert_eq!(egress, "1\n", "wget from inside: {why}");
    assert!(why.contains("Connection refused"), "{why}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the host listener saw a connection"
    );
    let direct = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await;
    assert!(
        direct.is_err(),
        "the instance port is reachable from the host namespace"
    );
    // Its network was ready before its first instruction: `lo` already up
    // (IFF_UP | IFF_LOOPBACK) when the script began.
    assert_eq!(
        get(inst.connect().await.unwrap(), "/lo-flags").await.1,
        "0x9\n"
    );
    // It runs in the namespace berth made and pinned in its directory, not
    // in the host's.
    use std::os::unix::fs::MetadataExt as _;
    let ns_of = |p: &str| std::fs::metadata(p).unwrap().ino();
    let pinned = env.state_dir().join("instances").join(&id).join("lo-netns");
    let pinned = std::fs::metadata(&pinned).unwrap().ino();
    assert_eq!(ns_of(&format!("/proc/{}/ns/net", inst.pid())), pinned);
    assert_ne!(ns_of("/proc/self/ns/net"), pinned);
    // Many connections: the netns thread serves them all.
    let mut joins = Vec::new();
    for _ in 0..20 {
        let s = inst.connect().await.unwrap();
        joins.push(tokio::spawn(get(s, "/")));
    }
    for j in joins {
        assert_eq!(j.await.unwrap().0, 200);
    }
    let pid = inst.pid();
    inst.stop(Duration::from_secs(5)).await.unwrap();
    assert_gone(&env, &id, Some(pid)).await;
}

#[tokio::test]
async fn cold_start_timings() {
    let env = setup();
    let mut splits = Vec::new();
    for network in [NetworkMode::Host, NetworkMode::None] {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let mut spec = sh("bench", "exec httpd -f -p $PORT -h /www");
            spec.network = network;
            let t = Instant::now();
            let inst = env.start(spec).await.unwrap();
            let wall = t.elapsed();
            let first = get(inst.connect().await.unwrap(), "/").await;
            let first_byte = t.elapsed();
            assert_eq!(first.0, 200);
            runs.push((inst.start_timings(), wall, first_byte));
            let t = Instant::now();
            inst.stop(Duration::ZERO).await.unwrap();
            runs.last_mut().unwrap().2 = first_byte;
            eprintln!(
                "{network:?}: {} | start() {wall:?}, first response {first_byte:?}, stop {:?}",
                runs.last().unwrap().0,
                t.elapsed()
            );
        }
        runs.sort_by_key(|r| r.2);
        let median = runs[runs.len() / 2];
        eprintln!(
            "{network:?} median: {} | first response {:?}",
            median.0, median.2
        );
        splits.push(median);
    }
    assert!(splits.iter().all(|s| s.2 < Duration::from_secs(5)));
}
