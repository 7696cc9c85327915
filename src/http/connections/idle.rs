//! When a connection is idle: requests in flight are counted from the moment the service
//! is called until the answer's body is finished or dropped, which covers HTTP/1 and every
//! stream of an HTTP/2 connection alike.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

/// The requests in flight on one connection.
pub struct Activity {
    state: watch::Sender<State>,
}

#[derive(Clone, Copy)]
struct State {
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection was accepted).
    idle_since: Instant,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
        })
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| s.in_flight += 1);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`, counted from the later
    /// of this call and the end of the last request.
    pub async fn idle_for(&self, timeout: Duration) {
        let called = Instant::now();
        let mut state = self.state.subscribe();
        loop {
            let now = *state.borrow_and_update();
            if now.in_flight == 0 {
                let deadline = now.idle_since.max(called) + timeout;
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    // The sender lives in `self`: this cannot fail.
                    _ = state.changed() => {}
                }
            } else {
                let _ = state.changed().await;
            }
        }
    }
}

/// One request in flight.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// An answer's body that keeps its request in flight until the body ends.
pub struct Tracked<B> {
    body: B,
    in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Tracked {
            body,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() {
            self.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(100);
        let started = Instant::now();
        activity.idle_for(timeout).await;
        assert!(started.elapsed() >= timeout);

        let request = activity.start();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move {
                let started = Instant::now();
                activity.idle_for(timeout).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(request);
        let waited = idle.await.unwrap();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
