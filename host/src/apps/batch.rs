//! Deploying many apps at once, as a host does at start (the config file's
//! apps, then those the state file remembers): the same checks and the
//! same revisions as one deploy each, without paying per app what can be
//! paid once per batch.
//!
//! - Each distinct `.wasm` file is read, hashed and compiled (or mapped
//!   from the compile cache) once: the first app of each file (its
//!   *leader*) loads it, the others share the resident component by the
//!   sha256 the leader found, without reading the file again. Leaders (and
//!   image apps) are built a few at a time (as many as there are CPUs), the
//!   others many at a time ([`FOLLOWERS_AT_ONCE`]).
//! - Each app built goes into the app table at once (so a host stopped
//!   mid-batch stops what was built), but the state file is written once
//!   for the whole batch, atomically as always (temporary file, `fsync`,
//!   rename), and the route table is published once: a deploy of one app
//!   rewrote the whole state file and republished the whole route table,
//!   work that grew with the number of apps already deployed.
//! - The outcome of each app is its own, as with one deploy each: an app
//!   that fails is reported with its reason and the others serve. Route
//!   claims are checked in the batch's order (the config file refuses two
//!   apps with one route; an API app whose route a config app now claims is
//!   refused).
//!
//! The steps ([`Apps::deploy_batch`]): check every app in order, plan who
//! builds what, build the leaders, then the followers, give back the
//! revision numbers of the builds that failed, commit (one state write,
//! one publish), then deploy one by one the apps that were deployed
//! already. Each app of the batch is one [`Slot`] throughout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;

use super::{AppEntry, Apps, DeployError, DeployFailure, Deployed, RoutedApp};
use crate::config::Source;
use crate::revision::Revision;
use crate::state::{PlannedApp, StoredApp};

/// Apps whose component is already resident built at once: their build is
/// a lookup and a few allocations, so this only bounds what waits at once.
pub const FOLLOWERS_AT_ONCE: usize = 64;

/// What one app of a batch came to.
type Outcome = Result<Deployed, DeployError>;

/// One app of a batch, as the steps take it from checked to deployed.
struct Slot<'a> {
    app: &'a PlannedApp,
    /// The revision id handed out once its checks passed.
    id: Option<String>,
    progress: Progress,
}

/// Where an app of a batch is.
enum Progress {
    /// Deployed before the batch: deployed on its own, after it.
    OnItsOwn,
    /// Its checks passed: to be built.
    ToBuild,
    /// Built and in the table, unpublished until the batch commits.
    Built(Deployed),
    /// In the table and the state file, published.
    Deployed(Deployed),
    /// Refused or failed: nothing of it stays.
    Failed(DeployError),
}

/// Who builds what: the first app of each `.wasm` file (its leader) and
/// every image app load or pull; the others (followers) share their
/// leader's component.
#[derive(Debug, Default)]
struct BuildPlan {
    leaders: Vec<usize>,
    /// Each follower with its leader.
    followers: Vec<(usize, usize)>,
    /// Distinct `.wasm` files.
    files: usize,
}

