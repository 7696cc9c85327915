//! A TCP relay from a loopback port to a server, which a test can cut (the port refuses
//! connections and open ones are reset) and restore on the same port, freeze (connections
//! are accepted and kept, nothing goes through in either direction) and thaw, slow down,
//! or have answer 500 to HTTP requests: an object store that goes down, hangs, crawls or
//! fails, as its clients see it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Relay {
    pub port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    up: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
    frozen: Mutex<bool>,
    thawed: Condvar,
    /// HTTP requests still to be answered 500 by the relay itself.
    to_fail: AtomicU64,
    /// HTTP requests answered 500 so far.
    failed: AtomicU64,
    /// Bytes per second through each connection in each direction; 0: no limit.
    rate: AtomicU64,
}

impl Shared {
    fn wait_thawed(&self) {
        let mut frozen = self.frozen.lock().unwrap();
        while *frozen {
            frozen = self.thawed.wait(frozen).unwrap();
        }
    }

    fn track(&self, stream: &TcpStream) {
        self.open.lock().unwrap().push(stream.try_clone().unwrap());
    }

    /// Takes one of the requests to fail, if any are left.
    fn take_failure(&self) -> bool {
        self.to_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Relay {
    pub fn new(target: SocketAddr) -> Relay {
        let mut relay = Relay {
            port: super::free_port(),
            target,
            shared: Default::default(),
            acceptor: None,
        };
        relay.restore();
        relay
    }

    /// A relay to the test S3 server of `endpoint` (`http://IP:PORT`).
    pub fn to_endpoint(endpoint: &str) -> Relay {
        let target = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the test S3 endpoint is http://IP:PORT");
        Relay::new(target)
    }

    /// `http://127.0.0.1:PORT`: where clients reach the server through the relay.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens on the same port again (retrying while the old socket is released).
    pub fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("relay: rebinding port {}: {err}", self.port);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("relay: cannot rebind port {}: {err}", self.port),
            }
        };
        self.shared.up.store(true, Ordering::SeqCst);
        let (shared, target) = (self.shared.clone(), self.target);
        self.acceptor = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if !shared.up.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                shared.track(&client);
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, target, &shared));
            }
        }));
    }

    /// Closes the port and resets every relayed connection.
    pub fn cut(&mut self) {
        self.shared.up.store(false, Ordering::SeqCst);
        // Wakes the acceptor, which then drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
        self.reset();
    }

    /// Resets every connection open now; the port keeps accepting.
    pub fn reset(&self) {
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// From now on nothing goes through, either way, on any connection (open or new),
    /// and nothing is closed: a server that accepts connections and never answers.
    pub fn freeze(&self) {
        *self.shared.frozen.lock().unwrap() = true;
    }

    /// Lets what was held go through, and everything after it.
    pub fn thaw(&self) {
        *self.shared.frozen.lock().unwrap() = false;
        self.shared.thawed.notify_all();
    }

    /// The next `n` HTTP requests are answered 500 by the relay instead of the server
    /// (`u64::MAX`: every one until told otherwise). Open connections are reset, so that
    /// every request from now on comes on a connection the relay reads.
    pub fn fail(&self, n: u64) {
        self.shared.to_fail.store(n, Ordering::SeqCst);
        self.reset();
    }

    /// How many requests the relay answered 500.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// At most `bytes_per_sec` through each connection in each direction; 0: no limit.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.thaw();
        self.cut();
    }
}

/// One accepted connection: HTTP requests answered 500 while there are failures to give,
/// then relayed to `target` from the first request that is not.
fn serve(mut client: TcpStream, target: SocketAddr, shared: &Shared) {
    let mut pending = Vec::new();
    while shared.to_fail.load(Ordering::SeqCst) > 0 {
        let Some(request) = read_request(&mut client) else {
            return;
        };
        if !shared.take_failure() {
            pending = request;
            break;
        }
        shared.failed.fetch_add(1, Ordering::SeqCst);
        let answer = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/xml\r\n\
                      content-length: 0\r\n\r\n";
        if client.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
    let Ok(mut upstream) = TcpStream::connect(target) else {
        return;
    };
    shared.track(&upstream);
    if upstream.write_all(&pending).is_err() {
        return;
    }
    let from_client = client.try_clone().unwrap();
    let from_upstream = upstream.try_clone().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || pump(from_client, upstream, shared));
        pump(from_upstream, client, shared);
    });
}

/// Copies `from` to `to` until `from` ends (then ends `to`'s direction too), holding
/// bytes while the relay is frozen and pacing them while it is throttled.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.wait_thawed();
        let rate = shared.rate.load(Ordering::SeqCst);
        if rate > 0 {
            // Simulates a slow link; not a wait for anything.
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Reads one HTTP/1 request (head, and a body of `content-length` bytes); None when the
/// connection ends first.
fn read_request(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = client.read(&mut buf).ok().filter(|n| *n > 0)?;
        request.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while request.len() < head_end + body_len {
        let n = client.read(&mut buf).ok().filter(|n| *n > 0)?;
        request.extend_from_slice(&buf[..n]);
    }
    Some(request)
}
