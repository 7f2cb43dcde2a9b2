#!/usr/bin/env python3
"""The side-by-side benchmark of issue 11, all numbers from one run on one
machine: the image encoder (batch 1, 224x224) of the same random ViT-B/32
and RN50 weights in PyTorch (eager fp32), ONNX Runtime (fp32 and dynamic
int8) and clip-edge (native and tract backends; fp32 and int8 bundles), at
1 and 2 threads. Median and p99 milliseconds (and the fastest frame, `min`),
ratios to ONNX Runtime.

    python3 bench/peers/make_models.py --work /tmp/peers/models
    cargo build --release
    python3 bench/peers/run.py --work /tmp/peers/models [--iterations 50]

Bundles are built on first use with target/release/clip-quantize ($CARGO_TARGET_DIR/release when set) (int8 with
dynamic per-token activations, the default). Run by hand; never in CI.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
# The release build: $CARGO_TARGET_DIR/release when set, else target/release.
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
sys.path.insert(0, HERE)


def stats(times):
    t = np.array(times) * 1e3
    return {"min": float(t.min()), "p50": float(np.median(t)), "p99": float(np.percentile(t, 99))}


def time_fn(fn, iterations, warmup=3):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return stats(out)


def ort(path, threads, iterations, image):
    import onnxruntime as rt
    o = rt.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = rt.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    return time_fn(lambda: s.run(None, {"image": image}), iterations)


def torch_eager(arch, threads, iterations, image):
    import torch
    from make_models import build
    torch.set_num_threads(threads)
    m, _ = build(arch)
    v = m.visual.float().eval()
    x = torch.from_numpy(image)
    with torch.no_grad():
        return time_fn(lambda: v(x), iterations)


def bundle(work, arch, precision):
    out = os.path.join(work, f"{arch}-{precision}")
    if not os.path.exists(os.path.join(out, "manifest.toml")):
        subprocess.run([os.path.join(RELEASE, "clip-quantize"), "build",
                        "--checkpoint", os.path.join(work, f"{arch}.pt"),
                        "--precision", precision,
                        "--labels", os.path.join(ROOT, "models/synthetic/classes.txt"),
                        "--out", out], check=True, stdout=subprocess.DEVNULL)
    return out


def onnx_bundle(work, arch, precision):
    """A bundle built from the Immich-layout folder make_models.py writes
    (the same weights as ONNX), or None without one."""
    src = os.path.join(work, f"{arch}-immich")
    if not os.path.isdir(src):
        return None
    out = os.path.join(work, f"{arch}-onnx-{precision}")
    if not os.path.exists(os.path.join(out, "manifest.toml")):
        subprocess.run([os.path.join(RELEASE, "clip-quantize"), "build",
                        "--checkpoint", src, "--precision", precision,
                        "--labels", os.path.join(ROOT, "models/synthetic/classes.txt"),
                        "--out", out], check=True, stdout=subprocess.DEVNULL)
    return out


def clip_edge(b, engine, threads, iterations):
    r = subprocess.run([os.path.join(RELEASE, "clip-edge"), "bench", "--bundle", b,
                        "--engine", engine, "--threads", str(threads),
                        "--iterations", str(iterations), "--json"],
                       check=True, capture_output=True, text=True)
    v = json.loads(r.stdout)
    e = v["latency_ms"]["encode"]
    return {"min": e.get("min"), "p50": e["p50"], "p99": e["p99"], "peak_rss_kb": v["peak_rss_kb"],
            "allocations_per_frame": v["allocations_per_frame"]["encode"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/peers/models")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--arch", nargs="*", default=["vit_b32", "rn50"])
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip(),
               "rows": []}
    for arch in a.arch:
        b32, b8 = bundle(a.work, arch, "fp32"), bundle(a.work, arch, "int8")
        o8 = onnx_bundle(a.work, arch, "int8")
        for t in a.threads:
            row = {"arch": arch, "threads": t}
            row["ort_fp32"] = ort(os.path.join(a.work, f"{arch}.onnx"), t, a.iterations, image)
            row["ort_int8"] = ort(os.path.join(a.work, f"{arch}.int8.onnx"), t, a.iterations, image)
            row["torch_fp32"] = torch_eager(arch, t, a.iterations, image)
            for eng in ["native", "tract"]:
                row[f"{eng}_fp32"] = clip_edge(b32, eng, t, a.iterations)
                row[f"{eng}_int8"] = clip_edge(b8, eng, t, a.iterations)
            if o8:
                # The file the bundle was built from, in ONNX Runtime.
                row["ort_onnx_fp32"] = ort(os.path.join(a.work, f"{arch}-immich", "visual", "model.onnx"),
                                           t, a.iterations, image)
                row["native_onnx_int8"] = clip_edge(o8, "native", t, a.iterations)
            results["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
    cols = ["ort_fp32", "ort_int8", "torch_fp32", "native_fp32", "native_int8", "tract_fp32", "tract_int8"]
    print(f"{results['date']}, {results['cpu']}: encoder median ms (p99), batch 1\n")
    print("| model | threads | " + " | ".join(cols) + " | native int8 / ORT int8 | native fp32 / ORT fp32 | native int8 / ORT fp32 |")
    print("|" + "---|" * (len(cols) + 5))
    for r in results["rows"]:
        cells = [f"{r[c]['p50']:.1f} ({r[c]['p99']:.1f})" for c in cols]
        ratio = lambda x, y: f"{r[x]['p50'] / r[y]['p50']:.2f}"
        print(f"| {r['arch']} | {r['threads']} | " + " | ".join(cells)
              + f" | {ratio('native_int8', 'ort_int8')} | {ratio('native_fp32', 'ort_fp32')} | {ratio('native_int8', 'ort_fp32')} |")
    print()
    for r in results["rows"]:
        if "native_onnx_int8" in r:
            print(f"{r['arch']} {r['threads']} thread(s), from the Immich-layout ONNX folder: native int8 "
                  f"{r['native_onnx_int8']['p50']:.1f} ms, ONNX Runtime fp32 on the same visual/model.onnx "
                  f"{r['ort_onnx_fp32']['p50']:.1f} ms ({r['native_onnx_int8']['p50'] / r['ort_onnx_fp32']['p50']:.2f}x), "
                  f"ONNX Runtime int8 {r['ort_int8']['p50']:.1f} ms "
                  f"({r['native_onnx_int8']['p50'] / r['ort_int8']['p50']:.2f}x), the checkpoint's int8 bundle "
                  f"{r['native_int8']['p50']:.1f} ms")
    print()
    for r in results["rows"]:
        print(f"{r['arch']} {r['threads']} thread(s): peak RSS native int8 {r['native_int8']['peak_rss_kb'] / 1024:.0f} MB, "
              f"tract fp32 {r['tract_fp32']['peak_rss_kb'] / 1024:.0f} MB; native allocations/frame "
              f"{r['native_fp32']['allocations_per_frame']:.0f} fp32, {r['native_int8']['allocations_per_frame']:.0f} int8")
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
