//! Board profiles (`boards/*.toml`): what a board can do, so `bench --board`
//! can say how close a run comes to the hardware's peak.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BoardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("board {name:?}: no such profile (known: {known}; or give --boards-dir)")]
    Unknown { name: String, known: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub model: String,
    pub cores: usize,
    pub ghz: f64,
}

/// Peak throughput of one core, in GFLOP/s (GOP/s for int8), with its derivation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peak {
    pub fp32: f64,
    pub fp16: f64,
    pub int8: f64,
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub precision: String,
    pub threads: usize,
    pub memory_budget_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Io {
    pub gpio_chip: String,
    pub gpio_line: u32,
    pub camera: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    pub name: String,
    pub target: String,
    pub cpu: Cpu,
    /// ISA features the runtime can use (as `is_*_feature_detected!` names them).
    pub features: Vec<String>,
    pub peak_per_core: Peak,
    pub defaults: Defaults,
    pub io: Io,
    /// The board's CUDA GPU, where it has one (the CUDA build's estimates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

/// A board's CUDA GPU: the peaks docs/boards.md's on-paper figures scale the
/// H200's measured kernel times by.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// `sm_87` and the like.
    pub arch: String,
    pub sms: u32,
    pub ghz: f64,
    /// Dense tensor-core peaks (no sparsity), TFLOP/s and TOP/s.
    pub fp16_tflops: f64,
    pub int8_tops: f64,
    /// DRAM bandwidth, GB/s (shared with the CPU).
    pub memory_gbps: f64,
    pub source: String,
}

const TARGETS: [&str; 3] = [
    "aarch64-unknown-linux-gnu",
    "armv7-unknown-linux-gnueabihf",
    "x86_64-unknown-linux-gnu",
];

