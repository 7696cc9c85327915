//! Connections from hostile or broken clients: silent and idle connections are closed,
//! connections are capped in total and per client address, running out of file
//! descriptors neither stops service nor floods the log, and HTTP/2 with prior knowledge
//! is served under the same limits.
//!
//! Loopback only: attackers connect from other addresses of 127.0.0.0/8 so that the
//! legitimate client on 127.0.0.1 has an address of its own.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use common::process::ChildServer;
use common::*;

/// Connects to `server` from `source` (any address of 127.0.0.0/8).
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(server).await
}

fn attacker(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Whether the server closes `stream` (end of file or reset) within `within`; whatever
/// it sends before (HTTP/2 frames) is skipped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `GET path` over HTTP/1.1 and reads the answer; returns its status.
async fn http1_get(stream: &mut TcpStream, path: &str) -> std::io::Result<u16> {
    let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: registry\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head[9..12].parse().expect("status code");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("content-length"))
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(eof());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

/// Just enough HTTP/2 to speak to the server byte by byte, so that the tests control
/// exactly what a client sends and when it stops.
mod h2 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const END_STREAM: u8 = 1;
    pub const ACK: u8 = 1;
    const END_HEADERS: u8 = 4;
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
    pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
    pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 6;

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (id, value) in values {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &payload)
    }

    /// A complete `GET path` request on `stream`. HPACK: `:method GET` and `:scheme
    /// http` from the static table, `:path` and `:authority` as literals with an indexed
    /// name, never Huffman-coded.
    pub fn get(stream: u32, path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 8]);
        block.extend_from_slice(b"registry");
        frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
    }

    /// The next frame, or `None` at end of file.
    pub async fn read(stream: &mut TcpStream) -> std::io::Result<Option<Frame>> {
        let mut head = [0u8; 9];
        match stream.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        Ok(Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }))
    }

    /// Sends the preface with `values` and returns the server's SETTINGS.
    pub async fn handshake(
        stream: &mut TcpStream,
        values: &[(u16, u32)],
    ) -> std::io::Result<Vec<(u16, u32)>> {
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(values));
        stream.write_all(&hello).await?;
        loop {
            let Some(frame) = read(stream).await? else {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            };
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                return Ok(frame
                    .payload
                    .chunks_exact(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect());
            }
        }
    }
}

const PACKAGE_PATH: &str = "/admin/v3.21/main/x86_64/hello-1.0-r0.apk";

// ---------------------------------------------------------------------------------------
// In-process: timeouts, caps and HTTP/2, one behaviour per test.

