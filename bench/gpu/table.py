#!/usr/bin/env python3
"""The table scripts/gpu-check prints last: parity per bundle, then the
random ViT-B/32 on our CUDA backend against PyTorch fp16 (same weights, same
GPU, same run), with the issue's targets."""
import json
import os
import sys

d = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(d, "parity.jsonl")) if l.strip()]
print(f"{'bundle':44} {'prec':5} {'cos min':>9} {'top-1':>6} {'batch cos':>10} {'ms b=1':>8} {'img/s b=N':>10}  result")
for r in rows:
    print(f"{str(r['bundle'])[-44:]:44} {r['precision']:5} {r['cosine_min']:9.6f} {r['top1_agreement']:6.2f} "
          f"{r['batch_cosine_min']:10.6f} {r['gpu_ms_batch1']:8.3f} {r['gpu_images_per_s_batch']:10.0f}  "
          f"{'PASS' if r['pass'] else 'FAIL ' + json.dumps(r.get('first_divergent_step'))}")
tp = os.path.join(d, "torch.json")
if not os.path.exists(tp):
    sys.exit(0)
t = json.load(open(tp))
n = t["batch"]
ours = {r["precision"]: r for r in rows if "vit_b32" in str(r["bundle"])}
print(f"\nViT-B/32 on {t['gpu']} (torch {t['torch']}), GPU time per batch (CUDA events):")
print(f"  PyTorch fp16 eager       b=1 {t['batch1']['eager_ms']:.3f} ms   b={n} {t[f'batch{n}']['eager_images_per_s']:.0f} img/s")
print(f"  PyTorch fp16 CUDA graph  b=1 {t['batch1']['graph_ms']:.3f} ms   b={n} {t[f'batch{n}']['graph_images_per_s']:.0f} img/s")
best = max(t[f"batch{n}"]["eager_images_per_s"], t[f"batch{n}"]["graph_images_per_s"])
for p, r in sorted(ours.items()):
    ms, ips = r["gpu_ms_batch1"], r["gpu_images_per_s_batch"]
    print(f"  clip-edge {p:5} (graph)   b=1 {ms:.3f} ms   b={n} {ips:.0f} img/s   "
          f"ratios: {ms / t['batch1']['eager_ms']:.2f}x eager (target <= 0.5), "
          f"{ms / t['batch1']['graph_ms']:.2f}x graph (target <= 1.0), "
          f"{ips / best:.2f}x PyTorch's best img/s at b={n} (target >= 1.0)")
for p, r in sorted(ours.items()):
    for key in ("profile_ms_batch1", "profile_ms_batch"):
        prof = r.get(key) or {}
        top = sorted(prof.items(), key=lambda kv: -kv[1])[:8]
        print(f"  {p} {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in top))
