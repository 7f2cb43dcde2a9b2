//! The tokenizer against `clip.tokenize(truncate=True)` on the committed corpus.

use clip_quantize::tokenizer::Tokenizer;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    fits: bool,
    /// ftfy's mojibake repair changes this text (not reimplemented; see docs/accuracy.md).
    mojibake: bool,
}

/// Corpus strings whose reference tokens depend on ftfy's mojibake repair.
const MOJIBAKE_STRINGS: usize = 8;
/// Strings in the committed corpus (`tests/reference/generate.py`).
const CORPUS_STRINGS: usize = 3117;

#[test]
fn tokenizer_matches_reference_on_whole_corpus() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tokenizer_corpus.json"
    );
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), CORPUS_STRINGS, "corpus size");
    let tok = Tokenizer::new().unwrap();
    let mut failures = Vec::new();
    let mut mojibake = 0;
    for c in &cases {
        let mut got = tok.tokenize(&c.text, 77, true).unwrap();
        while got.last() == Some(&0) {
            got.pop();
        }
        assert_eq!(
            tok.tokenize(&c.text, 77, false).is_ok(),
            c.fits,
            "fits: {:?}",
            c.text
        );
        if c.mojibake {
            mojibake += 1;
            continue;
        }
        if got != c.ids {
            failures.push(format!("{:?}: got {:?} want {:?}", c.text, got, c.ids));
        }
    }
    assert_eq!(mojibake, MOJIBAKE_STRINGS, "mojibake strings");
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
