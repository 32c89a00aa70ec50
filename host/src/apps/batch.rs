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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt as _;

use super::{AppEntry, Apps, Deployed, RouteConflict, RoutedApp};
use crate::config::Source;
use crate::revision::Revision;
use crate::state::{PlannedApp, StoredApp};

/// Apps whose component is already resident built at once: their build is
/// a lookup and a few allocations, so this only bounds what waits at once.
pub const FOLLOWERS_AT_ONCE: usize = 64;

/// What one app of a batch came to.
type Outcome = anyhow::Result<Deployed>;

impl Apps {
    /// Deploys every app of `batch` (see the [module docs](self)), none of
    /// which may be deployed already (such a name is deployed on its own,
    /// after the batch). Returns each app's outcome, in `batch`'s order.
    pub(super) async fn deploy_batch(&self, batch: &[PlannedApp]) -> Vec<Outcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
        // Checks, in order; a route claimed earlier in the batch is taken.
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        let mut ids: Vec<Option<String>> = vec![None; batch.len()];
        let mut one_by_one = Vec::new();
        {
            let table = self.lock_table();
            for (i, app) in batch.iter().enumerate() {
                if table.contains_key(&app.name) {
                    one_by_one.push(i);
                    continue;
                }
                let checked = self.check_deploy(&app.name, &app.spec).and_then(|()| {
                    let taken = app.spec.routes.iter().find_map(|r| {
                        let owner = claimed.get(r.as_str()).map(|o| (*o).to_string());
                        owner
                            .or_else(|| {
                                table
                                    .iter()
                                    .find(|(_, e)| e.routes.contains(r))
                                    .map(|(o, _)| o.clone())
                            })
                            .map(|owner| RouteConflict {
                                route: r.clone(),
                                owner,
                            })
                    });
                    match taken {
                        Some(conflict) => Err(anyhow::Error::new(conflict)
                            .context(format!("cannot deploy app `{}`", app.name))),
                        None => Ok(()),
                    }
                });
                match checked {
                    Ok(()) => {
                        for r in &app.spec.routes {
                            claimed.insert(r.as_str(), app.name.as_str());
                        }
                        ids[i] = Some(self.revision_id(&app.name, &app.record));
                    }
                    Err(e) => outcomes[i] = Some(Err(e)),
                }
            }
        }
        // Leaders: the first app of each `.wasm` file, and every image app.
        let mut leader_of: HashMap<&Path, usize> = HashMap::new();
        let (mut leaders, mut followers) = (Vec::new(), Vec::new());
        for (i, app) in batch.iter().enumerate() {
            if ids[i].is_none() {
                continue;
            }
            match &app.spec.source {
                Source::Wasm(path) => match leader_of.get(path.as_path()) {
                    Some(&leader) => followers.push((i, leader)),
                    None => {
                        leader_of.insert(path.as_path(), i);
                        leaders.push(i);
                    }
                },
                Source::Image(_) => leaders.push(i),
            }
        }
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get());
        let build = |i: usize, known: Option<String>| {
            let (app, id) = (&batch[i], ids[i].clone().unwrap_or_default());
            async move {
                let built = self
                    .build_revision(&app.name, &id, &app.spec, known.as_deref())
                    .await
                    .with_context(|| format!("cannot deploy app `{}`", app.name));
                (
                    i,
                    built.map(|(revision, info)| self.hold(app, revision, info)),
                )
            }
        };
        let built: Vec<_> = futures::stream::iter(leaders.iter().map(|&i| build(i, None)))
            .buffer_unordered(at_once)
            .collect()
            .await;
        let leaders_done = started.elapsed();
        let sha_of: HashMap<usize, String> = built
            .iter()
            .filter_map(|(i, r)| r.as_ref().ok().map(|d| (*i, d.sha256.clone())))
            .collect();
        for (i, r) in built {
            outcomes[i] = Some(r);
        }
        let built: Vec<_> = futures::stream::iter(
            followers
                .iter()
                .map(|&(i, leader)| build(i, sha_of.get(&leader).cloned())),
        )
        .buffer_unordered(FOLLOWERS_AT_ONCE)
        .collect()
        .await;
        for (i, r) in built {
            outcomes[i] = Some(r);
        }
        let all_built = started.elapsed();
        // Numbers of the builds that failed go back, the latest first (a
        // number goes back only while it is the latest handed out).
        for (i, id) in ids.iter().enumerate().rev() {
            if let Some(id) = id
                && matches!(outcomes[i], Some(Err(_)))
            {
                self.give_back_revision_id(id, &batch[i].record);
            }
        }
        // One write of the state file and one publish for the whole batch.
        let count = outcomes.iter().filter(|o| matches!(o, Some(Ok(_)))).count();
        let written = {
            let table = self.lock_table();
            let stored = batch
                .iter()
                .zip(&outcomes)
                .filter_map(|(app, o)| match o {
                    Some(Ok(info)) => Some((
                        app.name.clone(),
                        StoredApp::new(
                            &app.record,
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
        if let Err(e) = written {
            // Nothing of the batch stays: the state and the table agree.
            let mut stops = Vec::new();
            {
                let mut table = self.lock_table();
                for (app, o) in batch.iter().zip(outcomes.iter_mut()) {
                    if matches!(o, Some(Ok(_))) {
                        if let Some(entry) = table.remove(&app.name) {
                            stops.extend(entry.routed.revisions().cloned());
                        }
                        *o = Some(Err(anyhow::anyhow!("{e}")
                            .context(format!("cannot deploy app `{}`", app.name))));
                    }
                }
            }
            futures::future::join_all(stops.iter().map(|r| r.shutdown())).await;
        } else {
            for (app, o) in batch.iter().zip(&outcomes) {
                if let Some(Ok(info)) = o {
                    self.forget_failed(&app.name);
                    tracing::info!(app = %app.name, revision = %info.revision, "deployed");
                }
            }
        }
        tracing::info!(
            apps = batch.len(),
            deployed = count,
            files = leader_of.len(),
            leaders = leaders.len(),
            leaders_ms = leaders_done.as_millis() as u64,
            built_ms = all_built.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "batch deployed"
        );
        for i in one_by_one {
            let app = &batch[i];
            outcomes[i] = Some(
                self.deploy_recorded(&app.name, &app.spec, app.record.clone())
                    .await,
            );
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(anyhow::anyhow!("not deployed"))))
            .collect()
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
