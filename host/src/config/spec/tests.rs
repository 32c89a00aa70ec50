//! Unit tests of [`AppSpec`]'s parsing and validation.

use std::path::Path;

use super::*;
use crate::config::AppConfig;

#[test]
fn the_allowed_networks_key() {
    let base = Path::new("/");
    let app = |wasm: bool, nets: &[&str], network: Option<&str>| AppConfig {
        wasm: wasm.then(|| "/x.wasm".into()),
        image: (!wasm).then(|| "r/x:1".into()),
        allowed_networks: nets.iter().map(|s| s.to_string()).collect(),
        network: network.map(String::from),
        ..AppConfig::default()
    };
    let refused = |a: AppConfig| {
        let e = AppSpec::from_config("a", &a, base).unwrap_err();
        assert_eq!(e.key, "allowed_networks");
        e.reason
    };
    for wasm in [true, false] {
        let spec = AppSpec::from_config("a", &app(wasm, &["10.20.0.0/16"], None), base).unwrap();
        assert_eq!(spec.allowed_networks, ["10.20.0.0/16"]);
        assert_eq!(spec.to_config().allowed_networks, ["10.20.0.0/16"]);
        assert!(refused(app(wasm, &["0.0.0.0/0"], None)).contains("wider than /8"));
        assert!(refused(app(wasm, &["10.20.0.1/16"], None)).contains("bits set"));
        assert!(refused(app(wasm, &["127.0.0.0/8"], None)).contains("the host itself"));
    }
    assert!(AppSpec::from_config("a", &app(true, &["fd00:1::/32"], None), base).is_ok());
    assert!(refused(app(false, &["fd00:1::/32"], None)).contains("no IPv6 address"));
    assert!(refused(app(false, &["10.0.0.0/8"], Some("host"))).contains("isolated"));
    assert!(refused(app(false, &["10.0.0.0/8"], Some("none"))).contains("no egress"));
}

#[test]
fn the_seccomp_key() {
    let app = |seccomp: Option<&str>| AppConfig {
        image: Some("r/x:1".into()),
        seccomp: seccomp.map(String::from),
        ..AppConfig::default()
    };
    let base = Path::new("/");
    for (written, mode) in [
        (None, SeccompMode::Default),
        (Some("default"), SeccompMode::Default),
        (Some("unconfined"), SeccompMode::Unconfined),
    ] {
        let spec = AppSpec::from_config("a", &app(written), base).unwrap();
        assert_eq!(spec.container.seccomp, mode, "{written:?}");
        // Round trip: the default is left out, `unconfined` is kept.
        let back = spec.to_config();
        assert_eq!(
            back.seccomp.as_deref(),
            (mode == SeccompMode::Unconfined).then_some("unconfined")
        );
        assert_eq!(AppSpec::from_config("a", &back, base).unwrap(), spec);
    }
    let InvalidSetting { key, reason } =
        AppSpec::from_config("a", &app(Some("off")), base).unwrap_err();
    assert_eq!(key, "seccomp");
    assert!(
        reason.contains("`off`") && reason.contains("unconfined"),
        "{reason}"
    );
    // As the file and the API's JSON say it.
    let toml: AppConfig = toml::from_str("image = \"r/x:1\"\nseccomp = \"unconfined\"").unwrap();
    assert_eq!(toml, app(Some("unconfined")));
    let json = serde_json::to_value(app(Some("unconfined"))).unwrap();
    assert_eq!(json["seccomp"], "unconfined");
}

/// What an instance start would refuse is refused at deploy, naming the key:
/// the container's reserved env (in `env` or `secrets`), a CPU count below
/// the kernel's smallest quota, a readiness path no request can carry.
#[test]
fn what_an_instance_start_refuses_is_refused_at_deploy() {
    let base = Path::new("/");
    let refused = |app: AppConfig| AppSpec::from_config("a", &app, base).unwrap_err();
    let image = || AppConfig {
        image: Some("r/x:1".into()),
        ..AppConfig::default()
    };
    for var in RESERVED_ENV {
        let mut app = image();
        app.env.insert(var.into(), "1".into());
        let e = refused(app.clone());
        assert_eq!(e.key, format!("env.{var}"));
        assert!(e.reason.contains("reserved"), "{e}");
        // A Wasm guest gets none of them: its app may set them.
        app.image = None;
        app.wasm = Some("/x.wasm".into());
        AppSpec::from_config("a", &app, base).unwrap();
    }
    let mut app = image();
    app.secrets.insert("K_REVISION".into(), "s".into());
    assert_eq!(refused(app).key, "secrets.K_REVISION");

    for (cpu, ok) in [(0.001, false), (0.0, false), (0.01, true), (1024.0, true)] {
        let mut app = image();
        app.limits.cpu = Some(cpu);
        match AppSpec::from_config("a", &app, base) {
            Ok(spec) => assert!(ok, "{cpu} accepted: {spec:?}"),
            Err(e) => {
                assert!(!ok, "{cpu} refused: {e}");
                assert_eq!(e.key, "limits.cpu");
            }
        }
    }

    for (path, ok) in [("/healthz", true), ("/a b", false), ("/<x>", false)] {
        let mut app = image();
        app.readiness_path = Some(path.into());
        assert_eq!(
            AppSpec::from_config("a", &app, base).map(|_| ()),
            if ok {
                Ok(())
            } else {
                Err(InvalidSetting::new(
                    "readiness_path",
                    rules::readiness_path(path).unwrap_err(),
                ))
            }
        );
    }
}

/// A spec built in code goes through the same rules as a written one.
#[test]
fn specs_built_in_code_are_checked_by_the_same_rules() {
    let mut spec = AppSpec::image("r/x:1");
    spec.validate().unwrap();
    spec.env.insert("PORT".into(), "1".into());
    assert_eq!(spec.validate().unwrap_err().key, "env.PORT");
    spec.env.clear();
    spec.env.insert("A=B".into(), "1".into());
    assert_eq!(spec.validate().unwrap_err().key, "env");
    spec.env.clear();
    spec.container.cpu = Some(0.005);
    assert_eq!(spec.validate().unwrap_err().key, "limits.cpu");
    spec.container.cpu = None;
    spec.container.pids = Some(0);
    assert_eq!(spec.validate().unwrap_err().key, "limits.pids");
    spec.container.pids = None;
    spec.container.readiness_path = Some("healthz".into());
    assert_eq!(
        spec.validate().unwrap_err().to_string(),
        "key `readiness_path`: `healthz` must start with `/`"
    );
}
