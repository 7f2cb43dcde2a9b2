//! One camera of the service: its own thread running a [`Watcher`] over
//! its source, classifying with the model every camera shares (one frame
//! at a time under its lock), feeding its own edges (GPIO lines, its MQTT
//! topics, its status). A slow or silent camera holds no other: its
//! source waits in its own thread.

use std::sync::mpsc;
use std::thread::JoinHandle;

use clip_edge::service::systemd::{status_line, InjectedStall, STATUS_EVERY};
use clip_edge::watch::events::{EventRecord, Ids};
use clip_edge::watch::source::FrameSource;
use clip_edge::watch::{lock, SharedLog};

use super::*;

/// What every camera's thread shares.
pub(super) struct Shared {
    pub(super) engine: Arc<Mutex<Engine>>,
    pub(super) log: Option<SharedLog>,
    /// The last run id given out (each watcher's ids have a run of their own).
    pub(super) last_run: Arc<Mutex<Option<u64>>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) console: Option<Console>,
    pub(super) stall: Arc<InjectedStall>,
    /// What the cameras' signs of life count from.
    pub(super) epoch: Instant,
}

impl Shared {
    /// Ids with a run of their own, above every run before.
    fn ids(&self) -> Ids {
        let mut last = lock(&self.last_run);
        let ids = Ids::new(*last);
        *last = Some(ids.run());
        ids
    }
}

/// A camera's signs of life, read by the service (the watchdog and
/// systemd's status line).
#[derive(Default)]
pub(super) struct Beat {
    /// Milliseconds from [`Shared::epoch`] to the loop's last turn.
    at_ms: AtomicU64,
    /// The loop's status line, and when it was last written.
    status: Mutex<(Option<Instant>, String)>,
}

impl Beat {
    fn mark(&self, epoch: Instant, w: &Watcher<'_>) {
        self.at_ms
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut s = lock(&self.status);
        if s.0.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            *s = (Some(Instant::now()), status_line(w));
        }
    }

    /// Whether the loop turned within `within` of now.
    pub(super) fn alive(&self, epoch: Instant, within: Duration) -> bool {
        let at = Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
        epoch.elapsed().saturating_sub(at) <= within
    }

    pub(super) fn status(&self) -> String {
        lock(&self.status).1.clone()
    }
}

/// How long a reload waits for a camera to pause.
pub(super) const PAUSE_WITHIN: Duration = Duration::from_secs(5);

/// What the service tells a paused camera.
pub(super) enum Command {
    /// Go on as before.
    Resume,
    /// End the open events ("reload") and go on with these settings (and
    /// this source, when it changed).
    Restart(Box<(CameraPlan, Option<Box<dyn FrameSource>>)>),
    /// End the open events ("reload") and stop.
    End,
}

/// A camera's own edges.
pub(super) struct Parts {
    source: Box<dyn FrameSource>,
    gpio_lines: Option<gpio::GpioLines<linux_embedded_hal::CdevPin>>,
    mqtt: Option<mqtt::Mqtt>,
    status: Option<Arc<http::Status>>,
}

/// What a camera's thread leaves when it ends (its broker connection
/// still open, for the service to flush).
pub(super) struct Finished {
    pub(super) stats: watch::Stats,
    pub(super) mqtt: Option<mqtt::Mqtt>,
    pub(super) gpio_errors: Option<u64>,
    pub(super) regions: watch::regions::RegionMode,
    /// Why the camera stopped, when it failed.
    pub(super) error: Option<anyhow::Error>,
    /// A reload removed it from the config.
    pub(super) removed: bool,
}

/// A running camera, as the service holds it.
pub(super) struct Camera {
    pub(super) settings: CameraSettings,
    pub(super) spec: String,
    /// How its source decodes (a change opens the source again).
    pub(super) decode: clip_edge::decode::Decode,
    pub(super) beat: Arc<Beat>,
    pause: Arc<AtomicBool>,
    commands: mpsc::Sender<Command>,
    /// The frame size it last saw, sent when it pauses.
    paused: mpsc::Receiver<Option<(u32, u32)>>,
    thread: Option<JoinHandle<Finished>>,
}

/// Named camera `plan`'s source that did not open (`e`: unplugged, off,
/// unreachable): said, and tried again with backoff while the other
/// cameras run.
pub(super) fn waiting_source(
    plan: &CameraPlan,
    e: watch::source::SourceError,
) -> Box<dyn FrameSource> {
    log::error!(
        "{}{e}; tried again with backoff, the other cameras go on",
        plan.settings.context()
    );
    let (spec, fps, decode) = (plan.spec.clone(), plan.opts.fps, plan.opts.decode);
    Box::new(watch::source::Reopening::waiting(
        &watch::secrets::redacted(&spec),
        e.to_string(),
        Box::new(move || watch::source::open(&spec, fps, decode)),
    ))
}

/// A source opened before [`start`] (by a reload, on a thread of its own).
pub(super) type Opened = std::result::Result<Box<dyn FrameSource>, watch::source::SourceError>;

