//! Accepting and running connections, HTTP/1 and HTTP/2 with prior knowledge alike.
//!
//! What an anonymous client can hold is bounded here: connections are capped in total and
//! per client address. At a cap, an idle connection makes room (over the total, the one
//! idle longest; over an address's, that address's answered one idle longest); with none,
//! the new connection is answered 503 and closed. A connection with no request in flight
//! for `server.header_read_timeout_secs` (from accept, or since its last answer) is
//! closed, and so is one whose answer the client stops taking for
//! `server.send_timeout_secs`; HTTP/2 peers get few streams, small header lists and pings
//! they must answer. A trusted proxy's connections are not counted per address: its
//! clients' requests in flight are, by the address it reports. Running out of file
//! descriptors does not stop the accept loop: a reserve descriptor is released to accept
//! and close the newest connection instead. Log lines about shed connections come at most
//! once per `LOG_INTERVAL`.

mod idle;
mod limits;
mod socket;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::client::Proxies;
use crate::config::Config;
use crate::error::AppError;
use idle::{Activity, Closing, End, Tracked};
pub use limits::{client_key, open_file_limit, room_for, Caps};
use limits::{Admitted, ClientRequests, Refusal, Slot, Table};

/// Concurrent streams per HTTP/2 connection. Below the 100 RFC 9113 recommends: each
/// stream can hold a blob file and a download chunk, so this is how many HTTP/1
/// connections one HTTP/2 connection may cost at most.
const MAX_CONCURRENT_STREAMS: u32 = 32;
/// Largest HTTP/2 header list (decoded). hyper's current default, set here so that an
/// upgrade cannot raise it; far more than a package client sends.
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Largest HTTP/1 read buffer, and so the largest request head (hyper answers 431 past
/// it). hyper's default is about 400 KiB, which times every allowed connection is a lot
/// of memory to let anonymous clients fill; 64 KiB is still far more than any package
/// client sends.
const MAX_HTTP1_BUFFER_BYTES: usize = 64 << 10;
/// At most one log line per cause in this interval, however many connections are shed.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// `EMFILE` and `ENFILE`, the same on Linux and the BSDs.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Connections the kernel queues for accepting (it caps this at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after an accept error that is neither a vanished client nor a lack of
/// descriptors (out of memory and the like), so the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A listener on `addr` with a backlog of `LISTEN_BACKLOG` rather than the 128 of std and
/// tokio: in a burst of connections, those past the backlog are only completed when the
/// client retransmits, a second or more later.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted server can bind at once.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a request may be answered before routing, from its method, path and headers
/// (`http::ready`): None sends it through the router.
#[derive(Clone)]
pub struct Early(std::sync::Arc<EarlyAnswer>);

type EarlyAnswer =
    dyn Fn(&Method, &str, &HeaderMap) -> Option<axum::response::Response> + Send + Sync;

impl Early {
    pub fn new(
        answer: impl Fn(&Method, &str, &HeaderMap) -> Option<axum::response::Response>
            + Send
            + Sync
            + 'static,
    ) -> Early {
        Early(std::sync::Arc::new(answer))
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish for up to `server.shutdown_grace_secs`. `early` answers what it can before
/// routing.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    early: Option<Early>,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(config.server.header_read_timeout_secs);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let open_file_limit = open_file_limit();
    let caps = Caps::new(config, open_file_limit);
    let room = room_for(config, open_file_limit);
    tracing::info!(
        max_connections = caps.total,
        max_connections_per_ip = caps.per_address,
        open_file_limit,
        "connection limits"
    );
    if caps.total > room {
        tracing::warn!(
            max_connections = caps.total,
            open_file_limit,
            room,
            "server.max_connections is more than the open-file limit leaves room for; \
             when descriptors run out, new connections are closed at once"
        );
    }
    let table = Table::new(caps);
    let proxies = Arc::new(Proxies::from_config(config));
    let clients = ClientRequests::new(caps.per_address);
    let refusals = Refusals::new(config, caps);
    let checker = tokio::spawn(end_stalled(
        table.clone(),
        Duration::from_secs(config.server.send_timeout_secs) / 2,
    ));
    let workers = worker_count(config);
    tracing::debug!(workers, "HTTP worker threads");
    // Each worker accepts from its own descriptor of the one listening socket: the kernel
    // hands a connection to whichever is waiting, so an idle worker takes the next one.
    let listener = listener.into_std()?;
    let (stop, stopping) = watch::channel(false);
    // Closed when every worker has returned (each holds a sender until then).
    let (finished, mut all_finished) = tokio::sync::mpsc::channel::<()>(1);
    for number in 0..workers {
        let worker = Worker {
            number,
            listener: listener.try_clone()?,
            table: table.clone(),
            proxies: proxies.clone(),
            clients: clients.clone(),
            refusals: refusals.clone(),
            app: app.clone(),
            early: early.clone(),
            timeout,
            grace,
            stopping: stopping.clone(),
            finished: finished.clone(),
        };
        std::thread::Builder::new()
            .name(format!("http-{number}"))
            .spawn(move || worker.run())?;
    }
    drop((finished, listener));
    shutdown.await;
    let _ = stop.send(true);
    while all_finished.recv().await.is_some() {}
    checker.abort();
    Ok(())
}

/// Every `interval` (half the send timeout), ends the connections whose answer has waited
/// a whole send timeout for its client to take more of it.
async fn end_stalled(table: Arc<Table>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once.
    ticks.tick().await;
    let mut stalled = Throttle::default();
    loop {
        ticks.tick().await;
        stalled.count += table.end_stalled() as u64;
        if let Some(ended) = stalled.due() {
            tracing::info!(
                ended,
                "closed connections whose clients took nothing of an answer for \
                 server.send_timeout_secs"
            );
        }
    }
}

/// `server.workers`, or one per CPU.
fn worker_count(config: &Config) -> usize {
    match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// One thread answering requests on a single-threaded runtime of its own. Answering a
/// download is a few microseconds of work; handing it between threads (as a work-stealing
/// runtime does) costs more than that, so each connection stays on the thread that
/// accepted it, as in nginx's worker processes. What the registry shares (the stores, the
/// caches, the connection table) is thread-safe and usable from any runtime.
struct Worker {
    number: usize,
    listener: std::net::TcpListener,
    table: Arc<Table>,
    proxies: Arc<Proxies>,
    clients: Arc<ClientRequests>,
    refusals: Arc<Refusals>,
    app: Router,
    early: Option<Early>,
    timeout: Duration,
    grace: Duration,
    stopping: watch::Receiver<bool>,
    finished: tokio::sync::mpsc::Sender<()>,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("http-{}", self.number))
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, worker = self.number, "starting an HTTP worker");
                return;
            }
        };
        runtime.block_on(self.serve());
    }

    /// Accepts until shutdown, then lets this worker's connections finish for up to the
    /// grace period (the runtime, and what it still runs, ends with this future).
    async fn serve(self) {
        let Worker {
            number,
            listener,
            table,
            proxies,
            clients,
            refusals,
            app,
            early,
            timeout,
            grace,
            mut stopping,
            finished,
        } = self;
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, worker = number, "listening in an HTTP worker");
                return;
            }
        };
        let builder = http_builder(timeout);
        let mut acceptor = Acceptor::new(listener);
        let mut shed = ShedLog::new(table.caps());
        // Reports what was counted but not yet logged at the end of a burst.
        let mut reports = tokio::time::interval(LOG_INTERVAL);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = acceptor.accept() => accepted,
                _ = reports.tick() => {
                    shed.report_due();
                    acceptor.report_due();
                    continue;
                }
                _ = stopping.wait_for(|stop| *stop) => break,
            };
            let activity = Activity::new();
            let proxied = proxies.trusts(remote.ip());
            let admitted = table.admit(remote.ip(), !proxied, &activity);
            let pressed = !matches!(admitted, Ok(Admitted { evicted: None, .. }));
            match admitted {
                Ok(admitted) => {
                    if let Some(cap) = admitted.evicted {
                        shed.record_eviction(cap);
                    }
                    let connection = Connection {
                        stream,
                        remote,
                        slot: admitted.slot,
                        activity,
                        clients: proxied.then(|| (proxies.clone(), clients.clone())),
                        timeout,
                        stopping: stopping.clone(),
                    };
                    tokio::spawn(connection.run(&builder, app.clone(), early.clone()));
                }
                Err(refusal) => {
                    shed.record(refusal, remote.ip());
                    refusals.refuse(stream, refusal);
                }
            }
            // At a cap, the connections of this worker run before it accepts another: the
            // one closed to make room gives back its descriptor, and the new one reads its
            // request before it could be the one idle longest. Accepting ahead of them
            // would pile up closed connections still holding descriptors.
            if pressed {
                tokio::task::yield_now().await;
            }
        }
        drop(acceptor);
        tokio::select! {
            _ = table.all_closed() => {}
            _ = tokio::time::sleep(grace) => {
                if number == 0 {
                    tracing::warn!(
                        open = table.open(),
                        "shutdown grace period over; closing remaining connections"
                    );
                }
            }
        }
        drop(finished);
    }
}

