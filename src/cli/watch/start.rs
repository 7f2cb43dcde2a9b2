//! From checked plans to a running service: the event log, the status page,
//! the signal handlers, the cameras started and systemd told.

use super::*;

/// This machine's name (MQTT topics, Home Assistant's device).
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "clip-edge".into())
}

/// Opens the event log and the status page, installs the signal handlers,
/// starts the cameras (each with its own broker connection) and tells
/// systemd the service is ready. `hello` (with --json-events: on stderr, stdout
/// holding JSON lines only) is said once the log is open and the page
/// serves, before any camera runs: a watch that cannot start says only
/// why, and no event line comes before it.
pub(super) fn set_up(
    checked: Checked,
    console: Option<Console>,
    hello: Option<(bool, String)>,
) -> Result<Supervisor> {
    let Checked {
        cameras,
        mqtt_url,
        http_addr,
        health_timeout,
        threads,
        model,
        events,
        events_rotation,
        node,
    } = checked;

    let (log, last_run, closed) = match &events {
        Some(p) => {
            // A file that is not an event log (or too large to read), one
            // this user may not write: settings that cannot work (exit 78,
            // not restarted). Other I/O errors (a disk not mounted yet) are
            // worth a restart.
            use watch::events::EventLogError;
            let (log, rec) = watch::events::EventLog::open_rotating(p, events_rotation).map_err(
                |e| match &e {
                    EventLogError::Io { source, .. }
                        if source.kind() != std::io::ErrorKind::PermissionDenied =>
                    {
                        anyhow::Error::new(e)
                    }
                    _ => anyhow::Error::new(ConfigError(e.into())),
                },
            )?;
            for c in &rec.closed {
                log::warn!(
                    "{}: event {} ({}) was left open by a crash; closed as interrupted",
                    p.display(),
                    c.id,
                    c.label
                );
            }
            (Some(Arc::new(Mutex::new(log))), rec.last_run, rec.closed)
        }
        None => (None, None, Vec::new()),
    };
    let server = match http_addr {
        Some(addr) => {
            let m = &model.engine.bundle.manifest;
            let info = [
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("engine", model.engine.kind().to_string()),
                ("precision", m.precision.to_string()),
                ("architecture", m.model.architecture.clone()),
                ("bundle", model.bundle.display().to_string()),
            ];
            let server = http::Server::new(&info, mqtt_url.is_some());
            http::raise_descriptor_limit();
            // A port another program holds, or one this user may not
            // bind: settings that cannot work (exit 78, not restarted). An
            // address not there yet (a network still coming up at boot) is
            // worth a restart.
            http::serve(addr, server.clone()).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied => {
                    anyhow::Error::new(ConfigError(e.into()))
                }
                _ => e.into(),
            })?;
            Some(server)
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    let edges = Edges {
        mqtt: mqtt_url.map(|(u, tls)| {
            let node = node.unwrap_or_else(host_name);
            (u.for_node(&node), tls, node)
        }),
        http_addr,
        server,
        health_timeout: Duration::from_secs_f64(health_timeout),
    };
    let shared = camera::Shared {
        engine: Arc::new(Mutex::new(model.engine)),
        log,
        last_run: Arc::new(Mutex::new(last_run)),
        stop: stop.clone(),
        console,
        stall: Arc::new(clip_edge::service::systemd::InjectedStall::from_env()),
        epoch: Instant::now(),
    };
    match hello {
        Some((true, line)) => eprintln!("{line}"),
        Some((false, line)) => out!("{line}"),
        None => {}
    }
    let mut running = Vec::with_capacity(cameras.len());
    let mut hello = Vec::new();
    for plan in cameras {
        hello.push(format!(
            "{}{} for {}",
            plan.settings.context(),
            watch::secrets::redacted(&plan.spec),
            plan.opts
                .watched
                .iter()
                .map(|w| w.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        match camera::start(plan, &edges, &shared, &closed, None) {
            Ok(c) => running.push(c),
            Err(e) => {
                // The cameras already running end their events and stop.
                stop.store(true, Ordering::Relaxed);
                for c in running {
                    let _ = c.join();
                }
                return Err(e);
            }
        }
    }
    let mut systemd = Systemd::from_env();
    let hello = format!("watching {}", hello.join("; "));
    log::info!("{hello}");
    systemd.ready(&hello);
    Ok(Supervisor {
        threads,
        bundle: model.bundle,
        model_key: model.key,
        shared,
        edges,
        cameras: running,
        finished: Vec::new(),
        flushing: Vec::new(),
        flushed: Vec::new(),
        systemd,
        stop,
        reload,
        loading: None,
    })
}

/// What the service's cameras connect to: the broker, the status server.
pub(super) struct Edges {
    /// The broker, its TLS configuration and this node's name.
    pub(super) mqtt: Option<(mqtt::MqttUrl, Option<Arc<rustls::ClientConfig>>, String)>,
    pub(super) http_addr: Option<std::net::SocketAddr>,
    pub(super) server: Option<Arc<http::Server>>,
    pub(super) health_timeout: Duration,
}