impl BoardProfile {
    pub fn parse(text: &str, path: &Path) -> Result<Self, BoardError> {
        let invalid = |why: String| BoardError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let p: BoardProfile =
            toml::from_str(text).map_err(|e| invalid(e.to_string().replace('\n', " ")))?;
        if !TARGETS.contains(&p.target.as_str()) {
            return Err(invalid(format!(
                "target {:?} is not one of {TARGETS:?}",
                p.target
            )));
        }
        if p.cpu.cores == 0 || p.cpu.cores > 256 {
            return Err(invalid(format!(
                "cpu.cores = {} is impossible",
                p.cpu.cores
            )));
        }
        if !(0.1..=6.0).contains(&p.cpu.ghz) {
            return Err(invalid(format!("cpu.ghz = {} is impossible", p.cpu.ghz)));
        }
        for (name, v) in [
            ("fp32", p.peak_per_core.fp32),
            ("fp16", p.peak_per_core.fp16),
            ("int8", p.peak_per_core.int8),
        ] {
            if !(v > 0.0 && v < 10_000.0) {
                return Err(invalid(format!("peak_per_core.{name} = {v} is impossible")));
            }
        }
        if !["fp32", "fp16", "int8"].contains(&p.defaults.precision.as_str()) {
            return Err(invalid(format!(
                "defaults.precision {:?}: expected fp32, fp16 or int8",
                p.defaults.precision
            )));
        }
        if p.defaults.threads == 0 || p.defaults.threads > p.cpu.cores {
            return Err(invalid(format!(
                "defaults.threads = {} with {} cores",
                p.defaults.threads, p.cpu.cores
            )));
        }
        if p.defaults.memory_budget_mb == 0 {
            return Err(invalid("defaults.memory_budget_mb must be positive".into()));
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Self, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `boards/NAME.toml` under `dir`.
    pub fn by_name(dir: &Path, name: &str) -> Result<Self, BoardError> {
        Self::load(&dir.join(format!("{name}.toml")))
    }

    /// The profile built into the binary under `name`; an unknown name is
    /// an error listing the known ones.
    pub fn built_in(name: &str) -> Result<Self, BoardError> {
        let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
            return Err(BoardError::Unknown {
                name: name.to_string(),
                known: BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        Self::parse(text, Path::new(&format!("boards/{name}.toml")))
    }

    /// The CPU architecture the profile is for, as `std::env::consts::ARCH` says it.
    pub fn arch(&self) -> &str {
        match self.target.split('-').next().unwrap_or("") {
            "armv7" => "arm",
            a => a,
        }
    }
}

/// `clip-edge boards`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON array instead of one line per profile.
    #[arg(long)]
    json: bool,
}

/// Lists the built-in profiles, one line each (or a JSON array).
pub fn run(a: &Args) -> anyhow::Result<std::process::ExitCode> {
    let mut all = Vec::new();
    for (name, _) in BUILT_IN {
        all.push((name, BoardProfile::built_in(name)?));
    }
    if a.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "profile": p}))
            .collect();
        out!("{}", serde_json::Value::Array(v));
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for (n, p) in &all {
        out!(
            "{n:<18} {} ({}, {} cores at {} GHz): peak a core {} / {} / {} GOP/s fp32 / fp16 / int8",
            p.name,
            p.cpu.model,
            p.cpu.cores,
            p.cpu.ghz,
            p.peak_per_core.fp32,
            p.peak_per_core.fp16,
            p.peak_per_core.int8
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The committed profiles (`boards/*.toml`), built into the binary: a board
/// needs no source tree to know itself.
pub const BUILT_IN: [(&str, &str); 5] = [
    ("jetson-nano", include_str!("../../boards/jetson-nano.toml")),
    (
        "jetson-orin-nano",
        include_str!("../../boards/jetson-orin-nano.toml"),
    ),
    ("rpi4", include_str!("../../boards/rpi4.toml")),
    ("rpi5", include_str!("../../boards/rpi5.toml")),
    ("x86_64-dev", include_str!("../../boards/x86_64-dev.toml")),
];

#[cfg(test)]
mod tests {
    //! Every committed profile is valid; unknown keys and impossible values are errors.

    use std::path::Path;

    use super::BoardProfile;

    fn dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
    }

    #[test]
    fn every_committed_profile_is_built_in_and_unknown_names_list_them() {
        let mut files: Vec<String> = std::fs::read_dir(dir())
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        files.sort();
        let built: Vec<&str> = super::BUILT_IN.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, built);
        for (name, text) in super::BUILT_IN {
            assert_eq!(
                std::fs::read_to_string(dir().join(format!("{name}.toml"))).unwrap(),
                text
            );
            let p = BoardProfile::built_in(name).unwrap();
            assert!(
                ["aarch64", "arm", "x86_64"].contains(&p.arch()),
                "{}",
                p.target
            );
        }
        let e = BoardProfile::built_in("rpi6").unwrap_err().to_string();
        assert!(e.contains("\"rpi6\"") && e.contains("rpi5"), "{e}");
    }

    #[test]
    fn committed_profiles_are_valid() {
        let mut n = 0;
        for e in std::fs::read_dir(dir()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) == Some("toml") {
                let b = BoardProfile::load(&p).unwrap_or_else(|e| panic!("{e}"));
                assert!(b.defaults.threads <= b.cpu.cores);
                n += 1;
            }
        }
        assert_eq!(n, 5);
        for name in [
            "rpi4",
            "rpi5",
            "jetson-orin-nano",
            "jetson-nano",
            "x86_64-dev",
        ] {
            BoardProfile::by_name(&dir(), name).unwrap();
        }
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_errors() {
        let good = std::fs::read_to_string(dir().join("rpi4.toml")).unwrap();
        let p = Path::new("test.toml");
        BoardProfile::parse(&good, p).unwrap();
        for (from, to, needle) in [
            ("cores = 4", "cores = 4\nturbo = true", "turbo"),
            ("cores = 4", "cores = 0", "cores"),
            ("ghz = 1.5", "ghz = 150.0", "ghz"),
            ("fp32 = 12.0", "fp32 = -1.0", "fp32"),
            ("threads = 4", "threads = 8", "threads"),
            ("precision = \"int8\"", "precision = \"int4\"", "int4"),
            (
                "target = \"aarch64-unknown-linux-gnu\"",
                "target = \"mips-unknown-linux-gnu\"",
                "mips",
            ),
        ] {
            let bad = good.replacen(from, to, 1);
            let e = BoardProfile::parse(&bad, p).unwrap_err().to_string();
            assert!(
                e.contains("test.toml") && e.contains(needle),
                "{needle}: {e}"
            );
        }
        assert!(BoardProfile::by_name(&dir(), "nonexistent")
            .unwrap_err()
            .to_string()
            .contains("nonexistent.toml"));
    }
}
