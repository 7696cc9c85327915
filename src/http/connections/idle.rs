//! What a connection is doing: requests in flight are counted from the moment the service
//! is called until the answer's body is finished or dropped, which covers HTTP/1 and every
//! stream of an HTTP/2 connection alike. Others read it to pick a connection to close
//! (the connection table, when full) and to find answers the client stopped taking (the
//! send timeout), and tell the connection to end.
//!
//! Answers waiting for the client are counted by epoch: an answer's body that handed out
//! its head or a frame counts in the current epoch's slot until it is polled again (hyper
//! polls for more only once it could send what it has). A checker advances the epoch every
//! half send timeout; an answer still counted two epochs back has waited a whole timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

/// Epoch slots: the current epoch's, the one before, and the one checked.
const EPOCHS: usize = 3;

/// The requests in flight on one connection, and whether it was told to end.
pub struct Activity {
    state: watch::Sender<State>,
    /// Answer bodies waiting for the client to take what they handed out, by epoch slot.
    waiting: [AtomicUsize; EPOCHS],
    /// Advanced only by the checker (`check_stalled`).
    epoch: AtomicUsize,
}

#[derive(Clone, Copy)]
struct State {
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection was accepted).
    idle_since: Instant,
    /// Whether a request on it has been answered.
    answered: bool,
    ending: Option<End>,
}

/// Why someone else ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It was idle, and its place is given to a new connection.
    Evicted,
    /// An answer waited a whole send timeout for the client to take more of it.
    Stalled,
}

/// Why a connection should close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// No request in flight for the whole timeout.
    Idle,
    Ended(End),
}

/// A connection with no request in flight, as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub since: Instant,
    pub answered: bool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                answered: false,
                ending: None,
            }),
            waiting: Default::default(),
            epoch: AtomicUsize::new(0),
        })
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| s.in_flight += 1);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Since when the connection has had no request in flight, unless it has one or was
    /// told to end.
    pub fn idle(&self) -> Option<Idle> {
        let state = self.state.borrow();
        (state.in_flight == 0 && state.ending.is_none()).then_some(Idle {
            since: state.idle_since,
            answered: state.answered,
        })
    }

    /// Tells the connection to end (the first reason given counts).
    pub fn end(&self, end: End) {
        self.state.send_if_modified(|s| {
            let first = s.ending.is_none();
            if first {
                s.ending = Some(end);
            }
            first
        });
    }

    /// Resolves once no request has been in flight for `timeout`, counted from the later
    /// of this call and the end of the last request, or once the connection is told to
    /// end.
    pub async fn closing(&self, timeout: Duration) -> Closing {
        let called = Instant::now();
        let mut state = self.state.subscribe();
        loop {
            let now = *state.borrow_and_update();
            if let Some(end) = now.ending {
                return Closing::Ended(end);
            }
            if now.in_flight == 0 {
                let deadline = now.idle_since.max(called) + timeout;
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Closing::Idle,
                    // The sender lives in `self`: this cannot fail.
                    _ = state.changed() => {}
                }
            } else {
                let _ = state.changed().await;
            }
        }
    }

    /// Called every half send timeout by one checker: whether an answer has waited for
    /// the client since two epochs ago (a whole send timeout at least); else the next
    /// epoch begins.
    pub fn check_stalled(&self) -> bool {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let next = (epoch + 1) % EPOCHS;
        if self.waiting[next].load(Ordering::Relaxed) > 0 {
            return true;
        }
        self.epoch.store(next, Ordering::Relaxed);
        false
    }

    /// Counts an answer as waiting for the client; returns its slot.
    fn wait(&self) -> usize {
        let slot = self.epoch.load(Ordering::Relaxed);
        self.waiting[slot].fetch_add(1, Ordering::Relaxed);
        slot
    }

    fn taken(&self, slot: usize) {
        self.waiting[slot].fetch_sub(1, Ordering::Relaxed);
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
            s.answered = true;
        });
    }
}

/// An answer's body that keeps its request in flight until the body ends, counts as
/// waiting for the client from when it is handed to hyper until hyper asks for more, and
/// holds `G` (what else counts the request) as long.
pub struct Tracked<B, G> {
    body: B,
    in_flight: Option<InFlight>,
    /// The epoch slot it waits in, while hyper has what it last handed out.
    waiting: Option<usize>,
    guard: Option<G>,
}