impl BuildPlan {
    fn of(slots: &[Slot<'_>]) -> Self {
        let mut leader_of: HashMap<&Path, usize> = HashMap::new();
        let mut plan = Self::default();
        for (i, slot) in slots.iter().enumerate() {
            if !matches!(slot.progress, Progress::ToBuild) {
                continue;
            }
            match &slot.app.spec.source {
                Source::Wasm(path) => match leader_of.get(path.as_path()) {
                    Some(&leader) => plan.followers.push((i, leader)),
                    None => {
                        leader_of.insert(path.as_path(), i);
                        plan.leaders.push(i);
                    }
                },
                Source::Image(_) => plan.leaders.push(i),
            }
        }
        plan.files = leader_of.len();
        plan
    }
}

impl Apps {
    /// Deploys every app of `batch` (see the [module docs](self)), none of
    /// which may be deployed already (such a name is deployed on its own,
    /// after the batch). Returns each app's outcome, in `batch`'s order.
    pub(super) async fn deploy_batch(&self, batch: &[PlannedApp]) -> Vec<Outcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let mut slots = self.check_batch(batch);
        let plan = BuildPlan::of(&slots);
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get());
        let leaders = plan.leaders.iter().map(|&i| (i, None)).collect();
        self.build_slots(&mut slots, leaders, at_once).await;
        let leaders_done = started.elapsed();
        let followers = plan
            .followers
            .iter()
            .map(|&(i, leader)| match &slots[leader].progress {
                Progress::Built(led) => (i, Some(led.sha256.clone())),
                _ => (i, None),
            })
            .collect();
        self.build_slots(&mut slots, followers, FOLLOWERS_AT_ONCE)
            .await;
        let all_built = started.elapsed();
        self.give_back_failed_ids(&slots);
        self.commit_batch(&mut slots).await;
        let deployed = slots
            .iter()
            .filter(|s| matches!(s.progress, Progress::Deployed(_)))
            .count();
        tracing::info!(
            apps = batch.len(),
            deployed,
            files = plan.files,
            leaders = plan.leaders.len(),
            leaders_ms = leaders_done.as_millis() as u64,
            built_ms = all_built.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "batch deployed"
        );
        self.finish_batch(slots).await
    }

    /// Step 1: the checks of one deploy, in the batch's order (a route that
    /// an app earlier in the batch claimed is taken), under the table's
    /// lock; each app that passes gets its revision id.
    fn check_batch<'a>(&self, batch: &'a [PlannedApp]) -> Vec<Slot<'a>> {
        let table = self.lock_table();
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        let mut slots = Vec::with_capacity(batch.len());
        for app in batch {
            if table.contains_key(&app.name) {
                slots.push(Slot {
                    app,
                    id: None,
                    progress: Progress::OnItsOwn,
                });
                continue;
            }
            let checked = self.check_deploy(&app.name, &app.spec).and_then(|()| {
                super::route_conflict(&table, &claimed, &app.name, &app.spec.routes)
                    .map_err(DeployFailure::from)
            });
            slots.push(match checked {
                Ok(()) => {
                    for r in &app.spec.routes {
                        claimed.insert(r.as_str(), app.name.as_str());
                    }
                    Slot {
                        app,
                        id: Some(self.revision_id(&app.name, &app.record)),
                        progress: Progress::ToBuild,
                    }
                }
                Err(failure) => Slot {
                    app,
                    id: None,
                    progress: Progress::Failed(DeployError::new(&app.name, failure)),
                },
            });
        }
        slots
    }

    /// Steps 2 and 3: builds the apps `which` names (each with the sha256
    /// of its component when its leader found it), `at_once` at a time;
    /// each one built goes into the table, unpublished.
    async fn build_slots(
        &self,
        slots: &mut [Slot<'_>],
        which: Vec<(usize, Option<String>)>,
        at_once: usize,
    ) {
        let builds = which.into_iter().map(|(i, known)| {
            let (app, id) = (slots[i].app, slots[i].id.clone().unwrap_or_default());
            async move {
                let built = self
                    .build_revision(&app.name, &id, &app.spec, known.as_deref())
                    .await;
                (
                    i,
                    built.map(|(revision, info)| self.hold(app, revision, info)),
                )
            }
        });
        let built: Vec<_> = futures::stream::iter(builds)
            .buffer_unordered(at_once)
            .collect()
            .await;
        for (i, built) in built {
            let slot = &mut slots[i];
            slot.progress = match built {
                Ok(info) => Progress::Built(info),
                Err(failure) => Progress::Failed(DeployError::new(&slot.app.name, failure)),
            };
        }
    }

    /// Step 4: the numbers of the builds that failed go back, the latest
    /// first (a number goes back only while it is the latest handed out).
    fn give_back_failed_ids(&self, slots: &[Slot<'_>]) {
        for slot in slots.iter().rev() {
            if let (Some(id), Progress::Failed(_)) = (&slot.id, &slot.progress) {
                self.give_back_revision_id(id, &slot.app.record);
            }
        }
    }

    /// Step 5: one write of the state file and one publish for every app
    /// built. When the write fails nothing of the batch stays: the state
    /// and the table agree.
    async fn commit_batch(&self, slots: &mut [Slot<'_>]) {
        let written = {
            let table = self.lock_table();
            let stored = slots
                .iter()
                .filter_map(|s| match &s.progress {
                    Progress::Built(info) => Some((
                        s.app.name.clone(),
                        StoredApp::new(
                            &s.app.record,
                            info.pinned.clone(),
                            info.revision.clone(),
                            info.sha256.clone(),
                            info.kind,
                        ),
                    )),
                    _ => None,
                })
                .collect();
            let written = self.state.record_many(stored);
            if written.is_ok() {
                self.publish(&table);
            }
            written
        };
        let built = slots
            .iter_mut()
            .filter(|s| matches!(s.progress, Progress::Built(_)));
        let Err(e) = written else {
            for slot in built {
                if let Progress::Built(info) = &slot.progress {
                    self.forget_failed(&slot.app.name);
                    tracing::info!(app = %slot.app.name, revision = %info.revision, "deployed");
                    slot.progress = Progress::Deployed(info.clone());
                }
            }
            return;
        };
        let e = Arc::new(e);
        let mut stops = Vec::new();
        {
            let mut table = self.lock_table();
            for slot in built {
                if let Some(entry) = table.remove(&slot.app.name) {
                    stops.extend(entry.routed.revisions().cloned());
                }
                let failure = DeployFailure::State(Arc::clone(&e));
                slot.progress = Progress::Failed(DeployError::new(&slot.app.name, failure));
            }
        }
        futures::future::join_all(stops.iter().map(|r| r.shutdown())).await;
    }

    /// Step 6: each app's outcome, deploying on their own, in order, the
    /// apps that were deployed before the batch.
    async fn finish_batch(&self, slots: Vec<Slot<'_>>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(slots.len());
        for slot in slots {
            let app = slot.app;
            outcomes.push(match slot.progress {
                Progress::Deployed(info) => Ok(info),
                Progress::Failed(e) => Err(e),
                Progress::OnItsOwn => {
                    self.deploy_recorded(&app.name, &app.spec, app.record.clone())
                        .await
                }
                // Every step above moves each app it takes on; none is left.
                Progress::ToBuild | Progress::Built(_) => Err(DeployError::new(
                    &app.name,
                    DeployFailure::Host(anyhow::anyhow!("the batch left it unbuilt")),
                )),
            });
        }
        outcomes
    }

    /// Puts a built revision of `app` into the table, unpublished (the
    /// batch publishes once), and returns what it deployed.
    fn hold(&self, app: &PlannedApp, revision: Arc<Revision>, info: Deployed) -> Deployed {
        self.lock_table().insert(
            app.name.clone(),
            AppEntry {
                routed: Arc::new(RoutedApp::single(&app.name, revision)),
                routes: app.spec.routes.clone(),
                deployed: info.clone(),
            },
        );
        info
    }
}
