//! `--regions`, `--zone`, `--min-area` and `--max-area` (`[[zone]]`
//! tables in the config): parsed and checked against the watched labels.

use crate::watch::SettingError;
use serde::Deserialize;

use super::{find_label, watch_spec, WatchArgs, Watched};
use crate::watch::regions::{Rect, RegionMode, RegionOptions, Zone, ZoneArea};

impl WatchArgs {
    /// `--regions`, `--zone`, `--min-area` and `--max-area`, checked
    /// (zones against the frame when the first frame comes).
    pub fn region_options(&self, watched: &[Watched]) -> Result<RegionOptions, SettingError> {
        let d = RegionOptions::default();
        let mode: RegionMode = match &self.regions {
            Some(r) => r.trim().parse()?,
            None => d.mode,
        };
        let fraction = |name: &str, v: Option<f32>, default: f32| match v {
            None => Ok(default),
            Some(v) if v > 0.0 && v <= 1.0 => Ok(v),
            Some(v) => Err(format!(
                "--{name} {v}: expected a fraction of the frame, above 0 and at most 1"
            )),
        };
        let min_area = fraction("min-area", self.min_area, d.min_area)?;
        let max_area = fraction("max-area", self.max_area, d.max_area)?;
        if (self.min_area.is_some() || self.max_area.is_some()) && mode != RegionMode::Motion {
            return Err(format!(
                "--min-area/--max-area: limit motion regions, but --regions is {mode}"
            )
            .into());
        }
        if min_area >= max_area {
            return Err(format!("--min-area {min_area} is not below --max-area {max_area}").into());
        }
        let mut zones: Vec<Zone> = Vec::new();
        for spec in &self.zone {
            let zone = match spec {
                ZoneSpec::Flag(s) => zone_flag(s)?,
                ZoneSpec::Table(t) => zone_table(t, watched)?,
            };
            // Names are MQTT topic levels and Home Assistant ids as slugs.
            let slug = crate::watch::mqtt::slug(&zone.name);
            if let Some(z) = zones
                .iter()
                .find(|z| crate::watch::mqtt::slug(&z.name) == slug)
            {
                return Err(if z.name == zone.name {
                    format!("zone {:?}: given twice", zone.name).into()
                } else {
                    format!(
                        "zones {:?} and {:?}: one name in MQTT topics ({slug:?}); rename one",
                        z.name, zone.name
                    )
                    .into()
                });
            }
            zones.push(zone);
        }
        Ok(RegionOptions {
            mode,
            zones,
            min_area,
            max_area,
        })
    }
}

/// A zone as the config or `--zone` gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ZoneSpec {
    /// `NAME=X,Y,W,H`.
    Flag(String),
    Table(ZoneTable),
}

impl std::str::FromStr for ZoneSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(ZoneSpec::Flag(s.to_string()))
    }
}

/// A `[[zone]]` table of the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneTable {
    pub name: String,
    #[serde(rename = "box")]
    pub bbox: Option<[u32; 4]>,
    pub polygon: Option<Vec<[f32; 2]>>,
    /// LABEL[=THRESHOLD] entries, each a watched label.
    #[serde(default)]
    pub watch: Vec<String>,
}

fn zone_name(name: &str, what: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(format!("{what}: a zone needs a name"));
    }
    Ok(name.to_string())
}

fn zone_box(name: &str, [x, y, w, h]: [u32; 4]) -> Result<Rect, String> {
    if w == 0 || h == 0 {
        return Err(format!(
            "zone {name:?}: box {x},{y},{w},{h} is empty (W and H must be above 0)"
        ));
    }
    if x.checked_add(w).is_none() || y.checked_add(h).is_none() {
        return Err(format!(
            "zone {name:?}: box {x},{y},{w},{h} ends past any frame (X+W and Y+H must be pixels of the frame)"
        ));
    }
    Ok(Rect::new(x, y, w, h))
}

