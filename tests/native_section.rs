//! Native sections: a schedule saved on the first load, or shipped in the
//! bundle, read back bit for bit as the lowered one, its weights in place;
//! a section that is damaged, truncated, made for another bundle, build or
//! kernel path, or that sits where others may write, is never used; the
//! sections a host makes for every kernel path are the ones each machine
//! makes.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_edge::bundle::Trust;
use clip_edge::decode::decode_file;
use clip_edge::engine::native::{section, FloatWeights, Native};
use clip_edge::engine::schedule::blob::SharedBytes;
use clip_edge::engine::{shipped, Device, Engine, EngineKind, SectionUse};
use clip_edge::kernels::{Kernels, Packing};
use clip_edge::section_cache::SectionCache;
use common::{root, scratch, COMMITTED_BUNDLES};

fn load(bundle: &Path, cache: Option<&SectionCache>) -> Engine {
    Engine::load_cached(
        bundle,
        &Trust::default(),
        EngineKind::Native,
        1,
        Device::Cpu,
        cache,
    )
    .unwrap()
}

fn embeddings(e: &mut Engine) -> Vec<Vec<f32>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("models/calibration"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.iter()
        .take(4)
        .map(|p| {
            let img = decode_file(p).unwrap();
            e.classify(&img.view(), 1).unwrap();
            e.embedding().to_vec()
        })
        .collect()
}

fn section_file(cache: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "section"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_saved_section_runs_bit_for_bit_as_the_lowered_graph() {
    // Under an emulator (the ARM stages: `CLIP_TEST_RUNNER`), where each of
    // the three loads lowers or maps a bundle slowly, the tiny ViTs are
    // left out: the default bundles run the same architecture at both
    // precisions.
    let emulated = std::env::var_os("CLIP_TEST_RUNNER").is_some();
    for b in COMMITTED_BUNDLES
        .into_iter()
        .filter(|b| !(emulated && b.contains("vit_tiny")))
    {
        let dir = scratch(&format!("section-{}", b.replace('/', "-")));
        let cache = SectionCache::at(dir.join("cache"));
        let bundle = root().join(b);
        let mut plain = load(&bundle, None);
        let want = embeddings(&mut plain);
        // The images tell each other apart (a blind fixture would hide a
        // wrong schedule).
        assert_ne!(want[0], want[1], "{b}");

        let mut first = load(&bundle, Some(&cache));
        assert_eq!(
            first.section_use(),
            Some(&SectionUse::Saved { refused: None }),
            "{b}"
        );
        assert_eq!(embeddings(&mut first), want, "{b}: first load");
        assert_eq!(first.native_summary().unwrap().mapped_weight_bytes, 0);

        let mut second = load(&bundle, Some(&cache));
        assert_eq!(second.section_use(), Some(&SectionUse::Read), "{b}");
        assert_eq!(embeddings(&mut second), want, "{b}: from the section");
        let s = second.native_summary().unwrap();
        // Every packed weight is read in place from the mapping; the
        // constants (biases, norms) are the rest.
        assert!(s.mapped_weight_bytes > 0, "{b}");
        assert_eq!(s.weight_bytes, plain.native_summary().unwrap().weight_bytes);
        assert_eq!(second.macs, plain.macs, "{b}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The section file of the default int8 bundle in a fresh cache, and the
/// cache.
fn saved(name: &str) -> (PathBuf, SectionCache, PathBuf) {
    let dir = scratch(name);
    let cache = SectionCache::at(dir.join("cache"));
    let bundle = root().join("models/default-int8");
    load(&bundle, Some(&cache));
    let file = section_file(&dir.join("cache"));
    (bundle, cache, file)
}

fn refused_then_rebuilt(bundle: &Path, cache: &SectionCache, file: &Path, why: &str) {
    let e = load(bundle, Some(cache));
    match e.section_use() {
        Some(SectionUse::Saved { refused: Some(r) }) => assert!(r.contains(why), "{r}"),
        other => panic!("expected the section refused ({why}), got {other:?}"),
    }
    // Rebuilt: read back on the next load.
    assert_eq!(
        load(bundle, Some(cache)).section_use(),
        Some(&SectionUse::Read),
        "{}",
        file.display()
    );
}

#[test]
fn damaged_or_truncated_sections_are_refused_and_rebuilt() {
    let (bundle, cache, file) = saved("section-damaged");
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&file, &flipped).unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "digest mismatch");

    std::fs::write(&file, &good[..good.len() / 3]).unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "digest mismatch");

    std::fs::write(&file, &good[..10]).unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "too short");

    std::fs::write(&file, b"").unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "too short");
}