impl<B, G> Tracked<B, G> {
    /// `body`, waiting from now: hyper has its head to send.
    pub fn new(body: B, in_flight: InFlight, guard: Option<G>) -> Self {
        let waiting = Some(in_flight.0.wait());
        Tracked {
            body,
            in_flight: Some(in_flight),
            waiting,
            guard,
        }
    }

    fn stop_waiting(&mut self) {
        if let (Some(slot), Some(in_flight)) = (self.waiting.take(), &self.in_flight) {
            in_flight.0.taken(slot);
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Tracked<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.stop_waiting();
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(_) => {
                if let Some(in_flight) = &self.in_flight {
                    self.waiting = Some(in_flight.0.wait());
                }
            }
            None => {
                self.in_flight = None;
                self.guard = None;
            }
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

impl<B, G> Drop for Tracked<B, G> {
    fn drop(&mut self) {
        self.stop_waiting();
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
        assert_eq!(activity.closing(timeout).await, Closing::Idle);
        assert!(started.elapsed() >= timeout);

        let request = activity.start();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move {
                let started = Instant::now();
                activity.closing(timeout).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(request);
        let waited = idle.await.unwrap();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn a_connection_told_to_end_closes_whatever_it_does() {
        let activity = Activity::new();
        let request = activity.start();
        assert!(activity.idle().is_none());
        let closing = tokio::spawn({
            let activity = activity.clone();
            async move { activity.closing(Duration::from_secs(3600)).await }
        });
        activity.end(End::Stalled);
        activity.end(End::Evicted);
        assert_eq!(closing.await.unwrap(), Closing::Ended(End::Stalled));
        drop(request);
        assert!(activity.idle().is_none(), "ending connections are not idle");
    }

    #[test]
    fn idle_connections_say_since_when_and_whether_they_answered() {
        let activity = Activity::new();
        let accepted = activity.idle().unwrap();
        assert!(!accepted.answered);
        drop(activity.start());
        let answered = activity.idle().unwrap();
        assert!(answered.answered);
        assert!(answered.since >= accepted.since);
    }

    /// Polls `body` once, as hyper asks for the next frame.
    fn poll(body: &mut Tracked<http_body_util::StreamBody<Frames>, ()>) -> Poll<bool> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|frame| frame.is_some())
    }

    type Frames = futures_util::stream::Iter<
        std::vec::IntoIter<Result<Frame<bytes::Bytes>, std::convert::Infallible>>,
    >;

    #[test]
    fn an_answer_the_client_does_not_take_is_stalled_after_two_epochs() {
        let activity = Activity::new();
        let frames: Frames = futures_util::stream::iter(vec![
            Ok(Frame::data(bytes::Bytes::from_static(b"a"))),
            Ok(Frame::data(bytes::Bytes::from_static(b"b"))),
        ]);
        let mut body = Tracked::new(
            http_body_util::StreamBody::new(frames),
            activity.start(),
            None::<()>,
        );
        // The head waits; hyper takes it and the first frame in the same epoch.
        assert_eq!(poll(&mut body), Poll::Ready(true));
        assert!(!activity.check_stalled());
        // Hyper comes back for more within the next epoch: the client takes what it gets.
        assert_eq!(poll(&mut body), Poll::Ready(true));
        assert!(!activity.check_stalled());
        assert!(!activity.check_stalled());
        // The second frame was handed out two checks ago and not taken since.
        assert!(activity.check_stalled());
        assert_eq!(poll(&mut body), Poll::Ready(false));
        assert!(!activity.check_stalled());
        drop(body);
        assert!(!activity.check_stalled());
        assert!(!activity.check_stalled());
        assert!(!activity.check_stalled());
    }

    #[test]
    fn a_dropped_answer_waits_no_more() {
        let activity = Activity::new();
        let body = Tracked::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
            activity.start(),
            None::<()>,
        );
        drop(body);
        for _ in 0..EPOCHS {
            assert!(!activity.check_stalled());
        }
        assert_eq!(activity.in_flight(), 0);
    }
}
