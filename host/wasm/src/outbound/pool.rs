//! Idle outbound HTTP/1.1 connections of one app, kept for its next
//! requests.
//!
//! A connection is pooled under the destination it was checked for: the
//! scheme, the very address the allow-list and the address rule passed
//! ([`super::OutboundPolicy::allows_addr`]) and, for `https`, the name the
//! certificate was verified for. A request only takes a connection whose key
//! it computed itself after the same checks, so a name that now resolves
//! elsewhere (DNS rebinding) never reaches a connection made for another
//! address, and a certificate verified for one name never serves another.
//! Each app has its own pool: apps never share a connection.
//!
//! A connection goes back to the pool only when the guest read its
//! response body to the end and hyper says the connection can take another
//! request (keep-alive on both sides, the request body fully sent); a body
//! dropped early, any error, or `Connection: close` ends it. At most
//! `limits.outbound_pool_idle_per_host` idle connections are kept per
//! destination (the oldest is closed past it), each for at most
//! `limits.outbound_pool_idle_timeout`.
//!
//! An idle connection keeps its places in the app's and the host's
//! connection counts ([`super::caps`]): a tenant cannot hoard more sockets
//! idle than its `limits.outbound_connections` allows it in use. It never
//! keeps a connection from being made either: when the app's cap is
//! reached the app's oldest idle connection is closed, when the host's
//! budget is, the oldest idle connection of the app that has the most.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;
use wasmtime_wasi_http::WasiBody;

use super::caps::{HeldConnection, HostOutbound};

/// Default `limits.outbound_pool_idle_per_host`.
pub const DEFAULT_IDLE_PER_HOST: u32 = 16;
/// Default `limits.outbound_pool_idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `limits.outbound_pool_idle_timeout`.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How an app pools its idle outbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per destination; 0 pools nothing (every
    /// request opens its own connection, closed after its response).
    pub idle_per_host: u32,
    /// How long a connection is kept idle.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            idle_per_host: DEFAULT_IDLE_PER_HOST,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What an app's outbound requests did so far (kept across scale to zero,
/// as the stock's counts are).
#[derive(Debug, Default)]
pub struct OutboundCounters {
    opened: AtomicU64,
    reused: AtomicU64,
    refused: AtomicU64,
    idle: AtomicU32,
}

impl OutboundCounters {
    /// The counts now.
    pub fn status(&self) -> OutboundStatus {
        OutboundStatus {
            opened: self.opened.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            idle: self.idle.load(Ordering::Relaxed),
        }
    }

    pub(super) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// An app's outbound connections as counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStatus {
    /// Connections opened (TCP, with TLS for `https`).
    pub opened: u64,
    /// Requests sent on a pooled connection.
    pub reused: u64,
    /// Requests refused by a connection or DNS lookup cap.
    pub refused: u64,
    /// Idle connections in the pool now.
    pub idle: u32,
}

/// Where a pooled connection goes: the scheme, the checked address, and
/// the name TLS verified (`https` only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub(super) https: bool,
    pub(super) addr: SocketAddr,
    pub(super) server_name: Option<Arc<str>>,
}

/// A connection's places in the app's and the host's counts, given back by
/// whichever comes first: the connection ending (its driver task) or the
/// pool closing it.
#[derive(Debug, Clone)]
pub(super) struct ConnHold(Arc<Mutex<Option<HeldConnection>>>);

impl ConnHold {
    pub(super) fn new(held: HeldConnection) -> Self {
        Self(Arc::new(Mutex::new(Some(held))))
    }

    /// Gives the places back now.
    pub(super) fn release(&self) {
        drop(self.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// A live HTTP/1.1 connection between requests.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) sender: SendRequest<WasiBody>,
    pub(super) hold: ConnHold,
}

impl Conn {
    /// Closes the connection and gives its places back at once.
    fn close(self) {
        self.hold.release();
        drop(self.sender);
    }
}

/// One idle connection; counted in the idle gauge while it exists.
#[derive(Debug)]
struct IdleConn {
    conn: Option<Conn>,
    since: Instant,
    counters: Arc<OutboundCounters>,
}

impl IdleConn {
    fn usable(&self, timeout: Duration) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.sender.is_ready() && self.since.elapsed() < timeout)
    }
}

impl Drop for IdleConn {
    fn drop(&mut self) {
        self.counters.idle.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = self.conn.take() {
            conn.close();
        }
    }
}

#[derive(Debug, Default)]
struct Idle {
    by_key: HashMap<PoolKey, VecDeque<IdleConn>>,
    count: usize,
    /// Whether a task closes connections as they time out.
    reaping: bool,
}

impl Idle {
    /// Drops the connections that timed out or whose peer closed them.
    fn prune(&mut self, timeout: Duration) {
        let mut count = 0;
        self.by_key.retain(|_, q| {
            q.retain(|c| c.usable(timeout));
            count += q.len();
            !q.is_empty()
        });
        self.count = count;
    }
}