#[test]
fn a_section_of_another_bundle_is_refused() {
    let (bundle, cache, file) = saved("section-other-bundle");
    // The fp32 bundle's section under the int8 bundle's name.
    let other = scratch("section-other-bundle-fp32");
    let other_cache = SectionCache::at(other.join("cache"));
    load(&root().join("models/default-fp32"), Some(&other_cache));
    std::fs::copy(section_file(&other.join("cache")), &file).unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "another bundle");
}

#[test]
fn a_changed_encoder_file_is_read_again_not_trusted_to_the_section() {
    let dir = scratch("section-encoder-touched");
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    for f in std::fs::read_dir(root().join("models/default-int8")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bundle.join(f.file_name().unwrap())).unwrap();
    }
    let cache = SectionCache::at(dir.join("cache"));
    load(&bundle, Some(&cache));
    // Same manifest, the encoder file rewritten with one byte changed:
    // the section's key no longer matches, the file is read and its
    // checksum fails.
    let enc = bundle.join("image_encoder.nnef.tgz");
    let mut bytes = std::fs::read(&enc).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&enc, &bytes).unwrap();
    let err = Engine::load_cached(
        &bundle,
        &Trust::default(),
        EngineKind::Native,
        1,
        Device::Cpu,
        Some(&cache),
    )
    .err()
    .expect("a changed encoder file must fail its checksum")
    .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_cache_others_may_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let (bundle, cache, file) = saved("section-open-folder");
    let folder = file.parent().unwrap();
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = load(&bundle, Some(&cache));
    match e.section_use() {
        Some(SectionUse::NotSaved(why)) => assert!(why.contains("writable by others"), "{why}"),
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    match load(&bundle, Some(&cache)).section_use() {
        Some(SectionUse::NotSaved(why)) => assert!(why.contains("writable by others"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The default int8 bundle's schedule, lowered for `kernels`.
fn schedule(kernels: &Kernels) -> clip_edge::engine::schedule::ir::Lowered {
    let o = clip_edge::engine::open_encoder(&root().join("models/default-int8"), &Trust::default())
        .unwrap();
    let model = clip_edge::tract_graph::for_native(o.model).unwrap();
    Native::schedule(&model, &kernels.packing(), FloatWeights::F16WhereExact).unwrap()
}

fn bytes_of(l: &clip_edge::engine::schedule::ir::Lowered, kernels: &str, key: &str) -> SharedBytes {
    let mut v = Vec::new();
    section::write(l, kernels, key, 0.0, &mut v).unwrap();
    aligned(&v)
}

/// `v` as a mapping holds it: a mapping starts on a page, a Vec<u8> only
/// on its allocator's alignment, so copied into 64-byte aligned storage.
fn aligned(v: &[u8]) -> SharedBytes {
    let mut aligned = vec![[0u8; 64]; v.len().div_ceil(64)];
    let flat: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
    flat[..v.len()].copy_from_slice(v);
    Arc::new(AlignedBytes(aligned, v.len()))
}

struct AlignedBytes(Vec<[u8; 64]>, usize);

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.0)[..self.1]
    }
}

#[test]
fn a_section_for_other_kernels_or_with_short_weights_is_refused() {
    let here = Kernels::detect();
    // Packed for the plain twins, read where another path runs (or the
    // reverse on a CPU with no SIMD path).
    let other = if here.packing().name == Kernels::SCALAR.name {
        Kernels::available()
            .pop()
            .expect("no SIMD path: nothing to compare")
    } else {
        Kernels::SCALAR
    };
    let l = schedule(&other);
    let err = section::read(
        bytes_of(&l, other.packing().name, "k"),
        &here.packing(),
        "k",
    )
    .err()
    .expect("another path's section");
    assert!(err.to_string().contains("kernels"), "{err}");

    // A section whose digest holds but one weight run is a value short (a
    // forged file): refused before any kernel reads it.
    let mut l = schedule(&here);
    let cut = l
        .steps
        .iter_mut()
        .find_map(|s| match &mut s.kind {
            clip_edge::engine::schedule::ir::Kind::Conv { conv, .. } => match &mut conv.weights {
                clip_edge::engine::schedule::linear::ConvWeights::Int8(q) => Some(q),
                _ => None,
            },
            _ => None,
        })
        .expect("an int8 convolution");
    let mut short = cut.q.to_vec();
    short.pop();
    cut.q = short.into();
    let err = section::read(bytes_of(&l, here.packing().name, "k"), &here.packing(), "k")
        .err()
        .expect("a short weight run");
    assert!(err.to_string().contains("weights of"), "{err}");

    // The right one reads, under its key only.
    let l = schedule(&here);
    assert!(section::read(bytes_of(&l, here.packing().name, "k"), &here.packing(), "k").is_ok());
    let err = section::read(bytes_of(&l, here.packing().name, "k"), &here.packing(), "j")
        .err()
        .unwrap();
    assert!(err.to_string().contains("another bundle"), "{err}");
}

/// Random damage to a section's prefix, header and schedule, its digest
/// made to hold again (a forged file): `read`, and the engine built from
/// what it accepts, refuse it with an error or run a frame; never a panic
/// (300 cases: 99 refused, 201 ran).
#[test]
fn forged_sections_with_a_valid_digest_are_refused_or_run_never_panic() {
    // Under an emulator (the ARM stages: `CLIP_TEST_RUNNER`) each case
    // takes a quarter second: fewer there, the target's usize still tried.
    let cases = match std::env::var_os("CLIP_TEST_RUNNER") {
        Some(_) => 40,
        None => 300,
    };
    let here = Kernels::detect();
    let good: Vec<u8> = (*bytes_of(&schedule(&here), here.packing().name, "k"))
        .as_ref()
        .to_vec();
    let header_len = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    let span = (24 + header_len).min(good.len() - 32);
    let mut r = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        (r % n as u64) as usize
    };
    let (mut refused, mut ran) = (0, 0);
    for case in 0..cases {
        let mut v = good.clone();
        for _ in 0..1 + next(3) {
            let at = 8 + next(span - 8);
            v[at] = if next(2) == 0 {
                v[at] ^ (1 << next(8))
            } else {
                next(256) as u8
            };
        }
        let body = v.len() - 32;
        let digest = *blake3::hash(&v[..body]).as_bytes();
        v[body..].copy_from_slice(&digest);
        let bytes = aligned(&v);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let sec = section::read(bytes, &here.packing(), "k").ok()?;
            let mut n = Native::from_lowered(sec.schedule, here, 1).ok()?;
            let input = vec![0.25f32; n.input_len()];
            let mut out = vec![0f32; n.output_len()];
            n.run(&input, &mut out);
            Some(())
        }));
        match outcome {
            Ok(Some(())) => ran += 1,
            Ok(None) => refused += 1,
            Err(_) => panic!("case {case}: a forged section panicked"),
        }
    }
    eprintln!("{cases} forged sections: {refused} refused, {ran} ran");
    assert!(refused > 0, "no forged section was refused");
}

