//! CLIP's byte-level BPE tokenizer, token for token equal to
//! `clip.simple_tokenizer.SimpleTokenizer` + `clip.tokenize`.
//!
//! Text cleaning follows the reference: `ftfy.fix_text`, `html.unescape`
//! twice, whitespace collapse (Python's `str.isspace`), lower-casing. Of ftfy,
//! the repairs that matter for prompts are implemented (HTML entities when the
//! text has no `<`, curly quotes, Latin ligatures, full-width forms, line
//! breaks, control characters, NFC); ftfy's mojibake detection is not (see the
//! README: text that is already valid Unicode is never mojibake in a prompt set).

use std::collections::HashMap;
use std::io::Read;

use regex::Regex;
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

/// The BPE merges shipped with the repository (MIT, OpenAI).
pub const VOCAB_GZ: &[u8] = include_bytes!("../../models/vocab/bpe_simple_vocab_16e6.txt.gz");
const HTML5_ENTITIES: &str = include_str!("../data/html5_entities.json");

pub const SOT: &str = "<|startoftext|>";
pub const EOT: &str = "<|endoftext|>";
pub const VOCAB_SIZE: usize = 49408;

/// `text` cut to its first 60 characters (an error names a long text, it
/// does not repeat it).
pub fn shortened(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error(
        "text {:?} is {len} tokens long, more than the context length {context_length}",
        shortened(text)
    )]
    TooLong {
        text: String,
        len: usize,
        context_length: usize,
    },
    #[error("corrupt BPE vocabulary: {0}")]
    Vocab(String),
    #[error("context length {0} is out of range: expected 2 to {MAX_CONTEXT_LENGTH}")]
    BadContext(usize),
}

/// The longest context a tokenizer fills (CLIP's is 77; SigLIP's 64).
pub const MAX_CONTEXT_LENGTH: usize = 4096;

pub struct Tokenizer {
    byte_encoder: [char; 256],
    encoder: HashMap<String, u32>,
    bpe_ranks: HashMap<(String, String), u32>,
    pat: Regex,
    /// ftfy's terminal escapes and HTML entities (with a semicolon).
    ansi_escape: Regex,
    html_entity: Regex,
    entities: HashMap<String, String>,
    longest_entity: usize,
    sot: u32,
    eot: u32,
}

/// GPT-2's reversible byte → printable character map.
fn bytes_to_unicode() -> ([char; 256], Vec<char>) {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    let mut ordered = Vec::with_capacity(256);
    for (b, c) in bs.iter().zip(cs.iter()) {
        let ch = char::from_u32(*c).expect("valid char");
        out[*b as usize] = ch;
        ordered.push(ch);
    }
    (out, ordered)
}

/// Python's `str.isspace`.
pub fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\x0b'
            | '\x0c'
            | '\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

