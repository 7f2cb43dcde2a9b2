//! The CPU engine's per-frame work buffers and the fused epilogue's type.

/// A fused epilogue ([`super::fuse`]) on one block of an op's output,
/// `first` the block's first value's index in the output.
pub type PostFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Per-frame work buffers, sized at load for the largest op.
#[derive(Default)]
pub struct Scratch {
    pub pa: Vec<f32>,
    pub pb: Vec<f32>,
    /// `pb` in the kernel path's packed layout.
    pub pp: Vec<f32>,
    pub c: Vec<f32>,
    pub qa: Vec<i8>,
    pub qx: Vec<i8>,
    /// `qa` in the kernel path's packed layout.
    pub qp: Vec<i8>,
    pub acc: Vec<i32>,
}

/// Lengths of the scratch buffers one op needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScratchSize {
    pub pa: usize,
    pub pb: usize,
    pub pp: usize,
    pub c: usize,
    pub qa: usize,
    pub qx: usize,
    pub qp: usize,
    pub acc: usize,
}

impl ScratchSize {
    pub fn max(self, o: ScratchSize) -> ScratchSize {
        ScratchSize {
            pa: self.pa.max(o.pa),
            pb: self.pb.max(o.pb),
            pp: self.pp.max(o.pp),
            c: self.c.max(o.c),
            qa: self.qa.max(o.qa),
            qx: self.qx.max(o.qx),
            qp: self.qp.max(o.qp),
            acc: self.acc.max(o.acc),
        }
    }
}

impl Scratch {
    /// Allocated once, at load.
    pub fn new(n: ScratchSize) -> Scratch {
        Scratch {
            pa: vec![0.0; n.pa],
            pb: vec![0.0; n.pb],
            pp: vec![0.0; n.pp],
            c: vec![0.0; n.c],
            qa: vec![0; n.qa],
            qx: vec![0; n.qx],
            qp: vec![0; n.qp],
            acc: vec![0; n.acc],
        }
    }

    pub fn bytes(&self) -> usize {
        4 * (self.pa.len() + self.pb.len() + self.pp.len() + self.c.len() + self.acc.len())
            + self.qa.len()
            + self.qx.len()
            + self.qp.len()
    }
}
