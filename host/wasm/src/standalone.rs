//! The engine without berth's server: what the containerd shim
//! (`host/shim`, binary `containerd-shim-berth-v1`) runs in each container.
//!
//! A component given as bytes is checked, compiled or mapped from the compile
//! cache exactly as [`WasmRuntime::load_app`] does (same key: sha256 of the
//! bytes and the engine's compatibility hash), then classified by what it
//! exports: a wasi:http proxy becomes a [`WasmApp`] (a fresh instance per
//! request, the same request path as `berth serve`), a wasi:cli command is
//! run once by [`WasmRuntime::run_command`] and its exit code returned.
//!
//! This file only adds entry points; the engine, the linker, the limits and
//! the outbound allow-list are the ones `berth serve` uses.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx};
use wasmtime_wasi_http::WasiHttpCtx;

use super::cache::LoadedFrom;
use super::guest::{GuestError, GuestState, Limiter, classify};
use super::outbound::OutboundPolicy;
use super::{LoadError, WasmApp, WasmRuntime, check_component};
use crate::AppSettings;
use crate::limits::Limits;
use crate::logs::AppLog;

/// What a component is, by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    /// Exports `wasi:http/incoming-handler`: served, an instance per request.
    /// (Components built as Rust bins export `wasi:cli/run` too; the
    /// handler wins, as in `wasmtime serve` and runwasi.)
    Http,
    /// Exports `wasi:cli/run` only: run once, its exit code is the result.
    Command,
}

/// A compiled component, classified, not yet running.
pub struct LoadedComponent {
    component: Component,
    shown: String,
    /// What it exports.
    pub kind: ComponentKind,
    /// sha256 (hex) of its bytes.
    pub sha256: String,
    /// Whether it was compiled now or mapped from the compile cache.
    pub loaded_from: LoadedFrom,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("shown", &self.shown)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("loaded_from", &self.loaded_from)
            .finish_non_exhaustive()
    }
}

/// How a command component runs: its arguments (argument 0 included),
/// environment, output and limits.
#[derive(Debug)]
pub struct CommandRun {
    /// `argv`, the program name first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Its stdout (`None`: discarded).
    pub stdout: Option<File>,
    /// Its stderr (`None`: discarded).
    pub stderr: Option<File>,
    /// A host directory the guest sees as `/` (`None`: no filesystem).
    pub root: Option<PathBuf>,
    /// Memory limit per linear memory; `timeout` bounds the whole run
    /// (`Duration::MAX`: none).
    pub limits: Limits,
    /// Outbound HTTP allow-list, as `allowed_outbound_hosts`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Networks in refused ranges it may reach, as `allowed_networks`.
    pub allowed_networks: Vec<String>,
}

/// How a command component ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandExit {
    /// It returned or called `exit`: this status (0 = success).
    Code(i32),
}

impl WasmRuntime {
    /// Checks that `bytes` are a component, compiles them or maps the cached
    /// artifact, and tells a wasi:http proxy from a wasi:cli command. `shown`
    /// names the component in errors and logs.
    ///
    /// # Errors
    /// [`LoadError`]: not a component, does not compile, needs imports berth
    /// does not provide, or exports neither interface.
    pub fn load_component(&self, shown: &str, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        check_component(bytes, shown)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let (component, loaded_from) = self.compile(shown, shown, bytes, &sha256)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                path: shown.into(),
                reason: crate::link_reason(&component, &self.engine, &e),
            })?;
        // A wasi:http component that also exports wasi:cli/run (as
        // toolchains often emit) is served as its handler.
        let kind = match crate::world_of(&component, &self.engine) {
            Ok(_) => ComponentKind::Http,
            Err(_) if CommandPre::new(pre).is_ok() => ComponentKind::Command,
            Err(exports) => {
                return Err(LoadError::Link {
                    path: shown.into(),
                    reason: format!(
                        "exports neither wasi:http/incoming-handler@0.2 or wasi:http/handler@0.3 (a wasi:http component) nor wasi:cli/run (a command): {exports}"
                    ),
                });
            }
        };
        Ok(LoadedComponent {
            component,
            shown: shown.into(),
            kind,
            sha256,
            loaded_from,
        })
    }

    /// A wasi:http component as an app named `name` with `settings`' env,
    /// limits and outbound allow-list; guest output goes to `log`.
    ///
    /// # Errors
    /// [`LoadError`] when it is not a proxy or the allow-list is invalid.
    pub fn http_app(
        &self,
        name: &str,
        loaded: &LoadedComponent,
        settings: impl Into<AppSettings>,
        log: Arc<AppLog>,
    ) -> Result<WasmApp, LoadError> {
        let pre = self.pre(&loaded.component, &loaded.shown)?;
        // Not entered in the resident table: a shim holds one component.
        // No stock either: its target stays zero in a shim.
        let compiled = Arc::new(super::resident::Compiled {
            pre,
            sha256: loaded.sha256.clone(),
            loaded_from: loaded.loaded_from,
            bytes: 0,
        });
        self.app(name, compiled, settings.into(), &[], log, &loaded.shown)
    }

    /// Runs a wasi:cli command component once, to its end.
    ///
    /// # Errors
    /// [`GuestError`] when it trapped, passed its memory limit or its
    /// timeout, or could not be instantiated.
    pub async fn run_command(
        &self,
        loaded: &LoadedComponent,
        run: CommandRun,
    ) -> Result<CommandExit, GuestError> {
        let instance_pre = self
            .linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
        let pre = CommandPre::new(instance_pre).map_err(|e| {
            GuestError::Internal(format!("`{}` is not a command: {e:#}", loaded.shown))
        })?;
        let mut wasi = WasiCtx::builder();
        wasi.args(&run.args).envs(&run.env);
        if let Some(out) = run.stdout {
            wasi.stdout(OutputFile::new(out));
        }
        if let Some(err) = run.stderr {
            wasi.stderr(OutputFile::new(err));
        }
        if let Some(root) = &run.root {
            wasi.preopened_dir(root, "/", FsPerms::ReadWrite)
                .map_err(|e| {
                    GuestError::Internal(format!("cannot open {}: {e:#}", root.display()))
                })?;
        }
        let caps = self.outbound_caps(&run.limits);
        let outbound = OutboundPolicy::new(
            &run.allowed_outbound_hosts,
            &run.allowed_networks,
            caps,
            run.limits.outbound_pool(),
        )
        .map_err(|e| GuestError::Internal(format!("{}: {}", e.key, e.reason)))?;
        let start = Instant::now();
        // No timeout: a deadline no run reaches (100 years).
        let deadline = start
            .checked_add(run.limits.timeout)
            .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(start);
        let mut store = GuestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: outbound,
            limiter: Limiter {
                memory: run.limits.memory,
                in_use: 0,
                budget: self.budget.clone(),
            },
            deadline,
            tasks: None,
            kv: crate::keyvalue::GuestKv::default(),
        }
        .into_store(&self.engine);
        let limits = run.limits;
        let pool = self.max_instances;
        let result = async {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let outcome = if deadline > start {
            tokio::time::timeout_at(deadline.into(), result).await
        } else {
            Ok(result.await)
        };
        match outcome {
            Ok(Ok(Ok(()))) => Ok(CommandExit::Code(0)),
            Ok(Ok(Err(()))) => Ok(CommandExit::Code(1)),
            Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(CommandExit::Code(exit.0)),
                None => Err(classify(e, &limits, pool)),
            },
            Err(_) => Err(GuestError::Deadline(limits.timeout)),
        }
    }
}