#[test]
fn forged_shapes_are_refused_before_any_buffer_is_made() {
    let here = Kernels::detect();
    // A convolution claiming a quarter of the address space in input
    // channels: refused by its size, not by an allocation of that size.
    let mut l = schedule(&here);
    let conv = l
        .steps
        .iter_mut()
        .find_map(|s| match &mut s.kind {
            clip_edge::engine::schedule::ir::Kind::Conv { conv, .. } => Some(conv),
            _ => None,
        })
        .unwrap();
    conv.c = usize::MAX / 4;
    let err = section::read(bytes_of(&l, here.packing().name, "k"), &here.packing(), "k")
        .err()
        .expect("a huge convolution");
    assert!(err.to_string().contains("too deep"), "{err}");

    // Millions of values: refused by their count, before the arena plan.
    let mut l = schedule(&here);
    l.lens.resize(5_000_000, 0);
    let err = section::read(bytes_of(&l, here.packing().name, "k"), &here.packing(), "k")
        .err()
        .expect("too many values");
    assert!(err.to_string().contains("at most"), "{err}");
}

#[test]
fn a_section_the_bounds_check_refuses_is_rebuilt() {
    let (bundle, cache, file) = saved("section-out-of-bounds");
    let here = Kernels::detect();
    let b = clip_edge::bundle::Bundle::open(&bundle).unwrap();
    let entry = cache
        .entry(
            &b,
            here.packing().name,
            &clip_edge::engine::section_options(&b),
        )
        .unwrap();
    assert_eq!(entry.path, file);
    // Every shape in range, but one step writes past its output: the
    // executor's bounds check refuses it at load.
    let mut l = schedule(&here);
    let out = l.steps.iter_mut().find_map(|s| match &mut s.kind {
        clip_edge::engine::schedule::ir::Kind::Binary { dims, .. } => {
            dims[0] += 1000;
            Some(())
        }
        _ => None,
    });
    assert!(out.is_some(), "an element-wise step");
    let mut v = Vec::new();
    section::write(&l, here.packing().name, &entry.key, 0.0, &mut v).unwrap();
    std::fs::write(&file, &v).unwrap();
    refused_then_rebuilt(&bundle, &cache, &file, "past its");
}