/// Starts a camera: its GPIO lines, its source (`opened`, or opened here),
/// its MQTT connection and its thread; `closed`: the events a crash left
/// open (closed at start), published on its topics.
pub(super) fn start(
    plan: CameraPlan,
    edges: &Edges,
    shared: &Shared,
    closed: &[EventRecord],
    opened: Option<Opened>,
) -> Result<Camera> {
    let context = plan.settings.context();
    let labels: Vec<String> = plan.opts.watched.iter().map(|w| w.label.clone()).collect();
    // GPIO lines, each following a watched label.
    let mut pins = Vec::new();
    for g in &plan.gpio_specs {
        #[cfg(target_os = "linux")]
        pins.push((
            g.label.clone(),
            gpio::open_cdev(g).map_err(|e| anyhow::anyhow!("{context}{e}"))?,
            format!("{}:{}", g.chip, g.line),
        ));
        #[cfg(not(target_os = "linux"))]
        bail!("--gpio: GPIO lines need Linux");
    }
    let gpio_lines = (!pins.is_empty()).then(|| gpio::GpioLines::new(pins));
    // The source before anything is announced: a start that fails leaves nothing behind.
    let opened =
        opened.unwrap_or_else(|| watch::source::open(&plan.spec, plan.opts.fps, plan.opts.decode));
    let source = match opened {
        Ok(s) => s,
        // One of several cameras that is not there yet (unplugged, off,
        // unreachable): said, and tried again with backoff; the others run.
        Err(e) if plan.settings.name.is_some() => waiting_source(&plan, e),
        Err(e) => bail!("{context}{e}"),
    };
    let mqtt = edges.mqtt.as_ref().map(|(url, tls, node)| {
        // Each named camera is a device of its own, under a topic level of its own.
        let (mut url, mut node) = (url.clone(), node.clone());
        if let Some(name) = &plan.settings.name {
            url.prefix = format!("{}/{}", url.prefix, name);
            node = format!("{node}-{name}");
        }
        let zones: Vec<mqtt::ZoneLabels> = plan
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
        let page = edges.http_addr.map(|a| {
            let host = if a.ip().is_unspecified() {
                format!("{}:{}", host_name(), a.port())
            } else {
                a.to_string()
            };
            match &plan.settings.name {
                Some(n) => format!("http://{host}/?camera={n}"),
                None => format!("http://{host}/"),
            }
        });
        let m = mqtt::Mqtt::start(url, tls.clone(), &labels, &node, &zones, page.as_deref());
        for c in closed.iter().filter(|c| c.camera == plan.settings.name) {
            m.event(&serde_json::to_vec(c).expect("an event serialises"));
        }
        m
    });
    let status = edges.server.as_ref().map(|server| {
        let status = http::Status::new(
            server.families(),
            plan.name(),
            lock(&shared.engine).bundle.labels().to_vec(),
            edges.health_timeout,
            mqtt.as_ref().map(mqtt::Mqtt::stats_handle),
        );
        server.set_camera(status.clone());
        status
    });
    let parts = Parts {
        source,
        gpio_lines,
        mqtt,
        status,
    };
    Ok(spawn(plan, parts, shared))
}