fn http_builder(timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HTTP1_BUFFER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        // A peer that does not answer a ping within the timeout is gone, even with a
        // stream open (an HTTP/2 download can wait for window updates forever).
        .keep_alive_interval(timeout)
        .keep_alive_timeout(timeout);
    builder
}

/// One admitted connection.
struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    activity: Arc<Activity>,
    /// For a trusted proxy's connection: who its clients are, and their requests in
    /// flight.
    clients: Option<(Arc<Proxies>, Arc<ClientRequests>)>,
    timeout: Duration,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    /// The future serving this connection to its end.
    fn run(
        self,
        builder: &auto::Builder<TokioExecutor>,
        app: Router,
        early: Option<Early>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Connection {
            stream,
            remote,
            slot,
            activity,
            clients,
            timeout,
            mut stopping,
        } = self;
        // Streamed bodies go out in several writes; without this, Nagle's algorithm and
        // the client's delayed ACK stall each response by tens of milliseconds.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let in_flight = activity.start();
                // Behind a trusted proxy, the client's own requests in flight are capped.
                let (client, over) = match &clients {
                    None => (None, None),
                    Some((proxies, requests)) => {
                        let client = proxies.client(remote.ip(), request.headers());
                        match requests.start(client) {
                            Some(counted) => (Some(counted), None),
                            None => (None, Some(too_many_requests(requests.cap()))),
                        }
                    }
                };
                let answered = over.or_else(|| {
                    early.as_ref().and_then(|early| {
                        (early.0)(request.method(), request.uri().path(), request.headers())
                    })
                });
                let response = match answered {
                    Some(response) => Either::Left(std::future::ready(Ok(response))),
                    None => {
                        let mut request = request.map(axum::body::Body::new);
                        request.extensions_mut().insert(ConnectInfo(remote));
                        Either::Right(app.clone().oneshot(request))
                    }
                };
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight, client)))
                }
            })
        };
        // Without upgrades: nothing here upgrades, and an upgraded connection would leave
        // these caps and timeouts behind.
        let connection = builder
            .serve_connection(TokioIo::new(socket::Socket(stream)), service)
            .into_owned();
        async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                closing = activity.closing(timeout) => match closing {
                    Closing::Idle => None,
                    // Its client takes nothing: nothing graceful can reach it.
                    Closing::Ended(End::Stalled) => return,
                    // Chosen while idle: unless a request has come in since, close it now.
                    Closing::Ended(End::Evicted) if activity.in_flight() == 0 => return,
                    Closing::Ended(End::Evicted) => None,
                },
                _ = stopping.wait_for(|stop| *stop) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    // Requests in flight finish; a connection that stays idle anyway (an
                    // HTTP/2 peer that never acknowledges the GOAWAY, a half-sent HTTP/1
                    // head) is dropped after another timeout, and a stalled one at once.
                    tokio::select! {
                        ended = connection.as_mut() => ended,
                        _ = activity.closing(timeout) => Ok(()),
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    }
}