/// The section a host makes of `bundle` for `packing`'s kernel path.
fn shipped_bytes(maker: &shipped::Maker, packing: &Packing) -> Vec<u8> {
    let mut v = Vec::new();
    maker.section(packing).unwrap().write(&mut v).unwrap();
    v
}

/// Every machine lowers and packs a bundle into the same bytes for a
/// kernel path, its own or another's: a section made on the host for a
/// board is the one the board would make (the cross-compiled tests run
/// this under qemu on aarch64 and armv7).
#[test]
fn sections_for_every_kernel_path_are_the_hosts_byte_for_byte() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/section-digests.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table.len(), 3, "{table:?}");
    for (bundle, digests) in &table {
        let maker = shipped::Maker::open(&root().join(bundle)).unwrap();
        let digests = digests.as_table().unwrap();
        assert_eq!(digests.len(), Packing::ALL.len(), "{bundle}");
        for p in Packing::ALL {
            let made = section::digest_hex(&shipped_bytes(&maker, &p)).unwrap();
            assert_eq!(
                Some(made.as_str()),
                digests.get(p.name).and_then(|v| v.as_str()),
                "{bundle} for {}: this machine's section differs from the host's (after a \
                 change to the sources build.rs fingerprints, or one that changes sections, \
                 run scripts/section-digests; bump section::VERSION when the serialised \
                 schedule changed)",
                p.name
            );
        }
    }
}

/// A copy of `bundle` in `dir` that ships its section for this CPU's
/// kernel path, listed in its manifest as `clip-quantize sections` lists
/// it; returns the section's path.
fn ship(bundle: &Path, dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(bundle).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let maker = shipped::Maker::open(dir).unwrap();
    let here = Kernels::detect();
    let bytes = shipped_bytes(&maker, &here.packing());
    let file = dir.join(shipped::file_name(here.packing().name));
    std::fs::write(&file, &bytes).unwrap();
    // Whatever the umask: a file others may write is not mapped.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut manifest = maker.bundle().manifest.clone();
    manifest.native.push(clip_edge::bundle::NativeSection {
        kernels: here.packing().name.into(),
        file: shipped::file_name(here.packing().name),
        bytes: bytes.len() as u64,
        blake3: section::digest_hex(&bytes).unwrap(),
    });
    std::fs::write(
        dir.join("manifest.toml"),
        toml::to_string(&manifest).unwrap(),
    )
    .unwrap();
    file
}

#[test]
fn a_shipped_section_runs_bit_for_bit_and_a_changed_one_is_never_used() {
    for b in COMMITTED_BUNDLES {
        let want = embeddings(&mut load(&root().join(b), None));
        let dir = scratch(&format!("shipped-{}", b.replace('/', "-")));
        ship(&root().join(b), &dir);
        let mut e = load(&dir, None);
        assert_eq!(e.section_use(), Some(&SectionUse::Shipped), "{b}");
        assert_eq!(embeddings(&mut e), want, "{b}");
        // Before a section cache too: nothing is saved there.
        let cache = SectionCache::at(dir.join("cache"));
        assert_eq!(
            load(&dir, Some(&cache)).section_use(),
            Some(&SectionUse::Shipped),
            "{b}"
        );
        assert!(!dir.join("cache").exists(), "{b}");
    }

    let b = "models/default-int8";
    let want = embeddings(&mut load(&root().join(b), None));
    let dir = scratch("shipped-changed");
    let refused = |what: &str| {
        let mut e = load(&dir, None);
        assert_eq!(e.section_use(), None, "{what}: lowered instead");
        assert_eq!(embeddings(&mut e), want, "{what}");
    };
    // One weight byte changed: the section's own digest fails.
    let file = ship(&root().join(b), &dir);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    refused("a byte changed");
    // Another path's section in its place: not the manifest's digest.
    let file = ship(&root().join(b), &dir);
    let other = Packing::ALL
        .into_iter()
        .find(|p| p.name != Kernels::detect().packing().name)
        .unwrap();
    let maker = shipped::Maker::open(&dir).unwrap();
    std::fs::write(&file, shipped_bytes(&maker, &other)).unwrap();
    refused("another path's section");
    // Writable by others: never mapped.
    let file = ship(&root().join(b), &dir);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused("writable by others");
    // Missing.
    let file = ship(&root().join(b), &dir);
    std::fs::remove_file(&file).unwrap();
    refused("missing");
}
