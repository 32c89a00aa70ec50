//! Caps on what guests' outbound requests hold at once: connections per
//! request, per app and across the host, and DNS lookups per app and
//! across the host. Each connection is a file descriptor, and each pending
//! lookup a thread of tokio's blocking pool, so without them one guest
//! could use up the descriptors the listeners, the admin API and the data
//! dir need (a fan-out to a listener that never accepts did exactly that).
//!
//! A guest over a cap gets `connection-limit-reached` at once: nothing
//! waits, nothing is queued. A connection's places in the app's and the
//! host's counts ([`HeldConnection`]) live as long as the connection does,
//! idle in the app's pool ([`super::pool`]) included; its place in a
//! request's count ([`RequestPermit`]) lives until the request is done
//! with it (its response body read or dropped), so a response body the
//! guest keeps reading still counts. An idle connection never keeps a
//! connection from being made: at the app's cap the app's oldest idle
//! connection is closed, at the host's budget the oldest idle one of any
//! app ([`HostOutbound::evict_idle`]).

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pool::PoolShared;

/// Most DNS lookups in flight across the host (tokio's blocking pool,
/// which runs them, has 512 threads).
pub const HOST_LOOKUPS: u32 = 128;
/// Most DNS lookups in flight for one app.
pub const APP_LOOKUPS: u32 = 32;
/// Bounds of the host-wide connection budget derived from the open-files
/// limit (see [`default_host_connections`]).
const HOST_CONNECTIONS_RANGE: (u64, u64) = (64, 16_384);

/// The host-wide connection budget when none is configured: a quarter of
/// the open-files hard limit (which `berth serve` raises its soft limit
/// to), within 64..=16,384, so that three quarters stay for the listeners,
/// the admin API, containers and the data dir whatever guests do.
pub fn default_host_connections() -> u32 {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let (lo, hi) = HOST_CONNECTIONS_RANGE;
    u32::try_from((hard / 4).clamp(lo, hi)).unwrap_or(u32::MAX)
}

/// Which cap refused an outbound request; its text is what berth logs and
/// names the setting that raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapReached {
    /// `limits.outbound_connections_per_request`.
    #[error(
        "the request holds its limit of {0} outbound connections (limits.outbound_connections_per_request)"
    )]
    Request(u32),
    /// `limits.outbound_connections`.
    #[error(
        "the app's requests hold its limit of {0} outbound connections (limits.outbound_connections)"
    )]
    App(u32),
    /// `--max-outbound-connections`.
    #[error(
        "guests hold the host's limit of {0} outbound connections (--max-outbound-connections)"
    )]
    Host(u32),
    /// [`APP_LOOKUPS`].
    #[error("the app has its limit of {0} DNS lookups in flight")]
    AppLookups(u32),
    /// [`HOST_LOOKUPS`].
    #[error("guests have the host's limit of {0} DNS lookups in flight")]
    HostLookups(u32),
}

/// The budget every app of an engine draws from.
#[derive(Debug)]
pub struct HostOutbound {
    connections: Arc<Semaphore>,
    limit: u32,
    lookups: Arc<Semaphore>,
    /// Every app's pool of idle connections, for [`Self::evict_idle`].
    pools: Mutex<Vec<Weak<PoolShared>>>,
}

impl HostOutbound {
    /// A budget of `connections` outbound connections at once.
    pub fn new(connections: u32) -> Arc<Self> {
        Arc::new(Self {
            connections: Arc::new(Semaphore::new(connections as usize)),
            limit: connections,
            lookups: Arc::new(Semaphore::new(HOST_LOOKUPS as usize)),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Lists an app's pool among those [`Self::evict_idle`] may close
    /// connections of (and forgets pools that are gone).
    pub(super) fn register_pool(&self, pool: &Arc<PoolShared>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        // Swept only when the list would grow: amortised O(1) per pool.
        if pools.len() == pools.capacity() {
            pools.retain(|p| p.strong_count() > 0);
        }
        pools.push(Arc::downgrade(pool));
    }

    /// Whether any app has an idle connection [`Self::evict_idle`] could
    /// close.
    pub(super) fn has_idle(&self) -> bool {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .any(|p| p.idle_count() > 0)
    }

    /// Closes the oldest idle connection of the app that has the most,
    /// giving its places in the app's and the host's counts back at once.
    /// Returns whether there was one.
    pub(super) fn evict_idle(&self) -> bool {
        let pools: Vec<_> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        pools
            .iter()
            .max_by_key(|p| p.idle_count())
            .is_some_and(|p| p.evict_oldest())
    }

    /// The configured budget.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Connections guests hold now.
    pub fn in_use(&self) -> u32 {
        self.limit
            .saturating_sub(u32::try_from(self.connections.available_permits()).unwrap_or(0))
    }
}

/// One app's caps, cloned into each of its requests (a clone shares the
/// app's and the host's counts; the request's own count is made on its
/// first outbound request).
#[derive(Debug, Clone)]
pub struct OutboundCaps {
    host: Arc<HostOutbound>,
    app: Arc<Semaphore>,
    app_lookups: Arc<Semaphore>,
    per_app: u32,
    per_request: u32,
    request: Option<Arc<Semaphore>>,
}

impl OutboundCaps {
    /// An app's caps: `per_app` connections across its requests, at most
    /// `per_request` of them for one request, all within `host`'s budget.
    pub fn new(host: Arc<HostOutbound>, per_app: u32, per_request: u32) -> Self {
        Self {
            host,
            app: Arc::new(Semaphore::new(per_app as usize)),
            app_lookups: Arc::new(Semaphore::new(APP_LOOKUPS as usize)),
            per_app,
            per_request,
            request: None,
        }
    }

    /// The same app's caps with a count of its own for a new request.
    #[must_use]
    pub fn for_request(&self) -> Self {
        Self {
            request: None,
            ..self.clone()
        }
    }

    /// Takes one connection from the request's own count.
    ///
    /// # Errors
    /// [`CapReached::Request`].
    pub fn request_slot(&mut self) -> Result<RequestPermit, CapReached> {
        let per_request = self.per_request;
        let held = self
            .request
            .get_or_insert_with(|| Arc::new(Semaphore::new(per_request as usize)))
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapReached::Request(per_request))?;
        Ok(RequestPermit { _held: held })
    }

    /// Takes one connection from the app's and the host's counts, for as
    /// long as the connection lives.
    ///
    /// # Errors
    /// [`CapReached::App`] or [`CapReached::Host`].
    pub fn hold(&self) -> Result<HeldConnection, CapReached> {
        let app = self
            .app
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapReached::App(self.per_app))?;
        let host = self
            .host
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapReached::Host(self.host.limit))?;
        Ok(HeldConnection { _held: [app, host] })
    }

