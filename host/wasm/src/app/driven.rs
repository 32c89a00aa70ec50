//! The parts of a request's run that outlive [`super::WasmApp::handle`]:
//! the response body that drives its guest, the guest finishing detached,
//! and the meter of its busy time.

use std::fmt;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Guest, GuestBody};

/// A future that adds up the time spent polling the one it wraps.
pub(super) struct Busy<F> {
    inner: Pin<Box<F>>,
    pub(super) busy: Duration,
}

impl<F> Busy<F> {
    pub(super) fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let t = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy += t.elapsed();
        out
    }
}

/// A running guest finishes on its own task (its response is no longer
/// wanted, or fully sent while the guest still runs).
pub(super) fn finish_detached(guest: Guest) {
    tokio::spawn(guest);
}

/// A guest's response body that also drives the guest: each poll for a frame
/// first lets the guest run (it produces the frames), so a response streams
/// without a task of its own. Dropped before the guest is done (the body
/// ended, or the client left), the guest finishes detached.
pub struct DrivenBody {
    pub(super) body: GuestBody,
    pub(super) guest: Option<Guest>,
}

impl fmt::Debug for DrivenBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrivenBody")
            .field("guest_running", &self.guest.is_some())
            .finish_non_exhaustive()
    }
}

impl hyper::body::Body for DrivenBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(guest) = self.guest.as_mut()
            && guest.as_mut().poll(cx).is_ready()
        {
            self.guest = None;
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take() {
            finish_detached(guest);
        }
    }
}
