//! The running service: the cameras' threads supervised (the watchdog,
//! systemd's status line), finished runs kept, and the end; SIGHUP's
//! reload is [`super::reload`].

use super::*;

/// The running service: the shared model and log, the cameras, the edges
/// and the signals.
pub(super) struct Supervisor {
    pub(super) threads: usize,
    pub(super) bundle: PathBuf,
    pub(super) model_key: ModelKey,
    pub(super) shared: camera::Shared,
    pub(super) edges: Edges,
    pub(super) cameras: Vec<camera::Camera>,
    /// Cameras whose threads ended: their names and how (one entry a
    /// name: a camera reloads remove and add again keeps its latest run,
    /// or its first failed one).
    pub(super) finished: Vec<(Option<String>, Result<camera::Finished>)>,
    /// The broker connections of cameras that ended while others ran,
    /// being flushed in threads of their own (joined once done).
    pub(super) flushing: Vec<(Option<String>, std::thread::JoinHandle<mqtt::MqttStats>)>,
    /// What those flushed connections counted, one entry a name.
    pub(super) flushed: Vec<(Option<String>, mqtt::MqttStats)>,
    pub(super) systemd: Systemd,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) reload: Arc<AtomicBool>,
    /// A reload's config and bundle being loaded and verified, in a thread
    /// of its own (the watchdog and a stop are served meanwhile).
    pub(super) loading: Option<std::thread::JoinHandle<Loaded>>,
}

/// How often the service looks at its cameras and signals.
const TICK: Duration = Duration::from_millis(50);

/// How long the broker is given to take what waits, at the end of a run
/// (a stop must finish within systemd's patience: less then).
const MQTT_GRACE: Duration = Duration::from_secs(3);
const MQTT_GRACE_STOPPING: Duration = Duration::from_millis(800);

impl Supervisor {
    /// Runs until every camera has ended (its source ended, a stop, or an
    /// error): the watchdog is petted while every camera's loop turns, and
    /// SIGHUP reloads.
    pub(super) fn run(&mut self, cli: &WatchArgs) {
        loop {
            let mut i = 0;
            while i < self.cameras.len() {
                if !self.cameras[i].finished() {
                    i += 1;
                    continue;
                }
                let cam = self.cameras.remove(i);
                let name = cam.settings.name.clone();
                let mut r = cam.join();
                let failed = match &r {
                    Ok(f) => f.error.as_ref(),
                    Err(e) => Some(e),
                };
                if let (Some(e), Some(n)) = (failed, &name) {
                    log::error!(
                        "camera {n:?} stopped: {}; the other cameras go on",
                        format!("{e:#}").replace('\n', " ")
                    );
                }
                // While others run, its broker connection is flushed and
                // closed now (its status goes offline), not at the end.
                // One a reload removed leaves Home Assistant, unless a
                // running camera is the same device (renamed `front-door` to
                // `front_door`: one MQTT node, its entities just announced).
                let same_node = |c: &camera::Camera| {
                    c.settings.name.as_deref().map(mqtt::slug) == name.as_deref().map(mqtt::slug)
                };
                let removed =
                    r.as_ref().is_ok_and(|f| f.removed) && !self.cameras.iter().any(same_node);
                if removed || (!self.cameras.is_empty() && !self.stop.load(Ordering::Relaxed)) {
                    if let Some(m) = r.as_mut().ok().and_then(|f| f.mqtt.take()) {
                        let handle = std::thread::spawn(move || {
                            if removed {
                                m.retire(MQTT_GRACE)
                            } else {
                                m.finish(MQTT_GRACE)
                            }
                        });
                        self.flushing.push((name.clone(), handle));
                    }
                }
                self.keep_finished(name, r);
            }
            self.join_flushed();
            if self.cameras.is_empty() {
                if self.loading.is_some() {
                    log::warn!("every camera ended while a reload was loading: not applied");
                }
                return;
            }
            if self.loading.is_none() && self.reload.swap(false, Ordering::Relaxed) {
                self.start_reload(cli);
            }
            if self.loading.as_ref().is_some_and(|l| l.is_finished()) {
                let loaded = self.loading.take().map(|l| {
                    l.join()
                        .unwrap_or_else(|_| Err("loading the bundle panicked".into()))
                });
                if let Some(loaded) = loaded {
                    self.reload_now(loaded);
                }
            }
            self.tick();
            std::thread::sleep(TICK);
        }
    }

    /// Pets the watchdog while every camera's loop turns, and keeps
    /// systemd's status line current.
    pub(super) fn tick(&mut self) {
        let (epoch, within) = (self.shared.epoch, self.systemd.alive_within());
        let alive = self.cameras.iter().all(|c| c.beat.alive(epoch, within));
        let cameras = &self.cameras;
        self.systemd.tick(alive, || {
            cameras
                .iter()
                .map(|c| c.beat.status())
                .collect::<Vec<_>>()
                .join("; ")
        });
    }

