//! `watch`'s settings: one struct for the command line and the TOML config
//! (`--config FILE`); a flag given on the command line wins over the file.
//! Unknown keys, unknown labels and bad values are one-line errors naming them.

use crate::watch::SettingError;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::detect::Rules;
use super::{Watched, DEFAULT_THRESHOLD};
use crate::decode::DecodeMode;
use crate::engine::{Device, EngineKind};

pub use camera::{CameraSettings, CameraTable};
pub use regions::{ZoneSpec, ZoneTable};

mod camera;
mod regions;

/// A config file larger than this is refused (it is a few lines).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Flags of `clip-edge watch`, and keys of its config file (same names,
/// `_` for `-`).
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchArgs {
    /// The bundle directory (clip-quantize build --out).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Refuse the bundle unless its manifest.sig verifies with this public key.
    #[arg(long, value_name = "PUBKEY")]
    pub require_signature: Option<PathBuf>,
    /// dir:PATH, stdin:mjpeg, v4l2:/dev/videoN[?width=W&height=H&fps=F&format=MJPG|YUYV|NV12],
    /// ffmpeg:INPUT (a file or a stream ffmpeg opens), rtsp://URL,
    /// http(s)://URL (an MJPEG stream or a still-image URL), or
    /// libcamera:[?width=W&height=H&fps=F&camera=N] (rpicam-vid).
    #[arg(long)]
    pub source: Option<String>,
    /// The camera's password, read from this file's first line, for the
    /// user the --source URL names (http://USER@HOST/..., rtsp://USER@HOST/...).
    #[arg(long, value_name = "FILE")]
    pub source_password_file: Option<PathBuf>,
    /// A label to watch, with its probability threshold (default 0.5); repeatable.
    #[arg(long = "watch", value_name = "LABEL[=THRESHOLD]")]
    #[serde(default)]
    pub watch: Vec<String>,
    /// Append events here as JSON lines (fsync'd before GPIO and MQTT are told; held in memory while the disk refuses).
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: Option<PathBuf>,
    /// Rotate the event log past this many megabytes (FILE.jsonl.1, .2, …;
    /// default 64).
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub events_max_mb: Option<f64>,
    /// Rotated event logs kept (default 5).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub events_keep: Option<u32>,
    /// Write a JPEG of each event's start frame here.
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// Keep at most this many megabytes of snapshots (the oldest go
    /// first). Default: no limit.
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub snapshot_max_mb: Option<f64>,
    /// Remove snapshots older than this many days. Default: kept.
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    pub snapshot_retain_days: Option<f64>,
    /// A GPIO line high while LABEL's event is active; repeatable.
    #[arg(long, value_name = "CHIP:LINE=LABEL")]
    #[serde(default)]
    pub gpio: Vec<String>,
    /// Publish events, states and Home Assistant discovery to this broker
    /// (mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]; mqtts:// is TLS).
    #[arg(long, value_name = "mqtt[s]://HOST:PORT/PREFIX")]
    pub mqtt: Option<String>,
    /// The MQTT password, read from this file's first line (for the user
    /// the --mqtt URL names): a password kept out of the config.
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed an mqtts:// broker's
    /// certificate (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    pub mqtt_ca: Option<PathBuf>,
    /// A client certificate (PEM) for an mqtts:// broker that asks for one
    /// (with --mqtt-key).
    #[arg(long, value_name = "FILE")]
    pub mqtt_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub mqtt_key: Option<PathBuf>,
    /// This device's name in MQTT topics and Home Assistant (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Run the loop at most this many frames per second, whatever the
    /// source (a live camera's frames in between are dropped; a snapshot
    /// URL is asked at this rate). Default: as fast as it goes.
    #[arg(long, allow_negative_numbers = true)]
    pub fps: Option<f64>,
    /// Threads the encoder runs on (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Which backend runs the image encoder: native (ours; no allocation
    /// per frame) or tract (the reference). Default: native.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Where the encoder runs: cpu, or cuda (a build with `--features cuda`).
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// Positive frames among the last --window frames that start an event (default 2).
    #[arg(long, allow_negative_numbers = true)]
    pub hits: Option<u32>,
    /// Frames in the start window (default 3).
    #[arg(long, allow_negative_numbers = true)]
    pub window: Option<u32>,
    /// Consecutive frames without the label that end its event (default 3).
    #[arg(long, allow_negative_numbers = true)]
    pub end_after: Option<u32>,
    /// Frames after an event's end during which it cannot start again (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub cooldown: Option<u32>,
    /// Skip inference on frames whose mean absolute difference (0-255) to
    /// the last inferred frame is below this (--regions full and no zone
    /// only; unrelated to --regions motion). Default: every frame is inferred.
    #[arg(long, allow_negative_numbers = true)]
    pub motion_threshold: Option<f32>,
    /// How JPEG frames are decoded: exact (at full size, as `classify`
    /// decodes a file) or fast (at 1/2, 1/4 or 1/8 of their size while
    /// the shorter side keeps twice the model's input; --regions full and
    /// no zone only). Default exact.
    #[arg(long, value_enum)]
    pub decode: Option<DecodeMode>,
    /// Where to look in a frame: full (the whole frame), motion (the
    /// regions that moved, and the objects being followed) or tiles[:CxR]
    /// (overlapping square tiles, default 3x2). Default full.
    #[arg(long, value_name = "full|motion|tiles[:CxR]")]
    pub regions: Option<String>,
    /// A named part of the view, NAME=X,Y,W,H in source pixels: only
    /// detections whose box centre is inside a zone count; repeatable. In
    /// the config, `[[zone]]` tables with `name`, `box = [X, Y, W, H]` or
    /// `polygon = [[X, Y], ...]`, and optionally the zone's own `watch` list.
    #[arg(long = "zone", value_name = "NAME=X,Y,W,H")]
    #[serde(default)]
    pub zone: Vec<ZoneSpec>,
    /// With --regions motion: ignore regions smaller than this fraction of the frame.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub min_area: Option<f32>,
    /// With --regions motion: ignore regions larger than this fraction of the frame.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub max_area: Option<f32>,
    /// Serve /healthz, /metrics, /api/state and a status page on
    /// [ADDR:]PORT (ADDR defaults to 127.0.0.1).
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub http: Option<String>,
    /// Seconds without a frame after which /healthz answers 503 (default 10).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub health_timeout: Option<f64>,
    /// Read settings from this TOML file (flags win).
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// At exit, print counters and time per stage as one JSON object.
    #[arg(long)]
    #[serde(skip)]
    pub stats: bool,
    /// No start-up line and no event lines on stdout (--stats still prints).
    #[arg(short, long)]
    #[serde(skip)]
    pub quiet: bool,
    /// Print each event as its JSON log line instead of a human line (and
    /// the start-up line on stderr).
    #[arg(long, conflicts_with = "quiet")]
    #[serde(skip)]
    pub json_events: bool,
    /// Check the settings (config, bundle, labels, source, GPIO, MQTT,
    /// HTTP) without starting, and log in to the MQTT broker once: one
    /// line per problem, exit 0 when there is none, 78 (EX_CONFIG)
    /// otherwise.
    #[arg(long)]
    #[serde(skip)]
    pub check: bool,
    /// Several cameras in one service (config only): `[[camera]]` tables,
    /// each with a `name`, a `source` and any of the per-camera keys
    /// (what it does not set it takes from the top level).
    #[arg(skip)]
    #[serde(default)]
    pub camera: Vec<CameraTable>,
}

