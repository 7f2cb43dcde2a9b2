//! The status server (`watch --http ADDR:PORT`, off by default): `/healthz`,
//! `/metrics` (Prometheus text, `prometheus-client`, a `camera` label on
//! every series), `/api/state` (JSON), `/snapshot.jpg` (the latest frame)
//! and `/` (a status page: plain HTML and a little JavaScript, no external
//! assets). `?camera=NAME` picks a camera (default: the first). Served by
//! `tiny_http` on its own thread from the cameras' states, which their
//! loops update in place.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use super::metrics::Families;
pub use super::status::{Status, StatusSink, RECENT_EVENTS, TOP_K};
use crate::watch::lock;

/// What the server answers from: the metrics and each camera's status
/// (cameras come and go with a reload).
pub struct Server {
    families: Families,
    cameras: Mutex<Vec<Arc<Status>>>,
}

impl Server {
    /// `info` (model, engine, version) is the metrics' `build_info`;
    /// `mqtt`: whether the cameras publish to a broker.
    pub fn new(info: &[(&str, String)], mqtt: bool) -> Arc<Self> {
        Arc::new(Server {
            families: Families::new(info, mqtt),
            cameras: Mutex::new(Vec::new()),
        })
    }

    pub fn families(&self) -> &Families {
        &self.families
    }

    /// Adds `status`, or replaces the camera of its name.
    pub fn set_camera(&self, status: Arc<Status>) {
        let mut c = lock(&self.cameras);
        match c.iter_mut().find(|s| s.camera() == status.camera()) {
            Some(s) => *s = status,
            None => c.push(status),
        }
    }

    /// Removes camera `name` (gone from the config after a reload).
    pub fn remove_camera(&self, name: &str) {
        lock(&self.cameras).retain(|s| {
            let keep = s.camera() != name;
            if !keep {
                s.remove_metrics(&self.families);
            }
            keep
        });
    }

    /// Camera `name`'s status, or the first camera's.
    fn camera(&self, name: Option<&str>) -> Option<Arc<Status>> {
        let c = lock(&self.cameras);
        match name {
            Some(n) => c.iter().find(|s| s.camera() == n).cloned(),
            None => c.first().cloned(),
        }
    }

    fn cameras(&self) -> Vec<Arc<Status>> {
        lock(&self.cameras).clone()
    }

    fn metrics_text(&self) -> String {
        for s in self.cameras() {
            s.sync_metrics();
        }
        self.families.text()
    }

    /// `ok` when every camera has had a frame lately (`degraded: ...` when
    /// one runs degraded); None, with the silent cameras, otherwise.
    fn health(&self) -> Result<Option<String>, Vec<String>> {
        let cams = self.cameras();
        let silent: Vec<String> = cams
            .iter()
            .filter(|s| !s.healthy())
            .map(|s| s.camera().to_string())
            .collect();
        if !silent.is_empty() || cams.is_empty() {
            return Err(silent);
        }
        let troubles: Vec<String> = cams.iter().filter_map(|s| s.trouble()).collect();
        Ok((!troubles.is_empty()).then(|| troubles.join("; ")))
    }
}

/// How long one write of a response may wait on a client that does not
/// read (a phone that left the Wi-Fi in the middle of a snapshot).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent this long is probed (TCP keepalive), and closed when
/// three probes 10 s apart go unanswered (a client that is gone).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Responses written at once, at most; more requests wait their turn.
const RESPONDERS: usize = 16;
/// How often the server checks that its address still answers: tiny_http's
/// accepting thread ends (without a word to `recv`) when a connection
/// comes while the process is out of descriptors, and the page would be
/// gone for good while the cameras run on.
pub const LISTEN_CHECK: Duration = Duration::from_secs(10);

/// A listening socket whose connections inherit a write timeout and TCP
/// keepalive (Linux copies both on `accept`; a read timeout would also
/// stop `accept` itself, so there is none).
fn listener(addr: SocketAddr, write: Duration) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, TcpKeepalive, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_write_timeout(Some(write))?;
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(Duration::from_secs(10))
            .with_retries(3),
    )?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