impl Tokenizer {
    /// The tokenizer over the vocabulary shipped in the repository.
    pub fn new() -> Result<Self, TokenizerError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .map_err(|e| TokenizerError::Vocab(e.to_string()))?;
        Self::from_merges(&text)
    }

    pub fn from_merges(text: &str) -> Result<Self, TokenizerError> {
        let (byte_encoder, ordered) = bytes_to_unicode();
        let lines: Vec<&str> = text.split('\n').collect();
        let n_merges = 49152 - 256 - 2;
        if lines.len() < n_merges + 1 {
            return Err(TokenizerError::Vocab(format!("{} lines", lines.len())));
        }
        let merges: Vec<(String, String)> = lines[1..n_merges + 1]
            .iter()
            .map(|l| {
                let mut it = l.split_whitespace();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(TokenizerError::Vocab(format!("bad merge line {l:?}"))),
                }
            })
            .collect::<Result<_, _>>()?;
        let mut vocab: Vec<String> = ordered.iter().map(|c| c.to_string()).collect();
        let v2: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
        vocab.extend(v2);
        for (a, b) in &merges {
            vocab.push(format!("{a}{b}"));
        }
        vocab.push(SOT.to_string());
        vocab.push(EOT.to_string());
        if vocab.len() != VOCAB_SIZE {
            return Err(TokenizerError::Vocab(format!("{} entries", vocab.len())));
        }
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as u32))
            .collect();
        let bpe_ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i as u32))
            .collect();
        let pat = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .expect("valid regex");
        let entities: HashMap<String, String> = serde_json::from_str(HTML5_ENTITIES)
            .map_err(|e| TokenizerError::Vocab(format!("entity table: {e}")))?;
        let longest_entity = entities.keys().map(|k| k.len()).max().unwrap_or(0);
        let sot = encoder[SOT];
        let eot = encoder[EOT];
        Ok(Self {
            byte_encoder,
            encoder,
            bpe_ranks,
            pat,
            ansi_escape: Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("valid regex"),
            html_entity: Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"),
            entities,
            longest_entity,
            sot,
            eot,
        })
    }

    pub fn sot(&self) -> u32 {
        self.sot
    }
    pub fn eot(&self) -> u32 {
        self.eot
    }

    fn bpe(&self, token: &str) -> Vec<String> {
        if token == SOT || token == EOT {
            return vec![token.to_string()];
        }
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        } else {
            return vec![];
        }
        loop {
            if word.len() < 2 {
                break;
            }
            let mut best: Option<(u32, usize)> = None;
            for i in 0..word.len() - 1 {
                if let Some(&r) = self.bpe_ranks.get(&(word[i].clone(), word[i + 1].clone())) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, bi)) = best else { break };
            let (first, second) = (word[bi].clone(), word[bi + 1].clone());
            // Merge every occurrence of the pair, left to right, as the reference does.
            let mut new_word = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    new_word.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    new_word.push(word[i].clone());
                    i += 1;
                }
            }
            word = new_word;
        }
        word
    }

    /// `SimpleTokenizer.encode`: ids without start/end tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = self.clean(text);
        let mut ids = Vec::new();
        for m in self.pat.find_iter(&text) {
            let bytes: String = m
                .as_str()
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            for piece in self.bpe(&bytes) {
                if let Some(&id) = self.encoder.get(&piece) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// open_clip's `basic_clean`: ftfy's repairs, HTML entities unescaped
    /// twice, stripped.
    pub fn basic_clean(&self, text: &str) -> String {
        let t = fix_text(text, self);
        let t = self.html_unescape(&self.html_unescape(&t));
        t.trim_matches(py_isspace).to_string()
    }

    /// `basic_clean` + `whitespace_clean` + `lower()`.
    pub fn clean(&self, text: &str) -> String {
        let t = self.basic_clean(text);
        let mut out = String::with_capacity(t.len());
        let mut in_space = false;
        for c in t.chars() {
            if py_isspace(c) {
                if !in_space {
                    out.push(' ');
                }
                in_space = true;
            } else {
                out.push(c);
                in_space = false;
            }
        }
        out.trim_matches(py_isspace).to_lowercase()
    }

    /// `clip.tokenize` of one text: `[SOT] + encode + [EOT]`, zero padded to
    /// `context_length`; with `truncate`, cut to the context with EOT last.
    pub fn tokenize(
        &self,
        text: &str,
        context_length: usize,
        truncate: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        if !(2..=MAX_CONTEXT_LENGTH).contains(&context_length) {
            return Err(TokenizerError::BadContext(context_length));
        }
        let mut tokens = Vec::with_capacity(context_length);
        tokens.push(self.sot);
        tokens.extend(self.encode(text));
        tokens.push(self.eot);
        if tokens.len() > context_length {
            if truncate {
                tokens.truncate(context_length);
                tokens[context_length - 1] = self.eot;
            } else {
                return Err(TokenizerError::TooLong {
                    text: text.to_string(),
                    len: tokens.len(),
                    context_length,
                });
            }
        }
        tokens.resize(context_length, 0);
        Ok(tokens)
    }

    /// Python's `html.unescape`.
    pub fn html_unescape(&self, s: &str) -> String {
        if !s.contains('&') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = rest.find('&') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (consumed, repl) = self.charref(after);
            match repl {
                Some(r) => {
                    out.push_str(&r);
                    rest = &after[consumed..];
                }
                None => {
                    out.push('&');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// One reference after '&': bytes consumed and its replacement, `None`
    /// when nothing matches `_charref`.
    fn charref(&self, s: &str) -> (usize, Option<String>) {
        let b = s.as_bytes();
        if b.first() == Some(&b'#') {
            let (hex, start) = match b.get(1) {
                Some(b'x') | Some(b'X') => (true, 2),
                _ => (false, 1),
            };
            let mut end = start;
            while end < b.len()
                && (if hex {
                    b[end].is_ascii_hexdigit()
                } else {
                    b[end].is_ascii_digit()
                })
            {
                end += 1;
            }
            if end == start {
                return (0, None);
            }
            let digits = &s[start..end];
            let consumed = if b.get(end) == Some(&b';') {
                end + 1
            } else {
                end
            };
            let num = u64::from_str_radix(digits, if hex { 16 } else { 10 }).unwrap_or(u64::MAX);
            return (consumed, Some(numeric_charref(num)));
        }
        // [^\t\n\f <&#;]{1,32};?
        let mut end = 0;
        for (i, c) in s.char_indices() {
            if matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';')
                || s[..i].chars().count() >= 32
            {
                break;
            }
            end = i + c.len_utf8();
        }
        if end == 0 {
            return (0, None);
        }
        let name = &s[..end];
        let with_semi = s.as_bytes().get(end) == Some(&b';');
        if with_semi {
            let key = format!("{name};");
            if let Some(v) = self.entities.get(&key) {
                return (end + 1, Some(v.clone()));
            }
        }
        // longest prefix that is an entity (those without ';' are legacy ones)
        let consumed_all = if with_semi { end + 1 } else { end };
        let mut x = name.len().min(self.longest_entity);
        while x > 1 {
            if name.is_char_boundary(x) {
                if let Some(v) = self.entities.get(&name[..x]) {
                    return (x, Some(v.clone()));
                }
            }
            x -= 1;
        }
        (consumed_all, Some(format!("&{}", &s[..consumed_all])))
    }
}

/// Python's `html._replace_charref` for numeric references.
fn numeric_charref(num: u64) -> String {
    const INVALID_CHARREFS: &[(u64, char)] = &[
        (0x00, '\u{fffd}'),
        (0x0d, '\r'),
        (0x80, '\u{20ac}'),
        (0x81, '\u{81}'),
        (0x82, '\u{201a}'),
        (0x83, '\u{0192}'),
        (0x84, '\u{201e}'),
        (0x85, '\u{2026}'),
        (0x86, '\u{2020}'),
        (0x87, '\u{2021}'),
        (0x88, '\u{02c6}'),
        (0x89, '\u{2030}'),
        (0x8a, '\u{0160}'),
        (0x8b, '\u{2039}'),
        (0x8c, '\u{0152}'),
        (0x8d, '\u{8d}'),
        (0x8e, '\u{017d}'),
        (0x8f, '\u{8f}'),
        (0x90, '\u{90}'),
        (0x91, '\u{2018}'),
        (0x92, '\u{2019}'),
        (0x93, '\u{201c}'),
        (0x94, '\u{201d}'),
        (0x95, '\u{2022}'),
        (0x96, '\u{2013}'),
        (0x97, '\u{2014}'),
        (0x98, '\u{02dc}'),
        (0x99, '\u{2122}'),
        (0x9a, '\u{0161}'),
        (0x9b, '\u{203a}'),
        (0x9c, '\u{0153}'),
        (0x9d, '\u{9d}'),
        (0x9e, '\u{017e}'),
        (0x9f, '\u{0178}'),
    ];
    if let Some((_, c)) = INVALID_CHARREFS.iter().find(|(n, _)| *n == num) {
        return c.to_string();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return '\u{fffd}'.to_string();
    }
    let invalid = matches!(num, 0x1..=0x8 | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef | 0xb)
        || (num & 0xFFFE) == 0xFFFE;
    if invalid {
        return String::new();
    }
    char::from_u32(num as u32)
        .map(String::from)
        .unwrap_or_default()
}

/// The parts of `ftfy.fix_text` (default configuration) that apply to text
/// that is valid Unicode.
pub fn fix_text(text: &str, tok: &Tokenizer) -> String {
    // ftfy: unescape_html="auto" leaves text containing '<' alone.
    let mut t = if text.contains('<') {
        text.to_string()
    } else {
        ftfy_unescape_html(text, tok)
    };
    // remove_terminal_escapes: ESC [ ... letter
    if t.contains('\x1b') {
        t = tok.ansi_escape.replace_all(&t, "").into_owned();
    }
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // uncurl_quotes
            '\u{2018}'..='\u{201b}' | '\u{02bc}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            // fix_latin_ligatures
            '\u{0132}' => out.push_str("IJ"),
            '\u{0133}' => out.push_str("ij"),
            '\u{0149}' => out.push_str("ʼn"),
            '\u{01f1}' => out.push_str("DZ"),
            '\u{01f2}' => out.push_str("Dz"),
            '\u{01f3}' => out.push_str("dz"),
            '\u{01c4}' => out.push_str("DŽ"),
            '\u{01c5}' => out.push_str("Dž"),
            '\u{01c6}' => out.push_str("dž"),
            '\u{01c7}' => out.push_str("LJ"),
            '\u{01c8}' => out.push_str("Lj"),
            '\u{01c9}' => out.push_str("lj"),
            '\u{01ca}' => out.push_str("NJ"),
            '\u{01cb}' => out.push_str("Nj"),
            '\u{01cc}' => out.push_str("nj"),
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' => out.push_str("ſt"),
            '\u{fb06}' => out.push_str("st"),
            // fix_character_width: full-width ASCII, ideographic space, half-width forms
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ff5e}' | '\u{ff5f}'..='\u{ffef}' => {
                let s: String = c.to_string().nfkc().collect();
                out.push_str(&s)
            }
            // fix_line_breaks
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n')
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            // fix_c1_controls: C1 controls decoded as (sloppy) windows-1252
            '\u{80}'..='\u{9f}' => out.push_str(&numeric_charref(c as u64)),
            // remove_control_chars
            '\x00'..='\x08'
            | '\x0b'
            | '\x0e'..='\x1f'
            | '\x7f'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffc}'
            | '\u{e0000}'..='\u{e007f}' => {}
            _ => out.push(c),
        }
    }
    out.nfc().collect()
}

