//! systemd's notification protocol through the `sd-notify` crate:
//! `READY=1` once the bundle is loaded and the cameras started, `WATCHDOG=1`
//! at half of `WATCHDOG_USEC` while every camera's loop is alive (a
//! stalled loop stops the petting, and systemd restarts the service), `STATUS=` lines, and
//! `STOPPING=1`. Without `NOTIFY_SOCKET` every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::watch::Watcher;

/// How often a `STATUS=` line is sent.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Fault injection for the watchdog test: after this many frames the loop
/// stalls for good (as a hung camera driver or a deadlock would).
pub const STALL_ENV: &str = "CLIP_EDGE_FAULT_STALL_AFTER_FRAMES";

/// `WATCHDOG_USEC` when the watchdog is this process's: as
/// sd_watchdog_enabled(3), `WATCHDOG_PID`, when set, must be our pid (the
/// `sd-notify` crate's check also refuses an unset one).
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then_some(usec),
    }
}

pub struct Systemd {
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when the unit has a watchdog.
    pet_every: Option<Duration>,
    last_pet: Instant,
    last_status: Instant,
}

impl Systemd {
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let pet_every = watchdog_usec()
            .filter(|_| enabled)
            .map(|usec| Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
        if let Some(p) = pet_every {
            log::info!("systemd watchdog: petting every {} ms", p.as_millis());
        }
        Systemd {
            enabled,
            pet_every,
            last_pet: Instant::now(),
            last_status: Instant::now(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                log::warn!("systemd notify: {e}");
            }
        }
    }

    /// The bundle is verified and loaded, the cameras started (a named
    /// camera's source may still be on its way, tried again with backoff).
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.pet();
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn pet(&mut self) {
        if self.pet_every.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
        self.last_pet = Instant::now();
    }

    /// Called by the service's loop every few tens of milliseconds:
    /// pets the watchdog when every camera's loop is `alive` (it ran
    /// within half the watchdog's time), and sends `status()` as `STATUS=`
    /// every [`STATUS_EVERY`].
    pub fn tick(&mut self, alive: bool, status: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        if alive && self.pet_every.is_some_and(|p| self.last_pet.elapsed() >= p) {
            self.pet();
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.last_status = Instant::now();
            self.send(&[NotifyState::Status(&status())]);
        }
    }

    /// The service thread is busy with a reload whose steps each end
    /// within a bound (a camera's pause, a source's open): pets the
    /// watchdog on the paused cameras' behalf.
    pub fn busy(&mut self) {
        if self.enabled && self.pet_every.is_some_and(|p| self.last_pet.elapsed() >= p) {
            self.pet();
        }
    }

    /// How long a camera's loop may go without a sign of life before the
    /// watchdog stops being petted.
    pub fn alive_within(&self) -> Duration {
        self.pet_every.unwrap_or(Duration::from_secs(10))
    }
}

/// Fault injection for the watchdog test ([`STALL_ENV`]).
pub struct InjectedStall(Option<u64>);

impl InjectedStall {
    pub fn from_env() -> Self {
        InjectedStall(std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok()))
    }

    /// Stalls the calling loop for good once it has taken `frames` frames.
    pub fn check(&self, frames: u64) {
        if let Some(n) = self.0 {
            if frames >= n {
                log::warn!("{STALL_ENV}={n}: stalling the frame loop on purpose");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

/// A camera loop's part of the `STATUS=` line.
pub fn status_line(w: &Watcher<'_>) -> String {
    let s = &w.stats;
    let active: Vec<&str> = w.open_events().map(|(l, _)| l).collect();
    format!(
        "{}{} frames, {} dropped, {:.1} fps, {} events, active: {}",
        w.camera().map(|c| format!("{c}: ")).unwrap_or_default(),
        s.frames,
        s.dropped,
        s.frames as f64 / (s.wall_ms / 1e3).max(1e-9),
        s.events,
        if active.is_empty() {
            "none".into()
        } else {
            active.join(", ")
        }
    )
}