/// Starts serving `server` on `addr`; the thread lives as long as the
/// process. Each response is written on a thread of its own (at most
/// [`RESPONDERS`] at once), so a client that stops reading holds up no
/// other, and a write waits at most [`WRITE_TIMEOUT`]; a server whose
/// listening socket failed (out of file descriptors) is made again on the
/// same address.
/// An error names `--http ADDR` and keeps the socket's error kind (an
/// address in use is a setting; one not there yet, at boot, may come).
pub fn serve(addr: SocketAddr, status: Arc<Server>) -> std::io::Result<SocketAddr> {
    let make = move |addr: SocketAddr| {
        listener(addr, WRITE_TIMEOUT)
            .and_then(|l| tiny_http::Server::from_listener(l, None).map_err(std::io::Error::other))
    };
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("--http {addr}: {e}"));
    let server = make(addr).map_err(named)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| named(std::io::Error::other("not an IP address")))?;
    std::thread::Builder::new()
        .name("clip-edge-http".into())
        .spawn(move || {
            let busy = Arc::new((Mutex::new(0usize), Condvar::new()));
            let mut server = server;
            let mut checked = Instant::now();
            loop {
                let dead = match server.recv_timeout(LISTEN_CHECK) {
                    Ok(Some(req)) => {
                        respond_in_turn(&status, req, &busy);
                        None
                    }
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                };
                // tiny_http's accepting thread has ended, with an error or
                // without one (its address no longer answers): serve again
                // from a new socket.
                let dead = dead.or_else(|| {
                    if checked.elapsed() < LISTEN_CHECK {
                        return None;
                    }
                    checked = Instant::now();
                    answers(bound).err()
                });
                if let Some(why) = dead {
                    log::error!("http: {bound}: {why}; listening again");
                    drop(server);
                    server = loop {
                        std::thread::sleep(Duration::from_secs(1));
                        match make(bound) {
                            Ok(s) => break s,
                            Err(e) => log::error!("http: {bound}: {e}; trying again"),
                        }
                    };
                }
            }
        })
        .map_err(named)?;
    log::info!("status page on http://{bound}/");
    Ok(bound)
}

/// Whether the server's address takes a connection (one closed at once:
/// no request, so its connection thread ends with it). A refusal is the
/// answer that counts: a full backlog or a slow accept is not a dead
/// server.
fn answers(bound: SocketAddr) -> Result<(), String> {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    match std::net::TcpStream::connect_timeout(
        &SocketAddr::new(ip, bound.port()),
        Duration::from_secs(2),
    ) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("the address no longer takes connections".into())
        }
        _ => Ok(()),
    }
}

/// Raises this process's descriptor limit to what the system allows (a
/// service's default soft limit, 1,024, is 500 idle connections to the
/// status page); says so when it cannot.
pub fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            log::debug!("http: the descriptor limit stays: {e}");
        }
    }
}

