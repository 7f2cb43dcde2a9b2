//! What a person at a terminal sees: the start-up line and one line per
//! event.

use super::*;

/// Events on stdout: a human line each (`12:04:31Z start red star 0.97
/// frame 212`), or the JSON log line.
#[derive(Clone, Copy)]
pub(super) struct Console {
    pub(super) json: bool,
}

impl Sink for Console {
    fn event(&mut self, r: &watch::events::EventRecord, line: &[u8], _on: bool) {
        if self.json {
            out!("{}", String::from_utf8_lossy(line));
            return;
        }
        out!("{}", human_line(r));
    }
}

/// One event as a person reads it.
pub(super) fn human_line(r: &watch::events::EventRecord) -> String {
    use watch::events::EventKind;
    // RFC 3339 UTC: the time of day, seconds.
    let mut clock = r
        .time
        .get(11..19)
        .map_or(r.time.clone(), |t| format!("{t}Z"));
    if let Some(c) = &r.camera {
        clock = format!("{clock} {c}:");
    }
    let mut s = match r.event {
        EventKind::Start | EventKind::End => format!(
            "{clock} {} {} {:.2} frame {}",
            if r.event == EventKind::Start {
                "start"
            } else {
                "end"
            },
            r.label,
            r.score,
            r.frame
        ),
        EventKind::SourceLost => format!("{clock} source lost at frame {}", r.frame),
        EventKind::SourceBack => format!("{clock} source back"),
    };
    if let Some(z) = &r.zone {
        s += &format!(" zone {z}");
    }
    if let Some([x, y, w, h]) = r.bbox {
        s += &format!(" box {x},{y} {w}x{h}");
    }
    if let Some(t) = r.track {
        s += &format!(" track {t}");
    }
    if let Some(why) = &r.reason {
        s += &format!(" ({why})");
    }
    s
}

/// The start-up line: what runs, on what, watching what (each camera).
pub(super) fn hello_line(checked: &Checked) -> String {
    let model = &checked.model;
    let e = &model.engine;
    let kernels = match e.native_summary() {
        Some(n) => format!(", kernels {}", n.kernels),
        None => String::new(),
    };
    let cameras: Vec<String> = checked
        .cameras
        .iter()
        .map(|c| {
            let labels: Vec<String> = c
                .opts
                .watched
                .iter()
                .map(|w| format!("{} ({})", w.label, w.threshold))
                .collect();
            format!(
                "{}{} for {}",
                c.settings.context(),
                watch::secrets::redacted(&c.spec),
                labels.join(", "),
            )
        })
        .collect();
    let mut regions: Vec<String> = Vec::new();
    for c in &checked.cameras {
        let r = c.opts.regions.mode.to_string();
        if !regions.contains(&r) {
            regions.push(r);
        }
    }
    format!(
        "watching {} with {} ({} {}, {} engine{kernels}, regions {})",
        cameras.join("; "),
        model.bundle.display(),
        e.bundle.manifest.model.architecture,
        e.bundle.manifest.precision,
        e.kind(),
        regions.join(" | "),
    )
}
