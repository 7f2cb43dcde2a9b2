//! `clip-edge watch`: resolves the settings (flags over `--config`), opens
//! the source and the edges (GPIO, MQTT, HTTP, systemd), runs the loop, and
//! reloads on SIGHUP: the config is read again and the new bundle loaded
//! and verified completely before the swap; a bad one is refused with a log
//! line and the running one goes on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use clip_edge::bundle::Trust;
use clip_edge::engine::{Engine, EngineError};
use clip_edge::service::{http, systemd::Systemd};
use clip_edge::signature::read_public_key;
use clip_edge::watch::config::WatchArgs;
use clip_edge::watch::{self, gpio, mqtt, Ended, Sink, Watcher};

/// The config read when `watch` is given neither `--config`, `--bundle`
/// nor `--source` (what the packaged unit runs); `CLIP_EDGE_CONFIG`
/// overrides the path.
pub const DEFAULT_CONFIG: &str = "/etc/clip-edge/watch.toml";

/// This machine's name (MQTT topics, Home Assistant's device).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "clip-edge".into())
}

/// Events on stdout: a human line each (`12:04:31Z start red star 0.97
/// frame 212`), or the JSON log line.
struct Console {
    json: bool,
}

impl Sink for Console {
    fn event(&mut self, _watched: usize, r: &watch::events::EventRecord, line: &[u8], _on: bool) {
        if self.json {
            out!("{}", String::from_utf8_lossy(line));
            return;
        }
        out!("{}", human_line(r));
    }
}

/// One event as a person reads it.
fn human_line(r: &watch::events::EventRecord) -> String {
    use watch::events::EventKind;
    // RFC 3339 UTC: the time of day, seconds.
    let clock = r
        .time
        .get(11..19)
        .map_or(r.time.clone(), |t| format!("{t}Z"));
    let mut s = match r.event {
        EventKind::Start | EventKind::End => format!(
            "{clock} {} {} {:.2} frame {}",
            if r.event == EventKind::Start {
                "start"
            } else {
                "end"
            },
            r.label,
            r.score,
            r.frame
        ),
        EventKind::SourceLost => format!("{clock} source lost at frame {}", r.frame),
        EventKind::SourceBack => format!("{clock} source back"),
    };
    if let Some(z) = &r.zone {
        s += &format!(" zone {z}");
    }
    if let Some([x, y, w, h]) = r.bbox {
        s += &format!(" box {x},{y} {w}x{h}");
    }
    if let Some(t) = r.track {
        s += &format!(" track {t}");
    }
    if let Some(why) = &r.reason {
        s += &format!(" ({why})");
    }
    s
}

/// The start-up line: what runs, on what, watching what.
fn hello_line(model: &Model, spec: &str) -> String {
    let e = &model.engine;
    let kernels = match e.native_summary() {
        Some(n) => format!(", kernels {}", n.kernels),
        None => String::new(),
    };
    let labels: Vec<String> = model
        .opts
        .watched
        .iter()
        .map(|w| format!("{} ({})", w.label, w.threshold))
        .collect();
    format!(
        "watching {} for {} with {} ({} {}, {} engine{kernels}, regions {})",
        watch::source::redacted(spec),
        labels.join(", "),
        model.bundle.display(),
        e.bundle.manifest.model.architecture,
        e.bundle.manifest.precision,
        e.kind(),
        model.opts.regions.mode,
    )
}

/// What a reload can change: the bundle, what is watched and how.
struct Model {
    engine: Engine,
    opts: watch::Options,
    bundle: PathBuf,
}

/// Flags over the config file (read now), with the default config when
/// nothing names one.
fn settings(cli: &WatchArgs) -> Result<WatchArgs> {
    let mut cli = cli.clone();
    if cli.config.is_none() && cli.bundle.is_none() && cli.source.is_none() {
        match std::env::var_os("CLIP_EDGE_CONFIG").map(PathBuf::from) {
            Some(path) if !path.is_file() => {
                bail!("CLIP_EDGE_CONFIG={}: no such file", path.display())
            }
            Some(path) => cli.config = Some(path),
            None => {
                let path = PathBuf::from(DEFAULT_CONFIG);
                if path.exists() {
                    cli.config = Some(path);
                }
            }
        }
    }
    cli.merged().map_err(anyhow::Error::msg)
}