/// Answers `req` on a thread of its own once fewer than [`RESPONDERS`] are
/// writing.
fn respond_in_turn(
    status: &Arc<Server>,
    req: tiny_http::Request,
    busy: &Arc<(Mutex<usize>, Condvar)>,
) {
    let (n, cv) = &**busy;
    let mut g = lock(n);
    while *g >= RESPONDERS {
        g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    *g += 1;
    drop(g);
    /// Gives the turn back however the response ends.
    struct Turn(Arc<(Mutex<usize>, Condvar)>);
    impl Drop for Turn {
        fn drop(&mut self) {
            let (n, cv) = &*self.0;
            *lock(n) -= 1;
            cv.notify_one();
        }
    }
    let (status, turn) = (status.clone(), Turn(busy.clone()));
    let spawned = std::thread::Builder::new()
        .name("clip-edge-http-response".into())
        .spawn(move || {
            let _turn = turn;
            respond(&status, req);
        });
    if let Err(e) = spawned {
        log::warn!("http: {e}");
    }
}

fn header(k: &str, v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("a valid header")
}

/// The value of `key` in the query of `url`.
fn query<'u>(url: &'u str, key: &str) -> Option<&'u str> {
    let q = url.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn respond(server: &Server, req: tiny_http::Request) {
    use tiny_http::Response;
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let camera = query(req.url(), "camera").map(str::to_string);
    let ok = |body: Vec<u8>, ctype: &str| {
        Response::from_data(body)
            .with_header(header("Content-Type", ctype))
            .with_header(header("Cache-Control", "no-store"))
    };
    let no_camera = || {
        ok(
            format!("no camera {:?}\n", camera.as_deref().unwrap_or("")).into_bytes(),
            "text/plain",
        )
        .with_status_code(404)
    };
    // HEAD is answered as GET (tiny_http leaves the body out).
    let method = match req.method() {
        tiny_http::Method::Head => tiny_http::Method::Get,
        m => m.clone(),
    };
    let r = match (method, path.as_str()) {
        (tiny_http::Method::Get, "/healthz") => match server.health() {
            // Frames flow and events are delivered: up, but say why
            // something is not kept.
            Ok(Some(why)) => ok(format!("degraded: {why}\n").into_bytes(), "text/plain"),
            Ok(None) => ok(b"ok\n".to_vec(), "text/plain"),
            Err(silent) if silent.len() > 1 || server.cameras().len() > 1 => ok(
                format!("no frame lately from camera {}\n", silent.join(", ")).into_bytes(),
                "text/plain",
            )
            .with_status_code(503),
            Err(_) => ok(b"no frame lately\n".to_vec(), "text/plain").with_status_code(503),
        },
        (tiny_http::Method::Get, "/metrics") => ok(
            server.metrics_text().into_bytes(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (tiny_http::Method::Get, "/api/state") => match server.camera(camera.as_deref()) {
            Some(s) => {
                let mut state = s.state_json();
                state["cameras"] = server
                    .cameras()
                    .iter()
                    .map(|c| c.camera().to_string())
                    .collect::<Vec<_>>()
                    .into();
                ok(state.to_string().into_bytes(), "application/json")
            }
            None => no_camera(),
        },
        (tiny_http::Method::Get, "/snapshot.jpg") => match server.camera(camera.as_deref()) {
            Some(s) => match s.latest_frame_jpeg() {
                Some(j) => ok(j, "image/jpeg"),
                None => ok(b"no frame yet\n".to_vec(), "text/plain").with_status_code(404),
            },
            None => no_camera(),
        },
        (tiny_http::Method::Get, "/") => ok(PAGE.as_bytes().to_vec(), "text/html; charset=utf-8"),
        (tiny_http::Method::Get, p) if p.starts_with("/snapshots/") => {
            let id = p["/snapshots/".len()..].strip_suffix(".jpg").unwrap_or("");
            match server.cameras().iter().find_map(|s| s.event_snapshot(id)) {
                Some(j) => ok(j, "image/jpeg"),
                None => ok(b"no such snapshot\n".to_vec(), "text/plain").with_status_code(404),
            }
        }
        (tiny_http::Method::Get, _) => {
            ok(b"not found\n".to_vec(), "text/plain").with_status_code(404)
        }
        _ => ok(b"GET or HEAD only\n".to_vec(), "text/plain")
            .with_status_code(405)
            .with_header(header("Allow", "GET, HEAD")),
    };
    if let Err(e) = req.respond(r) {
        log::debug!("http: {e}");
    }
}

/// The status page: a banner when the feed is stale, the latest frame (with
/// the open events' boxes), the watched labels with their thresholds and
/// live scores, a chart of fps and latency over the last ten minutes, the
/// top labels, and recent events with their snapshots, times (the
/// browser's) and durations. No external assets; fits a phone.
const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Everything the server sends on `s` until it closes it.
    fn read_all(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn connections_inherit_the_write_timeout_and_keepalive() {
        let l = listener("127.0.0.1:0".parse().unwrap(), Duration::from_millis(700)).unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert_eq!(s.write_timeout().unwrap(), Some(Duration::from_millis(700)));
        assert!(s.keepalive().unwrap());
        assert_eq!(s.read_timeout().unwrap(), None);
    }

    #[test]
    fn head_is_answered_and_other_methods_named() {
        let server = Server::new(&[("version", "test".into())], false);
        let addr = serve("127.0.0.1:0".parse().unwrap(), server).unwrap();
        // A client that connects and never sends holds up no one.
        let _silent = TcpStream::connect(addr).unwrap();
        let mut head = TcpStream::connect(addr).unwrap();
        write!(head, "HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
        let r = read_all(&mut head);
        assert!(
            r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n"), "a body after HEAD: {r}");
        let mut post = TcpStream::connect(addr).unwrap();
        write!(post, "POST /healthz HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        let r = read_all(&mut post);
        assert!(r.contains(" 405 ") && r.contains("Allow: GET, HEAD"), "{r}");
    }
}
