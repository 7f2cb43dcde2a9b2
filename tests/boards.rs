//! Board profiles: every committed one is valid; unknown keys and impossible values are errors.

use std::path::Path;

use clip_edge::board::BoardProfile;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
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