/// The answer to a request of a client (behind a trusted proxy) that has `cap` in flight
/// already: 429, its own excess, which a proxy does not pass to another instance as it may
/// a 503.
fn too_many_requests(cap: usize) -> axum::response::Response {
    AppError::TooManyRequests {
        message: format!(
            "too many requests of yours in flight (server.max_connections_per_ip = {cap}): \
             wait for an answer before sending more"
        ),
        retry_after: 1,
    }
    .into_response()
}

/// Connections refused over a cap: each is answered 503 as soon as it is accepted
/// (HTTP/1, as nginx's `limit_conn` does; the request is never read), then its write side
/// is shut and what the client sends is read and dropped for `server.refusal_linger_secs`,
/// so that the client reads the answer rather than a reset. At most
/// `server.max_lingering_refusals` linger at once; the others are closed right after the
/// answer is written.
struct Refusals {
    max: usize,
    in_progress: AtomicUsize,
    linger: Duration,
    total: Bytes,
    per_address: Bytes,
}

impl Refusals {
    fn new(config: &Config, caps: Caps) -> Arc<Refusals> {
        Arc::new(Refusals {
            max: config.server.max_lingering_refusals as usize,
            in_progress: AtomicUsize::new(0),
            linger: Duration::from_secs(config.server.refusal_linger_secs),
            total: refusal_answer(&format!(
                "the server has as many connections open as it takes \
                 (server.max_connections = {}): retry shortly",
                caps.total
            )),
            per_address: refusal_answer(&format!(
                "too many connections from your address, none of them idle \
                 (server.max_connections_per_ip = {}): retry once one has ended",
                caps.per_address
            )),
        })
    }

