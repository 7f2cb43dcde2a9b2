//! SIGHUP: the config read again and the bundle loaded and verified on a
//! thread of their own, then applied camera by camera while the rest run.

use super::*;

/// What a reload loaded: the model and the cameras' plans, or why not.
pub(super) type Loaded = std::result::Result<(Model, Vec<CameraPlan>), String>;

impl Supervisor {
    /// SIGHUP: the config read again and the bundle loaded and verified
    /// (which may take seconds on a small board) in a thread of its own,
    /// while the cameras run and the watchdog is petted; then
    /// [`Supervisor::reload_now`].
    pub(super) fn start_reload(&mut self, cli: &WatchArgs) {
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
    pub(super) fn reload_now(&mut self, loaded: Loaded) {
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
                        // A named camera's new source that is not there
                        // yet goes on waiting for it, as at start.
                        Err(e) if p.settings.name.is_some() => Some(camera::waiting_source(p, e)),
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
                spec: watch::secrets::redacted(&plan.spec),
                why: format!("not open within {} s", OPEN_WITHIN.as_secs()),
            });
        }
        systemd.busy();
        std::thread::sleep(Duration::from_millis(10));
    }
    opening.join().unwrap_or_else(|_| {
        Err(watch::source::SourceError::Unavailable {
            spec: watch::secrets::redacted(&plan.spec),
            why: "opening it panicked".into(),
        })
    })
}
