//! `http://…` and `https://…` cameras (an ESP32-CAM, most IP cameras'
//! MJPEG URL), read in Rust with `ureq`: a `multipart/x-mixed-replace`
//! stream is split into its JPEGs (the parts' headers and boundaries are
//! skipped like any bytes between JPEGs, [`MjpegStream`]); a URL that
//! answers one JPEG per request (a still-image URL: a camera's snapshot URL) is asked again at the
//! loop's `--fps`, or twice a second.
//!
//! A user and password in the URL (`http://USER:PASSWORD@HOST/…`) are
//! sent as HTTP Basic authentication and never shown ([`redacted`]). An
//! `https://` camera's certificate is checked against the system's CA
//! certificates. The
//! connection is reopened with backoff when lost ([`Reopening`]); a camera
//! that sends nothing for [`STALL`] is lost.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::watch::secrets::percent_decode;

use super::{
    decode_into, redacted, Decode, Frame, FrameSource, LiveQueue, MjpegStream, Next, Opener,
    Reopening, SourceError, LIVE_QUEUE_DEPTH, MAX_JPEG_BYTES,
};

/// A camera that sends nothing for this long is lost (and reconnected).
pub const STALL: Duration = Duration::from_secs(10);
/// How long the camera's name may take to resolve, and a connection to
/// open.
const CONNECT: Duration = Duration::from_secs(5);
/// A still-image URL (a camera's snapshot URL) is asked this often when the loop sets no `--fps`.
const STILL_URL_FPS: f64 = 2.0;

/// The URL without its user and password, and those (percent-decoded).
#[derive(Clone)]
struct Target {
    url: String,
    /// The spec as logs and errors show it.
    shown: String,
    login: Option<(String, String)>,
    decode: Decode,
}

impl Target {
    fn parse(spec: &str) -> Result<Target, SourceError> {
        let shown = redacted(spec);
        let bad = |why: &str| SourceError::Unavailable {
            spec: shown.clone(),
            why: why.into(),
        };
        let (scheme, rest) = spec
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| bad("expected http://HOST/PATH or https://HOST/PATH"))?;
        // The authority ends at the first `/`, `?` or `#` (RFC 3986). An
        // `@` past it but before a query is a password with an unencoded
        // `/`, or an `@` in the path: which one cannot be told, and the
        // wrong guess would send the login to another host.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let cut = rest.find(['?', '#']).unwrap_or(rest.len());
        if !rest[..end].contains('@') && rest[end..cut].contains('@') {
            return Err(bad(
                "an `@` after the host: percent-encode a `/` in the password (%2F) or an `@` in the path (%40)",
            ));
        }
        let (login, host) = match rest[..end].rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let dec = |s: &str| {
                    percent_decode(s).ok_or_else(|| bad("a bad %-escape in the user or password"))
                };
                (Some((dec(user)?, dec(pass)?)), &rest[at + 1..])
            }
            None => (None, rest),
        };
        if host.is_empty() || host.starts_with('/') {
            return Err(bad("no host"));
        }
        Ok(Target {
            url: format!("{scheme}://{host}"),
            shown,
            login,
            decode: Decode::Exact,
        })
    }
}

/// Checks the spec's syntax.
pub fn check(spec: &str) -> Result<(), SourceError> {
    Target::parse(spec).map(|_| ())
}

/// Connects to the camera `spec` names and reads it behind a live queue,
/// reconnected with backoff when lost. `fps`: how often a still-image URL is
/// asked (the loop's `--fps`).
pub fn open(
    spec: &str,
    fps: Option<f64>,
    decode: Decode,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let target = Target {
        decode,
        ..Target::parse(spec)?
    };
    let every = super::period(fps.unwrap_or(STILL_URL_FPS));
    let shown = target.shown.clone();
    let open = move || -> Result<Box<dyn FrameSource>, SourceError> {
        let cam = HttpConnection::connect(&target, every)?;
        Ok(Box::new(LiveQueue::spawn(cam, LIVE_QUEUE_DEPTH)))
    };
    let mut open: Opener = Box::new(open);
    let first = open()?;
    Ok(Box::new(Reopening::new(&shown, first, open)))
}

/// A stream's body that gives up when no whole picture came for `limit`
/// since the last (a camera that sends a byte now and then, but no frame,
/// never trips the per-read timeout): each read checks the clock.
struct PictureDeadline<R> {
    inner: R,
    /// When the last picture came (or the stream opened).
    last: Arc<Mutex<Instant>>,
    limit: Duration,
}

