//! Output: the `/metrics` endpoint (`--metrics-address`). A small HTTP/1.x server on a
//! thread of its own, bounded in every way a stranger on the pod network could push:
//! one connection at a time, a request head of at most [`MAX_HEAD`] bytes read within
//! [`DEADLINE`], no body read, `Connection: close` after one answer (then at most half a
//! second and 64 KiB of what the client still sends are read and dropped). The request is
//! parsed by `httparse` (hyper's parser); only `GET`/`HEAD /metrics` is answered with
//! content, anything else gets 404, 405 or 400. What it serves is read from memory
//! (the last scan and the counters), so a scrape never blocks or causes a write.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The longest request head read; anything longer gets 431 and the connection closes.
pub const MAX_HEAD: usize = 8192;
/// How long one connection may take, from accept to the last byte of the answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Headers parsed at most (Prometheus sends about six).
const MAX_HEADERS: usize = 32;

/// Where to listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// `:PORT`: every address of the pod, IPv6 and IPv4 where the node has IPv6, IPv4
    /// alone where it does not (a kernel booted with `ipv6.disable=1`).
    Any(u16),
    /// `IP:PORT` or `[IPv6]:PORT`.
    Exact(SocketAddr),
}

/// Parses `--metrics-address`.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let expected = "expected IP:PORT, [IPv6]:PORT or :PORT, e.g. :9100 or 127.0.0.1:9100";
    if let Some(port) = s.strip_prefix(':') {
        return match port.parse::<u16>() {
            Ok(p) if p != 0 => Ok(Address::Any(p)),
            _ => Err(format!("port {port:?} is not 1-65535 ({expected})")),
        };
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Address::Exact(a)),
        Ok(_) => Err(format!(
            "port 0 is not a port to be scraped on ({expected})"
        )),
        Err(_) => Err(expected.to_string()),
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Any(p) => write!(f, ":{p}"),
            Address::Exact(a) => write!(f, "{a}"),
        }
    }
}

/// A bound listener, not serving yet.
pub struct Listener(TcpListener);

/// Binds `addr`; the error names the address and says why (taken, not an address of
/// this host...).
pub fn bind(addr: Address) -> Result<Listener, String> {
    let bound = match addr {
        Address::Exact(a) => TcpListener::bind(a),
        // [::] takes IPv4 too (net.ipv6.bindv6only is 0 unless changed); without IPv6
        // in the kernel there is only IPv4 to listen on.
        Address::Any(p) => {
            TcpListener::bind((Ipv6Addr::UNSPECIFIED, p)).or_else(|e| match e.raw_os_error() {
                Some(97 | 99) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)),
                _ => Err(e),
            })
        }
    };
    bound.map(Listener).map_err(|e| {
        format!(
            "cannot listen on {addr} for {}: {e}",
            crate::origin::flag_name("--metrics-address")
        )
    })
}

impl Listener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Serves `/metrics` with what `render` returns, on a thread of its own, for as
    /// long as the process runs.
    fn spawn(self, render: impl Fn() -> String + Send + 'static) -> io::Result<()> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in self.0.incoming() {
                    match stream {
                        Ok(s) => serve(s, &render),
                        // Out of descriptors and the like: do not spin on it.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .map(|_| ())
    }

    /// [`Listener::spawn`] for the daemon and the plugin: says where it serves, or why
    /// it cannot (the message for a fatal error).
    pub fn start(self, render: impl Fn() -> String + Send + 'static) -> Result<(), String> {
        let at = self
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        self.spawn(render)
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        crate::log::info(format_args!("metrics on http://{at}/metrics"));
        Ok(())
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `HEAD`: headers only.
    pub head_only: bool,
}

impl Response {
    fn error(status: u16, message: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n"),
            head_only: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What to answer to the bytes read so far: `None` while the head is incomplete.
/// `render` is called only for a request that gets the metrics.
pub fn respond(head: &[u8], render: impl FnOnce() -> String) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => None,
        Ok(httparse::Status::Partial) => Some(Response::error(431, "request head too large")),
        Err(httparse::Error::TooManyHeaders) => Some(Response::error(431, "too many headers")),
        Err(e) => Some(Response::error(400, &format!("bad request: {e}"))),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            let method = req.method.unwrap_or("");
            Some(match (method, path) {
                ("GET" | "HEAD", "/metrics") => Response {
                    status: 200,
                    content_type: crate::metrics::CONTENT_TYPE,
                    body: render(),
                    head_only: method == "HEAD",
                },
                ("GET" | "HEAD", _) => Response {
                    head_only: method == "HEAD",
                    ..Response::error(404, "not found: only /metrics is served here")
                },
                _ => Response::error(405, "only GET and HEAD are answered"),
            })
        }
    }
}