impl WatchArgs {
    /// These flags over the config file's values (when `--config` is given).
    pub fn merged(self) -> Result<WatchArgs, SettingError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let mut file = read_config(&path)?;
        let camera = std::mem::take(&mut file.camera)
            .into_iter()
            .map(|t| t.under_flags(&self))
            .collect();
        Ok(WatchArgs {
            bundle: self.bundle.or(file.bundle),
            require_signature: self.require_signature.or(file.require_signature),
            source: self.source.or(file.source),
            source_password_file: self.source_password_file.or(file.source_password_file),
            watch: if self.watch.is_empty() {
                file.watch
            } else {
                self.watch
            },
            events: self.events.or(file.events),
            events_max_mb: self.events_max_mb.or(file.events_max_mb),
            events_keep: self.events_keep.or(file.events_keep),
            snapshots: self.snapshots.or(file.snapshots),
            snapshot_max_mb: self.snapshot_max_mb.or(file.snapshot_max_mb),
            snapshot_retain_days: self.snapshot_retain_days.or(file.snapshot_retain_days),
            gpio: if self.gpio.is_empty() {
                file.gpio
            } else {
                self.gpio
            },
            mqtt: self.mqtt.or(file.mqtt),
            mqtt_password_file: self.mqtt_password_file.or(file.mqtt_password_file),
            mqtt_ca: self.mqtt_ca.or(file.mqtt_ca),
            mqtt_cert: self.mqtt_cert.or(file.mqtt_cert),
            mqtt_key: self.mqtt_key.or(file.mqtt_key),
            node: self.node.or(file.node),
            fps: self.fps.or(file.fps),
            threads: self.threads.or(file.threads),
            engine: self.engine.or(file.engine),
            device: self.device.or(file.device),
            hits: self.hits.or(file.hits),
            window: self.window.or(file.window),
            end_after: self.end_after.or(file.end_after),
            cooldown: self.cooldown.or(file.cooldown),
            motion_threshold: self.motion_threshold.or(file.motion_threshold),
            regions: self.regions.or(file.regions),
            decode: self.decode.or(file.decode),
            zone: if self.zone.is_empty() {
                file.zone
            } else {
                self.zone
            },
            min_area: self.min_area.or(file.min_area),
            max_area: self.max_area.or(file.max_area),
            http: self.http.or(file.http),
            health_timeout: self.health_timeout.or(file.health_timeout),
            config: self.config,
            stats: self.stats,
            quiet: self.quiet,
            json_events: self.json_events,
            check: self.check,
            camera,
        })
    }

    /// The debouncing rules, validated.
    pub fn rules(&self) -> Result<Rules, SettingError> {
        let d = Rules::default();
        let r = Rules {
            hits: self.hits.unwrap_or(d.hits),
            window: self.window.unwrap_or(d.window),
            end_after: self.end_after.unwrap_or(d.end_after),
            cooldown: self.cooldown.unwrap_or(d.cooldown),
        };
        r.validate()?;
        Ok(r)
    }

    /// `--watch` against the bundle's labels.
    pub fn watched(&self, labels: &[String]) -> Result<Vec<Watched>, SettingError> {
        if self.watch.is_empty() {
            return Err("nothing to watch: give --watch LABEL[=THRESHOLD] (or `watch = [...]` in the config)".into());
        }
        let mut out: Vec<Watched> = Vec::new();
        for w in &self.watch {
            let (label, threshold) = watch_spec("--watch", w)?;
            let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
            let index = find_label(labels, label).ok_or_else(|| {
                let key = label_key(label);
                // The closest spellings first (a typo: "whte star" is
                // "white star" before "red star"), then labels sharing a
                // word with it.
                let mut near: Vec<(f64, &str)> = labels
                    .iter()
                    .filter_map(|l| {
                        let lk = label_key(l);
                        let alike = strsim::normalized_damerau_levenshtein(&key, &lk);
                        let shares = key
                            .split(' ')
                            .any(|word| !word.is_empty() && lk.contains(word));
                        (alike >= 0.6 || shares).then_some((alike, l.as_str()))
                    })
                    .collect();
                near.sort_by(|a, b| b.0.total_cmp(&a.0));
                let near: Vec<&str> = near.iter().take(6).map(|n| n.1).collect();
                format!(
                    "--watch {label:?}: not a label of this bundle ({} labels{})",
                    labels.len(),
                    if near.is_empty() {
                        String::new()
                    } else {
                        format!("; similar: {}", near.join(", "))
                    }
                )
            })?;
            if out.iter().any(|o| o.index == index) {
                return Err(format!("--watch {label:?}: given twice").into());
            }
            out.push(Watched {
                label: labels[index].clone(),
                index,
                threshold,
            });
        }
        Ok(out)
    }
}

