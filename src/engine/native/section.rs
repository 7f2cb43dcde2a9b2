//! A native section: a lowered schedule ([`ir::Lowered`]) with its weights
//! already packed for one kernel path, as bytes that read back without
//! copying the weights: every weight run is a window of those bytes
//! ([`Blob::shared`]), so bytes mapped from a file serve the engine as they
//! lie in the page cache.
//!
//! Layout: a fixed prefix (magic, version, header length), the header
//! (postcard: the caller's key, the kernel path, the schedule without its
//! weights, and where each weight run lies), the weight runs each aligned
//! to [`ALIGN`] bytes, and a BLAKE3 digest of everything before it. A
//! section is checked whole before anything in it is used: its digest, its
//! key, its kernel path, every run inside the bytes and of the length the
//! kernel path packs for its shape; the executor then checks every offset
//! ([`crate::engine::schedule::check_bounds`]). What fails any check is refused with the reason.

use std::io::{self, Write};

use half::f16;
use serde::{Deserialize, Serialize};

use super::winograd;
use crate::engine::schedule::blob::{Blob, SharedBytes};
use crate::engine::schedule::ir::{Kind, Lowered, Operand, Post};
use crate::engine::schedule::linear::{ConvWeights, Rhs, Weights};
use crate::engine::schedule::ops::MAX_RANK;
use crate::kernels::Packing;

const MAGIC: &[u8; 8] = b"CLIPNSEC";
/// Version of the section layout and of the schedule's serialised form.
/// A section of another version is refused (and rebuilt by the caller).
pub const VERSION: u32 = 3;
/// Alignment of each weight run in the section (and so in a mapping of
/// it, which starts on a page).
pub const ALIGN: usize = 64;
/// Magic, version, reserved, header length.
const PREFIX: usize = 24;
const DIGEST: usize = 32;
/// Largest header read (ViT-B/32's is well under 1 MB, ViT-L/14's a few;
/// what a header decodes into takes a few times its bytes).
const MAX_HEADER_BYTES: u64 = 8 << 20;
/// Most values (arena tensors) a schedule read back may have (ViT-B/32:
/// about 300; the arena plan takes time quadratic in them).
const MAX_VALUE_IDS: usize = 1 << 14;
/// Largest dimension of a product, convolution or pool read back.
const MAX_DIM: usize = 1 << 20;
/// Most values the arena, or one operand, patch matrix or product of a
/// schedule read back may take (4 GiB of f32): what bounds every buffer
/// made at load.
const MAX_VALUES: u64 = if usize::BITS < 64 {
    MAX_VALUES_32
} else {
    1 << 30
};
/// [`MAX_VALUES`] on a 32-bit machine.
const MAX_VALUES_32: u64 = 1 << 28;

#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    #[error("{0} bytes: too short for a native section")]
    Truncated(usize),
    #[error("not a native section (bad magic)")]
    Magic,
    #[error("section version {found}; this clip-edge reads {VERSION}")]
    Version { found: u32 },
    #[error("digest mismatch: the file is damaged or was changed")]
    Digest,
    #[error("header: {0}")]
    Header(String),
    #[error("made for another bundle or clip-edge build")]
    Key,
    #[error("packed for the {found} kernels; this CPU runs {want}")]
    Kernels { found: String, want: &'static str },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    key: &'a str,
    kernels: &'a str,
    macs: f64,
    /// Each weight run: byte offset from the data's start, values.
    runs: Vec<(u64, u64)>,
    schedule: &'a Lowered,
}

#[derive(Deserialize)]
struct HeaderIn {
    key: String,
    kernels: String,
    macs: f64,
    runs: Vec<(u64, u64)>,
    schedule: Lowered,
}

/// A schedule read back, with what was saved beside it.
pub struct Section {
    pub schedule: Lowered,
    /// Multiply-adds of one frame, as the writer counted them.
    pub macs: f64,
}

