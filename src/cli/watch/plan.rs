//! From settings to plans: the model loaded and verified, and every setting
//! of every camera checked together (what `--check` reports, and what a
//! start or a reload refuses to go on with).

use super::*;
use clip_edge::decode::Decode;
use clip_edge::decode::DecodeMode;
use clip_edge::section_cache::SectionCache;
use std::path::Path;

/// The model every camera shares, and the settings it was loaded with.
pub(super) struct Model {
    pub(super) engine: Engine,
    pub(super) bundle: PathBuf,
    pub(super) key: ModelKey,
}

/// What makes a reload load another model.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ModelKey {
    bundle: PathBuf,
    require_signature: Option<PathBuf>,
    engine: Option<clip_edge::engine::EngineKind>,
    device: Option<clip_edge::engine::Device>,
    threads: usize,
}

/// Loads and verifies the bundle of `args`.
pub(super) fn load_model(args: &WatchArgs, threads: usize, cameras: usize) -> Result<Model> {
    let bundle = args
        .bundle
        .clone()
        .context("--bundle is required (or `bundle = \"DIR\"` in the config)")?;
    let trust = Trust {
        require_signature: match &args.require_signature {
            Some(p) => Some(read_public_key(p)?),
            None => None,
        },
    };
    let mut engine = Engine::load_cached(
        &bundle,
        &trust,
        args.engine.unwrap_or_default(),
        threads,
        args.device.unwrap_or_default(),
        SectionCache::from_env().as_ref(),
    )
    .with_context(|| format!("loading bundle {}", bundle.display()))?;
    // Every camera's source decodes in a thread of its own: where the
    // engine's threads and those outnumber the CPUs, the resize is not
    // split (a split waits on a thread a decoder has descheduled).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads + cameras.max(1) > cpus {
        engine.set_preprocess_on_pool(false);
    }
    Ok(Model {
        engine,
        key: ModelKey {
            bundle: bundle.clone(),
            require_signature: args.require_signature.clone(),
            engine: args.engine,
            device: args.device,
            threads,
        },
        bundle,
    })
}

/// One camera's settings checked against the model's labels.
pub(super) struct CameraPlan {
    pub(super) settings: CameraSettings,
    /// The source with its password, when a file gives one.
    pub(super) spec: String,
    pub(super) opts: watch::Options,
    pub(super) gpio_specs: Vec<gpio::GpioSpec>,
}

impl CameraPlan {
    pub(super) fn name(&self) -> &str {
        self.settings.shown_name()
    }
}

/// Checks camera `cam`'s settings against `labels` (the model's; None when
/// it did not load): every problem, each naming the camera when the
/// service has several.
pub(super) fn camera_plan(
    cam: &CameraSettings,
    model: Option<(&[String], u32)>,
) -> std::result::Result<CameraPlan, Vec<anyhow::Error>> {
    let args = &cam.args;
    let mut problems: Vec<String> = Vec::new();
    let mut spec = args.source.clone();
    if let (Some(s), Some(p)) = (&spec, &args.source_password_file) {
        match watch::secrets::read_password_file("source_password_file", p)
            .and_then(|pw| watch::secrets::with_url_password(s, &pw))
        {
            Ok(with) => spec = Some(with),
            Err(e) => problems.push(e.0),
        }
    }
    match &spec {
        None => problems.push(
            "--source is required (dir:PATH, stdin:mjpeg, v4l2:/dev/videoN, ffmpeg:INPUT, rtsp://URL, http://URL or libcamera:)"
                .into(),
        ),
        Some(s) => {
            if let Err(e) = watch::source::check(s) {
                problems.push(e.to_string());
            }
        }
    }
    let mut gpio_specs: Vec<gpio::GpioSpec> = Vec::new();
    for g in &args.gpio {
        match g.parse::<gpio::GpioSpec>() {
            // A board's GPIO chips are there from boot: one that is not is
            // a setting that cannot work (a camera may come later).
            Ok(s) => {
                if !Path::new(&s.chip).exists() {
                    problems.push(format!(
                        "--gpio {}:{}: no GPIO chip {} (gpiodetect lists them)",
                        s.chip, s.line, s.chip
                    ));
                }
                gpio_specs.push(s);
            }
            Err(e) => problems.push(e),
        }
    }
    if let Some(d) = &args.snapshots {
        if let Err(e) = place_for("--snapshots", d, true) {
            problems.push(e);
        }
    }
    let opts = model.map(|(l, r)| camera_options(cam, l, r, spec.as_deref().unwrap_or("")));
    if let Some(Ok(o)) = &opts {
        let keep = &o.snapshot_retention;
        if let (Some(d), None, None) = (&o.snapshots, keep.max_bytes, keep.max_age) {
            log::warn!(
                "{}--snapshots {}: no --snapshot-max-mb or --snapshot-retain-days: the folder grows until the disk is full",
                cam.context(),
                d.display()
            );
        }
        let watched: Vec<String> = o.watched.iter().map(|w| w.label.clone()).collect();
        for g in &mut gpio_specs {
            // The bundle's spelling of the label, as events carry it.
            match watch::config::find_label(&watched, &g.label) {
                Some(i) => g.label = watched[i].clone(),
                None => problems.push(format!(
                    "--gpio {}:{}={}: {:?} is not watched (add --watch {:?})",
                    g.chip, g.line, g.label, g.label, g.label
                )),
            }
        }
    }
    let context = cam.context();
    let mut problems: Vec<anyhow::Error> = problems
        .into_iter()
        .map(|p| anyhow::anyhow!("{context}{p}"))
        .collect();
    match (spec, opts) {
        (Some(spec), Some(Ok(opts))) if problems.is_empty() => Ok(CameraPlan {
            settings: cam.clone(),
            spec,
            opts,
            gpio_specs,
        }),
        (_, Some(Err(es))) => {
            problems.extend(es.into_iter().map(|e| anyhow::anyhow!("{context}{e}")));
            Err(problems)
        }
        _ => Err(problems),
    }
}

