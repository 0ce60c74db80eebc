//! A loopback HTTP/1.1 server for tests: serves canned responses by path, honours Range requests, and
//! can misbehave on purpose (rate limits, dropped or stalled connections, wrong content types).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// How a route answers.
#[derive(Clone, Debug)]
pub struct Route {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The whole body (a Range request gets a slice of it).
    pub body: Vec<u8>,
    /// Answer 429 this many times first.
    pub rate_limited: usize,
    /// Close the connection after this many body bytes (a dropped download), once.
    pub cut_after: Option<usize>,
    /// Answer 401 unless the Authorization header is exactly this.
    pub require_auth: Option<String>,
    /// Send this many body bytes, then nothing for `stall_for` before closing (a stalled download), once.
    pub stall_after: Option<usize>,
    /// How long a stalled body sends nothing.
    pub stall_for: std::time::Duration,
}

impl Route {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
            rate_limited: 0,
            cut_after: None,
            require_auth: None,
            stall_after: None,
            stall_for: std::time::Duration::from_secs(3),
        }
    }

    /// 200 with a binary body.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Route {
        Route {
            content_type: "application/octet-stream".into(),
            ..Route::json(body)
        }
    }

    /// An error status with a small JSON body.
    pub fn status(status: u16) -> Route {
        Route {
            status,
            ..Route::json(b"{\"error\":\"x\"}".to_vec())
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
}

/// The server; it runs until the test process ends.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    /// Starts listening on a free loopback port.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || handle(stream, &state));
            }
        });
        Server { url, state }
    }

    /// Serves `route` at `path` (path and query, as requested).
    pub fn route(&self, path: &str, route: Route) {
        self.state.lock().unwrap().routes.insert(path.to_string(), route);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let route = {
            let mut st = state.lock().unwrap();
            st.seen.push(Seen {
                path: path.clone(),
                headers: headers.clone(),
            });
            match st.routes.get_mut(&path) {
                Some(r)
                    if r.require_auth.is_some()
                        && headers.get("authorization") != r.require_auth.as_ref() =>
                {
                    Some(Route::status(401))
                }
                Some(r) if r.rate_limited > 0 => {
                    r.rate_limited -= 1;
                    Some(Route::status(429))
                }
                Some(r) => {
                    let out = r.clone();
                    r.cut_after = None;
                    r.stall_after = None;
                    Some(out)
                }
                None => None,
            }
        };
        let route = route.unwrap_or_else(|| Route::status(404));
        let mut out = stream.try_clone().unwrap();
        let (status, body) = match headers
            .get("range")
            .and_then(|r| parse_range(r, route.body.len()))
        {
            Some((start, end)) if route.status == 200 => (206, route.body[start..end].to_vec()),
            _ => (route.status, route.body.clone()),
        };
        let reason = match status {
            200 => "OK",
            206 => "Partial Content",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nRetry-After: 0\r\n\r\n",
            route.content_type,
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if let Some(cut) = route.cut_after.filter(|c| *c < body.len()) {
            let _ = out.write_all(&body[..cut]);
            let _ = out.flush();
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        if let Some(stall) = route.stall_after.filter(|s| *s < body.len()) {
            let _ = out.write_all(&body[..stall]);
            let _ = out.flush();
            thread::sleep(route.stall_for);
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        if out.write_all(&body).is_err() {
            return;
        }
    }
}

fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end = if b.is_empty() {
        len
    } else {
        (b.parse::<usize>().ok()? + 1).min(len)
    };
    (start <= end && start <= len).then_some((start, end))
}
