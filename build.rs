//! The fingerprint of what a native section's bytes mean: the sources of
//! the schedule's serialised form, the section format, the weight layouts
//! and the executor that reads them. A section shipped in a bundle carries
//! it in its key, so that no build reads a section another build made
//! unless both were built from the same such sources.

use std::path::Path;

/// Folders and files whose sources define a section's meaning.
const SOURCES: [&str; 6] = [
    "src/engine/schedule",
    "src/engine/native",
    "src/kernels/packing.rs",
    "src/kernels/group_panels.rs",
    "src/kernels/float_panels.rs",
    "src/kernels/layout.rs",
];

fn files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("a source folder")
            .map(|e| e.expect("a source folder entry").path())
            .collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else if path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_path_buf());
    }
}

fn main() {
    let mut all = Vec::new();
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
        files(Path::new(s), &mut all);
    }
    let mut hash = blake3::Hasher::new();
    for f in &all {
        // Names and contents, with line endings as checked out.
        hash.update(f.to_string_lossy().as_bytes());
        hash.update(&std::fs::read(f).expect("a source file"));
    }
    let hex = hash.finalize().to_hex();
    println!("cargo:rustc-env=CLIP_EDGE_SECTION_SOURCES={}", &hex[..16]);
}