/// The size past which an `--events` log is rotated when
/// `--events-max-mb` is not given, in MB.
pub const DEFAULT_EVENTS_MAX_MB: f64 = 64.0;

impl WatchArgs {
    /// `--events-max-mb` and `--events-keep`, checked: with an `--events`
    /// log, it is rotated past [`DEFAULT_EVENTS_MAX_MB`] unless told
    /// otherwise (a log left to grow for months would pass what is read at
    /// start-up, and the service would no longer start).
    pub fn events_rotation(&self) -> Result<Option<super::events::Rotation>, SettingError> {
        // Half what start-up reads of a log: a rotated file is at most one
        // line past its limit.
        let max_mb = (super::events::MAX_LOG_BYTES / 2) as f64 / 1e6;
        let keep = match self.events_keep {
            None => 5,
            Some(k) if (1..=100).contains(&k) => k,
            Some(k) => return Err(format!("--events-keep {k}: expected 1 to 100 files").into()),
        };
        match self.events_max_mb {
            _ if self.events.is_none() && self.events_keep.is_some() => {
                Err("--events-keep: no --events log to rotate".into())
            }
            None if self.events.is_none() => Ok(None),
            None => Ok(Some(super::events::Rotation {
                max_bytes: (DEFAULT_EVENTS_MAX_MB * 1e6) as u64,
                keep,
            })),
            Some(_) if self.events.is_none() => {
                Err("--events-max-mb: no --events log to rotate".into())
            }
            Some(m) if m > 0.0 && m <= max_mb => Ok(Some(super::events::Rotation {
                max_bytes: (m * 1e6) as u64,
                keep,
            })),
            Some(m) => Err(format!(
                "--events-max-mb {m}: expected more than 0 and at most {max_mb} (a log is read whole at start)"
            )
            .into()),
        }
    }

