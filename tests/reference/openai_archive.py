"""Saving a CLIP state dict the way OpenAI's released archives are: a traced
TorchScript module with the JIT-only `input_resolution` / `context_length` /
`vocab_size` buffers and the mixed fp16/fp32 dtypes of `convert_weights`.
Shared by generate.py (test fixtures) and models/synthetic/train.py."""
import torch
from clip.model import build_model


def save_traced(sd, resolution, context_length, vocab_size, example_image, example_tokens, path):
    """Traces `build_model(sd)` on one example and writes it to `path`, with
    every parameter that is fp16 in `sd` stored as fp16."""
    jm = build_model({k: v.clone() for k, v in sd.items()}).float().eval()
    for key in ("input_resolution", "context_length", "vocab_size"):
        if hasattr(jm, key):
            delattr(jm, key)
    jm.register_buffer("input_resolution", torch.tensor(resolution))
    jm.register_buffer("context_length", torch.tensor(context_length))
    jm.register_buffer("vocab_size", torch.tensor(vocab_size))
    with torch.no_grad():
        traced = torch.jit.trace(jm, (example_image, example_tokens), check_trace=False)
    half = {k for k, v in sd.items() if v.dtype == torch.float16}
    for k, p in list(traced.named_parameters()):
        if k in half:
            p.data = p.data.half()
    traced.save(path)
