#!/usr/bin/env python3
"""Two clip-edge binaries (before and after a change) and ONNX Runtime on
the same model, in alternating rounds of one run: encoder p50 ms of each
(`clip-edge bench --json`, and run.py's ONNX Runtime session), or with
`--stat min` the fastest frame of each round (on a host whose other guests
take the cores at random, a preempted frame only ever runs longer).

    python3 bench/peers/ab.py --before /tmp/clip-edge-old --after target/release/clip-edge \
        --bundle /tmp/peers/vit_b32-fp32 --onnx /tmp/peers/vit_b32.onnx
"""
import argparse
import json
import subprocess

import numpy as np

from run import ort


def clip_edge(binary, bundle, threads, iterations, stat):
    r = subprocess.run([binary, "bench", "--bundle", bundle, "--threads", str(threads),
                        "--iterations", str(iterations), "--json"],
                       check=True, capture_output=True, text=True)
    v = json.loads(r.stdout)
    if stat not in v["latency_ms"]["encode"]:
        raise SystemExit(f"{binary}: its bench --json has no encode latency {stat!r} "
                         "(a binary from before `min` was added: use --stat p50)")
    return v["latency_ms"]["encode"][stat], v["allocations_per_frame"]["encode"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--before-bundle", help="the bundle the before binary runs (default: --bundle), "
                    "for a change to the quantizer")
    ap.add_argument("--also", nargs="*", default=[], metavar="BUNDLE",
                    help="more bundles the after binary runs in each round (another model to compare with)")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--stat", choices=["p50", "min"], default="p50",
                    help="each round's figure: the median frame, or the fastest")
    ap.add_argument("--resolution", type=int, default=224, help="the model's input side (MobileCLIP2-S0: 256)")
    a = ap.parse_args()
    image = np.random.default_rng(0).standard_normal((1, 3, a.resolution, a.resolution)).astype(np.float32)
    runs = {
        "before": lambda t: clip_edge(a.before, a.before_bundle or a.bundle, t, a.iterations, a.stat),
        "after": lambda t: clip_edge(a.after, a.bundle, t, a.iterations, a.stat),
        "ORT": lambda t: (ort(a.onnx, t, a.iterations, image)[a.stat], None),
    }
    for b in a.also:
        runs[f"after on {b}"] = lambda t, b=b: clip_edge(a.after, b, t, a.iterations, a.stat)
    res = {}
    for rnd in range(a.rounds):
        for t in a.threads:
            for name, fn in runs.items():
                ms, allocs = fn(t)
                res.setdefault((t, name), []).append(ms)
                extra = "" if allocs is None else f", {allocs} allocations a frame"
                print(f"round {rnd + 1}, {t} thread(s), {name}: {a.stat} {ms:.1f} ms{extra}", flush=True)
    for t in a.threads:
        line = ", ".join(f"{n} {' / '.join(f'{v:.1f}' for v in res[(t, n)])}" for n in runs)
        print(f"{t} thread(s), {a.stat}: {line} ms")


if __name__ == "__main__":
    main()