    /// Takes one connection from the request's, the app's and the host's
    /// counts, or names the first that is full.
    ///
    /// # Errors
    /// [`CapReached`] naming the cap.
    pub fn connection(&mut self) -> Result<ConnectionPermit, CapReached> {
        let request = self.request_slot()?;
        let held = self.hold()?;
        Ok(ConnectionPermit { request, held })
    }

    /// The host's budget these caps draw from.
    pub(super) fn host(&self) -> &Arc<HostOutbound> {
        &self.host
    }

    /// Takes one DNS lookup from the app's and the host's counts.
    ///
    /// # Errors
    /// [`CapReached`] naming the cap.
    pub fn lookup(&self) -> Result<LookupPermit, CapReached> {
        let app = self
            .app_lookups
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapReached::AppLookups(APP_LOOKUPS))?;
        let host = self
            .host
            .lookups
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapReached::HostLookups(HOST_LOOKUPS))?;
        Ok(LookupPermit { _held: [app, host] })
    }
}

/// One connection's place in each count, given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    /// Its place in the request's count.
    pub request: RequestPermit,
    /// Its places in the app's and the host's counts.
    pub held: HeldConnection,
}

/// A connection's place in one request's count, given back when dropped.
#[derive(Debug)]
pub struct RequestPermit {
    _held: OwnedSemaphorePermit,
}

/// A connection's places in its app's and the host's counts, given back
/// when dropped.
#[derive(Debug)]
pub struct HeldConnection {
    _held: [OwnedSemaphorePermit; 2],
}

/// One DNS lookup's place in each count, given back when dropped.
#[derive(Debug)]
pub struct LookupPermit {
    _held: [OwnedSemaphorePermit; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_refuses_in_its_own_words_and_permits_come_back() {
        let host = HostOutbound::new(5);
        let mut a = OutboundCaps::new(host.clone(), 3, 2).for_request();
        let first = a.connection().unwrap();
        let _second = a.connection().unwrap();
        assert_eq!(a.connection().unwrap_err(), CapReached::Request(2));
        // Another request of the same app: the app's cap (3) is next.
        let mut b = a.for_request();
        let _third = b.connection().unwrap();
        assert_eq!(b.connection().unwrap_err(), CapReached::App(3));
        // Another app: the host's budget (5) ends it.
        let mut c = OutboundCaps::new(host.clone(), 10, 10).for_request();
        let _fourth = c.connection().unwrap();
        let _fifth = c.connection().unwrap();
        assert_eq!(c.connection().unwrap_err(), CapReached::Host(5));
        assert_eq!(host.in_use(), 5);
        drop(first);
        assert_eq!(host.in_use(), 4);
        let _again = a.connection().expect("a freed permit is reusable");
        assert!(
            c.connection()
                .unwrap_err()
                .to_string()
                .contains("--max-outbound-connections")
        );
    }

    #[test]
    fn lookups_are_capped_per_app() {
        let caps = OutboundCaps::new(HostOutbound::new(64), 64, 64);
        let held: Vec<_> = (0..APP_LOOKUPS).map(|_| caps.lookup().unwrap()).collect();
        assert_eq!(
            caps.lookup().unwrap_err(),
            CapReached::AppLookups(APP_LOOKUPS)
        );
        drop(held);
        assert!(caps.lookup().is_ok());
    }

    #[test]
    fn the_default_budget_leaves_most_descriptors_alone() {
        let n = u64::from(default_host_connections());
        assert!((64..=16_384).contains(&n));
    }
}
