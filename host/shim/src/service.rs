//! The task API (v2) containerd speaks to the shim, and the shim's
//! lifecycle (`start`, `delete`, the server).
//!
//! A task is `Created` (component compiled or mapped from the cache, rootfs
//! mounted, stdio open), `Running` (a tokio task in this process), then
//! `Stopped` with an exit status. A pod's sandbox container (the CRI's
//! `pause`, marked by its annotation) is a task that runs nothing until it
//! is killed. Events go out in containerd's order:
//! `/tasks/create`, `/tasks/start`, `/tasks/exit`, `/tasks/delete`. The pid
//! containerd sees for a task is the shim's own: the component runs here.
//!
//! One shim serves every task of a Kubernetes pod (grouped by the CRI's
//! sandbox id, as runc's shim does), one task otherwise. It exits when
//! containerd calls `Shutdown` and no task is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_wasm::{EngineOptions, WasmRuntime};
use containerd_shim::api;
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::ttrpc::{self, Code, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts, Task, TtrpcContext, TtrpcResult};
use tokio::sync::{OnceCell, watch};

use crate::container::{self, Prepared, Workload};
use crate::run::{self, Stop};

/// Wasm instances (requests in guests at once) one shim's engine pools;
/// `BERTH_SHIM_MAX_INSTANCES` in containerd's environment overrides it.
/// Each slot reserves address space for its linear memories, so this is
/// kept well below `berth serve`'s 1000: a node runs many shims.
pub const DEFAULT_MAX_INSTANCES: u32 = 100;

/// The annotation the CRI puts on every container of a pod.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The shim process: `start`, `delete`, and the long-lived server.
pub struct BerthShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    bundle: String,
    /// containerd's gRPC socket (the `-address` it starts shims with).
    address: String,
}

impl std::fmt::Debug for BerthShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BerthShim")
            .field("namespace", &self.namespace)
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Shim for BerthShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            bundle: args.bundle.clone(),
            address: args.address.clone(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // cwd is the bundle: pods share one shim, keyed by the sandbox id.
        let grouping = std::fs::read("config.json")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["annotations"][SANDBOX_ID].as_str().map(String::from))
            .unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // The server removes its socket at exit when this file names it
        // (`containerd-shim` reads `address` from the bundle); without it
        // every task would leave a socket in /run/containerd/s.
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<api::DeleteResponse, Error> {
        // containerd runs `delete` in the bundle when the server is gone:
        // clean up what it would have.
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&self.bundle)
        };
        container::unmount_rootfs(&bundle.join("rootfs"));
        // The dead server's socket.
        if let Ok(address) = std::fs::read_to_string(bundle.join("address"))
            && let Some(path) = address.trim().strip_prefix("unix://")
        {
            use std::os::unix::fs::FileTypeExt as _;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(api::DeleteResponse {
            pid: 0,
            exit_status: 137,
            exited_at: MessageField::some(now()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        Service {
            inner: Arc::new(Inner {
                tasks: Mutex::default(),
                runtime: OnceCell::new(),
                publisher,
                namespace: self.namespace.clone(),
                address: self.address.clone(),
                exit: self.exit.clone(),
            }),
        }
    }
}

/// The task service.
#[derive(Clone, Debug)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    tasks: Mutex<HashMap<String, Arc<TaskEntry>>>,
    runtime: OnceCell<Arc<WasmRuntime>>,
    publisher: RemotePublisher,
    namespace: String,
    address: String,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

enum Phase {
    Created(Workload),
    Starting,
    Running(watch::Sender<Stop>),
    Stopped,
}

struct TaskEntry {
    id: String,
    /// The pid containerd sees: the shim's own (the component runs in it),
    /// or a sandbox's holder process.
    pid: u32,
    bundle: String,
    rootfs: PathBuf,
    mounted: bool,
    stdin: String,
    stdout: String,
    stderr: String,
    phase: Mutex<Phase>,
    /// `(exit status, when)` once stopped.
    exited: watch::Sender<Option<(u32, Timestamp)>>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(Status {
        code: code.into(),
        message: msg.into(),
        ..Default::default()
    })
}

fn not_found(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("task {id} not found"))
}

/// Where the shim keeps compiled components: under containerd's root (so a
/// private containerd gets a private cache), found through the bundle's
/// `work` link (`<root>/io.containerd.runtime.v2.task/<ns>/<id>`);
/// `BERTH_SHIM_DATA_DIR` overrides it.
fn data_dir(bundle: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_SHIM_DATA_DIR") {
        return dir.into();
    }
    std::fs::read_link(bundle.join("work"))
        .ok()
        .and_then(|work| work.ancestors().nth(3).map(Path::to_path_buf))
        .map_or_else(
            || PathBuf::from("/var/lib/containerd/io.containerd.berth.v1"),
            |root| root.join(crate::RUNTIME_ID),
        )
}

