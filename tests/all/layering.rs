//! The shape of `host/src`: top-level modules only point down the layers of
//! ARCHITECTURE.md's module map, and never in a circle. Every `crate::…`
//! path outside comments counts (a `use` line or an inline path).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top first. A module may use modules of lower layers, and of
/// its own layer when that makes no cycle.
const LAYERS: &[&[&str]] = &[
    &["server", "testing"],
    &["gateway", "api", "console"],
    &["apps"],
    &["revision"],
    &["wasm", "container"],
    &[
        "backend",
        "autoscale",
        "state",
        "oci",
        "config",
        "metrics",
        "http",
        "logs",
        "files",
        "tls",
        "secrets",
        "trace",
    ],
];

/// Edges that must not exist even though the layers would allow them.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("wasm", "container", "the two backends never use each other"),
    ("container", "wasm", "the two backends never use each other"),
    (
        "metrics",
        "*",
        "metrics is a sink fed by callers (it may use `http` only)",
    ),
    (
        "autoscale",
        "*",
        "the autoscaler is pure: it uses nothing of the crate",
    ),
    ("oci", "*", "oci knows nothing of the rest of berth"),
];

/// Allowed exceptions to [`FORBIDDEN`]'s wildcards.
const ALLOWED: &[(&str, &str)] = &[("metrics", "http"), ("oci", "tls")];

/// Top-level module → the top-level modules its files name.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = Path::new(first)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for target in crate_paths(&text) {
                if target != module {
                    out.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    out
}

/// The first segment of every `crate::` path in `text`, comments left out:
/// `crate::a::b`, `crate::{a, b::c}`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `my_crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}` on one line; a group spanning lines
                // lists one item per line, handled by `continuation`.
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    if let Some(name) = ident(item.trim()) {
                        found.insert(name);
                    }
                }
            } else if let Some(name) = ident(rest) {
                found.insert(name);
            }
        }
    }
    found.extend(continuation(text));
    found
}

/// Items of a `use crate::{` group that spans lines.
fn continuation(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        if !inside {
            if code.ends_with("crate::{") {
                inside = true;
            }
            continue;
        }
        if code.starts_with('}') {
            inside = false;
            continue;
        }
        for item in code.split(',') {
            if let Some(name) = ident(item.trim()) {
                found.push(name);
            }
        }
    }
    found
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every rule broken by `graph`, one line each, naming the edge.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in graph {
        let Some(from_layer) = layer_of(from) else {
            out.push(format!(
                "`{from}` is in no layer: add it to LAYERS and ARCHITECTURE.md"
            ));
            continue;
        };
        for to in tos {
            let Some(to_layer) = layer_of(to) else {
                out.push(format!("`{to}` (used by `{from}`) is in no layer"));
                continue;
            };
            if to_layer < from_layer {
                out.push(format!(
                    "`{from}` → `{to}` climbs from layer {from_layer} to layer {to_layer}"
                ));
            }
            for (a, b, why) in FORBIDDEN {
                if a == from
                    && (b == to || *b == "*")
                    && !ALLOWED.contains(&(from.as_str(), to.as_str()))
                {
                    out.push(format!("`{from}` → `{to}` is forbidden: {why}"));
                }
            }
        }
    }
    // Cycles: an edge a → b where b reaches a.
    for (from, tos) in graph {
        for to in tos {
            if reaches(graph, to, from) {
                out.push(format!("`{from}` → `{to}` is on a cycle"));
            }
        }
    }
    out
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, start: &str, goal: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start.to_string()];
    while let Some(m) = stack.pop() {
        if m == goal {
            return true;
        }
        if seen.insert(m.clone())
            && let Some(next) = graph.get(&m)
        {
            stack.extend(next.iter().cloned());
        }
    }
    false
}

#[test]
fn modules_only_point_down_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let graph = edges(&src);
    assert!(
        graph.contains_key("apps") && graph.contains_key("gateway"),
        "the parser found no edges: {graph:?}"
    );
    let broken = violations(&graph);
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// The checker itself: a tree like the one before the layering (metrics
/// reading the server's status; gateway ⇄ revision) is refused, naming the
/// edges.
#[test]
fn the_check_names_a_back_edge_and_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod metrics;\npub mod server;\n");
    write(
        "metrics.rs",
        "use crate::server::AppStatus; // the old back-edge\n",
    );
    write(
        "server.rs",
        "use crate::{\n    metrics::Metrics,\n    gateway,\n};\n",
    );
    write("gateway.rs", "use crate::revision::Revision;\n");
    write(
        "revision/mod.rs",
        "fn f() { crate::gateway::error(); }\n/// [`crate::server`] in a doc comment is no edge\n",
    );
    let graph = edges(dir.path());
    assert_eq!(
        graph["server"],
        ["gateway", "metrics"].map(String::from).into()
    );
    let broken = violations(&graph);
    let text = broken.join("\n");
    assert!(text.contains("`metrics` → `server` climbs"), "{text}");
    assert!(text.contains("`metrics` → `server` is forbidden"), "{text}");
    assert!(text.contains("`revision` → `gateway` climbs"), "{text}");
    assert!(
        text.contains("`gateway` → `revision` is on a cycle"),
        "{text}"
    );
    assert!(!text.contains("`revision` → `server`"), "{text}");
}

/// Everything `package` links (normal and build dependencies, not
/// dev-dependencies, on this platform), itself included, by name: `cargo
/// tree` over the lock file.
fn linked(package: &str) -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "-e", "normal,build"])
        .args(["--prefix", "none", "-p", package, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The server library (`berth`) links neither the command line
/// (`berth-cli`, the `berth` binary) nor the benchmark harness
/// (`berth-bench`): the binary links all three.
#[test]
fn the_product_crate_links_no_bench_and_no_cli() {
    let host = linked("berth");
    assert!(
        host.contains("berth") && host.contains("wasmtime"),
        "the walk found too little: {host:?}"
    );
    for outside in ["berth-bench", "berth-cli", "plotters", "tonic", "clap"] {
        assert!(!host.contains(outside), "berth links `{outside}`");
    }
    let cli = linked("berth-cli");
    assert!(
        cli.contains("berth") && cli.contains("berth-bench"),
        "berth-cli does not link both: {cli:?}"
    );
    let bench = linked("berth-bench");
    assert!(
        bench.contains("berth") && !bench.contains("berth-cli"),
        "{bench:?}"
    );
}

/// The containerd shim links berth's Wasm engine (`berth-wasm`), never the
/// host (`berth`: gateway, API, container runner, autoscaler); the engine
/// links nothing of the host either.
#[test]
fn the_shim_links_the_engine_not_the_host() {
    let host = linked("berth");
    assert!(
        host.contains("berth-wasm") && host.contains("wasmtime"),
        "the walk found too little: {host:?}"
    );
    let shim = linked("berth-shim");
    assert!(
        shim.contains("berth-wasm") && shim.contains("containerd-shim"),
        "{shim:?}"
    );
    assert!(
        !shim.contains("berth"),
        "berth-shim links the berth host crate"
    );
    let engine = linked("berth-wasm");
    assert!(
        !engine.contains("berth") && !engine.contains("berth-shim"),
        "berth-wasm links {engine:?}"
    );
    // What only the host needs stays out of the engine.
    for host_only in ["oci-client", "prometheus-client", "minijinja", "tar"] {
        assert!(!shim.contains(host_only), "berth-shim links `{host_only}`");
    }
}
