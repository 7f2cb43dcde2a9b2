//! What acts on events: the [`Sink`] trait, and its GPIO and MQTT edges.

use std::path::Path;

use super::events::{EventKind, EventRecord};
use super::{gpio, mqtt, Watched};

/// Something that acts on events (a GPIO line, an MQTT publisher). Called
/// once the event log has taken the line (appended and fsync'd, or, when
/// the disk refuses it, held in memory to be written later: the sinks act
/// either way).
pub trait Sink {
    /// `record` is the event (a `source_lost`/`source_back` note too),
    /// `line` its log line; `label_on` whether the label has any event open
    /// after this one (two objects of one label are two events, one state).
    fn event(&mut self, record: &EventRecord, line: &[u8], label_on: bool);

    /// After each frame: each watched label's probability in it (with
    /// regions, its highest over the frame's crops). Called every frame:
    /// a sink must not allocate here but at its own, slower pace.
    fn scores(&mut self, _watched: &[Watched], _scores: &[f32]) {}
}

impl<P: embedded_hal::digital::OutputPin> Sink for gpio::GpioLines<P> {
    fn event(&mut self, record: &EventRecord, _line: &[u8], label_on: bool) {
        match record.event {
            EventKind::Start | EventKind::End => self.set(&record.label, label_on),
            EventKind::SourceLost | EventKind::SourceBack => {}
        }
    }
}

impl Sink for mqtt::Mqtt {
    fn scores(&mut self, watched: &[Watched], scores: &[f32]) {
        mqtt::Mqtt::scores(self, watched, scores);
    }

    fn event(&mut self, record: &EventRecord, line: &[u8], label_on: bool) {
        mqtt::Mqtt::event(self, line);
        match record.event {
            EventKind::Start | EventKind::End => {
                let start = record.event == EventKind::Start;
                if let Ok(json) = serde_json::to_value(record) {
                    self.fire(&record.label, if start { "start" } else { "end" }, &json);
                }
                if let (true, Some(path)) = (start, &record.snapshot) {
                    self.snapshot(&record.label, Path::new(path));
                }
                self.state(&record.label, label_on);
                if let Some(zone) = &record.zone {
                    self.zone_event(zone, &record.label, record.event == EventKind::Start);
                }
            }
            EventKind::SourceLost => self.source_available(false),
            EventKind::SourceBack => self.source_available(true),
        }
    }
}
