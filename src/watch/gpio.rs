//! GPIO lines that follow events: a line is high while its label's event is
//! active. Written against `embedded-hal`'s `OutputPin`; on Linux boards the
//! pins are `linux-embedded-hal`'s character-device lines, in tests
//! `embedded-hal-mock` pins.

use crate::watch::SettingError;
use embedded_hal::digital::OutputPin;

/// `--gpio CHIP:LINE=LABEL`, e.g. `/dev/gpiochip0:17=red star`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioSpec {
    pub chip: String,
    pub line: u32,
    pub label: String,
}

impl std::str::FromStr for GpioSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "--gpio {s:?}: {why} (expected CHIP:LINE=LABEL, e.g. /dev/gpiochip0:17=red star)"
            )
        };
        let (pin, label) = s.split_once('=').ok_or_else(|| bad("no `=LABEL`"))?;
        let (chip, line) = pin.rsplit_once(':').ok_or_else(|| bad("no `:LINE`"))?;
        let line = line.parse().map_err(|_| bad("the line is not a number"))?;
        if chip.is_empty() || label.trim().is_empty() {
            return Err(bad("empty chip or label"));
        }
        Ok(GpioSpec {
            chip: chip.into(),
            line,
            label: label.trim().into(),
        })
    }
}

/// Output pins, each following one watched label.
pub struct GpioLines<P> {
    /// (label, pin, name for logs)
    pins: Vec<(String, P, String)>,
    /// Failed writes (logged; the loop goes on).
    pub errors: u64,
}

impl<P: OutputPin> GpioLines<P> {
    /// Drives every pin low first (no event is active at start).
    pub fn new(pins: Vec<(String, P, String)>) -> Self {
        let mut g = GpioLines { pins, errors: 0 };
        for i in 0..g.pins.len() {
            g.write(i, false);
        }
        g
    }

    fn write(&mut self, i: usize, high: bool) {
        let (_, pin, name) = &mut self.pins[i];
        let r = if high { pin.set_high() } else { pin.set_low() };
        if let Err(e) = r {
            self.errors += 1;
            log::warn!(
                "gpio {name}: could not set {}: {e:?}",
                if high { "high" } else { "low" }
            );
        }
    }

    /// `label`'s event started (`true`) or ended.
    pub fn set(&mut self, label: &str, active: bool) {
        for i in 0..self.pins.len() {
            if self.pins[i].0 == label {
                self.write(i, active);
            }
        }
    }
}

/// A character-device line (`/dev/gpiochipN`, line offset) as an output,
/// requested low.
#[cfg(target_os = "linux")]
pub fn open_cdev(spec: &GpioSpec) -> Result<linux_embedded_hal::CdevPin, SettingError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let what = format!("--gpio {}:{}", spec.chip, spec.line);
    let mut chip = Chip::new(&spec.chip).map_err(|e| format!("{what}: {e}"))?;
    let line = chip
        .get_line(spec.line)
        .map_err(|e| format!("{what}: {e}"))?;
    let handle = line
        .request(LineRequestFlags::OUTPUT, 0, "clip-edge")
        .map_err(|e| format!("{what}: {e}"))?;
    linux_embedded_hal::CdevPin::new(handle).map_err(|e| SettingError(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        let g: GpioSpec = "/dev/gpiochip0:17=red star".parse().unwrap();
        assert_eq!(
            (g.chip.as_str(), g.line, g.label.as_str()),
            ("/dev/gpiochip0", 17, "red star")
        );
        for bad in [
            "/dev/gpiochip0:17",
            "/dev/gpiochip0=red",
            "/dev/gpiochip0:x=red",
            ":1=red",
        ] {
            let e = bad.parse::<GpioSpec>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn pins_follow_their_label_only() {
        let red = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let green = Mock::new(&[Transaction::set(State::Low)]);
        let mut g = GpioLines::new(vec![
            ("red star".into(), red.clone(), "red".into()),
            ("green square".into(), green.clone(), "green".into()),
        ]);
        g.set("red star", true);
        g.set("blue circle", true); // a label with no pin
        g.set("red star", false);
        assert_eq!(g.errors, 0);
        let (mut red, mut green) = (red, green);
        red.done();
        green.done();
    }
}
