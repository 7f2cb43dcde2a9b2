#!/usr/bin/env python3
"""PyTorch fp16 on the GPU, the peer of `clip-edge --device cuda`, on the same
random-weight ViT-B/32 (OpenAI's reference model code, seeded): writes the
checkpoint that `clip-quantize build` turns into our bundles, then times the
image encoder eagerly and replayed as a CUDA graph, at batch 1 and batch N.

Run by scripts/gpu-check on a GPU machine (PyTorch there; OpenAI's
`clip/model.py` found beside this file's --clip-model or in `clip`):

    python3 bench/gpu/torch_peer.py --work /tmp/gpu-work --json out.json
"""
import argparse
import importlib.util
import json
import os
import sys

import torch


def load_clip_model(path):
    if path:
        spec = importlib.util.spec_from_file_location("clip_model", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    from clip import model as mod  # clip-anytorch, where installed
    return mod


def timed(fn, iters, warm=20):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / iters)
    times.sort()
    return times[len(times) // 2]  # median of five runs, ms per call


def graphed(model, x):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        y = model(x)
    return g, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--clip-model", default=None, help="path to OpenAI's clip/model.py")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    cm = load_clip_model(a.clip_model)
    torch.manual_seed(0)
    m = cm.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval()
    cm.convert_weights(m)  # fp16 matrices, as OpenAI ships them
    ckpt = os.path.join(a.work, "vit_b32.pt")
    if not os.path.exists(ckpt):
        torch.save(m.state_dict(), ckpt)
    # As OpenAI runs CLIP in fp16: convert_weights' f16 matrices, LayerNorms
    # in f32 (their forward casts), on the GPU.
    visual = m.visual.cuda().eval()
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with torch.no_grad():
        for n in (1, a.batch):
            x = torch.randn(n, 3, 224, 224, device="cuda").half()
            eager = timed(lambda: visual(x), 50 if n == 1 else 10)
            g, _ = graphed(visual, x)
            graph = timed(g.replay, 200 if n == 1 else 20)
            out[f"batch{n}"] = {
                "eager_ms": eager,
                "graph_ms": graph,
                "eager_images_per_s": n * 1e3 / eager,
                "graph_images_per_s": n * 1e3 / graph,
            }
    out["batch"] = a.batch
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    sys.exit(main())