/// Loads and checks the bundle and the watch options of `args`.
fn load_model(args: &WatchArgs, source: &str, threads: usize) -> Result<Model> {
    let bundle = args
        .bundle
        .clone()
        .context("--bundle is required (or `bundle = \"DIR\"` in the config)")?;
    let rules = args.rules().map_err(|e| anyhow::anyhow!("--{e}"))?;
    if let Some(f) = args.fps {
        if !(f > 0.0 && f <= 1000.0) {
            bail!("--fps {f}: expected more than 0 and at most 1000");
        }
    }
    if let Some(m) = args.motion_threshold {
        if !(0.0..=255.0).contains(&m) {
            bail!("--motion-threshold {m}: expected 0 to 255");
        }
    }
    let trust = Trust {
        require_signature: match &args.require_signature {
            Some(p) => Some(read_public_key(p)?),
            None => None,
        },
    };
    let engine = Engine::load_device(
        &bundle,
        &trust,
        args.engine.unwrap_or_default(),
        threads,
        args.device.unwrap_or_default(),
    )
    .with_context(|| format!("loading bundle {}", bundle.display()))?;
    let watched = args
        .watched(engine.bundle.labels())
        .map_err(anyhow::Error::msg)?;
    let regions = args.region_options(&watched).map_err(anyhow::Error::msg)?;
    let snapshot_retention = args.snapshot_retention().map_err(anyhow::Error::msg)?;
    if args.motion_threshold.is_some() && !regions.whole_frame() {
        bail!("--motion-threshold: skips whole frames, so it applies with --regions full and no zone only");
    }
    let opts = watch::Options {
        watched,
        rules,
        fps: args.fps,
        motion_threshold: args.motion_threshold,
        snapshots: args.snapshots.clone(),
        snapshot_retention,
        source_name: watch::source::redacted(source),
        regions,
    };
    Ok(Model {
        engine,
        opts,
        bundle,
    })
}

