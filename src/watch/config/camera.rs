//! `[[camera]]` tables: several cameras in one service. A camera's table
//! names it and its source and may set any per-camera key; what it leaves
//! out it takes from the top level. The model, the event log, the broker
//! and the status server are the service's, shared by every camera.

use std::path::PathBuf;

use serde::Deserialize;

use super::{WatchArgs, ZoneSpec};
use crate::watch::SettingError;

/// The longest camera name (it is a topic level and part of entity ids).
pub const MAX_CAMERA_NAME: usize = 32;

/// One `[[camera]]` table of the config.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraTable {
    pub name: String,
    pub source: Option<String>,
    pub source_password_file: Option<PathBuf>,
    pub watch: Option<Vec<String>>,
    pub gpio: Option<Vec<String>>,
    pub snapshots: Option<PathBuf>,
    pub snapshot_max_mb: Option<f64>,
    pub snapshot_retain_days: Option<f64>,
    pub fps: Option<f64>,
    pub hits: Option<u32>,
    pub window: Option<u32>,
    pub end_after: Option<u32>,
    pub cooldown: Option<u32>,
    pub motion_threshold: Option<f32>,
    pub regions: Option<String>,
    pub decode: Option<crate::decode::DecodeMode>,
    pub zone: Option<Vec<ZoneSpec>>,
    pub min_area: Option<f32>,
    pub max_area: Option<f32>,
}

/// One camera's settings: the top level's with its table's over them.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// None for the one camera of a service without `[[camera]]` tables
    /// (its events carry no camera, its topics no camera level).
    pub name: Option<String>,
    pub args: WatchArgs,
}

impl CameraTable {
    /// This table with the keys that command-line `flags` set taken out:
    /// a flag wins over the config file, its tables included.
    pub fn under_flags(self, flags: &WatchArgs) -> CameraTable {
        fn keep<T>(v: Option<T>, flag: bool) -> Option<T> {
            if flag {
                None
            } else {
                v
            }
        }
        let f = flags;
        CameraTable {
            name: self.name,
            source: self.source,
            source_password_file: keep(self.source_password_file, f.source_password_file.is_some()),
            watch: keep(self.watch, !f.watch.is_empty()),
            gpio: keep(self.gpio, !f.gpio.is_empty()),
            snapshots: keep(self.snapshots, f.snapshots.is_some()),
            snapshot_max_mb: keep(self.snapshot_max_mb, f.snapshot_max_mb.is_some()),
            snapshot_retain_days: keep(self.snapshot_retain_days, f.snapshot_retain_days.is_some()),
            fps: keep(self.fps, f.fps.is_some()),
            hits: keep(self.hits, f.hits.is_some()),
            window: keep(self.window, f.window.is_some()),
            end_after: keep(self.end_after, f.end_after.is_some()),
            cooldown: keep(self.cooldown, f.cooldown.is_some()),
            motion_threshold: keep(self.motion_threshold, f.motion_threshold.is_some()),
            regions: keep(self.regions, f.regions.is_some()),
            decode: keep(self.decode, f.decode.is_some()),
            zone: keep(self.zone, !f.zone.is_empty()),
            min_area: keep(self.min_area, f.min_area.is_some()),
            max_area: keep(self.max_area, f.max_area.is_some()),
        }
    }

    /// The per-camera keys of `args`, as a table would give them.
    fn of(name: &Option<String>, a: &WatchArgs) -> CameraTable {
        CameraTable {
            name: name.clone().unwrap_or_default(),
            source: a.source.clone(),
            source_password_file: a.source_password_file.clone(),
            watch: Some(a.watch.clone()),
            gpio: Some(a.gpio.clone()),
            snapshots: a.snapshots.clone(),
            snapshot_max_mb: a.snapshot_max_mb,
            snapshot_retain_days: a.snapshot_retain_days,
            fps: a.fps,
            hits: a.hits,
            window: a.window,
            end_after: a.end_after,
            cooldown: a.cooldown,
            motion_threshold: a.motion_threshold,
            regions: a.regions.clone(),
            decode: a.decode,
            zone: Some(a.zone.clone()),
            min_area: a.min_area,
            max_area: a.max_area,
        }
    }
}

