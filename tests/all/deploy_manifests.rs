//! `deploy/kubernetes/`: every manifest parses, and the fields that tie them
//! together agree: the RuntimeClass handler is the runtime containerd's
//! config registers (and the installer adds), that runtime is the shim's,
//! the Knative Service runs on the RuntimeClass with an image reference
//! berth parses, and each autoscaling annotation carries the setting of the
//! berth app it is the Knative form of (`berth-app.toml`).

use std::path::{Path, PathBuf};

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Every YAML document of `file`, as JSON values.
fn yaml_docs(file: &str) -> Vec<Value> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn one_of_kind(docs: &[Value], kind: &str) -> Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0].clone()
}

#[test]
fn every_manifest_parses_with_api_version_kind_and_name() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        for doc in yaml_docs(&name) {
            for key in ["apiVersion", "kind"] {
                assert!(doc[key].is_string(), "{name}: a document without {key}");
            }
            assert!(
                doc["metadata"]["name"].is_string(),
                "{name}: a document without metadata.name"
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} documents under deploy/kubernetes");
}

#[test]
fn runtime_class_containerd_config_and_installer_agree() {
    let rc = one_of_kind(&yaml_docs("runtimeclass.yaml"), "RuntimeClass");
    assert_eq!(rc["apiVersion"], "node.k8s.io/v1");
    assert_eq!(rc["metadata"]["name"], "berth");
    let handler = rc["handler"].as_str().expect("handler");
    assert_eq!(handler, "berth");
    let node_label = rc["scheduling"]["nodeSelector"]
        .as_object()
        .expect("scheduling.nodeSelector");

    // containerd's CRI config registers the handler with the shim's runtime.
    let text = std::fs::read_to_string(dir().join("containerd-config.toml")).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(config["version"].as_integer(), Some(2));
    let runtime =
        &config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"][handler];
    assert_eq!(
        runtime["runtime_type"].as_str(),
        Some("io.containerd.berth.v1")
    );
    // containerd's naming rule: io.containerd.NAME.vN → containerd-shim-NAME-vN,
    // the binary host/shim builds.
    let shim_manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shim/Cargo.toml"))
            .unwrap();
    assert!(shim_manifest.contains("name = \"containerd-shim-berth-v1\""));

    // The installer runs on the nodes the RuntimeClass schedules to, as a
    // privileged pod with the host's root and PID namespace, and adds the
    // same runtime block.
    let docs = yaml_docs("node-installer.yaml");
    let ds = one_of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"].as_object().expect("nodeSelector"),
        node_label
    );
    assert_eq!(pod["hostPID"], true);
    let install = pod["initContainers"]
        .as_array()
        .expect("initContainers")
        .iter()
        .find(|c| c["name"] == "install")
        .expect("an install init container");
    assert_eq!(install["securityContext"]["privileged"], true);
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/"),
        "the node's root is mounted"
    );
    let cm = one_of_kind(&docs, "ConfigMap");
    let script = cm["data"]["install.sh"].as_str().expect("install.sh");
    assert!(script.contains("SHIM=containerd-shim-berth-v1"));
    assert!(script.contains("/usr/local/bin/$SHIM"));
    assert!(script.contains(&format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}]"
    )));
    assert!(script.contains("runtime_type = \"io.containerd.berth.v1\""));
    assert_eq!(ds["metadata"]["namespace"], cm["metadata"]["namespace"]);
}

#[test]
fn knative_service_carries_the_berth_apps_settings() {
    let svc = one_of_kind(&yaml_docs("knative-service.yaml"), "Service");
    assert_eq!(svc["apiVersion"], "serving.knative.dev/v1");
    let template = &svc["spec"]["template"];
    let spec = &template["spec"];
    assert_eq!(spec["runtimeClassName"], "berth");
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let image = containers[0]["image"].as_str().expect("image");
    berth::oci::parse_reference(image).unwrap_or_else(|e| panic!("image {image:?}: {e}"));

    let path = dir().join("berth-app.toml");
    let config = berth::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let (name, app) = config.apps.iter().next().expect("an app");
    assert_eq!(svc["metadata"]["name"].as_str(), Some(name.as_str()));
    assert_eq!(
        Some(image),
        match &app.source {
            berth::config::Source::Image(r) => Some(r.as_str()),
            _ => None,
        }
    );
    let k = &app.scaling.autoscale;
    let ann = template["metadata"]["annotations"]
        .as_object()
        .expect("annotations");
    let get = |key: &str| {
        ann.get(&format!("autoscaling.knative.dev/{key}"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("annotation autoscaling.knative.dev/{key}"))
            .to_string()
    };
    let secs = |d: std::time::Duration| format!("{}s", d.as_secs());
    assert_eq!(get("class"), "kpa.autoscaling.knative.dev");
    assert_eq!(get("metric"), "concurrency");
    assert_eq!(get("min-scale"), k.min_scale.to_string());
    assert_eq!(get("max-scale"), k.max_scale.to_string());
    assert_eq!(get("target"), k.target.expect("target").to_string());
    assert_eq!(
        get("target-utilization-percentage"),
        format!("{}", (k.utilization * 100.0).round())
    );
    assert_eq!(get("window"), secs(k.stable_window));
    assert_eq!(
        get("panic-window-percentage"),
        k.panic_window_percentage.to_string()
    );
    assert_eq!(
        get("panic-threshold-percentage"),
        k.panic_threshold_percentage.to_string()
    );
    assert_eq!(get("scale-down-delay"), secs(k.scale_down_delay));
    assert_eq!(get("initial-scale"), k.initial_scale.to_string());
    assert_eq!(
        spec["containerConcurrency"].as_u64(),
        k.concurrency.map(u64::from)
    );
    assert_eq!(
        spec["timeoutSeconds"].as_u64(),
        Some(app.limits.timeout.as_secs())
    );

    // What the shim reads from the environment.
    let env: std::collections::BTreeMap<String, String> = containers[0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (k, v) in &app.env {
        assert_eq!(env.get(k), Some(v), "env {k}");
    }
    assert_eq!(
        berth::config::parse_size(&env["BERTH_MEMORY_LIMIT"]).unwrap(),
        app.limits.memory
    );
    assert_eq!(
        env["BERTH_ALLOWED_OUTBOUND_HOSTS"],
        app.allowed_outbound_hosts.join(",")
    );
}