/// The watch options of camera `cam`, for a model of `labels` whose input
/// is `resolution` pixels square; else every problem with them.
fn camera_options(
    cam: &CameraSettings,
    labels: &[String],
    resolution: u32,
    source: &str,
) -> std::result::Result<watch::Options, Vec<String>> {
    let args = &cam.args;
    let mut problems = Vec::new();
    let rules = args
        .rules()
        .map_err(|e| problems.push(format!("--{e}")))
        .ok();
    if let Some(f) = args.fps {
        // Down to a frame a day (a slower rate's period is no time the
        // loop can wait), up to 1000.
        if !(1.0 / 86_400.0..=1000.0).contains(&f) {
            let shown = if f != 0.0 && (f.abs() < 1e-4 || f.abs() > 1e6) {
                format!("{f:e}")
            } else {
                format!("{f}")
            };
            problems.push(format!(
                "--fps {shown}: expected a rate from 1/86400 (a frame a day) to 1000"
            ));
        }
    }
    if let Some(m) = args.motion_threshold {
        if !(0.0..=255.0).contains(&m) {
            problems.push(format!("--motion-threshold {m}: expected 0 to 255"));
        }
    }
    let snapshot_retention = args
        .snapshot_retention()
        .map_err(|e| problems.push(e.0))
        .ok();
    let watched = args.watched(labels).map_err(|e| problems.push(e.0)).ok();
    let regions = watched
        .as_ref()
        .and_then(|w| args.region_options(w).map_err(|e| problems.push(e.0)).ok());
    let whole_frame = regions.as_ref().is_none_or(|r| r.whole_frame());
    if args.motion_threshold.is_some() && !whole_frame {
        problems.push("--motion-threshold: skips whole frames, so it applies with --regions full and no zone only".into());
    }
    let decode = match args.decode.unwrap_or_default() {
        DecodeMode::Exact => Decode::Exact,
        DecodeMode::Fast if !whole_frame => {
            problems.push("--decode fast: shrinks the whole frame, so it applies with --regions full and no zone only (boxes and zones are in source pixels)".into());
            Decode::Exact
        }
        DecodeMode::Fast => Decode::fast_for(resolution),
    };
    match (rules, snapshot_retention, watched, regions) {
        (Some(rules), Some(snapshot_retention), Some(watched), Some(regions))
            if problems.is_empty() =>
        {
            Ok(watch::Options {
                watched,
                rules,
                fps: args.fps,
                motion_threshold: args.motion_threshold,
                snapshots: args.snapshots.clone(),
                snapshot_retention,
                source_name: watch::secrets::redacted(source),
                regions,
                camera: cam.name.clone(),
                decode,
            })
        }
        _ => Err(problems),
    }
}

/// Whether `path` (`flag`'s) can be made or written: a folder when `dir`,
/// else a file; its nearest existing ancestor a folder (the missing ones
/// are made at start).
pub(super) fn place_for(flag: &str, path: &Path, dir: bool) -> std::result::Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if dir && !m.is_dir() => return Err(format!("{flag} {shown}: not a folder")),
        Ok(m) if !dir && m.is_dir() => {
            return Err(format!("{flag} {shown}: a folder, expected a file"))
        }
        Ok(_) => return Ok(()),
        Err(_) => {}
    }
    let mut up = path.parent();
    while let Some(p) = up.filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(format!("{flag} {shown}: {} is not a folder", p.display())),
            Err(_) => up = p.parent(),
        }
    }
    Ok(())
}

/// Settings that hold, with the model loaded and verified.
pub(super) struct Checked {
    pub(super) cameras: Vec<CameraPlan>,
    pub(super) mqtt_url: Option<(mqtt::MqttUrl, Option<Arc<rustls::ClientConfig>>)>,
    pub(super) http_addr: Option<std::net::SocketAddr>,
    pub(super) health_timeout: f64,
    pub(super) threads: usize,
    pub(super) model: Model,
    pub(super) events: Option<PathBuf>,
    pub(super) events_rotation: Option<watch::events::Rotation>,
    pub(super) node: Option<String>,
}

