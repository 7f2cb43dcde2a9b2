//! The image encoder archive (`.nnef.tgz`) through tract-nnef. In a bundle
//! only checksummed (and, when required, signed) bytes reach this parser;
//! the runtime still turns a parser panic into an error.
#![no_main]
use clip_edge::tract_graph::read_nnef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_nnef(data);
});
