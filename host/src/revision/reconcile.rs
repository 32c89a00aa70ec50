//! The reconcile loop of a revision: sample, decide, converge. Also where
//! instances are started (timed cold starts), evicted and scaled down.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use tokio::time::Instant;

use super::{COLD_START_HISTORY, ColdStartRecord, Revision, Slot};

/// Runs `rev`'s loop until it is stopped or dropped: a step every tick and
/// whenever the activator pokes it.
pub(super) async fn run(rev: Weak<Revision>) {
    let tick = match rev.upgrade() {
        Some(r) => r.tick,
        None => return,
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(r) = rev.upgrade() else { return };
        if r.stopped.load(Ordering::Acquire) {
            return;
        }
        r.reconcile(Instant::now());
        tokio::select! {
            _ = interval.tick() => {}
            () = r.poke.notified() => {}
        }
    }
}

impl Revision {
    /// Starts one instance, records the cold start, and publishes it.
    pub(super) async fn start_one(self: Arc<Self>) -> anyhow::Result<()> {
        self.lock_pool().starting += 1;
        self.start_reserved().await
    }

    /// Starts one instance whose place in `starting` is already counted.
    async fn start_reserved(self: Arc<Self>) -> anyhow::Result<()> {
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let span = self.cold_start_span(id);
        let t = Instant::now();
        let began = SystemTime::now();
        let result = self.backend.start_instance(id).await;
        let duration = t.elapsed();
        if let Some(span) = span {
            match &result {
                Ok(instance) => {
                    // The backend's phases, recorded as they ran.
                    // (A container's `network` runs beside `prepare`.)
                    if let Some(split) = instance.cold_start_split() {
                        let (mut at, mut prev) = (began, began);
                        for (phase, took) in &split.phases {
                            let start = if *phase == "network" { prev } else { at };
                            span.record(*phase, Vec::new(), start, start + *took);
                            prev = start;
                            at = at.max(start + *took);
                        }
                    }
                }
                Err(e) => span.set_error(format!("{e:#}")),
            }
            span.end();
        }
        let stopped = self.stopped.load(Ordering::Acquire);
        let outcome = {
            let mut pool = self.lock_pool();
            pool.starting -= 1;
            match result {
                Ok(instance) if !stopped => {
                    let split = instance.cold_start_split();
                    pool.ready.push(Arc::new(Slot {
                        id,
                        instance,
                        in_flight: AtomicU32::new(0),
                    }));
                    pool.cold_starts += 1;
                    if pool.history.len() == COLD_START_HISTORY {
                        pool.history.pop_front();
                    }
                    pool.history.push_back(ColdStartRecord {
                        at: SystemTime::now(),
                        duration,
                        split,
                    });
                    Ok(None)
                }
                Ok(instance) => Ok(Some(instance)),
                Err(e) => {
                    pool.failures += 1;
                    pool.last_error = Some(format!("{e:#}"));
                    Err(e)
                }
            }
        };
        match outcome {
            Ok(None) => {
                self.metrics
                    .observe_cold_start(self.kind().as_str(), duration);
                tracing::info!(app = %self.app, revision = %self.id, kind = %self.kind(), instance = id, ?duration, "instance ready (cold start)");
                // Room for many: every waiter may find a place.
                self.changed.notify_waiters();
                Ok(())
            }
            Ok(Some(late)) => {
                late.stop(self.grace).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(app = %self.app, revision = %self.id, "instance failed to start: {e:#}");
                self.changed.notify_waiters();
                Err(e)
            }
        }
    }

    /// Marks the queued request that asked for an instance (if one waits) as
    /// having started instance `id`; when that request is traced, the
    /// start's span, under the request's queue span.
    fn cold_start_span(&self, id: u64) -> Option<crate::http::Trace> {
        let trigger = self
            .trigger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        trigger.started.store(true, Ordering::Release);
        if !trigger.trace.is_sampled() {
            return None;
        }
        Some(trigger.trace.child(
            "cold_start",
            opentelemetry::trace::SpanKind::Internal,
            vec![
                opentelemetry::KeyValue::new("berth.app", self.app.clone()),
                opentelemetry::KeyValue::new("berth.revision", self.id.clone()),
                opentelemetry::KeyValue::new("berth.kind", self.kind().as_str()),
                opentelemetry::KeyValue::new("berth.instance", id as i64),
            ],
        ))
    }

    /// Takes a failed instance out of the pool and stops it in the
    /// background; the loop replaces it.
    pub(super) fn evict(&self, slot: &Arc<Slot>, why: &str) {
        let removed = {
            let mut pool = self.lock_pool();
            let before = pool.ready.len();
            pool.ready.retain(|s| !Arc::ptr_eq(s, slot));
            before != pool.ready.len()
        };
        if removed {
            tracing::warn!(app = %self.app, revision = %self.id, instance = slot.id, "instance removed: {why}");
            self.stop_in_background(slot.instance.clone());
            self.poke.notify_one();
        }
    }

    /// One reconcile step: sample, decide, converge.
    pub(super) fn reconcile(self: &Arc<Self>, now: Instant) {
        let demand = self.in_flight.load(Ordering::Acquire) + self.queued.load(Ordering::Acquire);
        let ready = {
            let mut pool = self.lock_pool();
            // Drop instances that died on their own (e.g. a container exited).
            let (alive, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.ready)
                .into_iter()
                .partition(|s| s.instance.is_alive());
            pool.ready = alive;
            for s in dead {
                tracing::warn!(app = %self.app, instance = s.id, "instance exited on its own");
                self.stop_in_background(s.instance.clone());
            }
            pool.ready.len() as u32
        };
        let decision = {
            let now = now.into_std();
            let mut kpa = self.lock_scaler();
            kpa.record(now, demand as f64);
            if ready == 0 && self.queued.load(Ordering::Acquire) > 0 {
                kpa.poke(now, ready)
            } else {
                kpa.decide(now, ready)
            }
        };
        let desired = decision.desired;
        self.backend.scale_hint(desired);
        // Starts are reserved (counted as `starting`) under the lock, before
        // their tasks run, so the next step never starts them twice.
        let to_start = {
            let mut pool = self.lock_pool();
            pool.desired = desired;
            pool.panicking = decision.panicking;
            let actual = pool.ready.len() as u32 + pool.starting;
            let n = desired.saturating_sub(actual);
            pool.starting += n;
            n
        };
        if to_start > 0 {
            for _ in 0..to_start {
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.start_reserved().await;
                });
            }
        } else if desired < ready {
            // Only idle instances go; busy ones are retried next tick.
            for s in self.take_idle((ready - desired) as usize) {
                tracing::info!(app = %self.app, revision = %self.id, instance = s.id, "scaling down");
                self.stop_in_background(s.instance.clone());
            }
        }
    }
}
