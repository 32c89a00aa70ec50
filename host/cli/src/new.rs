//! `berth new NAME --template rust|rust-p3|container`: a project that builds
//! as it is, made from the examples berth is tested with
//! (`examples/sdk-hello`, `examples/sdk-service`, `examples/container-hello`),
//! renamed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// What kind of project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A Wasm component written with berth-sdk, built with plain cargo for
    /// wasm32-wasip2.
    Rust,
    /// A WASIp3 component (`wasi:http/handler@0.3`, an async
    /// `#[http_service]` handler) written with berth-sdk, built with plain
    /// cargo for wasm32-wasip2.
    RustP3,
    /// A static HTTP server (x86_64-unknown-linux-musl) and a script that
    /// packs it into an image and pushes it.
    Container,
}

/// Arguments of `berth new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The app's name: the directory, the crate and the app (lowercase
    /// letters, digits and `-`).
    pub name: String,
    /// The kind of project.
    #[arg(long, value_enum, default_value = "rust")]
    pub template: Template,
    /// Where to create the directory [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The berth-sdk crate the Rust template depends on [default: the SDK
    /// of the checkout this berth was built from].
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

const SDK_MAIN: &str = include_str!("../../../examples/sdk-hello/src/main.rs");
const SDK_SERVICE_MAIN: &str = include_str!("../../../examples/sdk-service/src/main.rs");
const CONTAINER_MAIN: &str = include_str!("../../../examples/container-hello/src/main.rs");
const CONTAINER_PUSH: &str = include_str!("../../../examples/container-hello/build-and-push.sh");

/// Creates the project and prints how to build, deploy and call it.
///
/// # Errors
/// A bad name, a directory that exists already, no SDK for the Rust
/// template, or a file that cannot be written.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    berth::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
    let root = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = root.join(&args.name);
    anyhow::ensure!(
        !dir.exists(),
        "`{}` exists already: choose another name or --dir",
        dir.display()
    );
    let files = match args.template {
        Template::Rust => rust_files(
            &args.name,
            &sdk_path(args.sdk.as_deref())?,
            ("sdk-hello", SDK_MAIN),
        ),
        Template::RustP3 => rust_files(
            &args.name,
            &sdk_path(args.sdk.as_deref())?,
            ("sdk-service", SDK_SERVICE_MAIN),
        ),
        Template::Container => container_files(&args.name),
    };
    for (path, text, executable) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let name = &args.name;
    let next = match args.template {
        Template::Rust | Template::RustP3 => format!(
            "created {dir}\n\n  cd {dir} && cargo build --release\n  berth deploy {name} --wasm target/wasm32-wasip2/release/{name}.wasm\n  curl http://{name}.localhost:8080/\n",
            dir = dir.display()
        ),
        Template::Container => format!(
            "created {dir}\n\n  {dir}/build-and-push.sh 127.0.0.1:5000/{name}:v1\n  berth deploy {name} --image 127.0.0.1:5000/{name}:v1\n  curl http://{name}.localhost:8080/\n",
            dir = dir.display()
        ),
    };
    print!("{next}");
    Ok(())
}

/// `--sdk`, else the SDK next to the sources this binary was built from.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => std::path::absolute(p)?,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk"),
    };
    let path = path.canonicalize().unwrap_or(path);
    anyhow::ensure!(
        path.join("Cargo.toml").is_file(),
        "no berth-sdk at `{}`: give its directory with --sdk",
        path.display()
    );
    Ok(path)
}

type Files = Vec<(&'static str, String, bool)>;

/// The Rust templates: `example` is the example crate's name and its
/// `src/main.rs`.
fn rust_files(name: &str, sdk: &Path, (example, source): (&str, &str)) -> Files {
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
berth-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
debug = false
"#,
        sdk = sdk.display().to_string()
    );
    let main = source
        .replace(example, name)
        .replace(
            "(cd examples && cargo build --release)",
            "cargo build --release",
        )
        .replace(
            "./target/release/berth serve --config examples/",
            "berth serve --config ",
        )
        .replace(&format!("{name}/berth.toml"), "berth.toml");
    vec![
        ("Cargo.toml", manifest, false),
        (
            ".cargo/config.toml",
            "[build]\ntarget = \"wasm32-wasip2\"\n".to_string(),
            false,
        ),
        ("src/main.rs", main, false),
        (
            "berth.toml",
            format!(
                "# berth serve --config berth.toml\n[apps.{name}]\nwasm = \"target/wasm32-wasip2/release/{name}.wasm\"\nenv = {{ GREETING = \"hello\" }}\n"
            ),
            false,
        ),
        (".gitignore", "/target\n".to_string(), false),
    ]
}

fn container_files(name: &str) -> Files {
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# Built for x86_64-unknown-linux-musl (a static binary) by build-and-push.sh.
[dependencies]
signal-hook = "0.3"

[profile.release]
opt-level = "s"
strip = true
lto = true
"#
    );
    let main = CONTAINER_MAIN
        .replace("examples/container-hello/", "./")
        .replace("container-hello", name);
    let push = CONTAINER_PUSH
        .replace("examples/container-hello/", "./")
        .replace("container-hello", name);
    vec![
        ("Cargo.toml", manifest, false),
        ("src/main.rs", main, false),
        ("build-and-push.sh", push, true),
        (".gitignore", "/target\n".to_string(), false),
    ]
}