/// The running service: the model, the source, the edges (GPIO, MQTT, the
/// status server, systemd) and the signals.
struct Service {
    spec: String,
    threads: usize,
    model: Model,
    source: Box<dyn watch::source::FrameSource>,
    log: Option<watch::events::EventLog>,
    last_run: Option<u64>,
    gpio_lines: Option<gpio::GpioLines<linux_embedded_hal::CdevPin>>,
    mqtt: Option<mqtt::Mqtt>,
    status: Option<Arc<http::Status>>,
    status_sink: Option<http::StatusSink>,
    console: Option<Console>,
    systemd: Systemd,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

/// The exit status of a watch that cannot start until its settings are
/// fixed (EX_CONFIG, sysexits(3)): the unit's `RestartPreventExitStatus`
/// keeps systemd from restarting it in a loop.
pub const EX_CONFIG: u8 = 78;

/// A problem with the settings: `main` exits with [`EX_CONFIG`].
#[derive(Debug)]
pub struct ConfigError(pub anyhow::Error);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConfigError {}

pub fn run(cli: WatchArgs) -> Result<ExitCode> {
    let args = settings(&cli).map_err(ConfigError)?;
    if cli.check {
        return Ok(check(&args));
    }
    let checked = match validate(&args) {
        Ok(c) => c,
        Err(mut problems) => {
            let first = problems.remove(0);
            // A GPU not ready yet is worth a restart; the rest is the config.
            let device = matches!(
                first.downcast_ref::<EngineError>(),
                Some(EngineError::Device(_))
            );
            return Err(if device {
                first
            } else {
                ConfigError(first).into()
            });
        }
    };
    let console = (!cli.quiet).then_some(Console {
        json: cli.json_events,
    });
    // With --json-events stdout holds JSON lines only.
    match &console {
        Some(c) if c.json => eprintln!("{}", hello_line(&checked.model, &checked.spec)),
        Some(_) => out!("{}", hello_line(&checked.model, &checked.spec)),
        None => {}
    }
    let mut service = set_up(checked, console)?;
    let result = service.run(&cli);
    service.finish(result, args.stats)
}

/// `watch --check`: every problem with the settings, one line each, and
/// the exit status (0 when there is none, [`EX_CONFIG`] otherwise).
fn check(args: &WatchArgs) -> ExitCode {
    match validate(args) {
        Ok(c) => {
            out!(
                "ok: bundle {} ({}), watching {} from {}",
                c.model.bundle.display(),
                c.model.engine.bundle.manifest.precision,
                c.model
                    .opts
                    .watched
                    .iter()
                    .map(|w| w.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                watch::source::redacted(&c.spec)
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p:#}");
            }
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Settings that hold, with the model loaded and verified.
struct Checked {
    spec: String,
    gpio_specs: Vec<gpio::GpioSpec>,
    mqtt_url: Option<(mqtt::MqttUrl, Option<Arc<rustls::ClientConfig>>)>,
    http_addr: Option<std::net::SocketAddr>,
    health_timeout: f64,
    threads: usize,
    model: Model,
    events: Option<PathBuf>,
    events_rotation: Option<watch::events::Rotation>,
    node: Option<String>,
}

/// Checks every setting that can be checked without opening anything (the
/// bundle is loaded and verified; the source's syntax, folder or program
/// checked): all the problems, or what the service needs.
fn validate(args: &WatchArgs) -> std::result::Result<Checked, Vec<anyhow::Error>> {
    let mut problems: Vec<anyhow::Error> = Vec::new();
    let mut spec = args.source.clone();
    if let (Some(s), Some(p)) = (&spec, &args.source_password_file) {
        match watch::config::read_password_file("source_password_file", p)
            .and_then(|pw| watch::config::with_url_password(s, &pw))
        {
            Ok(with) => spec = Some(with),
            Err(e) => problems.push(anyhow::Error::msg(e)),
        }
    }
    match &spec {
        None => problems.push(anyhow::anyhow!(
            "--source is required (dir:PATH, stdin:mjpeg, v4l2:/dev/videoN, ffmpeg:INPUT, rtsp://URL, http://URL or libcamera:)"
        )),
        Some(s) => {
            if let Err(e) = watch::source::check(s) {
                problems.push(e.into());
            }
        }
    }
    let mut gpio_specs: Vec<gpio::GpioSpec> = Vec::new();
    for g in &args.gpio {
        match g.parse() {
            Ok(s) => gpio_specs.push(s),
            Err(e) => problems.push(anyhow::Error::msg(e)),
        }
    }
    let mut mqtt_url = None;
    let tls_files = mqtt::TlsFiles {
        ca: args.mqtt_ca.clone(),
        cert: args.mqtt_cert.clone(),
        key: args.mqtt_key.clone(),
    };
    if let Some(u) = &args.mqtt {
        let url = u
            .parse::<mqtt::MqttUrl>()
            .and_then(|u| match &args.mqtt_password_file {
                Some(p) => u.with_password_file(p),
                None => Ok(u),
            })
            .and_then(|u| match (u.tls, tls_files.first()) {
                (true, _) => Ok((u, Some(mqtt::client_config(&tls_files)?))),
                (false, Some((key, path))) => Err(format!(
                    "{key} {}: the --mqtt URL is not mqtts:// (TLS files need mqtts://HOST/...)",
                    path.display()
                )),
                (false, None) => Ok((u, None)),
            });
        match url {
            Ok(u) => mqtt_url = Some(u),
            Err(e) => problems.push(anyhow::Error::msg(e)),
        }
    } else if let Some(p) = &args.mqtt_password_file {
        problems.push(anyhow::anyhow!(
            "mqtt_password_file {}: no --mqtt broker to log in to",
            p.display()
        ));
    } else if let Some((key, path)) = tls_files.first() {
        problems.push(anyhow::anyhow!(
            "{key} {}: no --mqtt broker to connect to",
            path.display()
        ));
    }
    let mut http_addr = None;
    if let Some(h) = &args.http {
        match watch::config::http_addr(h) {
            Ok(a) => http_addr = Some(a),
            Err(e) => problems.push(anyhow::Error::msg(e)),
        }
    }
    let events_rotation = args.events_rotation().unwrap_or_else(|e| {
        problems.push(anyhow::Error::msg(e));
        None
    });
    let health_timeout = args.health_timeout.unwrap_or(10.0);
    if !(health_timeout > 0.0 && health_timeout <= 86_400.0) {
        problems.push(anyhow::anyhow!(
            "--health-timeout {health_timeout}: expected more than 0 and at most 86400 seconds"
        ));
    }
    let threads = args.threads.unwrap_or(1);
    if let Err(e) = super::set_threads(threads) {
        problems.push(e);
    }
    let model = match load_model(args, spec.as_deref().unwrap_or(""), threads) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    if let Some(m) = &model {
        for g in &mut gpio_specs {
            // The bundle's spelling of the label, as events carry it.
            let labels: Vec<String> = m.opts.watched.iter().map(|w| w.label.clone()).collect();
            if let Some(i) = watch::config::find_label(&labels, &g.label) {
                g.label = labels[i].clone();
            } else {
                problems.push(anyhow::anyhow!(
                    "--gpio {}:{}={}: {:?} is not watched (add --watch {:?})",
                    g.chip,
                    g.line,
                    g.label,
                    g.label,
                    g.label
                ));
            }
        }
    }
    match (spec, model) {
        (Some(spec), Some(model)) if problems.is_empty() => Ok(Checked {
            spec,
            gpio_specs,
            mqtt_url,
            http_addr,
            health_timeout,
            threads,
            model,
            events: args.events.clone(),
            events_rotation,
            node: args.node.clone(),
        }),
        _ => Err(problems),
    }
}

/// Opens the edges and the source, installs the signal handlers and tells
/// systemd the service is ready.
fn set_up(checked: Checked, console: Option<Console>) -> Result<Service> {
    let Checked {
        spec,
        gpio_specs,
        mqtt_url,
        http_addr,
        health_timeout,
        threads,
        model,
        events,
        events_rotation,
        node,
    } = checked;
    let labels: Vec<String> = model.opts.watched.iter().map(|w| w.label.clone()).collect();

    // GPIO lines, each following a watched label.
    let mut pins = Vec::new();
    for g in &gpio_specs {
        #[cfg(target_os = "linux")]
        pins.push((
            g.label.clone(),
            gpio::open_cdev(g).map_err(anyhow::Error::msg)?,
            format!("{}:{}", g.chip, g.line),
        ));
        #[cfg(not(target_os = "linux"))]
        bail!("--gpio: GPIO lines need Linux");
    }
    let gpio_lines = (!pins.is_empty()).then(|| gpio::GpioLines::new(pins));

    let (log, last_run, closed) = match &events {
        Some(p) => {
            let (log, rec) = watch::events::EventLog::open_rotating(p, events_rotation)?;
            for c in &rec.closed {
                log::warn!(
                    "{}: event {} ({}) was left open by a crash; closed as interrupted",
                    p.display(),
                    c.id,
                    c.label
                );
            }
            (Some(log), rec.last_run, rec.closed)
        }
        None => (None, None, Vec::new()),
    };
    let mqtt = mqtt_url.map(|(u, tls)| {
        let node = node.clone().unwrap_or_else(host_name);
        let zones: Vec<mqtt::ZoneLabels> = model
            .opts
            .regions
            .zones
            .iter()
            .map(|z| {
                let ls = match &z.watch {
                    Some(list) => list.iter().map(|(i, _)| labels[*i].clone()).collect(),
                    None => labels.clone(),
                };
                (z.name.clone(), ls)
            })
            .collect();
        // The status page, for Home Assistant's "visit device" link.
        let page = http_addr.map(|a| {
            if a.ip().is_unspecified() {
                format!("http://{}:{}/", host_name(), a.port())
            } else {
                format!("http://{a}/")
            }
        });
        let m = mqtt::Mqtt::start(u, tls, &labels, &node, &zones, page.as_deref());
        for c in &closed {
            m.event(&serde_json::to_vec(c).expect("an event serialises"));
        }
        m
    });
    let status = match http_addr {
        Some(addr) => {
            let m = &model.engine.bundle.manifest;
            let info = [
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("engine", model.engine.kind().to_string()),
                ("precision", m.precision.to_string()),
                ("architecture", m.model.architecture.clone()),
                ("bundle", model.bundle.display().to_string()),
            ];
            let status = http::Status::new(
                model.engine.bundle.labels().to_vec(),
                &info,
                Duration::from_secs_f64(health_timeout),
                mqtt.as_ref().map(mqtt::Mqtt::stats_source),
            );
            http::serve(addr, status.clone()).map_err(anyhow::Error::msg)?;
            Some(status)
        }
        None => None,
    };
    let status_sink = status.clone().map(http::StatusSink);
    let source = watch::source::open(&spec, model.opts.fps)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    let mut systemd = Systemd::from_env();
    let hello = format!(
        "watching {} for {}",
        watch::source::redacted(&spec),
        labels.join(", ")
    );
    log::info!("{hello}");
    systemd.ready(&hello);
    Ok(Service {
        spec,
        threads,
        model,
        source,
        log,
        last_run,
        gpio_lines,
        mqtt,
        status,
        status_sink,
        console,
        systemd,
        stop,
        reload,
    })
}

impl Service {
    /// Runs the loop until the source ends or a stop; on SIGHUP, a reload
    /// that loads swaps the model (open events end as "reload"), one that
    /// fails is logged and the running model goes on.
    fn run(&mut self, cli: &WatchArgs) -> Result<watch::Stats> {
        loop {
            let mut sinks: Vec<&mut dyn Sink> = Vec::new();
            if let Some(s) = self.status_sink.as_mut() {
                sinks.push(s);
            }
            if let Some(g) = self.gpio_lines.as_mut() {
                sinks.push(g);
            }
            if let Some(m) = self.mqtt.as_mut() {
                sinks.push(m);
            }
            if let Some(c) = self.console.as_mut() {
                sinks.push(c);
            }
            let mut watcher = Watcher::new(
                &mut self.model.engine,
                self.model.opts.clone(),
                self.log.take().map(|l| (l, self.last_run)),
                sinks,
            );
            // Run until the end, a stop, or a reload that loads.
            let next: Result<Option<Model>> = loop {
                let r = watcher.run_until(
                    self.source.as_mut(),
                    &self.stop,
                    &self.reload,
                    &mut |w, frame| {
                        self.systemd.observe(w);
                        if let Some(s) = &self.status {
                            s.observe(w, frame);
                        }
                    },
                );
                match r {
                    Ok(Ended::Paused) => {
                        self.reload.store(false, Ordering::Relaxed);
                        log::warn!("SIGHUP: reloading the config and the bundle");
                        // Zones are checked against the frames coming now.
                        let fits = |m: Model| match watcher.frame_size() {
                            Some((w, h)) => m
                                .opts
                                .regions
                                .check_frame(w, h)
                                .map(|()| m)
                                .map_err(anyhow::Error::msg),
                            None => Ok(m),
                        };
                        match reload(cli, &self.spec, self.threads).and_then(fits) {
                            Ok(new) => match watcher.end_all("reload") {
                                Ok(()) => break Ok(Some(new)),
                                Err(e) => break Err(e.into()),
                            },
                            Err(e) => log::error!(
                                "reload refused, the running bundle goes on: {}",
                                format!("{e:#}").replace('\n', " ")
                            ),
                        }
                    }
                    Ok(_) => break Ok(None),
                    Err(e) => break Err(e.into()),
                }
            };
            let stats = watcher.stats;
            self.last_run = Some(watcher.run_id());
            self.log = watcher.into_log();
            match next {
                Ok(Some(new)) => {
                    log::warn!(
                        "reloaded: bundle {} ({}), watching {}",
                        new.bundle.display(),
                        new.engine.bundle.manifest.precision,
                        new.opts
                            .watched
                            .iter()
                            .map(|w| w.label.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.model = new;
                }
                Ok(None) => return Ok(stats),
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells systemd of a stop, gives the broker a grace to flush, and
    /// prints the statistics when asked.
    fn finish(self, result: Result<watch::Stats>, print_stats: bool) -> Result<ExitCode> {
        let Service {
            model,
            threads,
            systemd,
            stop,
            mqtt,
            gpio_lines,
            ..
        } = self;
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            systemd.stopping();
        }
        // A stop must finish within systemd's patience: a short grace for the broker.
        let grace = Duration::from_millis(if stopping { 800 } else { 3000 });
        let mqtt_stats = mqtt.map(|m| m.finish(grace));
        let stats = match result {
            Ok(s) => s,
            // A zone outside the source's frame: the config, not a crash.
            Err(e) if matches!(e.downcast_ref(), Some(watch::WatchError::Settings(_))) => {
                return Err(ConfigError(e).into())
            }
            Err(e) => return Err(e),
        };
        if print_stats {
            let per = |ms: f64| ms / stats.frames.max(1) as f64;
            out!(
                "{}",
                json!({
                    "stats": stats,
                    "engine": model.engine.kind(),
                    "threads": threads,
                    "fps": stats.frames as f64 / (stats.wall_ms / 1e3).max(1e-9),
                    "per_frame_ms": {
                        "source": per(stats.source_ms),
                        "classify": per(stats.classify_ms),
                        "preprocess": per(stats.preprocess_ms),
                        "encode": per(stats.encode_ms),
                        "score": per(stats.score_ms),
                        "loop": per(stats.loop_ms),
                    },
                    "regions": model.opts.regions.mode,
                    "crops_per_frame": stats.crops as f64 / stats.frames.max(1) as f64,
                    "encode_ms_per_crop": (stats.crops > 0).then(|| stats.encode_ms / stats.crops as f64),
                    "mqtt": mqtt_stats,
                    "gpio_errors": gpio_lines.as_ref().map(|g| g.errors),
                })
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The config read again and its model loaded and verified completely
/// (SIGHUP), before anything running is touched.
fn reload(cli: &WatchArgs, spec: &str, threads: usize) -> Result<Model> {
    settings(cli).and_then(|a| load_model(&a, spec, threads))
}
