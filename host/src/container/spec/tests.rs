//! Unit tests of the runtime spec and the checks of an instance spec.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;

use super::*;
use crate::container::accounts::{resolve_user, tests::accounts};

fn base() -> InstanceSpec {
    InstanceSpec {
        id: "hello-1".into(),
        app: "hello".into(),
        revision: "hello-00001".into(),
        image: ImageConfig {
            entrypoint: vec!["/bin/server".into()],
            cmd: vec!["--flag".into(), "x".into()],
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "A=image".into(),
                "PORT=1".into(),
                "B=image".into(),
            ],
            working_dir: Some("/srv".into()),
            user: None,
        },
        env: BTreeMap::from([("B".into(), "app".into()), ("C".into(), "app".into())]),
        port: 8123,
        limits: ContainerLimits {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(100),
        },
        network: NetworkMode::Host,
        seccomp: SeccompMode::Default,
        readiness: Probe::Tcp,
        startup_timeout: Duration::from_secs(5),
        stop_grace: Duration::from_secs(1),
        allowed_networks: Vec::new(),
    }
}

#[test]
fn image_config_from_json() {
    let blob = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/e"],"Cmd":["a","b"],"Env":["X=1"],"WorkingDir":"","User":"www"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = ImageConfig::from_json(blob).unwrap();
    assert_eq!(c.entrypoint, ["/e"]);
    assert_eq!(c.cmd, ["a", "b"]);
    assert_eq!(c.env, ["X=1"]);
    assert_eq!(c.working_dir, None);
    assert_eq!(c.user.as_deref(), Some("www"));
    // Nulls (Docker writes `"Entrypoint": null`) and a missing config.
    let c = ImageConfig::from_json(br#"{"config":{"Entrypoint":null,"Cmd":["sh"]}}"#).unwrap();
    assert_eq!((c.entrypoint.len(), c.cmd.len()), (0, 1));
    // Nothing to run: refused at deploy, not at each instance start.
    for none in [&b"{}"[..], br#"{"config":{"Entrypoint":null,"Cmd":[]}}"#] {
        assert!(matches!(
            ImageConfig::from_json(none),
            Err(SpecError::NoCommand)
        ));
    }
    assert!(matches!(
        ImageConfig::from_json(b"nope"),
        Err(SpecError::ImageConfig(_))
    ));
}

#[test]
fn image_config_from_an_image_configuration() {
    // What Docker writes: maps for ExposedPorts and Volumes, fields berth
    // does not use (Healthcheck, ArgsEscaped), and a null Entrypoint.
    let blob = br#"{"architecture":"arm64","os":"linux","config":{"ExposedPorts":{"8080/tcp":{}},"Volumes":{"/data":{}},"Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["/srv"],"WorkingDir":"/app","User":"1000:1000","Labels":{"a":"b"},"Healthcheck":{"Test":["NONE"]},"ArgsEscaped":true},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created_by":"x","empty_layer":true}]}"#;
    let image: ImageConfiguration = serde_json::from_slice(blob).unwrap();
    let c = ImageConfig::from(&image);
    assert_eq!(c, ImageConfig::from_json(blob).unwrap());
    assert_eq!(c.cmd, ["/srv"]);
    assert!(c.entrypoint.is_empty());
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    for bad in [
        &br#"{"config":5}"#[..],
        br#"{"config":{"Cmd":"sh"}}"#,
        b"[]",
        b"5",
    ] {
        assert!(
            matches!(ImageConfig::from_json(bad), Err(SpecError::ImageConfig(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn env_order_and_overrides() {
    let env = process_env(&base()).unwrap();
    assert_eq!(
        env,
        [
            "PATH=/opt/bin:/bin",
            "A=image",
            "PORT=8123",
            "B=app",
            "C=app",
            "K_SERVICE=hello",
            "K_REVISION=hello-00001",
            "K_CONFIGURATION=hello",
        ]
    );
    let mut s = base();
    s.image.env = vec!["NOEQUALS".into(), "X=a=b".into()];
    s.env.clear();
    let env = process_env(&s).unwrap();
    assert_eq!(env[0], "X=a=b");
    assert_eq!(env[1], format!("PATH={DEFAULT_PATH}"));
    s.env.insert("K_SERVICE".into(), "x".into());
    assert!(
        matches!(process_env(&s), Err(SpecError::Setting(e)) if e.key == "env.K_SERVICE"),
        "{:?}",
        process_env(&s)
    );
    s.env.clear();
    s.env.insert("A=B".into(), "x".into());
    assert!(matches!(process_env(&s), Err(SpecError::Setting(e)) if e.key == "env"));
}

#[test]
fn runtime_spec_fields() {
    let s = base();
    let user = resolve_user(Some("www"), &accounts()).unwrap();
    let spec = runtime_spec(&s, &user, Path::new("rootfs"), Path::new("/berth/hello-1")).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    let p = &json["process"];
    assert_eq!(p["args"], serde_json::json!(["/bin/server", "--flag", "x"]));
    assert_eq!(p["terminal"], false);
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["user"]["uid"], 33);
    assert_eq!(p["user"]["gid"], 33);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([50, 29]));
    assert_eq!(p["env"][2], "PORT=8123");
    assert!(
        p["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&"CAP_NET_BIND_SERVICE".into())
    );
    assert!(p["capabilities"].get("ambient").is_none());
    assert!(p["capabilities"].get("inheritable").is_none());
    // Hardening (the `hardened_*` tests below check each in detail).
    assert_eq!(p["capabilities"]["bounding"].as_array().unwrap().len(), 9);
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(
        p["rlimits"],
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
    );
    assert_eq!(json["root"]["path"], "rootfs");
    assert_eq!(json["root"]["readonly"], false);
    assert_eq!(json["hostname"], "hello-1");
    let l = &json["linux"];
    assert_eq!(l["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(l["resources"]["cpu"]["quota"], 150_000);
    assert_eq!(l["resources"]["cpu"]["period"], 100_000);
    assert_eq!(l["resources"]["pids"]["limit"], 100);
    assert_eq!(l["resources"]["devices"][0]["allow"], false);
    assert_eq!(l["cgroupsPath"], "/berth/hello-1");
    let ns: Vec<&str> = l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup"]);
    assert!(
        l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.get("path").is_none())
    );
    assert!(
        l["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&"/proc/kcore".into())
    );
    assert!(
        l["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&"/proc/sys".into())
    );
    let mounts: Vec<&str> = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for m in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ] {
        assert!(mounts.contains(&m), "{m} in {mounts:?}");
    }
    let sys = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .unwrap();
    assert!(sys["options"].as_array().unwrap().contains(&"ro".into()));
    let proc = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/proc")
        .unwrap();
    assert_eq!(
        proc["options"],
        serde_json::json!(["nosuid", "noexec", "nodev"])
    );
}

#[test]
fn runtime_spec_of_an_isolated_instance_and_refusals() {
    let s = base();
    let user = resolve_user(Some("www"), &accounts()).unwrap();
    let mut iso = s.clone();
    iso.network = NetworkMode::Isolated;
    // A relative WorkingDir is refused now (`working_dirs`).
    iso.image.working_dir = Some("/rel/dir".into());
    iso.limits = ContainerLimits::default();
    let spec = runtime_spec(
        &iso,
        &ResolvedUser::default(),
        Path::new("/b/rootfs"),
        Path::new("/berth/x"),
    )
    .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["process"]["cwd"], "/rel/dir");
    assert_eq!(json["process"]["user"]["uid"], 0);
    assert!(json["process"]["user"].get("additionalGids").is_none());
    let l = &json["linux"];
    assert!(
        l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network")
    );
    assert!(l["resources"].get("memory").is_none());
    // No CPU or pids limit given: the defaults.
    assert_eq!(l["resources"]["cpu"]["quota"], 100_000);
    assert_eq!(l["resources"]["pids"]["limit"], 1024);

    let mut empty = s.clone();
    empty.image.entrypoint.clear();
    empty.image.cmd.clear();
    assert!(matches!(
        runtime_spec(&empty, &user, Path::new("r"), Path::new("/c")),
        Err(SpecError::NoCommand)
    ));
    let mut bad = s;
    bad.id = "Bad_Id".into();
    assert!(matches!(
        runtime_spec(&bad, &user, Path::new("r"), Path::new("/c")),
        Err(SpecError::InvalidId(_))
    ));
}

fn default_spec(s: &InstanceSpec) -> serde_json::Value {
    let spec = runtime_spec(
        s,
        &ResolvedUser::default(),
        Path::new("rootfs"),
        Path::new("/berth/x"),
    )
    .unwrap();
    serde_json::to_value(&spec).unwrap()
}

#[test]
fn hardened_process() {
    let json = default_spec(&base());
    let p = &json["process"];
    // Set-user-id and file capabilities grant nothing.
    assert_eq!(p["noNewPrivileges"], true);
    // containerd's fourteen less NET_RAW, MKNOD, SETFCAP, SYS_CHROOT,
    // AUDIT_WRITE; the same in the three sets, none inheritable or ambient.
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_KILL",
    ];
    for set in ["bounding", "effective", "permitted"] {
        let mut got: Vec<&str> = p["capabilities"][set]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        got.sort_unstable();
        let mut want = caps.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{set}");
    }
    for gone in ["inheritable", "ambient"] {
        assert!(p["capabilities"].get(gone).is_none(), "{gone}");
    }
    // An explicit open-files limit, containerd's.
    assert_eq!(
        p["rlimits"],
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
    );
}

#[test]
fn hardened_linux() {
    let json = default_spec(&base());
    let l = &json["linux"];
    assert!(
        l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "cgroup" && n.get("path").is_none()),
        "a new cgroup namespace"
    );
    let list = |key: &str| -> Vec<String> { serde_json::from_value(l[key].clone()).unwrap() };
    assert_eq!(
        list("maskedPaths"),
        [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/proc/scsi",
        ]
    );
    assert_eq!(
        list("readonlyPaths"),
        [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    );
    // The default seccomp profile, as stored; none when unconfined.
    let stored: serde_json::Value =
        serde_json::from_str(crate::container::seccomp::DEFAULT_PROFILE_JSON).unwrap();
    assert_eq!(l["seccomp"], stored);
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let mut unconfined = base();
    unconfined.seccomp = SeccompMode::Unconfined;
    let json = default_spec(&unconfined);
    assert!(json["linux"].get("seccomp").is_none());
    // /sys and the cgroup hierarchy (the instance's own, in its
    // namespace) are read-only.
    for dest in ["/sys", "/sys/fs/cgroup"] {
        let m = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap();
        assert!(
            m["options"].as_array().unwrap().contains(&"ro".into()),
            "{dest}"
        );
    }
}

#[test]
fn default_limits_and_no_swap() {
    let mut s = base();
    s.limits = ContainerLimits {
        memory: Some(64 << 20),
        cpus: None,
        pids: None,
    };
    let json = default_spec(&s);
    let r = &json["linux"]["resources"];
    // memory+swap = memory: no swap.
    assert_eq!(r["memory"]["limit"], 64 << 20);
    assert_eq!(r["memory"]["swap"], 64 << 20);
    // One CPU, 1024 processes.
    assert_eq!(r["cpu"]["quota"], 100_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["pids"]["limit"], DEFAULT_PIDS);
    assert_eq!(DEFAULT_PIDS, 1024);
    let spec = runtime_spec(
        &s,
        &ResolvedUser::default(),
        Path::new("r"),
        Path::new("/c"),
    )
    .unwrap();
    assert_eq!(memory_limit(&spec), Some(64 << 20));
    // What the app sets wins.
    s.limits = ContainerLimits {
        memory: None,
        cpus: Some(2.5),
        pids: Some(10_000),
    };
    let json = default_spec(&s);
    let r = &json["linux"]["resources"];
    assert!(r.get("memory").is_none());
    assert_eq!(r["cpu"]["quota"], 250_000);
    assert_eq!(r["pids"]["limit"], 10_000);
}

#[test]
fn working_dirs() {
    for ok in ["/", "/app", "/srv/www", "/app/", "/procfs", "/data/proc"] {
        check_working_dir(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    for bad in [
        "rel/dir",
        "app",
        "./app",
        "/app/../etc",
        "/..",
        "/a//b",
        "//",
        "/a/./b",
        "/proc",
        "/proc/",
        "/proc/self/fd/7",
        "/proc/1/cwd",
        "/a\0b",
    ] {
        let err = check_working_dir(bad).unwrap_err();
        assert!(matches!(err, SpecError::WorkingDir { .. }), "{bad:?}");
        assert!(err.to_string().contains("`WorkingDir`"), "{err}");
    }
    // At deploy: reading the image config refuses it, naming the key.
    let blob = br#"{"config":{"Cmd":["/srv"],"WorkingDir":"/proc/self/fd/7"}}"#;
    let err = ImageConfig::from_json(blob).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image config `WorkingDir` \"/proc/self/fd/7\" is refused: it is under /proc, where \
         /proc/self/fd/N can name a host directory (CVE-2024-21626)"
    );
    let err = ImageConfig::from_json(br#"{"config":{"Cmd":["/srv"],"WorkingDir":"srv/../.."}}"#)
        .unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    // And at instance start, for an ImageConfig made in code.
    let mut s = base();
    s.image.working_dir = Some("/proc/self/cwd".into());
    assert!(matches!(
        runtime_spec(
            &s,
            &ResolvedUser::default(),
            Path::new("r"),
            Path::new("/c")
        ),
        Err(SpecError::WorkingDir { .. })
    ));
}

#[test]
fn limits_validation() {
    assert_eq!(cpu_quota(1.5).unwrap(), 150_000);
    assert_eq!(cpu_quota(0.01).unwrap(), 1_000);
    assert_eq!(cpu_quota(0.333).unwrap(), 33_300);
    for bad in [0.0, -1.0, 0.001, 1025.0, f64::NAN, f64::INFINITY] {
        assert!(cpu_quota(bad).is_err(), "{bad}");
    }
    let mut s = base();
    s.limits.pids = Some(0);
    assert!(matches!(
        runtime_spec(
            &s,
            &ResolvedUser::default(),
            Path::new("r"),
            Path::new("/c")
        ),
        Err(SpecError::Setting(e)) if e.key == "limits.pids"
    ));
    s.limits.pids = None;
    s.limits.memory = Some(u64::MAX);
    assert!(matches!(
        runtime_spec(
            &s,
            &ResolvedUser::default(),
            Path::new("r"),
            Path::new("/c")
        ),
        Err(SpecError::Setting(e)) if e.key == "limits.memory"
    ));
}

#[test]
fn probe_paths() {
    let mut s = base();
    for ok in ["/", "/healthz", "/ready?full=1", "/%3Cok%3E", "/caf\u{e9}"] {
        s.readiness = Probe::Http { path: ok.into() };
        validate(&s).unwrap();
    }
    for bad in ["", "healthz", "/a b", "/x\r\nHost: evil", "/<x>", "/`x`"] {
        s.readiness = Probe::Http { path: bad.into() };
        assert!(
            matches!(validate(&s), Err(SpecError::Setting(e)) if e.key == "readiness_path"),
            "{bad:?}"
        );
    }
}

#[test]
fn ids() {
    for ok in ["a", "hello-1", "0abc", &"x".repeat(63)] {
        validate_id(ok).unwrap();
    }
    for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"x".repeat(64)] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}

/// Deploy (`AppSpec::validate`) and an instance start (this module) accept
/// and refuse the same settings, with the same key: one rule each.
#[test]
fn deploy_and_instance_start_agree() {
    use crate::config::AppSpec;
    let deploy = |edit: &dyn Fn(&mut AppSpec)| {
        let mut spec = AppSpec::image("r/x:1");
        edit(&mut spec);
        spec.validate().err().map(|e| e.key)
    };
    let start = |edit: &dyn Fn(&mut InstanceSpec)| {
        let mut s = base();
        edit(&mut s);
        let user = ResolvedUser::default();
        match validate(&s).and_then(|()| runtime_spec(&s, &user, Path::new("r"), Path::new("/c"))) {
            Ok(_) => None,
            Err(SpecError::Setting(e)) => Some(e.key),
            Err(e) => panic!("not a setting: {e}"),
        }
    };
    for cpu in [0.0, 0.001, 0.009, 0.01, 0.5, 1024.0, 1024.5, f64::NAN] {
        assert_eq!(
            deploy(&|a| a.container.cpu = Some(cpu)),
            start(&|s| s.limits.cpus = Some(cpu)),
            "cpu {cpu}"
        );
    }
    for pids in [-1, 0, 1, 100, crate::config::spec::MAX_PIDS + 1] {
        assert_eq!(
            deploy(&|a| a.container.pids = Some(pids)),
            start(&|s| s.limits.pids = Some(pids)),
            "pids {pids}"
        );
    }
    for var in [
        "GREETING",
        "A=B",
        "",
        "PORT",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
    ] {
        assert_eq!(
            deploy(&|a| {
                a.env.insert(var.into(), "1".into());
            }),
            start(&|s| {
                s.env.insert(var.into(), "1".into());
            }),
            "env {var}"
        );
    }
    for path in ["/", "/healthz", "healthz", "/a b", "/<x>"] {
        assert_eq!(
            deploy(&|a| a.container.readiness_path = Some(path.into())),
            start(&|s| s.readiness = Probe::Http { path: path.into() }),
            "readiness path {path:?}"
        );
    }
}
