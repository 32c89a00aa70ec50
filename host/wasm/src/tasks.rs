//! Which request a concurrently used instance is working for right now.
//!
//! Under `reuse = "concurrent"` several requests run in one store, so what
//! the store holds (its stdout and stderr, its outbound policy, its epoch
//! deadline) cannot name one request. wasmtime groups each host → guest
//! call with every subtask it starts into a *task group* and tells a
//! [`TaskGroupHook`] whenever it switches to a thread of another group,
//! guest code and the host calls it makes alike. [`Tasks`] maps each group
//! to its request and follows those switches, so that:
//! - a line a guest writes is tagged with the id of the request whose task
//!   wrote it (the store's [`RequestIdCell`] is set at every switch, and a
//!   line in progress is ended when another request writes: see
//!   [`crate::logs`]);
//! - the epoch deadline a running guest is held to is its own request's;
//! - an outbound connection counts against its own request's
//!   `limits.outbound_connections_per_request`;
//! - CPU time is the time spent in the request's group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use http::Response;
use wasmtime::component::{TaskGroupHook, TaskGroupId};

use crate::app::GuestBody;
use crate::guest::GuestError;
use crate::logs::RequestIdCell;
use crate::outbound::caps::{CapReached, OutboundCaps, RequestPermit};

/// Where a request's response head (or why there is none) goes.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Response<GuestBody>, GuestError>>;