/// `--zone NAME=X,Y,W,H`.
fn zone_flag(s: &str) -> Result<Zone, String> {
    let bad = || format!("--zone {s:?}: expected NAME=X,Y,W,H (source pixels)");
    let (name, rect) = s.rsplit_once('=').ok_or_else(bad)?;
    let name = zone_name(name, &format!("--zone {s:?}"))?;
    let v: Vec<u32> = rect
        .split(',')
        .map(|v| v.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let v: [u32; 4] = v.try_into().map_err(|_| bad())?;
    Ok(Zone {
        area: ZoneArea::Box(zone_box(&name, v)?),
        name,
        watch: None,
    })
}

fn zone_table(t: &ZoneTable, watched: &[Watched]) -> Result<Zone, String> {
    let name = zone_name(&t.name, "[[zone]]")?;
    let area = match (&t.bbox, &t.polygon) {
        (Some(b), None) => ZoneArea::Box(zone_box(&name, *b)?),
        (None, Some(p)) => {
            if p.len() < 3 {
                return Err(format!(
                    "zone {name:?}: a polygon needs at least 3 points, not {}",
                    p.len()
                ));
            }
            if let Some(c) = p
                .iter()
                .find(|c| !c.iter().all(|v| v.is_finite() && *v >= 0.0))
            {
                return Err(format!(
                    "zone {name:?}: polygon point [{}, {}] is not in source pixels",
                    c[0], c[1]
                ));
            }
            let area = ZoneArea::Polygon(p.clone());
            let b = area.bbox();
            // Points all on one line enclose nothing, whatever their
            // bounding box (a bow tie's signed area is 0 too, but it has
            // an inside: each pair of edges from the first point is
            // looked at instead).
            let o = p[0];
            let cross = |a: [f32; 2], c: [f32; 2]| {
                let (ax, ay) = ((a[0] - o[0]) as f64, (a[1] - o[1]) as f64);
                let (cx, cy) = ((c[0] - o[0]) as f64, (c[1] - o[1]) as f64);
                (ax * cy - ay * cx).abs()
            };
            let flat = p.iter().all(|&a| p.iter().all(|&c| cross(a, c) < 1.0));
            if b.w == 0 || b.h == 0 || flat {
                return Err(format!(
                    "zone {name:?}: the polygon has no area (its points are on one line)"
                ));
            }
            area
        }
        _ => {
            return Err(format!(
                "zone {name:?}: give either box = [X, Y, W, H] or polygon = [[X, Y], ...]"
            ))
        }
    };
    let watch = if t.watch.is_empty() {
        None
    } else {
        let labels: Vec<String> = watched.iter().map(|w| w.label.clone()).collect();
        let mut list = Vec::new();
        for w in &t.watch {
            let what = format!("zone {name:?}: watch");
            let (label, threshold) = watch_spec(&what, w)?;
            let i = find_label(&labels, label).ok_or_else(|| {
                format!("{what} {label:?}: not a watched label (add it to `watch`)")
            })?;
            list.push((i, threshold.unwrap_or(watched[i].threshold)));
        }
        Some(list)
    };
    Ok(Zone { name, area, watch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Vec<Watched> {
        ["red star", "green square"]
            .iter()
            .enumerate()
            .map(|(i, l)| Watched {
                label: l.to_string(),
                index: i,
                threshold: 0.5,
            })
            .collect()
    }

    fn from_toml(text: &str) -> Result<RegionOptions, String> {
        let a: WatchArgs = toml::from_str(text).map_err(|e| e.to_string())?;
        a.region_options(&watched()).map_err(|e| e.0)
    }

    #[test]
    fn zones_from_flags_and_tables() {
        let r = from_toml(
            r#"
            regions = "motion"
            min_area = 0.001
            [[zone]]
            name = "porch"
            box = [0, 300, 480, 240]
            [[zone]]
            name = "drive"
            polygon = [[500, 0], [960, 0], [960, 540]]
            watch = ["Red_Star=0.8"]
            "#,
        )
        .unwrap();
        assert_eq!(r.mode, RegionMode::Motion);
        assert_eq!(r.zones[0].area, ZoneArea::Box(Rect::new(0, 300, 480, 240)));
        assert_eq!(r.zones[1].watch, Some(vec![(0, 0.8)]));
        assert_eq!(r.zones[1].threshold(1, 0.5), None);
        assert!(r.zones[1].area.contains((900.0, 100.0)));
        assert!(!r.zones[1].area.contains((600.0, 500.0)));
        assert_eq!(r.zones[1].area.bbox(), Rect::new(500, 0, 460, 540));
        // A bow tie (its signed area 0) has an inside.
        let tie = from_toml(
            "[[zone]]\nname = \"tie\"\npolygon = [[0, 0], [100, 0], [0, 100], [100, 100]]",
        )
        .unwrap();
        assert!(tie.zones[0].area.contains((50.0, 20.0)));
        let a = WatchArgs {
            zone: vec!["gate=10,20,30,40".parse().unwrap()],
            ..Default::default()
        };
        let r = a.region_options(&watched()).unwrap();
        assert_eq!(r.mode, RegionMode::Full);
        assert!(!r.whole_frame());
        assert!(r.check_frame(100, 100).is_ok());
        let e = r.check_frame(32, 100).unwrap_err().0;
        assert!(e.contains("\"gate\"") && e.contains("32x100"), "{e}");
    }

    #[test]
    fn bad_region_settings_are_one_line_errors_naming_the_value() {
        for (text, needle) in [
            ("regions = \"tiles:0x2\"", "\"tiles:0x2\""),
            ("regions = \"motion\"\nmin_area = 2.0", "--min-area 2"),
            (
                "regions = \"motion\"\nmin_area = 0.5\nmax_area = 0.1",
                "not below --max-area",
            ),
            ("max_area = 0.5", "--regions is full"),
            ("zone = [\"porch=1,2,3\"]", "\"porch=1,2,3\""),
            ("zone = [\"porch=1,2,0,4\"]", "is empty"),
            (
                "zone = [\"a=0,0,5,5\", \"a=5,5,5,5\"]",
                "zone \"a\": given twice",
            ),
            (
                "[[zone]]\nname = \"tri\"\npolygon = [[0, 0], [5, 5]]",
                "at least 3 points, not 2",
            ),
            (
                "[[zone]]\nname = \"both\"\nbox = [0, 0, 5, 5]\npolygon = [[0, 0], [5, 5], [0, 5]]",
                "either box",
            ),
            (
                "[[zone]]\nname = \"line\"\npolygon = [[0, 0], [100, 100], [200, 200]]",
                "zone \"line\": the polygon has no area",
            ),
            (
                "[[zone]]\nname = \"z\"\nbox = [0, 0, 5, 5]\nwatch = [\"blue circle\"]",
                "\"blue circle\": not a watched label",
            ),
        ] {
            let e = from_toml(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
