//! `scripts/package-deb`: the .deb's files, control fields and unit; the
//! unit and the example config pass their checkers (`systemd-analyze
//! verify`, the packaged binary's `watch --config ... --check`).

mod common;

use common::{root, scratch};
use std::process::Command;

/// The clip-quantize built beside this test's clip-edge (`cargo test
/// --workspace` builds both).
fn clip_quantize() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_clip-edge")).with_file_name("clip-quantize");
    assert!(
        p.exists(),
        "{}: missing; build it first (cargo test --workspace does)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "packages the host's build; the ARM .debs come from scripts/build-release"
)]
fn deb_holds_the_binary_unit_config_and_default_bundle() {
    let dist = scratch("deb");
    let deb = run(Command::new(root().join("scripts/package-deb"))
        .arg("x86_64-unknown-linux-gnu")
        .env("CLIP_EDGE_BIN", env!("CARGO_BIN_EXE_clip-edge"))
        .env("CLIP_QUANTIZE", clip_quantize())
        .env("DIST", &dist)
        // A debug build is large: no compression.
        .env("DEB_COMPRESSION", "none"));
    let deb = deb.trim();
    assert!(deb.ends_with("_amd64.deb"), "{deb}");
    let contents = run(Command::new("dpkg-deb").args(["-c", deb]));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/clip-edge"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/clip-edge.service",
        ),
        ("-rw-r--r-- root/root", "./etc/clip-edge/watch.toml"),
        (
            "-rw-r--r-- root/root",
            "./usr/share/clip-edge/default-int8/manifest.toml",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/clip-edge/default-int8/image_encoder.nnef.tgz",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/clip-edge/default-int8/native-x86_64-avx2.section",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/clip-edge/copyright",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/clip-edge/docs/watch.md",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) missing:\n{contents}"
        );
    }
    let info = run(Command::new("dpkg-deb").args(["-I", deb]));
    // The test's binary is linked dynamically: the package names the
    // libc6 it needs (a static release binary needs none).
    assert!(info.contains("Depends: libc6 (>= 2."), "{info}");
    for field in [
        "Package: clip-edge",
        "Architecture: amd64",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(info.contains(field), "{field} missing:\n{info}");
    }
    let x = dist.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    let ctrl = dist.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.trim(),
        "/etc/clip-edge/watch.toml",
        "the config survives upgrades"
    );
    // Maintainer scripts: reload units, restart on upgrade, stop on
    // remove, remove the state only on purge; each valid sh.
    for (script, needle) in [
        ("postinst", "try-restart clip-edge.service"),
        ("postinst", "useradd --system --gid clip-edge"),
        ("postinst", "chmod 0640 /etc/clip-edge/watch.toml"),
        ("prerm", "systemctl stop clip-edge.service"),
        ("postrm", "rm -rf /var/lib/clip-edge"),
    ] {
        let path = ctrl.join(script);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(needle), "{script}: {text}");
        run(Command::new("sh").arg("-n").arg(&path));
    }
    let unit = std::fs::read_to_string(x.join("lib/systemd/system/clip-edge.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CacheDirectory=clip-edge",
        "Restart=on-failure",
        "DynamicUser=yes",
        "User=clip-edge",
        "SupplementaryGroups=video gpio",
        "ProtectSystem=strict",
        "StateDirectory=clip-edge",
        "ExecStart=/usr/bin/clip-edge watch --config /etc/clip-edge/watch.toml",
        "RestartPreventExitStatus=78",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "{line} missing from the unit"
        );
    }
    // The packaged binary accepts the packaged config (`--check`: the
    // bundle loaded and verified, labels, source, everything but opening
    // the camera), with the bundle where the package put it. ffmpeg, which
    // the config's source runs, is a stand-in here: the check only looks
    // for it on PATH. A broken config is exit 78, which the unit does not
    // restart.
    let bin_dir = dist.join("path");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let ffmpeg = bin_dir.join("ffmpeg");
    std::fs::write(&ffmpeg, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&ffmpeg, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let packaged_bundle = x.join("usr/share/clip-edge/default-int8");
    let config = std::fs::read_to_string(x.join("etc/clip-edge/watch.toml"))
        .unwrap()
        .replace(
            "/usr/share/clip-edge/default-int8",
            packaged_bundle.to_str().unwrap(),
        );
    let check = |config: &str| {
        let path = dist.join("watch.toml");
        std::fs::write(&path, config).unwrap();
        Command::new(x.join("usr/bin/clip-edge"))
            .args(["watch", "--check", "--config"])
            .arg(&path)
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .output()
            .unwrap()
    };
    let out = check(&config);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok: "),
        "the packaged config fails its check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(&config.replace("\"red star\"", "\"red starr\""));
    assert_eq!(out.status.code(), Some(78));
    // The packaged bundle is the committed one, byte for byte, with native
    // sections for every x86_64 kernel path listed in its manifest.
    let manifest = |dir: &std::path::Path| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml")).unwrap()).unwrap()
    };
    let mut packaged = manifest(&packaged_bundle);
    let native = packaged.remove("native").expect("no [[native]] sections");
    let kernels: Vec<&str> = native
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kernels"].as_str().unwrap())
        .collect();
    assert_eq!(
        kernels,
        [
            "scalar",
            "x86_64-sse41",
            "x86_64-avx2",
            "x86_64-avx-vnni",
            "x86_64-avx512",
            "x86_64-avx512-vnni"
        ]
    );
    assert_eq!(packaged, manifest(&root().join("models/default-int8")));
    let info = run(Command::new(x.join("usr/bin/clip-edge"))
        .args(["info", "--bundle"])
        .arg(&packaged_bundle));
    assert!(info.contains("(this CPU)"), "{info}");
    // And runs from it, not from the graph.
    let bench = run(Command::new(x.join("usr/bin/clip-edge"))
        .args(["bench", "--iterations", "1", "--json", "--bundle"])
        .arg(&packaged_bundle)
        .env("CLIP_EDGE_CACHE", "off"));
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert_eq!(bench["native_section"], "shipped", "{bench}");
    for f in ["image_encoder.nnef.tgz", "text_table.safetensors"] {
        assert!(
            std::fs::read(x.join("usr/share/clip-edge/default-int8").join(f)).unwrap()
                == std::fs::read(root().join("models/default-int8").join(f)).unwrap(),
            "{f} differs"
        );
    }
    // Passed: the package and its unpacked copy (about 450 MB of a debug
    // build, on the disk CI's three target directories share) go; a
    // failure leaves them to look at.
    std::fs::remove_dir_all(&dist).unwrap();
}

