#!/usr/bin/env python3
"""MobileCLIP2-S0 (open_clip's architecture: a timm FastViT `fastvit_mci0`
image tower, random seeded weights, re-parameterised for inference as
MobileCLIP deploys it) side by side with ONNX Runtime and PyTorch, all
numbers from one run: the image encoder (batch 1, 256x256) in PyTorch
(eager fp32), ONNX Runtime (fp32 and dynamic int8 on the same exported
file) and clip-edge's native engine (fp32 and int8 bundles built from the
export), at 1 and 2 threads; with ViT-B/32 int8 on our engine beside it
when `make_models.py` wrote its archive in WORK.

    pip install torch open_clip_torch timm onnx onnxruntime
    cargo build --release
    python3 bench/peers/mobileclip.py --work /tmp/peers [--iterations 40]

Writes WORK/mobileclip2_s0-immich/ (Immich's layout), WORK/mobileclip2_s0.int8.onnx
and the bundles on first use. Run by hand; never in CI.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from run import bundle, clip_edge, onnx_bundle, ort, time_fn  # noqa: E402

ARCH = "mobileclip2_s0"
RES = 256


def build():
    import open_clip
    import torch
    from timm.utils.model import reparameterize_model
    torch.manual_seed(0)
    m = open_clip.create_model("MobileCLIP2-S0", pretrained=None).eval()
    return reparameterize_model(m).eval()


def export(work):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from onnx_export import Textual, Visual  # the fixtures' wrappers (outputs normalised)
    out = os.path.join(work, f"{ARCH}-immich")
    if os.path.exists(os.path.join(out, "textual", "model.onnx")):
        return out
    m = build()
    os.makedirs(os.path.join(out, "visual"), exist_ok=True)
    os.makedirs(os.path.join(out, "textual"), exist_ok=True)
    with open(os.path.join(out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump({"size": [RES, RES], "mode": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1],
                   "interpolation": "bilinear", "resize_mode": "shortest", "fill_color": 0}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"embed_dim": 512, "vision_cfg": {"image_size": RES},
                   "text_cfg": {"context_length": 77}}, f)
    torch.onnx.export(Visual(m), (torch.randn(1, 3, RES, RES),),
                      os.path.join(out, "visual", "model.onnx"), input_names=["image"],
                      output_names=["embedding"], opset_version=17, dynamo=False)
    torch.onnx.export(Textual(m), (torch.ones(1, 77, dtype=torch.int32),),
                      os.path.join(out, "textual", "model.onnx"), input_names=["text"],
                      output_names=["embedding"], opset_version=17, dynamo=False)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(work, f"{ARCH}.pre.onnx")
    try:
        quant_pre_process(os.path.join(out, "visual", "model.onnx"), pre)
    except AssertionError:
        quant_pre_process(os.path.join(out, "visual", "model.onnx"), pre, skip_symbolic_shape=True)
    quantize_dynamic(pre, os.path.join(work, f"{ARCH}.int8.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8)
    os.remove(pre)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/peers")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    src = export(a.work)
    b32, b8 = onnx_bundle(a.work, ARCH, "fp32"), onnx_bundle(a.work, ARCH, "int8")
    vit8 = bundle(a.work, "vit_b32", "int8") if os.path.exists(
        os.path.join(a.work, "vit_b32.pt")) else None
    image = np.random.default_rng(0).standard_normal((1, 3, RES, RES)).astype(np.float32)
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    rows = []
    for t in a.threads:
        import torch
        torch.set_num_threads(t)
        m = build()
        x = torch.from_numpy(image)
        with torch.no_grad():
            row = {"threads": t, "torch_fp32": time_fn(lambda: m.encode_image(x), a.iterations)}
        row["ort_fp32"] = ort(os.path.join(src, "visual", "model.onnx"), t, a.iterations, image)
        row["ort_int8"] = ort(os.path.join(a.work, f"{ARCH}.int8.onnx"), t, a.iterations, image)
        row["native_fp32"] = clip_edge(b32, "native", t, a.iterations)
        row["native_int8"] = clip_edge(b8, "native", t, a.iterations)
        if vit8:
            row["vit_b32_native_int8"] = clip_edge(vit8, "native", t, a.iterations)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}: MobileCLIP2-S0 image encoder, median ms (p99), batch 1\n")
    cols = [c for c in ["torch_fp32", "ort_fp32", "ort_int8", "native_fp32", "native_int8",
                        "vit_b32_native_int8"] if c in rows[0]]
    print("| threads | " + " | ".join(cols) + " | native int8 / best ORT | native fp32 / ORT fp32 |"
          + (" native int8 / ViT-B/32 native int8 |" if vit8 else ""))
    print("|" + "---|" * (len(cols) + 3 + (1 if vit8 else 0)))
    for r in rows:
        best = min(r["ort_fp32"]["p50"], r["ort_int8"]["p50"])
        cells = [f"{r[c]['p50']:.1f} ({r[c]['p99']:.1f})" for c in cols]
        extra = f" {r['native_int8']['p50'] / r['vit_b32_native_int8']['p50']:.2f} |" if vit8 else ""
        print(f"| {r['threads']} | " + " | ".join(cells)
              + f" | {r['native_int8']['p50'] / best:.2f} | {r['native_fp32']['p50'] / r['ort_fp32']['p50']:.2f} |"
              + extra)
    for r in rows:
        print(f"{r['threads']} thread(s): native allocations/frame {r['native_fp32']['allocations_per_frame']:.0f} fp32, "
              f"{r['native_int8']['allocations_per_frame']:.0f} int8; peak RSS int8 "
              f"{r['native_int8']['peak_rss_kb'] / 1024:.0f} MB")


if __name__ == "__main__":
    main()