/// One connection: read the head within the deadline, answer once, close.
fn serve(mut stream: TcpStream, render: &dyn Fn() -> String) {
    let start = Instant::now();
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let response = loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break Response::error(408, "request head not received in time");
        }
        match stream.read(&mut buf[len..]) {
            // The client went away before a whole head: nothing to answer.
            Ok(0) => return,
            Ok(n) => {
                len += n;
                if let Some(r) = respond(&buf[..len], render) {
                    break r;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break Response::error(408, "request head not received in time");
            }
            Err(_) => return,
        }
    };
    // A write timeout bounds one write(2), not the whole answer: a client reading a
    // few bytes at a time would make every write succeed. Each write gets what is left
    // of the connection's time (at least a moment to answer a late head).
    let bytes = response.to_bytes();
    let write_until = start + DEADLINE.max(start.elapsed() + Duration::from_millis(100));
    let mut sent = 0;
    while sent < bytes.len() {
        let left = write_until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match stream.write(&bytes[sent..]) {
            Ok(0) => return,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    // Closing with unread bytes would reset the connection and could lose the answer
    // to a client still sending (a head too large): end our side, then read and drop a
    // bounded amount for a moment before closing (nginx's lingering close, in small).
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let linger = Instant::now();
    let mut drained = 0;
    while drained < MAX_LINGER_BYTES {
        let left = LINGER.saturating_sub(linger.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// How long at most, and how much, a connection is read after the answer before it is
/// closed.
const LINGER: Duration = Duration::from_millis(500);
const MAX_LINGER_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(head: &[u8]) -> Option<u16> {
        respond(head, || "m 1\n".into()).map(|r| r.status)
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address(":9100"), Ok(Address::Any(9100)));
        assert_eq!(
            parse_address("127.0.0.1:9100"),
            Ok(Address::Exact("127.0.0.1:9100".parse().unwrap()))
        );
        assert!(parse_address("[::1]:9100").is_ok());
        for bad in [
            "",
            ":",
            ":0",
            ":65536",
            "9100",
            "localhost:9100",
            "1.2.3.4",
            "[::1]:0",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_metrics_is_served() {
        assert_eq!(
            answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(200)
        );
        assert_eq!(answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some(200));
        assert_eq!(answer(b"GET / HTTP/1.1\r\n\r\n"), Some(404));
        assert_eq!(answer(b"GET /metricsx HTTP/1.1\r\n\r\n"), Some(404));
        assert_eq!(answer(b"POST /metrics HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(answer(b"\x16\x03\x01\x00"), Some(400));
        let head = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", || "m 1\n".into()).unwrap();
        let bytes = String::from_utf8(head.to_bytes()).unwrap();
        assert!(bytes.ends_with("\r\n\r\n") && bytes.contains("Content-Length: 4\r\n"));
        // A head that never ends is cut at MAX_HEAD.
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(answer(&long), Some(431));
    }

    #[test]
    fn render_runs_only_for_the_metrics() {
        let mut called = false;
        let _ = respond(b"GET /other HTTP/1.1\r\n\r\n", || {
            called = true;
            String::new()
        });
        assert!(!called);
    }

    /// A client that reads, but slowly, cannot hold the one connection past the
    /// deadline: every write makes progress, so only a deadline over all of them lets
    /// the next scrape in.
    #[test]
    fn a_slow_reader_does_not_hold_the_next_scrape() {
        let listener = bind(Address::Exact("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.spawn(|| "a".repeat(64 << 20)).unwrap();
        let request = b"GET /metrics HTTP/1.1\r\n\r\n";
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(request).unwrap();
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let keep = reading.clone();
        let slow = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while keep.load(std::sync::atomic::Ordering::Relaxed) {
                match slow.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let mut next = TcpStream::connect(addr).unwrap();
        next.write_all(request).unwrap();
        next.set_read_timeout(Some(DEADLINE * 3)).unwrap();
        let mut status = [0u8; 12];
        let answered = next.read_exact(&mut status);
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        slow.join().unwrap();
        answered.expect("the next scrape got no answer while a slow one read on");
        assert_eq!(&status, b"HTTP/1.1 200");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any bytes: an answer or a wait for more, never a panic; never the metrics
        /// unless the request asked for exactly them; never a wait once the head is
        /// at its limit.
        #[test]
        fn any_bytes_get_a_bounded_answer(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                          pad in 0usize..2) {
            let mut bytes = bytes;
            if pad == 1 {
                bytes.resize(MAX_HEAD, b'a');
            }
            let r = respond(&bytes, || "m 1\n".into());
            if bytes.len() >= MAX_HEAD {
                prop_assert!(r.is_some());
            }
            if let Some(r) = r {
                prop_assert!([200, 400, 404, 405, 431].contains(&r.status));
                if r.status == 200 {
                    prop_assert!(bytes.starts_with(b"GET /metrics") || bytes.starts_with(b"HEAD /metrics"));
                }
            }
        }

        /// Valid requests with random methods, paths and headers.
        #[test]
        fn well_formed_requests(method in "[A-Z]{1,7}", path in "/[a-z/?=]{0,12}",
                                headers in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,40}"), 0..40)) {
            let mut head = format!("{method} {path} HTTP/1.1\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {}\r\n", v.trim()));
            }
            head.push_str("\r\n");
            let r = respond(head.as_bytes(), || "m 1\n".into()).unwrap();
            let bare = path.split('?').next().unwrap();
            let want = if headers.len() > MAX_HEADERS {
                431
            } else if method != "GET" && method != "HEAD" {
                405
            } else if bare == "/metrics" {
                200
            } else {
                404
            };
            prop_assert_eq!(r.status, want);
        }
    }
}