#[test]
fn example_config_is_valid_and_names_a_packaged_bundle() {
    let args = clip_edge::watch::config::read_config(&root().join("packaging/watch.toml")).unwrap();
    assert_eq!(
        args.bundle.as_deref(),
        Some(std::path::Path::new("/usr/share/clip-edge/default-int8"))
    );
    // Its labels are labels of that bundle, its rules valid.
    let bundle = clip_edge::bundle::Bundle::open(&root().join("models/default-int8")).unwrap();
    let watched = args.watched(bundle.labels()).unwrap();
    args.rules().unwrap();
    args.region_options(&watched).unwrap();
    assert!(args.snapshot_retention().unwrap().max_bytes.is_some());
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "host-side check of a text file (systemd-analyze is the host's)"
)]
fn unit_passes_systemd_analyze_verify() {
    // `verify` needs ExecStart's binary to exist: point it at this build.
    let dir = scratch("unit");
    let unit = std::fs::read_to_string(root().join("packaging/clip-edge.service"))
        .unwrap()
        .replace(
            "ExecStart=/usr/bin/clip-edge",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_clip-edge")),
        );
    let path = dir.join("clip-edge.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect(
            "systemd-analyze not found (Debian package systemd): this test is the unit's check",
        );
    let err = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on settings it ignores; any message is a finding.
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    // Hardened: systemd's own exposure score (0 safest, 10 worst; the
    // unit scores 1.7 with systemd 252) stays at most this.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for clip-edge.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        exposure <= MAX_UNIT_EXPOSURE,
        "exposure {exposure}:\n{text}"
    );
}

/// The unit's `systemd-analyze security` exposure may be at most this
/// (systemd's "OK" band ends at 3.9); measured 1.7.
const MAX_UNIT_EXPOSURE: f64 = 3.0;
