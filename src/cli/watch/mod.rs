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
mod plan;
mod reload;
mod start;
mod supervisor;

use console::*;
use plan::*;
use reload::*;
use start::*;
use supervisor::*;

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
        Err(invalid) => {
            let mut problems = invalid.problems;
            let first = problems.remove(0);
            // A GPU not ready yet is worth a restart; the rest is the config.
            let device = matches!(
                first.downcast_ref::<EngineError>(),
                Some(EngineError::Device(_))
            );
            return Err(if device {
                first
            } else {
                ConfigError(in_config(first, args.config.as_deref())).into()
            });
        }
    };
    let console = (!cli.quiet).then_some(Console {
        json: cli.json_events,
    });
    let hello = console.as_ref().map(|c| (c.json, hello_line(&checked)));
    let mut service = set_up(checked, console, hello)?;
    service.run(&cli);
    service.finish(args.stats)
}

/// How long `watch --check` waits for the broker to answer.
const MQTT_CHECK_WAIT: Duration = Duration::from_secs(10);

/// `watch --check`: every problem with the settings, one line each, and
/// the exit status (0 when there is none, [`EX_CONFIG`] otherwise). The
/// status page's address and the broker are tried whatever else is wrong.
fn check(args: &WatchArgs) -> ExitCode {
    let (checked, mut problems, mqtt_url, http_addr) = match validate(args) {
        Ok(c) => {
            let (m, h) = (c.mqtt_url.clone(), c.http_addr);
            (Some(c), Vec::new(), m, h)
        }
        Err(invalid) => {
            let Invalid {
                problems,
                mqtt_url,
                http_addr,
            } = *invalid;
            (None, problems, mqtt_url, http_addr)
        }
    };
    // The status page's address: one this user cannot bind (a port below
    // 1024, an address of no interface) is an error; one in use is said
    // (the running service may be what holds it).
    if let Some(addr) = http_addr {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => eprintln!(
                "warning: --http {addr}: in use now (by the running service? else by another program, and watch would exit 78)"
            ),
            Err(e) => problems.push(anyhow::anyhow!("--http {addr}: {e}")),
        }
    }
    // The broker, once: a login or certificate it refuses is found now,
    // not in the service's log.
    if let Some((url, tls)) = &mqtt_url {
        let node = args.node.clone().unwrap_or_else(host_name);
        if let Err(e) = mqtt::probe(url, tls.clone(), &node, MQTT_CHECK_WAIT) {
            problems.push(anyhow::anyhow!("{e}"));
        }
    }
    match checked {
        Some(c) if problems.is_empty() => {
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
                        watch::secrets::redacted(&cam.spec)
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
        _ => {
            for p in problems {
                eprintln!("error: {:#}", in_config(p, args.config.as_deref()));
            }
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// A problem with a setting (`--fps 0: …`) that the config file gave,
/// not the command line, named as the file's: `watch.toml: line 4: --fps
/// 0: …` (the flag's name is the key's, `-` for `_`).
fn in_config(problem: anyhow::Error, config: Option<&std::path::Path>) -> anyhow::Error {
    let Some(path) = config else {
        return problem;
    };
    let text = format!("{problem:#}");
    let Some(flag) = text
        .strip_prefix("--")
        .and_then(|t| t.split([' ', ':', '=']).next())
        .filter(|f| !f.is_empty())
    else {
        return problem;
    };
    // `args_os`: an argument that is not UTF-8 (a path) is not a flag.
    let on_command_line = std::env::args_os().any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")))
    });
    if on_command_line {
        return problem;
    }
    let key = flag.replace('-', "_");
    let Ok(file) = std::fs::read_to_string(path) else {
        return problem;
    };
    // The key at the top level (before the first table).
    let line = file
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| {
            l.trim_start()
                .strip_prefix(key.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
    match line {
        Some(n) => anyhow::anyhow!("{}: line {}: {text}", path.display(), n + 1),
        None => problem,
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