/// One request in a concurrently used instance.
pub(crate) struct Entry {
    /// The request's log tag ([`crate::logs::log_tag`]).
    pub(crate) id: Arc<str>,
    /// When its time is up (head and body).
    pub(crate) deadline: Instant,
    /// Its trace: its outbound requests are client spans under it.
    pub(crate) trace: crate::trace::Trace,
    /// Until the head is answered.
    pub(crate) reply: Option<Reply>,
    /// Its own outbound connection count.
    caps: OutboundCaps,
    /// Time spent in its task group.
    pub(crate) cpu: Duration,
    /// When it was handed to the instance.
    pub(crate) started: Instant,
    /// When the instance's worker called the handler for it (the end of
    /// the host-side start, for [`crate::app::ColdStart`]).
    pub(crate) begun: Arc<OnceLock<Instant>>,
    /// Its deadline passed (answered 504, or its body cut).
    pub(crate) expired: bool,
    /// Its task group finished.
    pub(crate) finished: bool,
    /// Its share of the app's pool slots, given back when it settles.
    pub(crate) _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Entry {
    pub(crate) fn new(
        id: Arc<str>,
        deadline: Instant,
        reply: Reply,
        caps: OutboundCaps,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Self {
            id,
            deadline,
            trace: crate::trace::Trace::default(),
            reply: Some(reply),
            caps,
            cpu: Duration::ZERO,
            started: Instant::now(),
            begun: Arc::default(),
            expired: false,
            finished: false,
            _slot: slot,
        }
    }

    /// Answers the request's head, once.
    pub(crate) fn answer(&mut self, head: Result<Response<GuestBody>, GuestError>) -> bool {
        match self.reply.take() {
            Some(reply) => reply.send(head).is_ok(),
            None => false,
        }
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    /// The group whose thread runs now.
    current: Option<TaskGroupId>,
    entered_at: Option<Instant>,
    /// The request whose group ran last: the culprit when the store fails
    /// (wasmtime finishes every group of a failed store before the error
    /// comes back, so the number is kept, not the group).
    last_entered: Option<u64>,
    /// The group of the call prepared last.
    pub(crate) last_started: Option<TaskGroupId>,
    /// Live groups and their request (wasmtime reuses a group's id once it
    /// finished, so requests are numbered on their own).
    groups: HashMap<TaskGroupId, u64>,
    /// Requests not settled yet, by number.
    pub(crate) entries: HashMap<u64, Entry>,
    next: u64,
}

impl Inner {
    /// Numbers `entry`, the request of `group`.
    pub(crate) fn insert(&mut self, group: TaskGroupId, entry: Entry) -> u64 {
        self.next += 1;
        self.groups.insert(group, self.next);
        self.entries.insert(self.next, entry);
        self.next
    }

    /// The request of a live group.
    pub(crate) fn of_group(&mut self, group: TaskGroupId) -> Option<&mut Entry> {
        let n = *self.groups.get(&group)?;
        self.entries.get_mut(&n)
    }

    /// The request whose task runs now.
    fn running(&mut self) -> Option<&mut Entry> {
        let group = self.current?;
        self.of_group(group)
    }

    /// The number of the request whose task ran last.
    pub(crate) fn last_number(&self) -> Option<u64> {
        self.last_entered
    }
}

/// The requests of one concurrently used instance, by task group.
pub struct Tasks {
    inner: Mutex<Inner>,
    /// The store's log sinks' id cell.
    id: RequestIdCell,
    /// The instance's linear memory, as last sampled by its worker.
    pub(crate) memory: AtomicU64,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl Tasks {
    /// Tasks of a store whose log sinks read `id`.
    pub(crate) fn new(id: RequestIdCell) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            id,
            memory: AtomicU64::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deadline of the request whose task runs now, if one does.
    pub(crate) fn current_deadline(&self) -> Option<Instant> {
        self.lock().running().map(|e| e.deadline)
    }

    /// A place in the running request's own outbound connection count
    /// (or `fallback`'s when no request's task runs).
    ///
    /// # Errors
    /// [`CapReached::Request`].
    pub(crate) fn request_slot(
        &self,
        fallback: &mut OutboundCaps,
    ) -> Result<RequestPermit, CapReached> {
        match self.lock().running() {
            Some(entry) => entry.caps.request_slot(),
            None => fallback.request_slot(),
        }
    }

    /// The trace of the request whose task runs now (empty if none).
    pub(crate) fn current_trace(&self) -> crate::trace::Trace {
        self.lock()
            .running()
            .map(|e| e.trace.clone())
            .unwrap_or_default()
    }

    /// The log tag of the request whose task runs now
    /// ([`crate::logs::NO_REQUEST`] if none).
    pub fn current_id(&self) -> Arc<str> {
        self.lock()
            .running()
            .map_or_else(|| Arc::from(crate::logs::NO_REQUEST), |e| e.id.clone())
    }

    /// The memory last sampled.
    pub(crate) fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// The hook to install in the store.
    pub(crate) fn hook(self: &Arc<Self>) -> Hook {
        Hook(self.clone())
    }
}

/// Follows the store's task groups into [`Tasks`].
pub(crate) struct Hook(Arc<Tasks>);

impl TaskGroupHook for Hook {
    fn handle_start(&mut self, id: TaskGroupId) -> wasmtime::Result<()> {
        self.0.lock().last_started = Some(id);
        Ok(())
    }

    fn handle_enter(&mut self, id: TaskGroupId) -> wasmtime::Result<()> {
        let mut inner = self.0.lock();
        inner.current = Some(id);
        inner.last_entered = inner.groups.get(&id).copied();
        inner.entered_at = Some(Instant::now());
        if let Some(entry) = inner.of_group(id) {
            self.0.id.set(entry.id.clone());
        }
        Ok(())
    }

    fn handle_exit(&mut self, id: TaskGroupId) -> wasmtime::Result<()> {
        let mut inner = self.0.lock();
        let since = inner.entered_at.take();
        inner.current = None;
        if let (Some(entry), Some(t)) = (inner.of_group(id), since) {
            entry.cpu += t.elapsed();
        }
        Ok(())
    }

    fn handle_finish(&mut self, id: TaskGroupId) -> wasmtime::Result<()> {
        let mut inner = self.0.lock();
        if let Some(n) = inner.groups.remove(&id)
            && let Some(entry) = inner.entries.get_mut(&n)
        {
            entry.finished = true;
        }
        Ok(())
    }
}
