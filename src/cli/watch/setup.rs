//! From settings to a running service: the model loaded and verified,
//! every setting checked (`--check`), the edges and the source opened.

use super::*;

/// This machine's name (MQTT topics, Home Assistant's device).
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "clip-edge".into())
}

/// What a reload can change: the bundle, what is watched and how.
pub(super) struct Model {
    pub(super) engine: Engine,
    pub(super) opts: watch::Options,
    pub(super) bundle: PathBuf,
}

/// Loads and checks the bundle and the watch options of `args`.
pub(super) fn load_model(args: &WatchArgs, source: &str, threads: usize) -> Result<Model> {
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

/// Settings that hold, with the model loaded and verified.
pub(super) struct Checked {
    pub(super) spec: String,
    pub(super) gpio_specs: Vec<gpio::GpioSpec>,
    pub(super) mqtt_url: Option<(mqtt::MqttUrl, Option<Arc<rustls::ClientConfig>>)>,
    pub(super) http_addr: Option<std::net::SocketAddr>,
    pub(super) health_timeout: f64,
    pub(super) threads: usize,
    pub(super) model: Model,
    pub(super) events: Option<PathBuf>,
    pub(super) events_rotation: Option<watch::events::Rotation>,
    pub(super) node: Option<String>,
}

/// Checks every setting that can be checked without opening anything (the
/// bundle is loaded and verified; the source's syntax, folder or program
/// checked): all the problems, or what the service needs.
pub(super) fn validate(args: &WatchArgs) -> std::result::Result<Checked, Vec<anyhow::Error>> {
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
    if let Err(e) = crate::cli::set_threads(threads) {
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
pub(super) fn set_up(checked: Checked, console: Option<Console>) -> Result<Service> {
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