    /// `--snapshot-max-mb` and `--snapshot-retain-days`, checked.
    pub fn snapshot_retention(&self) -> Result<super::snapshots::Retention, SettingError> {
        let positive = |name: &str, v: Option<f64>, max: f64| match v {
            None => Ok(None),
            Some(v) if v > 0.0 && v <= max => Ok(Some(v)),
            Some(v) => Err(format!(
                "--{name} {v}: expected more than 0 and at most {max}"
            )),
        };
        let mb = positive("snapshot-max-mb", self.snapshot_max_mb, 1e7)?;
        let days = positive("snapshot-retain-days", self.snapshot_retain_days, 36_500.0)?;
        if (mb.is_some() || days.is_some()) && self.snapshots.is_none() {
            return Err(
                "--snapshot-max-mb/--snapshot-retain-days: no --snapshots folder to keep".into(),
            );
        }
        Ok(super::snapshots::Retention {
            max_bytes: mb.map(|m| (m * 1e6) as u64),
            max_age: days.map(|d| std::time::Duration::from_secs_f64(d * 86_400.0)),
        })
    }
}

/// `LABEL[=THRESHOLD]`; `what` names the setting in errors.
fn watch_spec<'a>(what: &str, w: &'a str) -> Result<(&'a str, Option<f32>), String> {
    match w.rsplit_once('=') {
        Some((l, t)) => {
            let t: f32 = t
                .trim()
                .parse()
                .ok()
                .filter(|t: &f32| *t > 0.0 && *t <= 1.0)
                .ok_or_else(|| {
                    format!("{what} {w:?}: threshold {t:?} is not a probability in (0, 1]")
                })?;
            Ok((l.trim(), Some(t)))
        }
        None => Ok((w.trim(), None)),
    }
}