/// One app's pool, shared by its requests (and listed in the host's
/// budget, which may close its idle connections).
#[derive(Debug)]
pub struct PoolShared {
    settings: PoolSettings,
    idle: Mutex<Idle>,
    counters: Arc<OutboundCounters>,
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle connections now.
    pub(super) fn idle_count(&self) -> usize {
        self.lock().count
    }

    /// Closes the app's oldest idle connection; whether there was one.
    pub(super) fn evict_oldest(&self) -> bool {
        let evicted = {
            let mut idle = self.lock();
            let oldest = idle
                .by_key
                .iter()
                .filter_map(|(k, q)| q.front().map(|c| (c.since, k.clone())))
                .min_by_key(|(since, _)| *since)
                .map(|(_, k)| k);
            let Some(key) = oldest else {
                return false;
            };
            let q = idle.by_key.get_mut(&key).expect("key just seen");
            let evicted = q.pop_front();
            if q.is_empty() {
                idle.by_key.remove(&key);
            }
            idle.count -= 1;
            evicted
        };
        // Closed outside the lock (dropping gives the places back).
        drop(evicted);
        true
    }
}

/// An app's pool of idle outbound connections (a clone shares it).
#[derive(Debug, Clone)]
pub struct OutboundPool {
    shared: Arc<PoolShared>,
}

impl OutboundPool {
    /// An empty pool with `settings`, counting into `counters`, whose idle
    /// connections the host's budget `host` may close.
    pub fn new(
        settings: PoolSettings,
        counters: Arc<OutboundCounters>,
        host: &HostOutbound,
    ) -> Self {
        let shared = Arc::new(PoolShared {
            settings,
            idle: Mutex::new(Idle::default()),
            counters,
        });
        host.register_pool(&shared);
        Self { shared }
    }

    /// The settings.
    pub fn settings(&self) -> PoolSettings {
        self.shared.settings
    }

    /// The counts this pool adds to.
    pub fn counters(&self) -> &Arc<OutboundCounters> {
        &self.shared.counters
    }

    /// Whether connections are pooled at all.
    pub(super) fn enabled(&self) -> bool {
        self.shared.settings.idle_per_host > 0
    }

    /// Idle connections now.
    pub(super) fn idle_count(&self) -> usize {
        self.shared.idle_count()
    }

    /// Closes the app's oldest idle connection; whether there was one.
    pub(super) fn evict_oldest(&self) -> bool {
        self.shared.evict_oldest()
    }

    /// The most recently used idle connection to `key` that can take a
    /// request now, if any (those timed out or closed by the peer are
    /// dropped on the way).
    pub(super) fn take(&self, key: &PoolKey) -> Option<Conn> {
        let timeout = self.shared.settings.idle_timeout;
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.shared.lock();
            let q = idle.by_key.get_mut(key)?;
            let mut found = None;
            while let Some(mut c) = q.pop_back() {
                if c.usable(timeout) {
                    found = c.conn.take();
                    break;
                }
                stale.push(c);
            }
            let taken = stale.len() + usize::from(found.is_some());
            if q.is_empty() {
                idle.by_key.remove(key);
            }
            idle.count -= taken;
            found
        };
        drop(stale);
        found
    }

    /// Keeps `conn` for the next request to `key`, unless pooling is off
    /// or the peer closed it; past `idle_per_host` the destination's
    /// oldest idle connection is closed.
    pub(super) fn put(&self, key: PoolKey, conn: Conn) {
        let settings = self.shared.settings;
        if settings.idle_per_host == 0 || !conn.sender.is_ready() {
            conn.close();
            return;
        }
        self.shared.counters.idle.fetch_add(1, Ordering::Relaxed);
        let entry = IdleConn {
            conn: Some(conn),
            since: Instant::now(),
            counters: self.shared.counters.clone(),
        };
        let (over, reap) = {
            let mut idle = self.shared.lock();
            let q = idle.by_key.entry(key).or_default();
            q.push_back(entry);
            let over = if q.len() > settings.idle_per_host as usize {
                q.pop_front()
            } else {
                None
            };
            idle.count += 1 - usize::from(over.is_some());
            let reap = !std::mem::replace(&mut idle.reaping, true);
            (over, reap)
        };
        drop(over);
        if reap {
            tokio::spawn(reap_idle(Arc::downgrade(&self.shared)));
        }
    }
}

/// Closes a pool's idle connections as they time out, until it has none
/// (the next one put starts it again) or the pool is gone.
async fn reap_idle(pool: Weak<PoolShared>) {
    /// How late past its timeout an idle connection may be closed.
    const SLACK: Duration = Duration::from_millis(50);
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let timeout = pool.settings.idle_timeout;
            let mut idle = pool.lock();
            idle.prune(timeout);
            let next = idle
                .by_key
                .values()
                .filter_map(|q| q.front().map(|c| c.since + timeout))
                .min();
            if next.is_none() {
                idle.reaping = false;
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at + SLACK).await,
            None => return,
        }
    }
}