/// What [`validate`] found wrong, with what it could still read: the
/// status page's address and the broker (`--check` tries them all the
/// same, so that every problem is said at once).
pub(super) struct Invalid {
    pub(super) problems: Vec<anyhow::Error>,
    pub(super) mqtt_url: Option<(mqtt::MqttUrl, Option<Arc<rustls::ClientConfig>>)>,
    pub(super) http_addr: Option<std::net::SocketAddr>,
}

/// The model and the cameras of `args` (a reload's, or the start's).
pub(super) fn load_cameras(
    args: &WatchArgs,
    threads: usize,
) -> std::result::Result<(Model, Vec<CameraPlan>), Vec<anyhow::Error>> {
    let mut problems: Vec<anyhow::Error> = Vec::new();
    let cameras = args.cameras().map_err(|e| vec![anyhow::Error::msg(e)])?;
    let (model, model_problem) = match load_model(args, threads, cameras.len()) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    };
    let labels = model.as_ref().map(|m| {
        let b = &m.engine.bundle;
        (b.labels(), b.manifest.preprocess.resolution)
    });
    let mut plans = Vec::with_capacity(cameras.len());
    for cam in &cameras {
        match camera_plan(cam, labels) {
            Ok(p) => plans.push(p),
            Err(ps) => problems.extend(ps),
        }
    }
    // A GPIO line belongs to one camera.
    for (k, p) in plans.iter().enumerate() {
        for g in &p.gpio_specs {
            let other = plans[..k].iter().find(|o| {
                o.gpio_specs
                    .iter()
                    .any(|h| (&h.chip, h.line) == (&g.chip, g.line))
            });
            if let Some(o) = other {
                problems.push(anyhow::anyhow!(
                    "{}--gpio {}:{}: the line is camera {:?}'s already",
                    p.settings.context(),
                    g.chip,
                    g.line,
                    o.name()
                ));
            }
        }
    }
    // The cameras' problems first: a missing source before a missing bundle.
    problems.extend(model_problem);
    match model {
        Some(m) if problems.is_empty() => Ok((m, plans)),
        _ => Err(problems),
    }
}

/// Checks every setting that can be checked without opening anything (the
/// bundle is loaded and verified; each camera's source syntax, folder or
/// program checked): all the problems, or what the service needs.
pub(super) fn validate(args: &WatchArgs) -> std::result::Result<Checked, Box<Invalid>> {
    let mut problems: Vec<anyhow::Error> = Vec::new();
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
                Some(p) => u.with_password_file(p).map_err(|e| e.0),
                None => Ok(u),
            })
            .and_then(|u| match (u.tls, tls_files.first()) {
                (true, _) => Ok((u, Some(mqtt::client_config(&tls_files).map_err(|e| e.0)?))),
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
    if let Some(p) = &args.events {
        if let Err(e) = place_for("--events", p, false) {
            problems.push(anyhow::Error::msg(e));
        }
    }
    let health_timeout = args.health_timeout.unwrap_or(10.0);
    if !(health_timeout > 0.0 && health_timeout <= 86_400.0) {
        problems.push(anyhow::anyhow!(
            "--health-timeout {health_timeout}: expected more than 0 and at most 86400 seconds"
        ));
    }
    let threads = args.threads.unwrap_or(1);
    if let Err(e) = crate::cli::set_threads(threads) {
        problems.push(e);
    }
    let loaded = match load_cameras(args, threads) {
        Ok(l) => Some(l),
        Err(ps) => {
            problems.extend(ps);
            None
        }
    };
    // Labels, zones, cameras and the node are MQTT topic levels (as slugs):
    // two that would be one topic would be one Home Assistant entity.
    if let (Some(_), Some((_, cameras))) = (&mqtt_url, &loaded) {
        if let Some(node) = &args.node {
            if let Err(e) = mqtt::check_slugs("--node", [node.as_str()]) {
                problems.push(anyhow::Error::msg(e));
            }
        }
        let names = cameras.iter().filter_map(|c| c.settings.name.as_deref());
        if let Err(e) = mqtt::check_slugs("camera", names) {
            problems.push(anyhow::Error::msg(e));
        }
        for c in cameras {
            let labels = c.opts.watched.iter().map(|w| w.label.as_str());
            if let Err(e) = mqtt::check_slugs("watched label", labels) {
                problems.push(anyhow::anyhow!("{}{e}", c.settings.context()));
            }
        }
    }
    match loaded {
        Some((model, cameras)) if problems.is_empty() => Ok(Checked {
            cameras,
            mqtt_url,
            http_addr,
            health_timeout,
            threads,
            model,
            events: args.events.clone(),
            events_rotation,
            node: args.node.clone(),
        }),
        _ => Err(Box::new(Invalid {
            problems,
            mqtt_url,
            http_addr,
        })),
    }
}