enum Run<'a> {
    F32(&'a Blob<f32>),
    F16(&'a Blob<f16>),
    I8(&'a Blob<i8>),
}

enum RunMut<'a> {
    F32(&'a mut Blob<f32>),
    F16(&'a mut Blob<f16>),
    I8(&'a mut Blob<i8>),
}

/// Every weight run of `l`, in one fixed order, by shared (`Run`) or
/// mutable (`RunMut`) reference.
macro_rules! runs_of {
    ($l:expr, $run:ident $(, $m:tt)?) => {{
        let mut v = Vec::new();
        for st in &$($m)? $l.steps {
            match &$($m)? st.kind {
                Kind::MatMul { mm, .. } => match &$($m)? mm.rhs {
                    Rhs::Float(Weights::F32(b)) => v.push($run::F32(b)),
                    Rhs::Float(Weights::F16(b)) => v.push($run::F16(b)),
                    Rhs::Int8(q, _) => v.push($run::I8(&$($m)? q.q)),
                    Rhs::Act { .. } => {}
                },
                Kind::Conv { conv, .. } => match &$($m)? conv.weights {
                    ConvWeights::Float(Weights::F32(b))
                    | ConvWeights::F32Rows(b)
                    | ConvWeights::Winograd(b) => v.push($run::F32(b)),
                    ConvWeights::Float(Weights::F16(b)) => v.push($run::F16(b)),
                    ConvWeights::Int8(q) => v.push($run::I8(&$($m)? q.q)),
                },
                Kind::Depthwise { dw, .. } => v.push($run::F32(&$($m)? dw.weights)),
                _ => {}
            }
        }
        v
    }};
}

impl Run<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Run::F32(b) => bytemuck::cast_slice(b),
            Run::F16(b) => bytemuck::cast_slice(b),
            Run::I8(b) => bytemuck::cast_slice(b),
        }
    }

    fn len(&self) -> usize {
        match self {
            Run::F32(b) => b.len(),
            Run::F16(b) => b.len(),
            Run::I8(b) => b.len(),
        }
    }
}

/// Bytes of `l`'s weight runs that are windows of shared bytes (read in
/// place from a section).
pub fn shared_bytes(l: &Lowered) -> usize {
    let runs = runs_of!(l, Run);
    runs.iter()
        .filter(|r| match r {
            Run::F32(b) => b.is_shared(),
            Run::F16(b) => b.is_shared(),
            Run::I8(b) => b.is_shared(),
        })
        .map(|r| r.bytes().len())
        .sum()
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A writer that hashes what passes through it.
struct Hashing<'w, W: Write> {
    out: &'w mut W,
    hash: blake3::Hasher,
    written: u64,
}

impl<W: Write> Hashing<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.hash.update(b);
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, at: usize) -> io::Result<()> {
        const ZEROS: [u8; ALIGN] = [0; ALIGN];
        let n = at - self.written as usize;
        self.put(&ZEROS[..n])
    }
}

/// Writes `l` (packed for `kernels`) as a section under `key`, with the
/// frame's multiply-adds; returns the bytes written.
pub fn write(
    l: &Lowered,
    kernels: &str,
    key: &str,
    macs: f64,
    out: &mut impl Write,
) -> io::Result<u64> {
    let runs = runs_of!(l, Run);
    let mut at = 0usize;
    let mut table = Vec::with_capacity(runs.len());
    for r in &runs {
        table.push((at as u64, r.len() as u64));
        at = align(at + r.bytes().len());
    }
    let header = postcard::to_stdvec(&HeaderOut {
        key,
        kernels,
        macs,
        runs: table.clone(),
        schedule: l,
    })
    .map_err(io::Error::other)?;
    let mut w = Hashing {
        out,
        hash: blake3::Hasher::new(),
        written: 0,
    };
    w.put(MAGIC)?;
    w.put(&VERSION.to_le_bytes())?;
    w.put(&[0; 4])?;
    w.put(&(header.len() as u64).to_le_bytes())?;
    w.put(&header)?;
    let data = align(PREFIX + header.len());
    w.pad_to(data)?;
    for (r, (off, _)) in runs.iter().zip(&table) {
        w.pad_to(data + *off as usize)?;
        w.put(r.bytes())?;
    }
    let digest = *w.hash.finalize().as_bytes();
    let n = w.written + DIGEST as u64;
    w.out.write_all(&digest)?;
    Ok(n)
}