    /// Answers `stream` for `refusal` and closes it, lingering if there is room for that.
    fn refuse(self: &Arc<Self>, stream: TcpStream, refusal: Refusal) {
        let answer = match refusal {
            Refusal::Total => &self.total,
            Refusal::PerAddress => &self.per_address,
        };
        // Written without waiting: a new connection's send buffer is empty and far larger
        // than the answer. Dropping the stream closes it.
        if !matches!(stream.try_write(answer), Ok(n) if n == answer.len()) {
            return;
        }
        let lingering = self.in_progress.fetch_add(1, Ordering::Relaxed);
        if lingering >= self.max || self.linger.is_zero() {
            self.in_progress.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let refusals = self.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = tokio::time::timeout(refusals.linger, async {
                stream.shutdown().await?;
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            refusals.in_progress.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A whole HTTP/1.1 503 with `Retry-After` and the JSON body every error has.
fn refusal_answer(message: &str) -> Bytes {
    let body = serde_json::json!({ "error": "Service Unavailable", "message": message });
    let body = body.to_string();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// The listener, and a reserve descriptor to keep accepting when descriptors run out.
struct Acceptor {
    listener: TcpListener,
    reserve: Option<std::fs::File>,
    failures: Throttle,
    last_failure: Option<std::io::Error>,
}

impl Acceptor {
    fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener,
            reserve: reserve_descriptor(),
            failures: Throttle::default(),
            last_failure: None,
        }
    }

    /// The next connection. Errors are handled here: a client that went away before it
    /// was accepted is skipped; without descriptors, the newest pending connection is
    /// accepted and closed at once.
    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let e = match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => e,
            };
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::Interrupted
            ) {
                tracing::debug!(error = %e, "client gone before accept");
                continue;
            }
            let shed = out_of_descriptors(&e) && self.shed_newest();
            self.last_failure = Some(e);
            if let Some(failures) = self.failures.record() {
                self.report(failures);
            }
            if !shed {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    /// Releases the reserve descriptor to accept the pending connection and close it,
    /// then takes the reserve again. Without this the listener stays readable and fails
    /// the same way on every try. Returns whether a connection was taken off the queue.
    fn shed_newest(&mut self) -> bool {
        let Some(reserve) = self.reserve.take() else {
            self.reserve = reserve_descriptor();
            return false;
        };
        drop(reserve);
        // Only what is already queued: never wait here.
        let shed = matches!(self.listener.accept().now_or_never(), Some(Ok(_)));
        self.reserve = reserve_descriptor();
        shed
    }

    fn report_due(&mut self) {
        if let Some(failures) = self.failures.due() {
            self.report(failures);
        }
    }

    fn report(&self, failures: u64) {
        let Some(e) = &self.last_failure else { return };
        if out_of_descriptors(e) {
            tracing::warn!(
                error = %e,
                failures,
                "accept failed: out of file descriptors; new connections are closed at once \
                 until some are free"
            );
        } else {
            tracing::warn!(error = %e, failures, "accept failed");
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

fn reserve_descriptor() -> Option<std::fs::File> {
    if cfg!(unix) {
        std::fs::File::open("/dev/null").ok()
    } else {
        None
    }
}

/// Counts events and says when a log line about them is due: the first at once, then at
/// most one per `LOG_INTERVAL`, each with the count since the line before.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    /// Counts one event; the count to log, if a line is due.
    fn record(&mut self) -> Option<u64> {
        self.count += 1;
        self.due()
    }

    /// The count to log, if there is one and a line is due.
    fn due(&mut self) -> Option<u64> {
        if self.count == 0 || self.last.is_some_and(|last| last.elapsed() < LOG_INTERVAL) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// Log lines about connections refused over a cap, or closed to make room.
struct ShedLog {
    caps: Caps,
    total: Throttle,
    per_address: Throttle,
    evicted: Throttle,
    last_client: Option<std::net::IpAddr>,
}

impl ShedLog {
    fn new(caps: Caps) -> Self {
        ShedLog {
            caps,
            total: Throttle::default(),
            per_address: Throttle::default(),
            evicted: Throttle::default(),
            last_client: None,
        }
    }

    /// An idle connection was closed to make room under `cap`: a debug line for each, and
    /// a line with the count at most once per `LOG_INTERVAL`.
    fn record_eviction(&mut self, cap: Refusal) {
        tracing::debug!(?cap, "closed an idle connection to make room");
        if let Some(closed) = self.evicted.record() {
            self.report_evictions(closed);
        }
    }

    fn report_evictions(&self, closed: u64) {
        tracing::info!(
            closed,
            max_connections = self.caps.total,
            max_connections_per_ip = self.caps.per_address,
            "closed idle connections to make room for new ones"
        );
    }

    fn record(&mut self, refusal: Refusal, client: std::net::IpAddr) {
        match refusal {
            Refusal::Total => {
                if let Some(shed) = self.total.record() {
                    self.report(refusal, shed);
                }
            }
            Refusal::PerAddress => {
                self.last_client = Some(client_key(client));
                if let Some(shed) = self.per_address.record() {
                    self.report(refusal, shed);
                }
            }
        }
    }

    fn report_due(&mut self) {
        if let Some(shed) = self.total.due() {
            self.report(Refusal::Total, shed);
        }
        if let Some(shed) = self.per_address.due() {
            self.report(Refusal::PerAddress, shed);
        }
        if let Some(closed) = self.evicted.due() {
            self.report_evictions(closed);
        }
    }

    fn report(&self, refusal: Refusal, shed: u64) {
        match refusal {
            Refusal::Total => tracing::warn!(
                shed,
                max_connections = self.caps.total,
                "refused new connections over server.max_connections, none idle"
            ),
            Refusal::PerAddress => tracing::warn!(
                shed,
                max_connections_per_ip = self.caps.per_address,
                last_client = ?self.last_client,
                "refused new connections over server.max_connections_per_ip, none idle"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_throttled_and_count_what_they_summarise() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.record(), Some(1));
        for _ in 0..1000 {
            assert_eq!(throttle.record(), None);
        }
        assert_eq!(throttle.due(), None);
        throttle.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(throttle.due(), Some(1000));
        assert_eq!(throttle.due(), None);
    }
}
