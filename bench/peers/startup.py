#!/usr/bin/env python3
"""Start-up side by side: process start to the first classification, and
the peak RSS of that process, for

  clip-edge (graph)     `clip-edge classify` lowering the bundle's graph
                        (CLIP_EDGE_CACHE=off: the path without a section)
  clip-edge (section)   the same with the bundle's native section saved
                        (a warm cache folder, as on every start after the first)
  clip-edge (shipped)   with --lean: the board build (no tract) reading the
                        section `clip-quantize sections` ships in a copy of
                        the bundle, for this CPU's kernel path
  onnxruntime           a fresh Python process that imports onnxruntime and
                        numpy, opens a session on the int8 ONNX file of the
                        same weights, preprocesses the image and runs it once

run alternately ROUNDS times (so that a neighbour's load on a shared VM
falls on all three alike). Needs the files make_models.py writes and a
release build:

    python3 bench/peers/make_models.py --work /tmp/peers --arch vit_b32
    clip-quantize build --checkpoint /tmp/peers/vit_b32.pt --precision int8 \\
        --labels models/synthetic/classes.txt --out /tmp/peers/vit_b32-int8
    python3 bench/peers/startup.py --work /tmp/peers --clip-edge target/release/clip-edge \
        [--lean dist/clip-edge-x86_64-unknown-linux-gnu --clip-quantize target/release/clip-quantize]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
# The release build: $CARGO_TARGET_DIR/release when set, else target/release.
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")

ORT_SNIPPET = r"""
import sys
import numpy as np
import onnxruntime as ort
from PIL import Image
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
im = Image.open(sys.argv[2]).convert("RGB")
w, h = im.size
r = 224 / min(w, h)
im = im.resize((round(w * r), round(h * r)), Image.BICUBIC)
w, h = im.size
l, t = (w - 224) // 2, (h - 224) // 2
x = np.asarray(im.crop((l, t, l + 224, t + 224)), dtype=np.float32) / 255.0
x = (x - [0.48145466, 0.4578275, 0.40821073]) / [0.26862954, 0.26130258, 0.27577711]
x = x.transpose(2, 0, 1)[None].astype(np.float32)
e = s.run(None, {s.get_inputs()[0].name: x})[0]
print(float(e[0, 0]))
"""


def run(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/peers")
    ap.add_argument("--arch", default="vit_b32")
    ap.add_argument("--clip-edge", default=os.path.join(RELEASE, "clip-edge"))
    ap.add_argument("--image", default=os.path.join(ROOT, "models/clips/yard/00000.jpg"))
    ap.add_argument("--lean", help="the board build of clip-edge (scripts/build-release)")
    ap.add_argument("--clip-quantize", default=os.path.join(RELEASE, "clip-quantize"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    bundle = os.path.join(a.work, f"{a.arch}-int8")
    onnx = os.path.join(a.work, f"{a.arch}.int8.onnx")
    image = a.image
    cache = tempfile.mkdtemp(prefix="clip-edge-startup-")
    os.chmod(cache, 0o700)
    env = dict(os.environ, RUST_LOG="error")
    classify = [a.clip_edge, "classify", "--bundle", bundle, image]
    # The first run saves the section; the later ones read it.
    run(classify, dict(env, CLIP_EDGE_CACHE=cache))
    rows = {"clip-edge (graph)": [], "clip-edge (section)": [], "onnxruntime": []}
    if a.lean:
        shipped = os.path.join(cache, "shipped")
        subprocess.run(["cp", "-r", bundle, shipped], check=True)
        info = subprocess.run([a.clip_edge, "info", "--json", "--bundle", bundle],
                              check=True, capture_output=True, text=True)
        kernels = json.loads(info.stdout)["kernels"]
        subprocess.run([a.clip_quantize, "sections", shipped, "--kernels", kernels],
                       check=True, capture_output=True)
        lean = [a.lean, "classify", "--bundle", shipped, image]
        rows["clip-edge (shipped)"] = []
    for _ in range(a.rounds):
        rows["clip-edge (graph)"].append(run(classify, dict(env, CLIP_EDGE_CACHE="off")))
        rows["clip-edge (section)"].append(run(classify, dict(env, CLIP_EDGE_CACHE=cache)))
        if a.lean:
            rows["clip-edge (shipped)"].append(run(lean, dict(env, CLIP_EDGE_CACHE="off")))
        rows["onnxruntime"].append(run(["python3", "-c", ORT_SNIPPET, onnx, image], env))
    section = [f for f in os.listdir(cache) if f.endswith(".section")]
    if a.lean:
        subprocess.run(["rm", "-rf", shipped], check=True)
    packed = os.path.getsize(os.path.join(cache, section[0])) if section else 0
    out = {
        "machine": platform.processor() or platform.machine(),
        "rounds": a.rounds,
        "section_bytes": packed,
        "rows": {
            k: {
                "wall_s_median": statistics.median(w for w, _ in v),
                "wall_s_min": min(w for w, _ in v),
                "wall_s_max": max(w for w, _ in v),
                "peak_rss_mb_median": statistics.median(r for _, r in v),
            }
            for k, v in rows.items()
        },
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{a.arch} int8, {a.rounds} rounds alternating; section {packed / 1e6:.1f} MB")
    print(f"{'':22} {'wall s (median, min-max)':>28} {'peak RSS MB':>12}")
    for k, r in out["rows"].items():
        print(f"{k:22} {r['wall_s_median']:>12.3f} ({r['wall_s_min']:.3f}-{r['wall_s_max']:.3f})"
              f" {r['peak_rss_mb_median']:>12.1f}")


if __name__ == "__main__":
    main()