impl<R: Read> Read for PictureDeadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let since = self.last.lock().map(|t| t.elapsed()).unwrap_or_default();
        if since > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no whole picture for {} s", self.limit.as_secs()),
            ));
        }
        self.inner.read(buf)
    }
}

/// One connection to the camera.
enum HttpConnection {
    /// A multipart stream, split into its JPEGs; when its last picture came.
    Stream(MjpegStream<Box<dyn Read + Send>>, Arc<Mutex<Instant>>),
    /// A URL answering one JPEG per request, asked every `every`.
    Still {
        agent: ureq::Agent,
        target: Target,
        every: Duration,
        /// The first request's JPEG, not yet handed out.
        pending: Option<Vec<u8>>,
        due: Instant,
        index: u64,
    },
}

/// The system's CA certificates (as for `mqtts://`), read once; Mozilla's
/// bundled roots where the system has none.
fn roots() -> ureq::tls::RootCerts {
    static ROOTS: std::sync::OnceLock<ureq::tls::RootCerts> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs().certs;
            if found.is_empty() {
                return ureq::tls::RootCerts::WebPki;
            }
            let certs: Vec<ureq::tls::Certificate<'static>> = found
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            ureq::tls::RootCerts::new_with_certs(&certs)
        })
        .clone()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots()).build())
        .http_status_as_error(false)
        .timeout_resolve(Some(CONNECT))
        .timeout_connect(Some(CONNECT))
        .timeout_recv_response(Some(STALL))
        .timeout_per_read(Some(STALL))
        .user_agent(concat!("clip-edge/", env!("CARGO_PKG_VERSION")))
        // A camera's login still goes with a redirect to another path of
        // the same host (never to another host, nor from https to http).
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .build()
        .into()
}

