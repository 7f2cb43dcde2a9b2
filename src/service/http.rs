//! The status server (`watch --http ADDR:PORT`, off by default): `/healthz`,
//! `/metrics` (Prometheus text, `prometheus-client`, a `camera` label on
//! every series), `/api/state` (JSON), `/snapshot.jpg` (the latest frame)
//! and `/` (a status page: plain HTML and a little JavaScript, no external
//! assets). `?camera=NAME` picks a camera (default: the first). Served by
//! `tiny_http` on its own thread from the cameras' states, which their
//! loops update in place.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

/// Starts serving `server` on `addr`; the thread lives as long as the process.
pub fn serve(addr: SocketAddr, status: Arc<Server>) -> Result<SocketAddr, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("--http {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--http {addr}: not an IP address"))?;
    std::thread::Builder::new()
        .name("clip-edge-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                respond(&status, req);
            }
        })
        .map_err(|e| format!("--http {addr}: {e}"))?;
    log::info!("status page on http://{bound}/");
    Ok(bound)
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
    let r = match (req.method(), path.as_str()) {
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
            Some(s) => match s.snapshot_jpeg() {
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
        _ => ok(b"GET only\n".to_vec(), "text/plain").with_status_code(405),
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
