//! The running service: the loop over the source, the edges fed, and
//! SIGHUP's reload.

use super::*;

/// The running service: the model, the source, the edges (GPIO, MQTT, the
/// status server, systemd) and the signals.
pub(super) struct Service {
    pub(super) spec: String,
    pub(super) threads: usize,
    pub(super) model: Model,
    pub(super) source: Box<dyn watch::source::FrameSource>,
    pub(super) log: Option<watch::events::EventLog>,
    pub(super) last_run: Option<u64>,
    pub(super) gpio_lines: Option<gpio::GpioLines<linux_embedded_hal::CdevPin>>,
    pub(super) mqtt: Option<mqtt::Mqtt>,
    pub(super) status: Option<Arc<http::Status>>,
    pub(super) status_sink: Option<http::StatusSink>,
    pub(super) console: Option<Console>,
    pub(super) systemd: Systemd,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) reload: Arc<AtomicBool>,
}

impl Service {
    /// Runs the loop until the source ends or a stop; on SIGHUP, a reload
    /// that loads swaps the model (open events end as "reload"), one that
    /// fails is logged and the running model goes on.
    pub(super) fn run(&mut self, cli: &WatchArgs) -> Result<watch::Stats> {
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
    pub(super) fn finish(
        self,
        result: Result<watch::Stats>,
        print_stats: bool,
    ) -> Result<ExitCode> {
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
pub(super) fn reload(cli: &WatchArgs, spec: &str, threads: usize) -> Result<Model> {
    settings(cli).and_then(|a| load_model(&a, spec, threads))
}
