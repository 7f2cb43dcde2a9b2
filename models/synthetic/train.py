#!/usr/bin/env python3
"""Train the embedded default model: a small OpenAI-architecture CLIP on the
synthetic world of `clip-quantize synth` (48 "<color> <shape>" classes and
"plain background", a background with no shape).

Seeded and deterministic on one machine (torch CPU, 2 threads). Writes, next
to this script:
  clip_rn_synth.pt   TorchScript archive shaped like OpenAI's released files
                     (traced, `convert_weights` fp16 dtypes, input_resolution /
                     context_length / vocab_size buffers)
  train_log.txt      hyperparameters, loss and held-out accuracy over training
  loss.svg           the loss curve

Needs: torch, torchvision, clip-anytorch (`pip install "setuptools<70"
clip-anytorch`), Pillow, and a release build of clip-quantize (the generator is
Rust; this script calls it). About 25 minutes on two x86 cores (2026-11-27:
under 2 minutes to generate and preprocess the images, then about 0.34 s a
step).

    python3 models/synthetic/train.py [--steps 4000] [--work /tmp/synth-train]
"""

import argparse
import math
import os
import subprocess
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from clip.model import CLIP, build_model, convert_weights

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from openai_archive import save_traced  # noqa: E402

TRAIN_SEED = 1
VAL_SEED = 2  # model selection; the committed eval set (seed 3) is never seen here
RESOLUTION = 64
CONFIG = dict(
    embed_dim=256,
    image_resolution=RESOLUTION,
    vision_layers=(1, 1, 1, 1),
    vision_width=32,
    vision_patch_size=None,
    context_length=16,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=3,
)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def read_lines(path):
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


CLASSES = read_lines(os.path.join(HERE, "classes.txt"))
TEMPLATES = read_lines(os.path.join(HERE, "templates.txt"))


def synth(seed, per_class, out):
    if os.path.isdir(out) and sum(len(fs) for _, _, fs in os.walk(out)) == per_class * len(CLASSES):
        return
    exe = os.path.join(ROOT, "target", "release", "clip-quantize")
    if not os.path.exists(exe):
        subprocess.check_call(["cargo", "build", "--release", "-p", "clip-quantize"], cwd=ROOT)
    subprocess.check_call([exe, "synth", "--seed", str(seed), "--per-class", str(per_class), "--out", out])


def load_one(path):
    # CLIP's _transform(n) up to ToTensor: bicubic resize of the shorter side, centre crop.
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize
    im = Image.open(path).convert("RGB")
    im = CenterCrop(RESOLUTION)(Resize(RESOLUTION, interpolation=InterpolationMode.BICUBIC)(im))
    return np.asarray(im, dtype=np.uint8)