/// `--http [ADDR:]PORT`: a bare port binds 127.0.0.1.
pub fn http_addr(spec: &str) -> Result<std::net::SocketAddr, SettingError> {
    let bad = || format!("--http {spec:?}: expected PORT or ADDR:PORT (e.g. 8080, 0.0.0.0:8080)");
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    spec.parse().map_err(|_| bad().into())
}

/// Reads and checks a config file; errors name the file, the line and the key.
pub fn read_config(path: &Path) -> Result<WatchArgs, SettingError> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: {} bytes, more than a config file may be ({MAX_CONFIG_BYTES})",
            path.display(),
            meta.len()
        )
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str::<WatchArgs>(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = config_message(e.message());
        // The key of the line, for a value of the wrong type.
        let key = line
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty() && !msg.contains(&format!("`{k}`")));
        SettingError(match (line, key) {
            (Some(l), Some(k)) => format!("{}: line {l}: key `{k}`: {msg}", path.display()),
            (Some(l), None) => format!("{}: line {l}: {msg}", path.display()),
            _ => format!("{}: {msg}", path.display()),
        })
    })
}

/// A config error as one short line: an unknown key gets the known key it
/// is closest to (`end-after` → `end_after`), not the list of all of them.
fn config_message(message: &str) -> String {
    let msg = message.replace('\n', " ");
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg;
    };
    let Some((unknown, rest)) = rest.split_once('`') else {
        return msg;
    };
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let wanted = unknown.replace('-', "_").to_lowercase();
    let best = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&wanted, k), *k))
        .min();
    match best {
        Some((d, k)) if d <= 2.max(wanted.len() / 4) => {
            format!("unknown key `{unknown}` (did you mean `{k}`?)")
        }
        _ => format!("unknown key `{unknown}` (docs/watch.md lists the keys)"),
    }
}