    /// Keeps how camera `name` ended: in place of an earlier run of that
    /// name, unless that one failed (the exit says the first failure).
    pub(super) fn keep_finished(&mut self, name: Option<String>, r: Result<camera::Finished>) {
        let failed = |r: &Result<camera::Finished>| r.as_ref().map_or(true, |f| f.error.is_some());
        match self.finished.iter_mut().find(|(n, _)| *n == name) {
            Some(old) if !failed(&old.1) => *old = (name, r),
            Some(_) => {
                // Its broker connection is still flushed (what it queued
                // at a stop goes out).
                if let Ok(mut f) = r {
                    if let Some(m) = f.mqtt.take() {
                        let grace = if self.stop.load(Ordering::Relaxed) {
                            MQTT_GRACE_STOPPING
                        } else {
                            MQTT_GRACE
                        };
                        let handle = std::thread::spawn(move || m.finish(grace));
                        self.flushing.push((name, handle));
                    }
                }
            }
            None => self.finished.push((name, r)),
        }
    }

    /// Joins the flushing threads that are done (each holds a stack until
    /// joined), keeping what they counted.
    fn join_flushed(&mut self) {
        let mut k = 0;
        while k < self.flushing.len() {
            if !self.flushing[k].1.is_finished() {
                k += 1;
                continue;
            }
            let (name, handle) = self.flushing.swap_remove(k);
            if let Ok(stats) = handle.join() {
                match self.flushed.iter_mut().find(|(n, _)| *n == name) {
                    Some(old) => old.1 = stats,
                    None => self.flushed.push((name, stats)),
                }
            }
        }
    }

    /// Tells systemd of a stop, gives the brokers a grace to flush (all
    /// at once), prints the statistics when asked, and returns the first
    /// camera's error, if one failed.
    pub(super) fn finish(self, print_stats: bool) -> Result<ExitCode> {
        let Supervisor {
            shared,
            threads,
            systemd,
            stop,
            finished,
            flushing,
            flushed,
            ..
        } = self;
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            systemd.stopping();
        }
        let grace = if stopping {
            MQTT_GRACE_STOPPING
        } else {
            MQTT_GRACE
        };
        let mut first_error = None;
        let mut per_camera = Vec::new();
        let mut flushing = flushing;
        for (name, r) in finished {
            match r {
                Ok(mut f) => {
                    if let Some(m) = f.mqtt.take() {
                        flushing.push((name.clone(), std::thread::spawn(move || m.finish(grace))));
                    }
                    if let Some(e) = f.error.take() {
                        first_error.get_or_insert(e);
                    }
                    per_camera.push((name, f.stats, None, f.gpio_errors, f.regions));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let joined = flushing
            .into_iter()
            .filter_map(|(name, handle)| Some((name, handle.join().ok()?)));
        for (name, stats) in flushed.into_iter().chain(joined) {
            if let Some(c) = per_camera.iter_mut().find(|c| c.0 == name) {
                c.2 = Some(stats);
            }
        }
        if print_stats {
            let engine = lock(&shared.engine).kind();
            let one = |(_, stats, mqtt, gpio, regions): &(
                Option<String>,
                watch::Stats,
                Option<mqtt::MqttStats>,
                Option<u64>,
                watch::regions::RegionMode,
            )| {
                let per = |ms: f64| ms / stats.frames.max(1) as f64;
                json!({
                    "stats": stats,
                    "engine": engine,
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
                    "regions": regions.to_string(),
                    "crops_per_frame": stats.crops as f64 / stats.frames.max(1) as f64,
                    "encode_ms_per_crop": (stats.crops > 0).then(|| stats.encode_ms / stats.crops as f64),
                    "mqtt": mqtt,
                    "gpio_errors": gpio,
                })
            };
            match per_camera.as_slice() {
                [] => {}
                [c @ (None, ..)] => {
                    let mut v = one(c);
                    v["peak_rss_kb"] = peak_rss_kb().into();
                    out!("{v}")
                }
                cams => {
                    let mut all = serde_json::Map::new();
                    for c in cams {
                        all.insert(c.0.clone().unwrap_or_else(|| "default".into()), one(c));
                    }
                    out!(
                        "{}",
                        json!({ "cameras": all, "peak_rss_kb": peak_rss_kb() })
                    )
                }
            }
        }
        if let Some(e) = first_error {
            // A zone outside the source's frame: the config, not a crash.
            if matches!(e.downcast_ref(), Some(watch::WatchError::Settings(_))) {
                return Err(ConfigError(e).into());
            }
            return Err(e);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The process's peak resident memory (VmHWM), in kB.
pub(super) fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