/// At most 40 characters of `s` read from a section, control characters
/// as `?`: for an error line.
fn printable(s: &str) -> String {
    s.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The digest a section in `all` ends with, in hex (what a manifest lists
/// for a shipped section; [`read`] checks it against the rest); `None`
/// when `all` is too short to hold one.
pub fn digest_hex(all: &[u8]) -> Option<String> {
    (all.len() >= PREFIX + DIGEST).then(|| hex::encode(&all[all.len() - DIGEST..]))
}

/// Reads the section in `bytes` (which must start on an [`ALIGN`]-byte
/// boundary, as a mapping does), made under `key` for `kernels`: its
/// weights stay in `bytes`.
pub fn read(bytes: SharedBytes, kernels: &Packing, key: &str) -> Result<Section, SectionError> {
    let all: &[u8] = (*bytes).as_ref();
    if all.len() < PREFIX + DIGEST {
        return Err(SectionError::Truncated(all.len()));
    }
    if &all[..8] != MAGIC {
        return Err(SectionError::Magic);
    }
    let found = u32::from_le_bytes(all[8..12].try_into().unwrap());
    if found != VERSION {
        return Err(SectionError::Version { found });
    }
    let (body, digest) = all.split_at(all.len() - DIGEST);
    if blake3::hash(body).as_bytes() != digest {
        return Err(SectionError::Digest);
    }
    let header_len = u64::from_le_bytes(all[16..24].try_into().unwrap());
    if header_len > MAX_HEADER_BYTES || PREFIX as u64 + header_len > body.len() as u64 {
        return Err(SectionError::Header(format!(
            "{header_len} bytes, past the section's end"
        )));
    }
    let header_len = header_len as usize;
    let h: HeaderIn = postcard::from_bytes(&all[PREFIX..PREFIX + header_len])
        .map_err(|e| SectionError::Header(e.to_string()))?;
    if h.key != key {
        return Err(SectionError::Key);
    }
    if h.kernels != kernels.name {
        return Err(SectionError::Kernels {
            found: printable(&h.kernels),
            want: kernels.name,
        });
    }
    let mut schedule = h.schedule;
    if schedule.packed_for.as_deref() != Some(kernels.name) {
        return Err(SectionError::Kernels {
            found: printable(schedule.packed_for.as_deref().unwrap_or("no")),
            want: kernels.name,
        });
    }
    let data = align(PREFIX + header_len);
    let mut runs = runs_of!(schedule, RunMut, mut);
    if runs.len() != h.runs.len() {
        return Err(SectionError::Invalid(format!(
            "{} weight runs listed for {} in the schedule",
            h.runs.len(),
            runs.len()
        )));
    }
    for (i, (r, &(off, len))) in runs.iter_mut().zip(&h.runs).enumerate() {
        let bad = || SectionError::Invalid(format!("weight run {i} lies outside the section"));
        let start = usize::try_from(off)
            .ok()
            .and_then(|o| o.checked_add(data))
            .filter(|s| s.is_multiple_of(ALIGN))
            .ok_or_else(bad)?;
        let len = usize::try_from(len).map_err(|_| bad())?;
        let end_ok = |size: usize| {
            len.checked_mul(size)
                .and_then(|b| b.checked_add(start))
                .is_some_and(|e| e <= body.len())
        };
        let b = bytes.clone();
        match r {
            RunMut::F32(slot) if end_ok(4) => {
                **slot = Blob::shared(b, start, len).ok_or_else(bad)?
            }
            RunMut::F16(slot) if end_ok(2) => {
                **slot = Blob::shared(b, start, len).ok_or_else(bad)?
            }
            RunMut::I8(slot) if end_ok(1) => {
                **slot = Blob::shared(b, start, len).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        }
    }
    drop(runs);
    check_shapes(&schedule, kernels, MAX_VALUES).map_err(SectionError::Invalid)?;
    Ok(Section {
        schedule,
        macs: h.macs,
    })
}

/// Whether `l`, lowered for `kernels`, would pass the checks a section of
/// it must pass when read back on a machine that runs that path (a
/// schedule beyond them is not saved): with a 32-bit machine's bounds for
/// a path a 32-bit machine may run, wherever the section is made.
pub fn check(l: &Lowered, kernels: &Packing) -> Result<(), String> {
    let max_values = if kernels.may_run_on_32_bit() {
        MAX_VALUES_32
    } else {
        MAX_VALUES
    };
    check_shapes(l, kernels, max_values)
}

/// What the executor's bounds check ([`crate::engine::schedule::check_bounds`]) and its buffers
/// made at load take as given, as the lowering guarantees it: every value
/// id and constant index in range, shapes of bounded rank and size (so
/// that no buffer sized from them is unbounded), each offset table as long
/// as its dimension, each weight run as long as its shape packs to, the
/// geometry each convolution path assumes.
fn check_shapes(l: &Lowered, kern: &Packing, max_values: u64) -> Result<(), String> {
    let values = l.lens.len();
    if values > MAX_VALUE_IDS || l.steps.len() > MAX_VALUE_IDS {
        return Err(format!(
            "{values} values and {} steps; at most {MAX_VALUE_IDS} each",
            l.steps.len()
        ));
    }
    let total: u64 = l.lens.iter().map(|&n| n as u64).sum();
    if total > max_values {
        return Err(format!("the arena's {total} values exceed {max_values}"));
    }
    if l.input >= values || l.output >= values {
        return Err("the input or output is not a value of the schedule".into());
    }
    // A shape of bounded dimensions and at most max_values values (checked
    // in u64): every buffer sized from such shapes is bounded.
    let values_of = |what: &str, dims: &[usize]| -> Result<(), String> {
        // Each factor too: a 0 elsewhere must not let one be anything.
        if dims.iter().any(|&d| d as u64 > max_values) {
            return Err(format!(
                "{what}: a dimension above {max_values} in {dims:?}"
            ));
        }
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        match n {
            Some(n) if n <= max_values => Ok(()),
            _ => Err(format!("{what}: more than {max_values} values in {dims:?}")),
        }
    };
    // Products', convolutions' and pools' dimensions are also each bounded
    // (their scratch multiplies them).
    let within = |what: &str, dims: &[usize]| -> Result<(), String> {
        if dims.iter().any(|&d| d > MAX_DIM) {
            return Err(format!("{what}: a dimension above {MAX_DIM} in {dims:?}"));
        }
        values_of(what, dims)
    };
    // A strided view: rank as the executor indexes, each axis's reach
    // (`(d - 1) · stride`) bounded, as the shape.
    let strided = |what: &str, dims: &[usize], strides: &[&[usize]]| -> Result<(), String> {
        if dims.len() > MAX_RANK || strides.iter().any(|s| s.len() != dims.len()) {
            return Err(format!(
                "{what}: rank {} (at most {MAX_RANK}) with strides of ranks {:?}",
                dims.len(),
                strides.iter().map(|s| s.len()).collect::<Vec<_>>()
            ));
        }
        values_of(what, dims)?;
        for s in strides {
            for (&d, &st) in dims.iter().zip(*s) {
                if (d.saturating_sub(1) as u64).saturating_mul(st as u64) > max_values {
                    return Err(format!("{what}: a stride of {st} over {d} values"));
                }
            }
        }
        Ok(())
    };
    for st in &l.steps {
        let name = &st.name.chars().take(80).collect::<String>();
        let fail = |what: String| Err(format!("step {name:?}: {what}"));
        if st.out >= values {
            return fail(format!("writes value {}, of {values}", st.out));
        }
        for o in st.inputs() {
            let ok = match o {
                Operand::Val(v) => v < values,
                Operand::Const(c) => c < l.consts.len(),
            };
            if !ok {
                return fail(format!("reads {o:?}, out of range"));
            }
        }
        let at = |e: String| format!("step {name:?}: {e}");
        for p in &st.posts {
            if let Post::Binary { dims, so, .. } = p {
                strided("a fused operand", dims, &[so]).map_err(at)?;
            }
        }
        match &st.kind {
            Kind::Binary { dims, sa, sb, .. } => {
                strided("operands", dims, &[sa, sb]).map_err(at)?
            }
            Kind::Reduce { dims, sx, so, .. } => {
                strided("a reduction", dims, &[sx, so]).map_err(at)?;
                if dims.is_empty() {
                    return fail("a reduction over no axis".into());
                }
            }
            Kind::Copy { parts } => {
                for p in parts {
                    strided("a copy", &p.dims, &[&p.ss, &p.sd]).map_err(at)?;
                    if p.src_off as u64 > max_values || p.dst_off as u64 > max_values {
                        return fail("a copy's offset out of range".into());
                    }
                }
            }
            Kind::Softmax { around: a, .. } | Kind::RmsNorm { around: a, .. } => {
                values_of("rows", &[a.outer, a.n, a.inner]).map_err(at)?
            }
            Kind::MatMul { mm, .. } => {
                let (m, n, k) = (mm.m, mm.n, mm.k);
                for (what, dims) in [("a", [m, k]), ("b", [n, k]), ("out", [m, n])] {
                    within(what, &dims).map_err(at)?;
                }
                let batches = mm.a_batch.len();
                // Products of activations keep every batch in scratch, the
                // right side both as rows and packed in panels of 16.
                let panels = n.div_ceil(16) * 16 + n;
                for (what, dims) in [("a", [batches, m, k]), ("b", [batches, panels, k])] {
                    within(what, &dims).map_err(at)?;
                }
                let mut tables: Vec<&[usize]> =
                    vec![&mm.a_batch, &mm.a_m, &mm.a_k, &mm.o_batch, &mm.o_m, &mm.o_n];
                match &mm.rhs {
                    Rhs::Act { b_batch, b_n, b_k } => tables.extend([&b_batch[..], b_n, b_k]),
                    Rhs::Int8(_, aq) => tables.extend([&aq.s_batch[..], &aq.s_m]),
                    Rhs::Float(_) => {}
                }
                if tables
                    .iter()
                    .flat_map(|t| t.iter())
                    .any(|&o| o as u64 > max_values)
                {
                    return fail("an offset out of range".into());
                }
                let tables = [
                    ("a_m", mm.a_m.len(), m),
                    ("a_k", mm.a_k.len(), k),
                    ("o_m", mm.o_m.len(), m),
                    ("o_n", mm.o_n.len(), n),
                    ("o_batch", mm.o_batch.len(), batches),
                ];
                for (what, len, want) in tables {
                    if len != want {
                        return fail(format!("{what} has {len} offsets for {want}"));
                    }
                }
                let identity = |t: &[usize]| t.iter().enumerate().all(|(i, v)| i == *v);
                if (mm.a_k_unit && !identity(&mm.a_k)) || (mm.o_n_unit && !identity(&mm.o_n)) {
                    return fail("a contiguous row that is not".into());
                }
                let want = |len: usize, packed: Option<usize>, what: &str| {
                    if Some(len) == packed {
                        Ok(())
                    } else {
                        Err(format!(
                            "step {name:?}: {what} weights of {len} values; {n} x {k} packs to {packed:?}"
                        ))
                    }
                };
                match &mm.rhs {
                    Rhs::Float(Weights::F32(w)) => {
                        want(w.len(), kern.packed_f32_len_of(n, k), "f32")?
                    }
                    Rhs::Float(Weights::F16(w)) => {
                        want(w.len(), kern.packed_f16_len_of(n, k), "f16")?
                    }
                    Rhs::Int8(q, aq) => {
                        want(q.q.len(), kern.packed_i8_len_of(n, k), "int8")?;
                        if q.scale.len() != n || aq.s_m.len() != m || aq.s_batch.len() != batches {
                            return fail("int8 scales of the wrong length".into());
                        }
                    }
                    Rhs::Act { b_batch, b_n, b_k } => {
                        if b_batch.len() != batches || b_n.len() != n || b_k.len() != k {
                            return fail("right-hand offsets of the wrong length".into());
                        }
                    }
                }
            }
            Kind::Conv { conv: c, .. } => {
                let [kh, kw] = c.kernel;
                let kk = [c.c, kh, kw]
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d));
                let kk = kk
                    .filter(|&v| v <= MAX_DIM)
                    .ok_or_else(|| at("a convolution too deep".into()))?;
                within("input", &[c.c, c.h, c.w]).map_err(at)?;
                within("output", &[c.o, c.oh, c.ow]).map_err(at)?;
                // The patches, with a panel's padding per output row.
                within("patches", &[c.oh, c.ow + 16, kk]).map_err(at)?;
                within("weights", &[c.o, kk]).map_err(at)?;
                if c.bias.len() != c.o {
                    return fail(format!("{} biases for {} channels", c.bias.len(), c.o));
                }
                let steps = [c.stride, c.dilation, c.pad].concat();
                if c.stride.contains(&0)
                    || c.dilation.contains(&0)
                    || steps.iter().any(|&v| v > MAX_DIM)
                {
                    return fail(format!("strides, dilations and padding {steps:?}"));
                }
                let rows = c.o * kk;
                let (len, want) = match &c.weights {
                    ConvWeights::Float(Weights::F32(w)) => {
                        (w.len(), kern.packed_f32_len_of(c.o, kk))
                    }
                    ConvWeights::Float(Weights::F16(w)) => {
                        (w.len(), kern.packed_f16_len_of(c.o, kk))
                    }
                    ConvWeights::F32Rows(w) => (w.len(), Some(rows)),
                    ConvWeights::Int8(q) => {
                        if q.scale.len() != c.o {
                            return fail("int8 scales of the wrong length".into());
                        }
                        (q.q.len(), Some(rows))
                    }
                    ConvWeights::Winograd(w) => {
                        let fits = winograd::fits(
                            c.kernel,
                            c.stride,
                            c.dilation,
                            c.pad,
                            [c.h, c.w],
                            [c.oh, c.ow],
                        );
                        if !fits {
                            return fail(
                                "Winograd weights for a convolution it does not compute".into(),
                            );
                        }
                        // Its scratch: 16 transformed tiles per pair of rows.
                        let tiles = [c.oh.div_ceil(2), 16, c.c.max(c.o), c.ow.div_ceil(2) + 15];
                        values_of("Winograd tiles", &tiles).map_err(at)?;
                        (w.len(), Some(rows / 9 * 16))
                    }
                };
                if Some(len) != want {
                    return fail(format!("convolution weights of {len} values for {want:?}"));
                }
            }
            Kind::Depthwise { dw, .. } => {
                within("input", &[dw.c, dw.h, dw.w]).map_err(at)?;
                within("output", &[dw.o, dw.oh, dw.ow]).map_err(at)?;
                within("window", &dw.kernel).map_err(at)?;
                let taps = dw.kernel[0] * dw.kernel[1];
                if dw.c == 0 || dw.o % dw.c != 0 {
                    return fail(format!("{} outputs over {} channels", dw.o, dw.c));
                }
                if dw.bias.len() != dw.o || Some(dw.weights.len()) != dw.o.checked_mul(taps) {
                    return fail(format!(
                        "depthwise weights of {} values and {} biases for {} channels of {taps}",
                        dw.weights.len(),
                        dw.bias.len(),
                        dw.o
                    ));
                }
                let steps = [dw.stride, dw.dilation, dw.pad].concat();
                // The kernel's index arithmetic (`oy·sy + ky·dy − py`) stays
                // far inside `isize` on 32-bit targets too.
                let reach = |o: usize, s: usize, k: usize, d: usize, p: usize| {
                    (o as u64).saturating_mul(s as u64)
                        + (k.saturating_sub(1) as u64).saturating_mul(d as u64)
                        + p as u64
                };
                if dw.stride.contains(&0)
                    || dw.dilation.contains(&0)
                    || steps.iter().any(|&v| v > MAX_DIM)
                    || (0..2).any(|a| {
                        let o = [dw.oh, dw.ow][a];
                        reach(o, dw.stride[a], dw.kernel[a], dw.dilation[a], dw.pad[a])
                            > MAX_DIM as u64
                    })
                {
                    return fail(format!("strides, dilations and padding {steps:?}"));
                }
                // The kernel's zero-padded input, a plane per channel.
                let padded = dw
                    .padded()
                    .ok_or_else(|| at("a depthwise convolution past usize".into()))?;
                values_of(
                    "padded planes",
                    &[dw.o, padded.rows, padded.phases, padded.cols],
                )
                .map_err(at)?;
            }
            Kind::Pool { pool: p, .. } => {
                within("input", &[p.c, p.h, p.w]).map_err(at)?;
                within("output", &[p.c, p.oh, p.ow]).map_err(at)?;
                within("window", &p.k).map_err(at)?;
                if p.stride.contains(&0) || [p.stride, p.pad].concat().iter().any(|&v| v > MAX_DIM)
                {
                    return fail(format!(
                        "pool strides {:?} and padding {:?}",
                        p.stride, p.pad
                    ));
                }
            }
            Kind::Unary { .. } => {}
        }
    }
    Ok(())
}