fn spawn(plan: CameraPlan, parts: Parts, shared: &Shared) -> Camera {
    let beat = Arc::new(Beat::default());
    beat.at_ms
        .store(shared.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    let pause = Arc::new(AtomicBool::new(false));
    let (commands, command_rx) = mpsc::channel();
    let (paused_tx, paused) = mpsc::channel();
    let settings = plan.settings.clone();
    let (spec, decode) = (plan.spec.clone(), plan.opts.decode);
    let thread = {
        let shared = Shared {
            engine: shared.engine.clone(),
            log: shared.log.clone(),
            last_run: shared.last_run.clone(),
            stop: shared.stop.clone(),
            console: shared.console,
            stall: shared.stall.clone(),
            epoch: shared.epoch,
        };
        let (beat, pause) = (beat.clone(), pause.clone());
        std::thread::Builder::new()
            .name(format!("camera-{}", plan.name()))
            .spawn(move || run(plan, parts, shared, beat, pause, command_rx, paused_tx))
            .expect("spawn a camera's thread")
    };
    Camera {
        settings,
        spec,
        decode,
        beat,
        pause,
        commands,
        paused,
        thread: Some(thread),
    }
}

/// The camera's thread: watchers over its source until it ends, stops,
/// or is told to end.
fn run(
    mut plan: CameraPlan,
    mut parts: Parts,
    shared: Shared,
    beat: Arc<Beat>,
    pause: Arc<AtomicBool>,
    commands: mpsc::Receiver<Command>,
    paused: mpsc::Sender<Option<(u32, u32)>>,
) -> Finished {
    let context = plan.settings.context();
    let mut console = shared.console;
    let mut status_sink = parts.status.clone().map(http::StatusSink);
    // The counters go on across restarts with other settings (a reload):
    // --stats and the stall check count the camera's whole run.
    let mut carried = watch::Stats::default();
    loop {
        let mut sinks: Vec<&mut dyn Sink> = Vec::new();
        if let Some(s) = status_sink.as_mut() {
            sinks.push(s);
        }
        if let Some(g) = parts.gpio_lines.as_mut() {
            sinks.push(g);
        }
        if let Some(m) = parts.mqtt.as_mut() {
            sinks.push(m);
        }
        if let Some(c) = console.as_mut() {
            sinks.push(c);
        }
        let mut watcher = Watcher::with_ids(
            &*shared.engine,
            plan.opts.clone(),
            shared.log.clone(),
            shared.ids(),
            sinks,
        );
        watcher.carry_on(carried, parts.source.dropped());
        let status = parts.status.clone();
        let mut observe = |w: &Watcher<'_>, frame: Option<&watch::source::Frame>| {
            shared.stall.check(w.stats.frames);
            beat.mark(shared.epoch, w);
            if let Some(s) = &status {
                s.observe(w, frame);
            }
        };
        // Run until the end, a stop, or a restart with other settings.
        let mut removed = false;
        let next: std::result::Result<_, watch::WatchError> = loop {
            let r = watcher.run_until(parts.source.as_mut(), &shared.stop, &pause, &mut observe);
            match r {
                Ok(Ended::Paused) => {
                    let _ = paused.send(watcher.frame_size());
                    // The service answers every pause.
                    match commands.recv() {
                        Ok(Command::Resume) => continue,
                        Ok(Command::Restart(r)) => {
                            break watcher.end_all("reload").map(|()| Some(*r));
                        }
                        Ok(Command::End) | Err(_) => {
                            let r = watcher.end_all("reload");
                            watcher.flush_log();
                            removed = true;
                            break r.map(|()| None);
                        }
                    }
                }
                Ok(_) => break Ok(None),
                Err(e) => break Err(e),
            }
        };
        let stats = watcher.stats;
        drop(watcher);
        if removed {
            // A camera the reload starts may take this one's device.
            parts.source.close(watch::source::CLOSE_WAIT);
        }
        let error = match next {
            Ok(Some((new, source))) => {
                if let Some(s) = source {
                    parts.source = s;
                    // A new source is available until it says it is lost
                    // (one still waiting notes that at its first turn).
                    if let Some(m) = &parts.mqtt {
                        m.source_available(true);
                    }
                }
                plan = new;
                carried = stats;
                continue;
            }
            Ok(None) => None,
            Err(e) => {
                let e = anyhow::Error::from(e);
                Some(if context.is_empty() {
                    e
                } else {
                    e.context(context.trim_end_matches(": ").to_string())
                })
            }
        };
        return Finished {
            stats,
            mqtt: parts.mqtt.take(),
            gpio_errors: parts.gpio_lines.as_ref().map(|g| g.errors),
            regions: plan.opts.regions.mode,
            error,
            removed,
        };
    }
}

impl Camera {
    /// Whether `plan` reads this camera's source as it is read now (the
    /// same spec, decoded the same way): its frames go on.
    pub(super) fn same_source(&self, plan: &CameraPlan) -> bool {
        plan.spec == self.spec && plan.opts.decode == self.decode
    }

    /// Pauses the loop (events stay open) and returns the frame size it
    /// last saw: `Ok(None)` when the thread has ended, an error when it
    /// did not pause within [`PAUSE_WITHIN`] (a camera hung in its driver)
    /// or `stop` was set meanwhile (the pause is then taken back).
    pub(super) fn pause(
        &self,
        stop: &AtomicBool,
        waiting: &mut dyn FnMut(),
    ) -> Result<Option<Option<(u32, u32)>>> {
        if self.finished() {
            return Ok(None);
        }
        self.pause.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        loop {
            match self.paused.recv_timeout(Duration::from_millis(50)) {
                Ok(size) => return Ok(Some(size)),
                Err(mpsc::RecvTimeoutError::Timeout) if self.finished() => return Ok(None),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    waiting();
                    if stop.load(Ordering::Relaxed) || t0.elapsed() >= PAUSE_WITHIN {
                        self.pause.store(false, Ordering::Relaxed);
                        // It may have paused just now: let it go on.
                        if self.paused.try_recv().is_ok() {
                            let _ = self.commands.send(Command::Resume);
                        }
                        bail!(
                            "{}did not pause within {} s",
                            self.settings.context(),
                            PAUSE_WITHIN.as_secs()
                        );
                    }
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Tells a paused camera what to do next.
    pub(super) fn command(&self, c: Command) {
        self.pause.store(false, Ordering::Relaxed);
        let _ = self.commands.send(c);
    }

    pub(super) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the thread's end.
    pub(super) fn join(mut self) -> Result<Finished> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => Ok(r),
            Some(Err(_)) => bail!("{}the camera's thread panicked", self.settings.context()),
            None => bail!("{}the camera was joined twice", self.settings.context()),
        }
    }
}