def load_set(root, cache):
    if os.path.exists(cache):
        z = np.load(cache)
        return z["x"], z["y"]
    paths, labels = [], []
    for c, name in enumerate(CLASSES):
        d = os.path.join(root, name.replace(" ", "_"))
        for f in sorted(os.listdir(d)):
            paths.append(os.path.join(d, f))
            labels.append(c)
    with Pool(2) as pool:
        x = np.stack(pool.map(load_one, paths, chunksize=64))
    y = np.array(labels, dtype=np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def to_input(x_uint8):
    x = torch.from_numpy(x_uint8).float().div_(255.0)
    x = (x - torch.from_numpy(MEAN)) / torch.from_numpy(STD)
    return x.permute(0, 3, 1, 2).contiguous()


def class_text_features(model, tokens_by_template):
    """Prompt-ensembled, normalised class embeddings [classes, D] (as the bundle's table)."""
    feats = []
    for toks in tokens_by_template:
        f = model.encode_text(toks)
        feats.append(f / f.norm(dim=-1, keepdim=True))
    f = torch.stack(feats).mean(0)
    return f / f.norm(dim=-1, keepdim=True)


@torch.no_grad()
def evaluate(model, x, y, tokens_by_template):
    model.eval()
    t = class_text_features(model, tokens_by_template)
    correct = 0
    for i in range(0, len(x), 256):
        f = model.encode_image(to_input(x[i:i + 256]))
        f = f / f.norm(dim=-1, keepdim=True)
        correct += (f @ t.T).argmax(-1).eq(torch.from_numpy(y[i:i + 256])).sum().item()
    model.train()
    return correct / len(x)


def augment(xb, g):
    # Flips keep every class what it is (diamond tilt and square tilt are symmetric ranges).
    xb = xb.clone()
    h = torch.rand(len(xb), generator=g) < 0.5
    v = torch.rand(len(xb), generator=g) < 0.5
    xb[h] = xb[h].flip(-1)
    xb[v] = xb[v].flip(-2)
    return xb


def save_torchscript(model, path, example_image, example_tokens):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    half_model = CLIP(**CONFIG)
    half_model.load_state_dict(sd)
    convert_weights(half_model)
    hsd = half_model.state_dict()
    save_traced(hsd, RESOLUTION, CONFIG["context_length"], CONFIG["vocab_size"],
                example_image, example_tokens, path)
    return build_model({k: v.clone() for k, v in hsd.items()}).float().eval()


def write_svg(path, steps, losses, accs):
    w, h, pad = 640, 320, 40
    n = max(steps[-1], 1)
    top = max(losses)
    def pt(s, v, vmax):
        return f"{pad + (w - 2 * pad) * s / n:.1f},{h - pad - (h - 2 * pad) * v / vmax:.1f}"
    # smooth the loss over 25 logged points
    k = 25
    sm = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    loss_line = " ".join(pt(s, v, top) for s, v in zip(steps, sm))
    acc_line = " ".join(pt(s, a, 1.0) for s, a in accs)
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{loss_line}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{acc_line}"/>
<text x="{pad}" y="{pad - 10}">training loss (blue, 0..{top:.2f}) and held-out top-1 (red, 0..1) over {n} steps</text>
<text x="{w - pad - 30}" y="{h - pad + 16}">step {n}</text>
</svg>
"""
    with open(path, "w") as f:
        f.write(svg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000, help="step count (the committed checkpoint: 4000)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="with --steps 0: size the run to this time budget from a timed probe")
    ap.add_argument("--per-class", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--work", default="/tmp/synth-train")
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(0)
    os.makedirs(args.work, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    t0 = time.time()
    synth(TRAIN_SEED, args.per_class, os.path.join(args.work, "train"))
    synth(VAL_SEED, 10, os.path.join(args.work, "val"))
    xtr, ytr = load_set(os.path.join(args.work, "train"), os.path.join(args.work, f"train_{args.per_class}.npz"))
    xva, yva = load_set(os.path.join(args.work, "val"), os.path.join(args.work, "val.npz"))
    log(f"data: {len(xtr)} train images (seed {TRAIN_SEED}), {len(xva)} val (seed {VAL_SEED}), "
        f"{RESOLUTION}px, prepared in {time.time() - t0:.0f}s")
    log(f"config: {CONFIG}")
    log(f"templates: {len(TEMPLATES)}; batch {args.batch}; AdamW lr {args.lr} wd 0.1; cosine with warm-up")

    ctx = CONFIG["context_length"]
    caption_tokens = torch.stack([clip.tokenize([t.format(c) for c in CLASSES], context_length=ctx)
                                  for t in TEMPLATES])  # [T, classes, ctx]
    model = CLIP(**CONFIG)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    g = torch.Generator().manual_seed(1234)

    def step_fn(step, total):
        warm = min(200, total // 10)
        lr = args.lr * (step + 1) / warm if step < warm else \
            0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(xtr), (args.batch,), generator=g)
        labels = torch.from_numpy(ytr[idx.numpy()])
        tmpl = torch.randint(0, len(TEMPLATES), (args.batch,), generator=g)
        images = augment(to_input(xtr[idx.numpy()]), g)
        texts = caption_tokens[tmpl, labels]
        fi = model.encode_image(images)
        ft = model.encode_text(texts)
        fi = fi / fi.norm(dim=-1, keepdim=True)
        ft = ft / ft.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * fi @ ft.T
        # Contrastive loss; captions of the same class are all positives.
        same = labels[:, None].eq(labels[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss.item(), lr

    # Time a few steps to size the run from the budget.
    total = args.steps
    if total == 0:
        probe = CLIP(**CONFIG).state_dict()
        t = time.time()
        for s in range(5):
            step_fn(s, 1000)
        per = (time.time() - t) / 5
        model.load_state_dict(probe)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
        total = int(args.minutes * 60 / (per * 1.08))
        log(f"{per:.2f} s/step -> {total} steps for {args.minutes} min")
        g.manual_seed(1234)

    steps, losses, accs = [], [], []
    best = (-1.0, None)
    t = time.time()
    for s in range(total):
        loss, lr = step_fn(s, total)
        steps.append(s + 1)
        losses.append(loss)
        if (s + 1) % 100 == 0 or s + 1 == total:
            acc = evaluate(model, xva, yva, caption_tokens)
            accs.append((s + 1, acc))
            if acc >= best[0]:
                best = (acc, {k: v.clone() for k, v in model.state_dict().items()})
            log(f"step {s + 1}/{total} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} lr {lr:.2e} "
                f"scale {model.logit_scale.exp().item():.1f} val top-1 {acc:.4f} ({time.time() - t:.0f}s)")

    model.load_state_dict(best[1])
    model.eval()
    log(f"kept the checkpoint with the best val top-1: {best[0]:.4f}")
    path = os.path.join(args.out, "clip_rn_synth.pt")
    ref = save_torchscript(model, path, to_input(xva[:1]), caption_tokens[0, :1])
    acc = evaluate(ref, xva, yva, caption_tokens)
    log(f"saved {path} ({os.path.getsize(path)} bytes); fp16-weight reload val top-1 {acc:.4f}")
    log(f"total time {time.time() - t0:.0f}s")
    with open(os.path.join(args.out, "train_log.txt"), "w") as f:
        f.write("\n".join(log_lines) + "\n")
    write_svg(os.path.join(args.out, "loss.svg"), steps, losses, accs)


if __name__ == "__main__":
    sys.exit(main())