impl CameraSettings {
    /// Whether `other` is this camera with the same per-camera settings
    /// (what the service's own keys say does not count).
    pub fn same_camera(&self, other: &CameraSettings) -> bool {
        CameraTable::of(&self.name, &self.args) == CameraTable::of(&other.name, &other.args)
    }

    /// The name the status page and the metrics show.
    pub fn shown_name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// `camera "NAME": ` before a problem of a named camera.
    pub fn context(&self) -> String {
        match &self.name {
            Some(n) => format!("camera {n:?}: "),
            None => String::new(),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CAMERA_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "[[camera]] name {name:?}: expected 1 to {MAX_CAMERA_NAME} letters, digits, '_' or '-'"
        ))
    }
}

impl WatchArgs {
    /// The cameras these settings describe: each `[[camera]]` table over
    /// the top level, or (without tables) the top level as the one camera.
    /// A camera without a name or a source, a name or a source given
    /// twice, or a top-level `source` beside the tables, is an error
    /// naming it.
    pub fn cameras(&self) -> Result<Vec<CameraSettings>, SettingError> {
        if self.camera.is_empty() {
            return Ok(vec![CameraSettings {
                name: None,
                args: self.clone(),
            }]);
        }
        if let Some(s) = &self.source {
            return Err(format!(
                "source {:?}: given beside [[camera]] tables (each camera names its own source)",
                crate::watch::secrets::redacted(s)
            )
            .into());
        }
        if let Some(g) = self.gpio.first() {
            return Err(format!(
                "gpio {g:?}: given beside [[camera]] tables (a line belongs to one camera: name it in its table)"
            ).into());
        }
        let mut out: Vec<CameraSettings> = Vec::with_capacity(self.camera.len());
        for t in &self.camera {
            check_name(&t.name)?;
            let Some(source) = &t.source else {
                return Err(format!("camera {:?}: no source", t.name).into());
            };
            for o in &out {
                if o.name.as_deref().map(str::to_lowercase) == Some(t.name.to_lowercase()) {
                    return Err(format!("camera {:?}: named twice", t.name).into());
                }
                if o.args.source.as_deref() == Some(source.as_str()) {
                    return Err(format!(
                        "camera {:?}: source {:?} is camera {:?}'s too",
                        t.name,
                        crate::watch::secrets::redacted(source),
                        o.shown_name()
                    )
                    .into());
                }
            }
            let top = self.clone();
            let args = WatchArgs {
                source: Some(source.clone()),
                source_password_file: t.source_password_file.clone().or(top.source_password_file),
                watch: t.watch.clone().unwrap_or(top.watch),
                gpio: t.gpio.clone().unwrap_or_default(),
                snapshots: t.snapshots.clone().or(top.snapshots),
                snapshot_max_mb: t.snapshot_max_mb.or(top.snapshot_max_mb),
                snapshot_retain_days: t.snapshot_retain_days.or(top.snapshot_retain_days),
                fps: t.fps.or(top.fps),
                hits: t.hits.or(top.hits),
                window: t.window.or(top.window),
                end_after: t.end_after.or(top.end_after),
                cooldown: t.cooldown.or(top.cooldown),
                motion_threshold: t.motion_threshold.or(top.motion_threshold),
                regions: t.regions.clone().or(top.regions),
                decode: t.decode.or(top.decode),
                zone: t.zone.clone().unwrap_or(top.zone),
                min_area: t.min_area.or(top.min_area),
                max_area: t.max_area.or(top.max_area),
                camera: Vec::new(),
                ..top
            };
            out.push(CameraSettings {
                name: Some(t.name.clone()),
                args,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<CameraSettings>, String> {
        toml::from_str::<WatchArgs>(text)
            .map_err(|e| e.message().to_string())?
            .cameras()
            .map_err(|e| e.0)
    }

    #[test]
    fn tables_take_what_they_leave_out_from_the_top_level() {
        let c = parse(
            "watch = [\"red star\"]\nfps = 2.0\n\
             [[camera]]\nname = \"porch\"\nsource = \"dir:a\"\n\
             [[camera]]\nname = \"yard\"\nsource = \"dir:b\"\nwatch = [\"blue circle\"]\nwindow = 5\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name.as_deref(), Some("porch"));
        assert_eq!(c[0].args.watch, ["red star"]);
        assert_eq!(c[1].args.watch, ["blue circle"]);
        assert_eq!((c[0].args.fps, c[1].args.fps), (Some(2.0), Some(2.0)));
        assert_eq!((c[0].args.window, c[1].args.window), (None, Some(5)));
        assert_eq!(c[1].args.source.as_deref(), Some("dir:b"));
        assert!(c.iter().all(|c| c.args.camera.is_empty()));
        let one = parse("source = \"dir:a\"\n").unwrap();
        assert_eq!((one.len(), one[0].name.as_deref()), (1, None));
        assert_eq!(one[0].shown_name(), "default");
    }

    #[test]
    fn a_camera_named_twice_or_without_a_source_is_one_line_naming_it() {
        let e = parse(
            "[[camera]]\nname = \"porch\"\nsource = \"dir:a\"\n\
             [[camera]]\nname = \"Porch\"\nsource = \"dir:b\"\n",
        )
        .unwrap_err();
        assert_eq!(e, "camera \"Porch\": named twice");
        let e = parse(
            "[[camera]]\nname = \"a\"\nsource = \"dir:x\"\n\
             [[camera]]\nname = \"b\"\nsource = \"dir:x\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("\"b\"") && e.contains("dir:x") && e.contains("\"a\""),
            "{e}"
        );
        let e = parse("[[camera]]\nname = \"a\"\n").unwrap_err();
        assert_eq!(e, "camera \"a\": no source");
        let e = parse("[[camera]]\nname = \"a b\"\nsource = \"dir:x\"\n").unwrap_err();
        assert!(e.contains("\"a b\""), "{e}");
        let e = parse("source = \"dir:y\"\n[[camera]]\nname = \"a\"\nsource = \"dir:x\"\n")
            .unwrap_err();
        assert!(e.contains("dir:y") && e.contains("[[camera]]"), "{e}");
        let e =
            parse("[[camera]]\nname = \"a\"\nsource = \"dir:x\"\nbundle = \"b\"\n").unwrap_err();
        assert!(e.contains("bundle"), "{e}");
        let e = parse(
            "gpio = [\"/dev/gpiochip0:17=red star\"]\n[[camera]]\nname = \"a\"\nsource = \"dir:x\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("gpiochip0:17") && e.contains("[[camera]]"),
            "{e}"
        );
    }

    #[test]
    fn flags_win_over_tables_and_service_keys_do_not_make_a_camera_change() {
        let file: WatchArgs = toml::from_str(
            "fps = 2.0\n[[camera]]\nname = \"a\"\nsource = \"dir:x\"\nfps = 5.0\nwindow = 4\n",
        )
        .unwrap();
        let flags = WatchArgs {
            fps: Some(9.0),
            ..Default::default()
        };
        let t = file.camera[0].clone().under_flags(&flags);
        assert_eq!((t.fps, t.window), (None, Some(4)));
        let a = WatchArgs {
            camera: vec![t],
            fps: Some(9.0),
            ..Default::default()
        }
        .cameras()
        .unwrap();
        assert_eq!(a[0].args.fps, Some(9.0));
        let mut b = a[0].clone();
        b.args.mqtt = Some("mqtt://h/p".into());
        b.args.health_timeout = Some(3.0);
        assert!(a[0].same_camera(&b));
        b.args.window = Some(5);
        assert!(!a[0].same_camera(&b));
    }
}
