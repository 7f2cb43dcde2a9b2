//! `clip-edge watch`: resolves the settings (flags over `--config`), opens
//! the source and the edges (GPIO, MQTT, HTTP, systemd), runs the loop, and
//! reloads on SIGHUP: the config is read again and the new bundle loaded
//! and verified completely before the swap; a bad one is refused with a log
//! line and the running one goes on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use clip_edge::bundle::Trust;
use clip_edge::engine::{Engine, EngineError};
use clip_edge::service::{http, systemd::Systemd};
use clip_edge::signature::read_public_key;
use clip_edge::watch::config::{CameraSettings, WatchArgs};
use clip_edge::watch::{self, gpio, lock, mqtt, Ended, Sink, Watcher};

mod camera;
mod console;
mod service;
mod setup;

use console::*;
use service::*;
use setup::*;

/// The config read when `watch` is given neither `--config`, `--bundle`
/// nor `--source` (what the packaged unit runs); `CLIP_EDGE_CONFIG`
/// overrides the path.
pub const DEFAULT_CONFIG: &str = "/etc/clip-edge/watch.toml";

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
        Some(c) if c.json => eprintln!("{}", hello_line(&checked)),
        Some(_) => out!("{}", hello_line(&checked)),
        None => {}
    }
    let mut service = set_up(checked, console)?;
    service.run(&cli);
    service.finish(args.stats)
}

/// How long `watch --check` waits for the broker to answer.
const MQTT_CHECK_WAIT: Duration = Duration::from_secs(10);

/// `watch --check`: every problem with the settings, one line each, and
/// the exit status (0 when there is none, [`EX_CONFIG`] otherwise).
fn check(args: &WatchArgs) -> ExitCode {
    match validate(args) {
        Ok(c) => {
            // The broker, once: a login or certificate it refuses is
            // found now, not in the service's log.
            if let Some((url, tls)) = &c.mqtt_url {
                let node = args.node.clone().unwrap_or_else(host_name);
                if let Err(e) = mqtt::probe(url, tls.clone(), &node, MQTT_CHECK_WAIT) {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_CONFIG);
                }
            }
            let cameras: Vec<String> = c
                .cameras
                .iter()
                .map(|cam| {
                    format!(
                        "{}watching {} from {}",
                        cam.settings.context(),
                        cam.opts
                            .watched
                            .iter()
                            .map(|w| w.label.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        watch::source::redacted(&cam.spec)
                    )
                })
                .collect();
            out!(
                "ok: bundle {} ({}), {}",
                c.model.bundle.display(),
                c.model.engine.bundle.manifest.precision,
                cameras.join("; ")
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