/// ftfy's `unescape_html`: entities with a semicolon only.
fn ftfy_unescape_html(text: &str, tok: &Tokenizer) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    tok.html_entity
        .replace_all(text, |caps: &regex::Captures| {
            let m = &caps[0];
            let name = &m[1..];
            if let Some(v) = tok.entities.get(name) {
                return v.clone();
            }
            if name.starts_with('#') {
                // ftfy hands numeric references to html.unescape, keeping the
                // text when only part of it was decoded.
                let u = tok.html_unescape(m);
                return if u.contains(';') { m.to_string() } else { u };
            } else if let Some(v) = tok.entities.get(&name.to_lowercase()) {
                // ftfy also accepts upper-cased names of lower-case entities
                if name.chars().all(|c| c.is_ascii_uppercase() || c == ';') {
                    return v.clone();
                }
            }
            m.to_string()
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_prompt() {
        let t = Tokenizer::new().unwrap();
        let ids = t.tokenize("a photo of a cat.", 77, false).unwrap();
        assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 269]);
        assert_eq!(ids[7], 49407);
        assert!(ids[8..].iter().all(|&i| i == 0));
    }

    #[test]
    fn too_long_names_the_text() {
        let t = Tokenizer::new().unwrap();
        let long = "word ".repeat(100);
        let err = t.tokenize(&long, 77, false).unwrap_err().to_string();
        assert!(err.contains("word word"), "{err}");
        let ids = t.tokenize(&long, 77, true).unwrap();
        assert_eq!(ids[76], 49407);
    }
}