/// Asks for `target`; an answer other than 200 is an error naming it.
fn get(
    agent: &ureq::Agent,
    target: &Target,
) -> Result<ureq::http::Response<ureq::Body>, SourceError> {
    let unavailable = |why: String| SourceError::Unavailable {
        spec: target.shown.clone(),
        why,
    };
    let mut req = agent.get(&target.url);
    if let Some((user, pass)) = &target.login {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req = req.header("Authorization", format!("Basic {token}"));
    }
    // ureq's errors may quote the URL: its user and password are not in it
    // (they go in a header), credentials in its query are hidden.
    let resp = req.call().map_err(|e| {
        let why = e
            .to_string()
            .replace(&target.url, &redacted(&target.url));
        unavailable(if why.contains("invalid peer certificate") {
            format!("{why} (a camera with a self-signed certificate: its http:// URL on a trusted network, or ffmpeg:URL)")
        } else {
            why
        })
    })?;
    let status = resp.status();
    if status == 401 {
        let digest = resp.headers().get_all("www-authenticate").iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.trim_start().to_ascii_lowercase().starts_with("digest"))
        });
        return Err(unavailable(if digest {
            "401 Unauthorized: the camera asks for Digest authentication, which http:// sources do not do (use its rtsp:// URL, or ffmpeg:URL)".into()
        } else if target.login.is_some() {
            "401 Unauthorized: the camera refused the user and password".into()
        } else {
            "401 Unauthorized: the camera wants a login (http://USER:PASSWORD@HOST/...)".into()
        }));
    }
    if status != 200 {
        return Err(unavailable(format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    Ok(resp)
}

/// The body of a still-image answer, at most [`MAX_JPEG_BYTES`].
fn read_jpeg(
    resp: ureq::http::Response<ureq::Body>,
    target: &Target,
) -> Result<Vec<u8>, SourceError> {
    // A body that trickles (a byte now and then, each read within the
    // per-read timeout) is given [`STALL`] in all, as a stream's picture.
    let mut body = PictureDeadline {
        inner: resp
            .into_body()
            .into_with_config()
            .limit(MAX_JPEG_BYTES as u64)
            .reader(),
        last: Arc::new(Mutex::new(Instant::now())),
        limit: STALL,
    };
    let mut jpeg = Vec::new();
    body.read_to_end(&mut jpeg).map_err(|e| SourceError::Io {
        path: target.shown.clone().into(),
        source: std::io::Error::new(e.kind(), e.to_string()),
    })?;
    Ok(jpeg)
}

impl HttpConnection {
    fn connect(target: &Target, every: Duration) -> Result<HttpConnection, SourceError> {
        let agent = agent();
        let resp = get(&agent, target)?;
        let kind = resp.body().mime_type().unwrap_or("").to_ascii_lowercase();
        if kind.starts_with("multipart/") {
            log::info!("{}: an MJPEG stream ({kind})", target.shown);
            let last = Arc::new(Mutex::new(Instant::now()));
            let reader: Box<dyn Read + Send> = Box::new(PictureDeadline {
                inner: resp.into_body().into_with_config().reader(),
                last: last.clone(),
                limit: STALL,
            });
            return Ok(HttpConnection::Stream(
                MjpegStream::new(reader, &target.shown).decoding(target.decode),
                last,
            ));
        }
        if kind.starts_with("image/") || kind.is_empty() {
            log::info!(
                "{}: a still-image URL ({}), asked every {:.2} s",
                target.shown,
                if kind.is_empty() {
                    "no content type"
                } else {
                    &kind
                },
                every.as_secs_f64()
            );
            let jpeg = read_jpeg(resp, target)?;
            return Ok(HttpConnection::Still {
                agent,
                target: target.clone(),
                every,
                pending: Some(jpeg),
                due: Instant::now() + every,
                index: 0,
            });
        }
        Err(SourceError::Unavailable {
            spec: target.shown.clone(),
            why: format!(
                "the camera answered {kind}, not an MJPEG stream (multipart/x-mixed-replace) or a JPEG: check the URL"
            ),
        })
    }
}

impl FrameSource for HttpConnection {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        match self {
            HttpConnection::Stream(s, last) => {
                let n = s.next(frame)?;
                if n == Next::Frame {
                    if let Ok(mut t) = last.lock() {
                        *t = Instant::now();
                    }
                }
                Ok(n)
            }
            HttpConnection::Still {
                agent,
                target,
                every,
                pending,
                due,
                index,
            } => {
                let jpeg = match pending.take() {
                    Some(j) => j,
                    None => {
                        let wait = due.saturating_duration_since(Instant::now());
                        std::thread::sleep(wait);
                        *due = Instant::now().max(*due) + *every;
                        read_jpeg(get(agent, target)?, target)?
                    }
                };
                let i = *index;
                *index += 1;
                decode_into(
                    &jpeg,
                    &format!("{} frame {i}", target.shown),
                    frame,
                    target.decode,
                )?;
                frame.index = i;
                Ok(Next::Frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte every 20 ms, never a whole picture.
    struct Trickle;

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(20));
            buf[0] = 0;
            Ok(1)
        }
    }

    #[test]
    fn a_stream_that_trickles_bytes_but_no_picture_is_given_up() {
        let last = Arc::new(Mutex::new(Instant::now()));
        let mut r = PictureDeadline {
            inner: Trickle,
            last: last.clone(),
            limit: Duration::from_millis(200),
        };
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        let e = loop {
            match r.read(&mut buf) {
                Ok(n) => assert_eq!(n, 1),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // A picture resets the clock.
        *last.lock().unwrap() = Instant::now();
        assert_eq!(r.read(&mut buf).unwrap(), 1);
    }

    #[test]
    fn urls_split_their_login_and_never_show_the_password() {
        let t = Target::parse("http://admin:p%40ss@192.168.1.9:8080/video?x=1").unwrap();
        assert_eq!(t.url, "http://192.168.1.9:8080/video?x=1");
        assert_eq!(t.login, Some(("admin".to_string(), "p@ss".to_string())));
        assert!(
            !t.shown.contains("p%40ss") && t.shown.contains("***"),
            "{}",
            t.shown
        );
        let t = Target::parse("https://cam.local/snapshot.jpg").unwrap();
        assert_eq!(
            (t.url.as_str(), t.login.is_none()),
            ("https://cam.local/snapshot.jpg", true)
        );
        let t = Target::parse("http://u:a%2Fb@cam/img@2x.jpg").unwrap();
        assert_eq!(t.url, "http://cam/img@2x.jpg");
        assert_eq!(t.login.unwrap().1, "a/b");
        // Which `@` ends the login cannot be told: refused, not guessed.
        for ambiguous in ["http://u:a/b@cam/stream", "http://cam/img@2x.jpg?x"] {
            let e = Target::parse(ambiguous).err().expect("refused").to_string();
            assert!(e.contains("percent-encode"), "{e}");
        }
        for bad in ["http://", "http:///x", "ftp://cam/x", "http://u:%zz@cam/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