#[tokio::test]
async fn connections_that_send_nothing_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.server.header_read_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of the HTTP/2 preface, which the server waits on to choose a protocol.
    let mut half_preface = TcpStream::connect(server.addr).await.unwrap();
    half_preface.write_all(&h2::PREFACE[..10]).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a connection that sent nothing is still open"
    );
    assert!(
        closed_within(&mut half_preface, Duration::from_secs(5)).await,
        "a connection that sent half a preface is still open"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_http1_keep_alive_connections_are_closed() {
    let server = TestServer::start_with(|c| c.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(http1_get(&mut stream, "/healthz").await.unwrap(), 200);
    assert_eq!(http1_get(&mut stream, "/healthz").await.unwrap(), 200);
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "an idle keep-alive connection is still open"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let server = TestServer::start_with(|c| c.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    h2::handshake(&mut stream, &[]).await.unwrap();
    let mut ack = h2::frame(h2::SETTINGS, h2::ACK, 0, &[]);
    ack.extend(h2::get(1, "/healthz"));
    stream.write_all(&ack).await.unwrap();
    let mut status_ok = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed_at = loop {
        let frame = tokio::time::timeout_at(deadline, h2::read(&mut stream))
            .await
            .expect("connection still open")
            .unwrap();
        let Some(frame) = frame else {
            break Instant::now();
        };
        match frame.kind {
            // `:status 200` is entry 8 of the static table.
            h2::HEADERS if frame.stream == 1 => status_ok = frame.payload.first() == Some(&0x88),
            // A live peer: it answers pings.
            h2::PING if frame.flags & h2::ACK == 0 => stream
                .write_all(&h2::frame(h2::PING, h2::ACK, 0, &frame.payload))
                .await
                .unwrap(),
            _ => {}
        }
    };
    assert!(status_ok, "GET /healthz over HTTP/2 answered 200");
    assert!(closed_at < deadline);
    server.stop().await;
}

#[tokio::test]
async fn dead_http2_peers_are_dropped_mid_response() {
    let server = TestServer::start_with(|c| c.server.header_read_timeout_secs = 1).await;
    let put = server
        .put_admin("/admin/v3.21/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(put.status(), 201);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A window of 0: the answer's body can never be sent, so a request stays in flight
    // while this client, from here on, neither reads frames nor answers pings.
    h2::handshake(&mut stream, &[(h2::SETTINGS_INITIAL_WINDOW_SIZE, 0)])
        .await
        .unwrap();
    let mut request = h2::frame(h2::SETTINGS, h2::ACK, 0, &[]);
    request.extend(h2::get(1, PACKAGE_PATH));
    stream.write_all(&request).await.unwrap();
    let mut got_headers = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, h2::read(&mut stream))
            .await
            .expect("a peer that answers no ping is still connected")
            .unwrap();
        let Some(frame) = frame else { break };
        if frame.kind == h2::HEADERS && frame.stream == 1 {
            assert_eq!(frame.payload.first(), Some(&0x88), "200");
            got_headers = true;
        }
        assert_ne!(frame.kind, h2::DATA, "no body was allowed");
    }
    assert!(
        got_headers,
        "the request was in flight when the peer was dropped"
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_settings_bound_streams_and_header_lists() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let settings = h2::handshake(&mut stream, &[]).await.unwrap();
    let value = |id| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    let streams = value(h2::SETTINGS_MAX_CONCURRENT_STREAMS).expect("stream limit sent");
    assert!(
        streams <= 100,
        "{streams} concurrent streams per connection"
    );
    let headers = value(h2::SETTINGS_MAX_HEADER_LIST_SIZE).expect("header list limit sent");
    assert!(headers <= 64 << 10, "header lists up to {headers} bytes");
    drop(stream);
    server.stop().await;
}

/// GETs `path` over a fresh HTTP/2 connection with prior knowledge; returns the status,
/// the version the answer came in, and the body.
async fn http2_get(addr: SocketAddr, path: &str) -> (u16, hyper::Version, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .body(String::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (status, version) = (response.status().as_u16(), response.version());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx))
            .await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    (status, version, bytes)
}

#[tokio::test]
async fn http2_prior_knowledge_requests_are_served() {
    let server = TestServer::start().await;
    let body = package("hello", "1.0-r0", "x86_64");
    assert_eq!(
        server
            .put_admin("/admin/v3.21/main", body.clone())
            .await
            .status(),
        201
    );
    let (status, version, _) = http2_get(server.addr, "/healthz").await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    let (status, version, download) = http2_get(server.addr, PACKAGE_PATH).await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    assert_eq!(download, body);
    server.stop().await;
}

/// A package over 64 KiB is sent from a mapping of its file (with sendfile on Linux): over
/// HTTP/2 its bytes go out in DATA frames, each behind a frame header, and must arrive
/// byte for byte all the same.
#[tokio::test]
async fn http2_downloads_of_large_packages_are_exact() {
    let server = TestServer::start().await;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let payload: Vec<u8> = (0..(1 << 20) + 12_345)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let body = alpine_registry::apk::builder::PackageBuilder::new("large", "1.0-r0", "x86_64")
        .file("usr/share/large/data", &payload)
        .build();
    assert_eq!(
        server
            .put_admin("/admin/v3.21/main", body.clone())
            .await
            .status(),
        201
    );
    let (status, version, download) =
        http2_get(server.addr, "/admin/v3.21/main/x86_64/large-1.0-r0.apk").await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    assert!(
        download == body,
        "{} bytes, {} sent",
        download.len(),
        body.len()
    );
    server.stop().await;
}

/// Opens a connection from `source` with a request in flight: a form POST whose body the
/// server has asked for (`100 Continue`) and never gets.
async fn busy_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let mut stream = connect_from(source, server).await.unwrap();
    stream
        .write_all(
            b"POST /-/login HTTP/1.1\r\nHost: registry\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert_eq!(read.expect("100 Continue within 5 s").unwrap(), 1, "closed");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Everything the server sends on `stream` until it closes it (within 5 s), as text.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        // A reset after the answer still leaves what was read.
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "still open after 5 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Checks that `answer` is the 503 a connection refused over `key` gets.
fn assert_refusal(answer: &str, key: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503 "), "{answer}");
    assert!(head.contains("\r\nretry-after: 1"), "{answer}");
    assert!(head.contains("\r\nconnection: close"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(key), "{message}");
}

#[tokio::test]
async fn over_the_per_address_cap_the_answered_connection_idle_longest_makes_room() {
    let server = TestServer::start_with(|c| c.server.max_connections_per_ip = 3).await;
    let addr = server.addr;
    let mut answered = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(attacker(2), addr).await.unwrap();
        assert_eq!(http1_get(&mut stream, "/healthz").await.unwrap(), 200);
        answered.push(stream);
    }
    // HTTP/2 connections count the same; this one has answered nothing.
    let mut http2 = connect_from(attacker(2), addr).await.unwrap();
    h2::handshake(&mut http2, &[]).await.unwrap();
    // A 4th: the answered one idle longest is closed for it.
    let mut fourth = connect_from(attacker(2), addr).await.unwrap();
    assert_eq!(http1_get(&mut fourth, "/healthz").await.unwrap(), 200);
    assert!(
        closed_within(&mut answered[0], Duration::from_secs(2)).await,
        "the answered connection idle longest is still open"
    );
    assert!(!closed_within(&mut answered[1], Duration::from_millis(200)).await);
    assert!(!closed_within(&mut http2, Duration::from_millis(200)).await);
    assert_eq!(http1_get(&mut answered[1], "/healthz").await.unwrap(), 200);
    // Now the 4th is the one idle longest.
    let mut fifth = connect_from(attacker(2), addr).await.unwrap();
    assert_eq!(http1_get(&mut fifth, "/healthz").await.unwrap(), 200);
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
    assert!(!closed_within(&mut answered[1], Duration::from_millis(200)).await);
    // Other addresses are not affected.
    let mut other = connect_from(attacker(3), addr).await.unwrap();
    assert_eq!(http1_get(&mut other, "/healthz").await.unwrap(), 200);
    drop((answered, http2, fifth));
    server.stop().await;
}

#[tokio::test]
async fn over_the_per_address_cap_with_nothing_answered_idle_the_newest_is_answered_503() {
    let server = TestServer::start_with(|c| c.server.max_connections_per_ip = 3).await;
    let addr = server.addr;
    // Requests in flight on three connections: none of them may be closed.
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(busy_from(attacker(2), addr).await);
    }
    let mut over = connect_from(attacker(2), addr).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut over).await;
    eprintln!("refused after {:?}: {answer:?}", started.elapsed());
    assert_refusal(&answer, "server.max_connections_per_ip = 3");
    for stream in &mut busy {
        assert!(!closed_within(stream, Duration::from_millis(200)).await);
    }
    // Silent connections, which have answered nothing either: of four, the last one the
    // server takes in is refused the same way, whichever it is.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect_from(attacker(3), addr).await.unwrap());
    }
    let mut refused = Vec::new();
    for stream in &mut silent {
        if closed_within(stream, Duration::from_millis(500)).await {
            refused.push(());
        }
    }
    assert_eq!(
        refused.len(),
        1,
        "one of four silent connections is refused"
    );
    let mut other = connect_from(attacker(4), addr).await.unwrap();
    assert_eq!(http1_get(&mut other, "/healthz").await.unwrap(), 200);
    drop((busy, silent));
    server.stop().await;
}

