//! The watch loop in process: GPIO pins (embedded-hal mocks) follow the
//! events of the committed clip exactly.

mod common;

use clip_edge::engine::{Engine, EngineKind};
use clip_edge::watch::detect::Rules;
use clip_edge::watch::gpio::GpioLines;
use clip_edge::watch::source::{DirSource, FrameSource};
use clip_edge::watch::{Options, Sink, Watched, Watcher};
use common::root;
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
use std::sync::atomic::AtomicBool;

fn watched(engine: &Engine, labels: &[&str]) -> Vec<Watched> {
    labels
        .iter()
        .map(|l| Watched {
            label: l.to_string(),
            index: engine.bundle.labels().iter().position(|x| x == l).unwrap(),
            threshold: 0.5,
        })
        .collect()
}

#[test]
fn gpio_lines_follow_the_clip_events_exactly() {
    let mut engine = Engine::load_on(
        &root().join("models/default-int8"),
        &Default::default(),
        EngineKind::Native,
        1,
    )
    .unwrap();
    let w = watched(&engine, &["red star", "green square", "yellow triangle"]);
    let t = |s| Transaction::set(s);
    // Low at start; red star is seen twice, green square and yellow triangle once.
    let red = Mock::new(&[
        t(State::Low),
        t(State::High),
        t(State::Low),
        t(State::High),
        t(State::Low),
    ]);
    let green = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    // Two lines may follow one label.
    let yellow_a = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    let yellow_b = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    let mut lines = GpioLines::new(vec![
        (0, red.clone(), "red".into()),
        (1, green.clone(), "green".into()),
        (2, yellow_a.clone(), "yellow a".into()),
        (2, yellow_b.clone(), "yellow b".into()),
    ]);
    let mut source = DirSource::open(&root().join("models/clips/shapes")).unwrap();
    assert_eq!(source.len(), 137);
    {
        let sinks: Vec<&mut dyn Sink> = vec![&mut lines];
        let opts = Options {
            watched: w,
            rules: Rules::default(),
            fps: None,
            motion_threshold: None,
            snapshots: None,
            source_name: "dir:models/clips/shapes".into(),
        };
        let mut watcher = Watcher::new(&mut engine, opts, None, sinks);
        let stats = watcher
            .run(&mut source as &mut dyn FrameSource, &AtomicBool::new(false))
            .unwrap();
        assert_eq!((stats.frames, stats.events), (137, 4));
    }
    assert_eq!(lines.errors, 0);
    for mut m in [red, green, yellow_a, yellow_b] {
        m.done();
    }
}