impl Inner {
    async fn runtime(&self, bundle: &Path) -> TtrpcResult<Arc<WasmRuntime>> {
        let bundle = bundle.to_path_buf();
        self.runtime
            .get_or_try_init(|| async move {
                let dir = data_dir(&bundle);
                let max_instances = std::env::var("BERTH_SHIM_MAX_INSTANCES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_MAX_INSTANCES);
                let opts = EngineOptions {
                    max_instances,
                    // One app per shim (a pod's containers share it): each may
                    // use the whole pool.
                    max_instances_per_app: Some(max_instances),
                    memory_budget: None,
                    // Nothing is stocked ahead (one app, no autoscaler to size it).
                    ..EngineOptions::default()
                };
                tracing::info!(data_dir = %dir.display(), max_instances, "starting berth's Wasm engine");
                tokio::task::spawn_blocking(move || WasmRuntime::new(&dir, &opts))
                    .await
                    .map_err(|e| status(Code::INTERNAL, e.to_string()))?
                    .map(Arc::new)
                    .map_err(|e| status(Code::INTERNAL, format!("cannot start the engine: {e:#}")))
            })
            .await
            .cloned()
    }

    /// A component task's `Create`: the engine, the rootfs mounted, the
    /// component compiled or mapped. Returns it and whether anything was
    /// mounted (unmounted again when it fails).
    async fn prepare(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        rootfs: &Path,
    ) -> TtrpcResult<(Prepared, bool)> {
        let runtime = self.runtime(bundle).await?;
        let mounted = container::mount_rootfs(&req.rootfs, rootfs)
            .map_err(|e| status(Code::INTERNAL, format!("{e:#}")))?;
        let prepared = {
            let (id, bundle, out, err) = (
                req.id.clone(),
                bundle.to_path_buf(),
                req.stdout.clone(),
                req.stderr.clone(),
            );
            let (address, namespace) = (self.address.clone(), self.namespace.clone());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                // Asked only when the rootfs holds no component.
                let wasm_layer = || {
                    handle.block_on(async {
                        crate::content::Client::connect(&address, &namespace)
                            .await?
                            .wasm_layer(&id)
                            .await
                    })
                };
                container::prepare(&runtime, &id, &bundle, &out, &err, &wasm_layer)
            })
            .await
            .map_err(|e| status(Code::INTERNAL, e.to_string()))
        }?;
        match prepared {
            Ok(p) => {
                tracing::info!(
                    id = %req.id,
                    kind = ?p.loaded.kind,
                    loaded_from = ?p.loaded.loaded_from,
                    sha256 = %p.loaded.sha256,
                    "task created"
                );
                Ok((p, mounted))
            }
            Err(e) => {
                if mounted {
                    container::unmount_rootfs(rootfs);
                }
                tracing::warn!(id = %req.id, "create failed: {e:#}");
                Err(status(Code::FAILED_PRECONDITION, format!("{e:#}")))
            }
        }
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<TaskEntry>> {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    async fn publish(&self, event: impl Event + 'static) {
        let topic = event.topic();
        if let Err(e) = self
            .publisher
            .publish(Default::default(), &topic, &self.namespace, Box::new(event))
            .await
        {
            tracing::warn!(topic, "cannot publish event: {e}");
        }
    }

    /// Records the exit and tells containerd.
    async fn exited(&self, task: &TaskEntry, code: u32) {
        let at = now();
        *task.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Stopped;
        task.exited.send_replace(Some((code, at.clone())));
        tracing::info!(id = %task.id, exit_status = code, "task exited");
        self.publish(TaskExit {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: task.pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
        .await;
    }
}

fn exec_refused(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(status(
            Code::UNIMPLEMENTED,
            "berth's shim runs one component per task: exec is not supported",
        ))
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let me = &self.inner;
        if req.terminal {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "berth's shim gives components no terminal: run without -t",
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(status(Code::UNIMPLEMENTED, "checkpoints are not supported"));
        }
        if me
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&req.id)
        {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("task {} exists", req.id),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs = bundle.join("rootfs");
        let sandbox = container::sandbox(&bundle, &req.stdout, &req.stderr)
            .await
            .map_err(|e| {
                tracing::warn!(id = %req.id, "create failed: {e:#}");
                status(Code::FAILED_PRECONDITION, format!("{e:#}"))
            })?;
        let mut entry_pid = std::process::id();
        let (workload, mounted) = match sandbox {
            Some(sandbox) => {
                entry_pid = sandbox.holder.pid();
                tracing::info!(id = %req.id, holder = entry_pid, "pod sandbox created");
                (Workload::Sandbox(sandbox), false)
            }
            None => {
                let (prepared, mounted) = me.prepare(&req, &bundle, &rootfs).await?;
                (Workload::Component(Box::new(prepared)), mounted)
            }
        };
        let entry = Arc::new(TaskEntry {
            id: req.id.clone(),
            pid: entry_pid,
            bundle: req.bundle.clone(),
            rootfs,
            mounted,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            phase: Mutex::new(Phase::Created(workload)),
            exited: watch::channel(None).0,
        });
        me.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.id.clone(), entry);
        let pid = entry_pid;
        me.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: false,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        })
        .await;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        exec_refused(&req.exec_id)?;
        let me = self.inner.clone();
        let task = me.task(&req.id)?;
        let workload = {
            let mut phase = task.phase.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *phase, Phase::Starting) {
                Phase::Created(w) => w,
                other => {
                    *phase = other;
                    return Err(status(
                        Code::FAILED_PRECONDITION,
                        format!("task {} is not in the created state", req.id),
                    ));
                }
            }
        };
        let (stop_tx, stop_rx) = watch::channel(Stop::No);
        // Spawned only once the start is published: its exit comes after.
        let runner: std::pin::Pin<Box<dyn Future<Output = u32> + Send>> = match workload {
            Workload::Sandbox(sandbox) => Box::pin(run::pause(sandbox, stop_rx)),
            Workload::Component(prepared) => {
                let listener = match run::bind(&prepared) {
                    Ok(l) => l,
                    Err(e) => {
                        *task.phase.lock().unwrap_or_else(|e| e.into_inner()) =
                            Phase::Created(Workload::Component(prepared));
                        return Err(status(Code::FAILED_PRECONDITION, format!("{e:#}")));
                    }
                };
                let runtime = me.runtime(Path::new(&task.bundle)).await?;
                Box::pin(run::run(runtime, *prepared, listener, stop_rx))
            }
        };
        *task.phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Running(stop_tx);
        let pid = task.pid;
        me.publish(TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        })
        .await;
        let runner = tokio::spawn(runner);
        tokio::spawn(async move {
            let code = match runner.await {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(id = %task.id, "the task's runner failed: {e}");
                    run::TRAP_STATUS
                }
            };
            me.exited(&task, code).await;
        });
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        exec_refused(&req.exec_id)?;
        let me = &self.inner;
        let task = me.task(&req.id)?;
        let sig = req.signal;
        let stop = match sig {
            0 => return Ok(api::Empty::default()),
            9 => Stop::Now(9),
            2 | 15 => Stop::Graceful(sig),
            // Ignored by default by a process: SIGCHLD, SIGURG, SIGWINCH.
            17 | 23 | 28 => return Ok(api::Empty::default()),
            19 | 18 => {
                return Err(status(
                    Code::UNIMPLEMENTED,
                    "berth's shim cannot pause a component (SIGSTOP/SIGCONT)",
                ));
            }
            other => Stop::Now(other),
        };
        let created = {
            let mut phase = task.phase.lock().unwrap_or_else(|e| e.into_inner());
            match &*phase {
                Phase::Running(tx) => {
                    // A graceful stop never downgrades a kill already asked for.
                    tx.send_if_modified(|cur| {
                        let upgrade = match (*cur, stop) {
                            (Stop::Now(_), _) => false,
                            (_, Stop::Now(_)) => true,
                            (Stop::No, _) => true,
                            _ => false,
                        };
                        if upgrade {
                            *cur = stop;
                        }
                        upgrade
                    });
                    false
                }
                Phase::Stopped => {
                    return Err(status(Code::NOT_FOUND, "process already finished"));
                }
                Phase::Starting => {
                    return Err(status(Code::UNAVAILABLE, "task is starting; retry"));
                }
                Phase::Created(_) => {
                    *phase = Phase::Stopped;
                    true
                }
            }
        };
        tracing::info!(id = %req.id, signal = sig, "kill");
        if created {
            me.exited(&task, 128 + sig).await;
        }
        Ok(api::Empty::default())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        exec_refused(&req.exec_id)?;
        let task = self.inner.task(&req.id)?;
        let mut rx = task.exited.subscribe();
        let exited = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| status(Code::INTERNAL, "task state lost"))?
            .clone();
        let (code, at) = exited.unwrap_or_default();
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        exec_refused(&req.exec_id)?;
        let me = &self.inner;
        let task = me.task(&req.id)?;
        {
            let phase = task.phase.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*phase, Phase::Running(_) | Phase::Starting) {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("task {} is running; kill it first", req.id),
                ));
            }
        }
        if task.mounted {
            container::unmount_rootfs(&task.rootfs);
        }
        me.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&req.id);
        let (code, at) = task.exited.borrow().clone().unwrap_or_else(|| (0, now()));
        let pid = task.pid;
        me.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: code,
            exited_at: MessageField::some(at.clone()),
            ..Default::default()
        })
        .await;
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let task = self.inner.task(&req.id)?;
        let state = match &*task.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Created(_) | Phase::Starting => {
                containerd_shim::protos::types::task::Status::CREATED
            }
            Phase::Running(_) => containerd_shim::protos::types::task::Status::RUNNING,
            Phase::Stopped => containerd_shim::protos::types::task::Status::STOPPED,
        };
        let exited = task.exited.borrow().clone();
        let mut resp = api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid,
            status: state.into(),
            stdin: task.stdin.clone(),
            stdout: task.stdout.clone(),
            stderr: task.stderr.clone(),
            terminal: false,
            exec_id: req.exec_id,
            ..Default::default()
        };
        if let Some((code, at)) = exited {
            resp.exit_status = code;
            resp.exited_at = MessageField::some(at);
        }
        Ok(resp)
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let task = self.inner.task(&req.id)?;
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::types::task::ProcessInfo {
                pid: task.pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let pid = std::process::id();
        Ok(api::ConnectResponse {
            shim_pid: pid,
            task_pid: pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let me = &self.inner;
        if me
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            tracing::info!("no task left; the shim exits");
            me.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