#[tokio::test]
async fn a_full_table_closes_the_connection_idle_longest() {
    let server = TestServer::start_with(|c| c.server.max_connections = 4).await;
    let mut held = Vec::new();
    for n in 2..6 {
        let mut stream = connect_from(attacker(n), server.addr).await.unwrap();
        // Answered, so admitted: the workers accept in parallel, and a connection accepted
        // but not yet counted would leave room for the next one.
        assert_eq!(http1_get(&mut stream, "/healthz").await.unwrap(), 200);
        held.push(stream);
    }
    let mut fifth = connect_from(attacker(6), server.addr).await.unwrap();
    assert_eq!(http1_get(&mut fifth, "/healthz").await.unwrap(), 200);
    assert!(
        closed_within(&mut held[0], Duration::from_secs(2)).await,
        "the connection idle longest is still open"
    );
    for stream in &mut held[1..] {
        assert!(!closed_within(stream, Duration::from_millis(200)).await);
    }
    assert_eq!(http1_get(&mut held[1], "/healthz").await.unwrap(), 200);
    drop((held, fifth));
    server.stop().await;
}

#[tokio::test]
async fn a_full_table_of_requests_in_flight_answers_new_connections_503() {
    let server = TestServer::start_with(|c| c.server.max_connections = 4).await;
    let mut busy = Vec::new();
    for n in 2..6 {
        busy.push(busy_from(attacker(n), server.addr).await);
    }
    let mut over = connect_from(attacker(6), server.addr).await.unwrap();
    let answer = read_to_close(&mut over).await;
    assert_refusal(&answer, "server.max_connections = 4");
    for stream in &mut busy {
        assert!(!closed_within(stream, Duration::from_millis(200)).await);
    }
    drop(busy);
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_that_sends_nothing_is_answered_408() {
    let server = TestServer::start_with(|c| c.server.body_idle_timeout_secs = 2).await;
    // A form and an upload, each with part of its body sent.
    let upload = format!(
        "PUT /admin/v3.21/main HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Length: 100000\r\n\r\n"
    );
    let form = "POST /-/login HTTP/1.1\r\nHost: registry\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        .to_string();
    for head in [upload, form] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(b"user=x&").await.unwrap();
        let started = Instant::now();
        let answer = read_to_close(&mut stream).await;
        let waited = started.elapsed();
        eprintln!("answered after {waited:?}: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("server.body_idle_timeout_secs"), "{answer}");
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    }
    // A body that keeps coming, if slowly (a part every 0.5 s), is read to its end.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /-/login HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\n\r\n",
        )
        .await
        .unwrap();
    for part in [&b"username=x&"[..], b"pass", b"word=y&a", b"="] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(part).await.unwrap();
    }
    let answer = read_to_close(&mut stream).await;
    assert!(!answer.starts_with("HTTP/1.1 408 "), "{answer}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// The real binary under a lowered open-file limit.

const TOKEN: &str = "apkreg_connections-test-token-0123456789";
/// The server's open-file limit (soft and hard).
const NOFILE: u32 = 256;
/// Silent connections the attacker opens: more than the server could hold descriptors for.
const ATTACK_CONNECTIONS: usize = 600;
/// `server.header_read_timeout_secs` in these tests.
const TIMEOUT_SECS: u64 = 3;
/// Longest acceptable answer while under attack.
const PROMPT: Duration = Duration::from_secs(2);
/// Peak resident size of the server through a test (it idles at about 16 MiB).
const MAX_HWM_BYTES: u64 = 64 << 20;
/// Log lines about failed accepts over a whole test: rate-limited, not one per connection
/// or per retry.
const MAX_ACCEPT_FAILED_LINES: usize = 3;

/// The real binary under an open-file limit of `NOFILE`, with one package published.
struct LimitedServer(ChildServer);

impl std::ops::Deref for LimitedServer {
    type Target = ChildServer;

    fn deref(&self) -> &ChildServer {
        &self.0
    }
}

impl LimitedServer {
    /// Runs `serve` with an open-file limit of `NOFILE` and `env` on top of short timeouts,
    /// then publishes one package.
    async fn start(env: &[(&str, &str)]) -> LimitedServer {
        let timeout = TIMEOUT_SECS.to_string();
        let mut env = env.to_vec();
        env.insert(
            0,
            (
                "ALPINE_REGISTRY__SERVER__HEADER_READ_TIMEOUT_SECS",
                &timeout,
            ),
        );
        Self::start_with_limit(NOFILE, &env).await
    }

    /// Runs `serve` with an open-file limit of `nofile` and `env`, then publishes one
    /// package.
    async fn start_with_limit(nofile: u32, env: &[(&str, &str)]) -> LimitedServer {
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"ulimit -n "$0" && exec "$@""#])
            .arg(nofile.to_string())
            .arg(BIN);
        let server = LimitedServer(ChildServer::start_with_on_backends(command, TOKEN, env));
        let put = reqwest::Client::new()
            .put(server.url("/admin/v3.21/main"))
            .basic_auth("admin", Some(TOKEN))
            .body(package("hello", "1.0-r0", "x86_64"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
        server
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The log less the one line each answered request gets (the probes' own requests):
    /// what is left must not grow with the connections shed.
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| !l.contains(": alpine_registry::http: answered "))
            .map(str::to_string)
            .collect()
    }

    /// Checks the log and peak memory, and prints both.
    fn check_log_and_memory(&self) {
        let lines = self.log_lines();
        let accept_failed = lines
            .iter()
            .filter(|l| l.contains("accept failed") || l.contains("Too many open files"))
            .count();
        let hwm = self.peak_rss();
        eprintln!(
            "server: {} log lines, {accept_failed} about failed accepts; VmHWM {:.1} MiB",
            lines.len(),
            hwm as f64 / f64::from(1 << 20)
        );
        assert!(
            accept_failed <= MAX_ACCEPT_FAILED_LINES,
            "{accept_failed} lines about failed accepts:\n{}",
            lines.join("\n")
        );
        // Start-up says a few lines; shedding hundreds of connections must not add one each.
        assert!(lines.len() < 40, "the log spins:\n{}", lines.join("\n"));
        assert!(
            hwm < MAX_HWM_BYTES,
            "server peak RSS {hwm} bytes is over {MAX_HWM_BYTES}"
        );
    }
}

/// Opens `count` connections from `sources` in turn, all at once, and sends nothing on
/// them. Returns those the kernel completed (the server may have closed them already).
async fn open_silent(server: SocketAddr, sources: &[Ipv4Addr], count: usize) -> Vec<TcpStream> {
    let attempts = (0..count).map(|i| {
        let source = sources[i % sources.len()];
        tokio::time::timeout(Duration::from_secs(3), connect_from(source, server))
    });
    futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.ok()?.ok())
        .collect()
}

/// GETs `path` and reads the whole answer within `PROMPT`.
async fn get_promptly(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(PROMPT, async {
        let response = client.get(url).send().await?;
        let status = response.status();
        response.bytes().await.map(|_| status)
    })
    .await;
    match response {
        Ok(Ok(status)) => assert_eq!(status, 200, "GET {url}"),
        Ok(Err(e)) => panic!("GET {url} failed after {:?}: {e}", started.elapsed()),
        Err(_) => panic!("GET {url} took more than {PROMPT:?}"),
    }
    started.elapsed()
}

/// Reads every attacker connection until the server closes it; all must be closed within
/// the header timeout plus a margin.
async fn assert_all_closed(streams: Vec<TcpStream>, since: Instant) {
    // Two header timeouts and a margin: a connection still queued when descriptors ran out
    // may be accepted only once the first silent ones have timed out, and then gets a
    // timeout of its own (seen once on PostgreSQL and S3, whose connections also take
    // descriptors: 128 accepted late).
    let within = Duration::from_secs(2 * TIMEOUT_SECS + 5);
    let closed = futures_util::future::join_all(streams.into_iter().map(|mut s| async move {
        closed_within(&mut s, within.saturating_sub(since.elapsed())).await
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open, 0,
        "{open} silent connections still open {within:?} after they were made"
    );
}

/// GETs each of `urls` every 100 ms until `until`; returns the slowest answer.
async fn keep_probing(client: reqwest::Client, urls: Vec<String>, until: Instant) -> Duration {
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        for url in &urls {
            slowest = slowest.max(get_promptly(&client, url).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_beyond_the_descriptor_limit_do_not_stop_service() {
    let server = LimitedServer::start(&[]).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    get_promptly(&fresh, &server.url("/healthz")).await;

    // One attacker address, default caps: more silent connections than the server has
    // descriptors. Meanwhile fresh connections from another address keep being answered
    // promptly, for as long as the attacker's connections are held.
    let since = Instant::now();
    let probes = tokio::spawn(keep_probing(
        fresh.clone(),
        vec![server.url("/healthz"), server.url(PACKAGE_PATH)],
        since + Duration::from_secs(TIMEOUT_SECS - 1),
    ));
    let silent = open_silent(server.addr(), &[attacker(2)], ATTACK_CONNECTIONS).await;
    assert!(
        silent.len() > NOFILE as usize,
        "only {} attacker connections were made (is this test's own open-file limit low?)",
        silent.len()
    );
    let slowest = probes.await.unwrap();
    eprintln!("slowest answer under attack: {slowest:?}");
    assert_all_closed(silent, since).await;
    get_promptly(&fresh, &server.url(PACKAGE_PATH)).await;
    server.check_log_and_memory();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_neither_spins_nor_wedges() {
    // A cap set above what the descriptor limit allows, and many attacker addresses: the
    // server does run out of descriptors.
    let server =
        LimitedServer::start(&[("ALPINE_REGISTRY__SERVER__MAX_CONNECTIONS", "100000")]).await;
    let kept = reqwest::Client::new();
    get_promptly(&kept, &server.url("/healthz")).await;

    // A client connected before keeps being served throughout.
    let since = Instant::now();
    let probes = tokio::spawn(keep_probing(
        kept,
        vec![server.url("/healthz")],
        since + Duration::from_secs(TIMEOUT_SECS - 1),
    ));
    let sources: Vec<Ipv4Addr> = (2..22).map(attacker).collect();
    let silent = open_silent(server.addr(), &sources, ATTACK_CONNECTIONS).await;
    assert!(
        silent.len() > NOFILE as usize,
        "only {} attacker connections were made (is this test's own open-file limit low?)",
        silent.len()
    );
    let slowest = probes.await.unwrap();
    eprintln!("slowest answer on the kept connection: {slowest:?}");
    assert_all_closed(silent, since).await;
    // Once the silent connections are gone, new ones are served again.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    get_promptly(&fresh, &server.url("/healthz")).await;
    get_promptly(&fresh, &server.url(PACKAGE_PATH)).await;
    server.check_log_and_memory();
}

/// Keeps a silent connection from `source` open: connects, waits until the server closes
/// it, and connects again `pause` later, until `stop`. Returns how many times it
/// connected.
async fn keep_silent(
    server: SocketAddr,
    source: Ipv4Addr,
    pause: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    connected: std::sync::Arc<tokio::sync::Semaphore>,
) -> usize {
    let mut connections = 0;
    let mut first = true;
    loop {
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(Duration::from_secs(3), connect_from(source, server)) => attempt,
            _ = stop.wait_for(|stop| *stop) => return connections,
        };
        if let Ok(Ok(mut stream)) = attempt {
            connections += 1;
            if std::mem::take(&mut first) {
                connected.add_permits(1);
            }
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    _ = stop.wait_for(|stop| *stop) => return connections,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return connections,
        }
    }
}

/// Silent connections kept open (each reconnected 100 ms after the server closes it) under
/// `ulimit -n 1024`, where the server takes 458: more than twice what fits.
const SILENT_CONNECTIONS: usize = 1100;
const SILENT_ADDRESSES: u8 = 40;

/// Raises this process's own open-file limit to its hard limit if it is below `needed`
/// (a soft limit of 1024 is common), and fails if that is not enough.
fn raise_own_open_file_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < needed) {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raising the open-file limit");
    }
    assert!(
        limit.current.is_none_or(|current| current >= needed),
        "this test needs {needed} open files; the hard limit is {:?}",
        limit.maximum
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_full_of_silent_connections_locks_out_no_new_client() {
    // The attackers' sockets, and some for the rest of this test binary.
    raise_own_open_file_limit(SILENT_CONNECTIONS as u64 + 512);
    // The default header timeout (30 s): the silent connections outlast the test.
    let server = LimitedServer::start_with_limit(1024, &[]).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    get_promptly(&fresh, &server.url("/healthz")).await;

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let connected = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let attackers: Vec<_> = (0..SILENT_CONNECTIONS)
        .map(|i| {
            let source = attacker(10 + (i % usize::from(SILENT_ADDRESSES)) as u8);
            tokio::spawn(keep_silent(
                server.addr(),
                source,
                Duration::from_millis(100),
                stopping.clone(),
                connected.clone(),
            ))
        })
        .collect();
    // Once every attacker has connected, the table is full and stays so.
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        connected.acquire_many(SILENT_CONNECTIONS as u32),
    )
    .await;
    assert!(all.is_ok(), "the attackers did not all connect within 60 s");
    let since = Instant::now();
    let slowest = keep_probing(
        fresh.clone(),
        vec![server.url("/healthz"), server.url(PACKAGE_PATH)],
        since + Duration::from_secs(6),
    )
    .await;
    stop.send_replace(true);
    let mut connections = 0;
    for attacker in attackers {
        connections += attacker.await.unwrap();
    }
    eprintln!(
        "{SILENT_CONNECTIONS} silent connections kept from {SILENT_ADDRESSES} addresses: \
         {connections} made; slowest answer to a new client {slowest:?}"
    );
    assert!(connections > SILENT_CONNECTIONS, "the table never filled");
    server.check_log_and_memory();
}

/// Uploads of one client in this test, and how many it keeps in flight.
const UPLOADS: usize = 400;
const UPLOADS_IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_on_new_connections_within_the_per_address_cap_are_never_refused() {
    // Each user may use every upload slot here: this is about connections only.
    let server = ChildServer::start_on_backends(
        TOKEN,
        &[(
            "ALPINE_REGISTRY__LIMITS__MAX_CONCURRENT_UPLOADS_PER_USER",
            "64",
        )],
    );
    let packages: Vec<Vec<u8>> = (0..UPLOADS)
        .map(|i| package(&format!("pkg{i}"), "1.0-r0", "x86_64"))
        .collect();
    let packages = std::sync::Arc::new(packages);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // No idle connection is kept: every upload opens a connection of its own, and closes
    // it once answered, as curl in a loop does.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let workers: Vec<_> = (0..UPLOADS_IN_FLIGHT)
        .map(|_| {
            let (client, packages, next) = (client.clone(), packages.clone(), next.clone());
            let url = server.url("/admin/v3.21/main");
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= packages.len() {
                        return outcomes;
                    }
                    let sent = client
                        .put(&url)
                        .basic_auth("admin", Some(TOKEN))
                        .body(packages[i].clone())
                        .send()
                        .await;
                    outcomes.push(match sent {
                        Ok(response) => Ok(response.status().as_u16()),
                        Err(e) => Err(format!("{e:?}")),
                    });
                }
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for worker in workers {
        for outcome in worker.await.unwrap() {
            match outcome {
                Ok(status) => *statuses.entry(status).or_insert(0) += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "{UPLOADS} uploads, {UPLOADS_IN_FLIGHT} in flight, in {:.1?}: answers {statuses:?}, \
         {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(statuses.get(&201), Some(&UPLOADS), "{statuses:?}");
}
