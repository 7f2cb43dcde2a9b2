//! The running service: the cameras' threads supervised (the watchdog,
//! systemd's status line), SIGHUP's reload, and the end.

use super::*;

/// The running service: the shared model and log, the cameras, the edges
/// and the signals.
pub(super) struct Service {
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

/// What a reload loaded: the model and the cameras' plans, or why not.
pub(super) type Loaded = std::result::Result<(Model, Vec<CameraPlan>), String>;

/// How often the service looks at its cameras and signals.
const TICK: Duration = Duration::from_millis(50);

/// How long the broker is given to take what waits, at the end of a run
/// (a stop must finish within systemd's patience: less then).
const MQTT_GRACE: Duration = Duration::from_secs(3);
const MQTT_GRACE_STOPPING: Duration = Duration::from_millis(800);

impl Service {
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
    fn tick(&mut self) {
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

    /// SIGHUP: the config read again and the bundle loaded and verified
    /// (which may take seconds on a small board) in a thread of its own,
    /// while the cameras run and the watchdog is petted; then
    /// [`Service::reload_now`].
    fn start_reload(&mut self, cli: &WatchArgs) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        log::warn!("SIGHUP: reloading the config and the bundle");
        let (cli, threads) = (cli.clone(), self.threads);
        let load = move || -> Loaded {
            let a = settings(&cli).map_err(|e| format!("{e:#}"))?;
            load_cameras(&a, threads).map_err(|ps| {
                ps.iter()
                    .map(|p| format!("{p:#}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        };
        match std::thread::Builder::new()
            .name("clip-edge-reload".into())
            .spawn(load)
        {
            Ok(h) => self.loading = Some(h),
            Err(e) => log::error!("reload refused: cannot start its thread: {e}"),
        }
    }

    /// A reload's loaded config and bundle applied: every camera checked
    /// before anything running is touched. Cameras whose settings did not
    /// change run on (all restart when the model changed); changed ones
    /// end their events ("reload") and go on with the new settings; new
    /// ones start; removed ones stop. A reload that fails is logged and
    /// everything runs on as it was.
    fn reload_now(&mut self, loaded: Loaded) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let refused = |e: String| {
            log::error!(
                "reload refused, the running bundle goes on: {}",
                e.replace('\n', " ")
            )
        };
        let (model, mut plans) = match loaded {
            Ok(l) => l,
            Err(e) => return refused(e),
        };
        let same_model = model.key == self.model_key
            && lock(&self.shared.engine).bundle.manifest == model.engine.bundle.manifest;
        // What each running camera becomes: the same, a new plan, or nothing.
        let mut changes: Vec<(usize, Option<CameraPlan>)> = Vec::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let k = plans
                .iter()
                .position(|p| p.settings.name == cam.settings.name);
            match k {
                Some(k) if same_model && plans[k].settings.same_camera(&cam.settings) => {
                    plans.remove(k);
                }
                Some(k) => changes.push((i, Some(plans.remove(k)))),
                None => changes.push((i, None)),
            }
        }
        // Pause the cameras that change; zones must fit their frames.
        let mut paused: Vec<(usize, Option<CameraPlan>)> = Vec::new();
        let mut problem = None;
        let systemd = &mut self.systemd;
        for (i, plan) in changes {
            let size = match self.cameras[i].pause(&self.stop, &mut || systemd.busy()) {
                Ok(Some(size)) => size,
                Ok(None) => continue,
                Err(e) => {
                    problem = Some(format!("{e:#}"));
                    break;
                }
            };
            // Zones are checked against the frames coming now (a new
            // source's are checked at its first frame).
            if let (Some(p), Some((w, h))) = (&plan, size) {
                if self.cameras[i].same_source(p) {
                    if let Err(e) = p.opts.regions.check_frame(w, h) {
                        problem.get_or_insert(format!("{}{e}", p.settings.context()));
                    }
                }
            }
            paused.push((i, plan));
        }
        // New sources for cameras whose source changed.
        let mut sources = Vec::with_capacity(paused.len());
        for (i, plan) in &paused {
            let source = match plan {
                Some(p) if problem.is_none() && !self.cameras[*i].same_source(p) => {
                    match open_source(p, &mut self.systemd, &self.stop) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            problem = Some(format!("{}{e}", p.settings.context()));
                            None
                        }
                    }
                }
                _ => None,
            };
            sources.push(source);
        }
        if self.stop.load(Ordering::Relaxed) {
            problem.get_or_insert_with(|| "stopping".into());
        }
        if let Some(e) = problem {
            for (i, _) in &paused {
                self.cameras[*i].command(camera::Command::Resume);
            }
            return refused(e);
        }
        if !same_model {
            *lock(&self.shared.engine) = model.engine;
            self.model_key = model.key;
            self.bundle = model.bundle;
        }
        let mut ending = Vec::new();
        for ((i, plan), source) in paused.into_iter().zip(sources) {
            let cam = &mut self.cameras[i];
            match plan {
                Some(p) => {
                    cam.settings = p.settings.clone();
                    if source.is_some() {
                        cam.spec = p.spec.clone();
                        cam.decode = p.opts.decode;
                    }
                    cam.command(camera::Command::Restart(Box::new((p, source))));
                }
                None => {
                    if let Some(s) = &self.edges.server {
                        s.remove_camera(cam.settings.shown_name());
                    }
                    cam.command(camera::Command::End);
                    ending.push(i);
                }
            }
        }
        // The removed cameras let go of their GPIO lines and devices before
        // new ones (a camera renamed, moved to a table) take them.
        let t0 = Instant::now();
        while t0.elapsed() < watch::source::CLOSE_WAIT + camera::PAUSE_WITHIN
            && !ending.iter().all(|&i| self.cameras[i].finished())
            && !self.stop.load(Ordering::Relaxed)
        {
            self.tick();
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let mut started = Vec::new();
        for p in plans {
            let name = p.settings.name.clone();
            let what = p.settings.context();
            let opened = open_source(&p, &mut self.systemd, &self.stop);
            match camera::start(p, &self.edges, &self.shared, &[], Some(opened)) {
                Ok(c) => started.push(c),
                Err(e) => {
                    // A camera of the new config that cannot run: said now,
                    // and the service's exit status says it at the end.
                    let e = e.context(format!("reload: {}not started", what));
                    log::error!("{e:#}");
                    self.keep_finished(name, Err(e));
                }
            }
        }
        self.cameras.extend(started);
        let engine = lock(&self.shared.engine);
        log::warn!(
            "reloaded: bundle {} ({}), cameras {}",
            self.bundle.display(),
            engine.bundle.manifest.precision,
            // Not the removed ones still ending.
            self.cameras
                .iter()
                .enumerate()
                .filter(|(i, _)| !ending.contains(i))
                .map(|(_, c)| c.settings.shown_name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// Keeps how camera `name` ended: in place of an earlier run of that
    /// name, unless that one failed (the exit says the first failure).
    fn keep_finished(&mut self, name: Option<String>, r: Result<camera::Finished>) {
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
        let Service {
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

/// How long a reload waits for a camera's source to open.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// Opens `plan`'s source on a thread of its own, petting the watchdog
/// meanwhile: an `http://` camera may take its resolve, connect and
/// first-response timeouts, longer than the watchdog waits.
fn open_source(plan: &CameraPlan, systemd: &mut Systemd, stop: &AtomicBool) -> camera::Opened {
    let (spec, fps, decode) = (plan.spec.clone(), plan.opts.fps, plan.opts.decode);
    let opening = std::thread::Builder::new()
        .name("clip-edge-open".into())
        .spawn(move || watch::source::open(&spec, fps, decode));
    let Ok(opening) = opening else {
        return watch::source::open(&plan.spec, plan.opts.fps, plan.opts.decode);
    };
    // An open stuck in a driver: the reload gives up on it (its thread
    // drops what it opens, if it ever does) rather than pet for ever.
    let t0 = Instant::now();
    while !opening.is_finished() {
        if t0.elapsed() > OPEN_WITHIN || stop.load(Ordering::Relaxed) {
            return Err(watch::source::SourceError::Unavailable {
                spec: watch::source::redacted(&plan.spec),
                why: format!("not open within {} s", OPEN_WITHIN.as_secs()),
            });
        }
        systemd.busy();
        std::thread::sleep(Duration::from_millis(10));
    }
    opening.join().unwrap_or_else(|_| {
        Err(watch::source::SourceError::Unavailable {
            spec: watch::source::redacted(&plan.spec),
            why: "opening it panicked".into(),
        })
    })
}
