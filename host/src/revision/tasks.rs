//! Background tasks with an owner: each is counted while it runs (a guard
//! it holds drops the count when it ends, by a panic or an abort too), so
//! that the owner can wait for all of them before it reports itself
//! stopped. wasmtime serve counts its connection tasks the same way.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// Spawned tasks, counted until each ends.
#[derive(Debug)]
pub struct Tasks {
    running: Arc<watch::Sender<usize>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// Held by a running task; drops the count when the task ends.
struct Guard(Arc<watch::Sender<usize>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Tasks {
    /// Spawns `task` on the current runtime, counted until it ends.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.running.send_modify(|n| *n += 1);
        let guard = Guard(Arc::clone(&self.running));
        tokio::spawn(async move {
            let _guard = guard;
            task.await
        })
    }

    /// How many are running now.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Waits until none is running (those spawned meanwhile included).
    pub async fn wait(&self) {
        let mut running = self.running.subscribe();
        // The sender lives in `self`: the channel cannot close meanwhile.
        let _ = running.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_returns_once_every_task_ended_even_by_a_panic() {
        let tasks = Tasks::default();
        tasks.wait().await; // none yet
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = rx.await;
        });
        tasks.spawn(async { panic!("a stop that panics") });
        tasks.spawn(tokio::time::sleep(Duration::from_secs(5)));
        let waited = tokio::spawn({
            let running = Arc::clone(&tasks.running);
            async move {
                let mut rx = running.subscribe();
                let _ = rx.wait_for(|n| *n == 0).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            tasks.running(),
            1,
            "the sleeper and the panicking one ended"
        );
        assert!(!waited.is_finished());
        tx.send(()).unwrap();
        tasks.wait().await;
        assert_eq!(tasks.running(), 0);
        waited.await.unwrap();
    }

    #[tokio::test]
    async fn an_aborted_task_is_no_longer_counted() {
        let tasks = Tasks::default();
        let handle = tasks.spawn(std::future::pending::<()>());
        assert_eq!(tasks.running(), 1);
        handle.abort();
        let _ = handle.await;
        tasks.wait().await;
        assert_eq!(tasks.running(), 0);
    }
}