/// A label as users also write it: case, `_` and `-` for spaces, and runs
/// of spaces do not matter (`Red_Star` is `red star`, as MQTT topics and
/// eval folders spell it).
pub fn label_key(s: &str) -> String {
    s.to_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The index of `label` among `labels`: the exact label, else the one label
/// with the same [`label_key`] (none when two share it).
pub fn find_label(labels: &[String], label: &str) -> Option<usize> {
    if let Some(i) = labels.iter().position(|l| l == label) {
        return Some(i);
    }
    let key = label_key(label);
    let mut hits = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| label_key(l) == key);
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `--events` log is rotated at 64 MB unless told otherwise (one
    /// left to grow would pass what a restart reads); rotation settings
    /// without a log are errors.
    #[test]
    fn an_event_log_is_rotated_by_default() {
        use crate::watch::events::Rotation;
        let log = WatchArgs {
            events: Some("events.jsonl".into()),
            ..WatchArgs::default()
        };
        let rotation = |a: &WatchArgs| a.events_rotation();
        assert_eq!(
            rotation(&log),
            Ok(Some(Rotation {
                max_bytes: 64_000_000,
                keep: 5
            }))
        );
        let keep = WatchArgs {
            events_keep: Some(2),
            ..log.clone()
        };
        assert_eq!(rotation(&keep).unwrap().unwrap().keep, 2);
        assert_eq!(rotation(&WatchArgs::default()), Ok(None));
        for no_log in [
            WatchArgs {
                events_keep: Some(2),
                ..WatchArgs::default()
            },
            WatchArgs {
                events_max_mb: Some(1.0),
                ..WatchArgs::default()
            },
        ] {
            let e = rotation(&no_log).unwrap_err().0;
            assert!(e.contains("no --events log to rotate"), "{e}");
        }
    }

    fn labels() -> Vec<String> {
        ["red star", "green square", "blue circle"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn watch_specs_resolve_and_bad_ones_are_named() {
        let a = WatchArgs {
            watch: vec!["red star".into(), "blue circle=0.8".into()],
            ..Default::default()
        };
        let w = a.watched(&labels()).unwrap();
        assert_eq!((w[0].index, w[0].threshold), (0, DEFAULT_THRESHOLD));
        assert_eq!((w[1].index, w[1].threshold), (2, 0.8));
        for (bad, needle) in [
            ("pink star", "\"pink star\": not a label"),
            ("red star=1.5", "threshold \"1.5\""),
            ("red star=x", "threshold \"x\""),
        ] {
            let a = WatchArgs {
                watch: vec![bad.into()],
                ..Default::default()
            };
            let e = a.watched(&labels()).unwrap_err().0;
            assert!(e.contains(needle), "{e}");
        }
        assert!(WatchArgs::default().watched(&labels()).is_err());
        // As MQTT topics and eval folders spell them; the bundle's spelling
        // is kept.
        let a = WatchArgs {
            watch: vec!["Red_Star".into(), "green-square=0.7".into()],
            ..Default::default()
        };
        let w = a.watched(&labels()).unwrap();
        assert_eq!((w[0].index, w[0].label.as_str()), (0, "red star"));
        assert_eq!((w[1].index, w[1].label.as_str()), (1, "green square"));
        let a = WatchArgs {
            watch: vec!["star".into()],
            ..Default::default()
        };
        assert!(a
            .watched(&labels())
            .unwrap_err()
            .0
            .contains("similar: red star"));
        // A typo: the label meant comes first, among many sharing a word.
        let many: Vec<String> = ["red star", "green star", "blue star", "yellow star"]
            .iter()
            .chain(&["orange star", "purple star", "black star", "white star"])
            .map(|s| s.to_string())
            .collect();
        for (typo, meant) in [("whte star", "white star"), ("red stra", "red star")] {
            let a = WatchArgs {
                watch: vec![typo.into()],
                ..Default::default()
            };
            let e = a.watched(&many).unwrap_err().0;
            assert!(e.contains(&format!("similar: {meant},")), "{e}");
        }
        let twins = ["a b", "A_B"].map(String::from).to_vec();
        assert_eq!(find_label(&twins, "a_b"), None);
        assert_eq!(find_label(&twins, "A_B"), Some(1));
    }

    #[test]
    fn config_keys_are_checked_by_line_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("clip-edge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("watch.toml");
        std::fs::write(&p, "source = \"dir:x\"\nwatch = [\"red star\"]\nfsp = 3\n").unwrap();
        let e = read_config(&p).unwrap_err().0;
        assert!(
            e.ends_with("line 3: unknown key `fsp` (did you mean `fps`?)"),
            "{e}"
        );
        std::fs::write(&p, "end-after = 3\n").unwrap();
        let e = read_config(&p).unwrap_err().0;
        assert!(
            e.ends_with("unknown key `end-after` (did you mean `end_after`?)"),
            "{e}"
        );
        std::fs::write(&p, "colour = \"red\"\n").unwrap();
        let e = read_config(&p).unwrap_err().0;
        assert!(
            e.ends_with("unknown key `colour` (docs/watch.md lists the keys)"),
            "{e}"
        );
        std::fs::write(
            &p,
            "source = \"dir:x\"\nfps = 2.0\nwatch = [\"red star\"]\nwindow = 5\n",
        )
        .unwrap();
        let a = WatchArgs {
            fps: Some(9.0),
            config: Some(p.clone()),
            ..Default::default()
        }
        .merged()
        .unwrap();
        assert_eq!(a.fps, Some(9.0));
        assert_eq!(a.source.as_deref(), Some("dir:x"));
        assert_eq!(a.watch, ["red star"]);
        assert_eq!(a.rules().unwrap().window, 5);
        std::fs::write(&p, "fps = \"fast\"\n").unwrap();
        let e = read_config(&p).unwrap_err().0;
        assert!(e.contains("line 1: key `fps`: invalid type"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
