#!/usr/bin/env python3
"""Writes the ONNX import fixture the Rust tests read. Run once by hand:

    pip install torch clip-anytorch onnx numpy pillow "setuptools<70"
    python3 tests/reference/onnx_export.py

A tiny OpenAI-architecture CLIP (random, seeded weights) exported as Immich
exports open_clip models: one folder with

  config.json                   the model config (open_clip's keys)
  visual/model.onnx             image [1,3,R,R] f32 -> embedding [1,E], L2-normalised
  visual/preprocess_cfg.json    size, mode, mean, std, interpolation, resize_mode, fill_color
  textual/model.onnx            text [1,77] int32 -> embedding [1,E], L2-normalised

and the PyTorch reference (tests/fixtures/reference/onnx_vit_tiny.json): the
images' and prompts' normalised embeddings, fp32. The tests never run Python.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

import clip
from clip.clip import _transform
from clip.model import CLIP

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "onnx", "vit_tiny")

CFG = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
           vision_patch_size=8, context_length=77, vocab_size=49408,
           transformer_width=32, transformer_heads=2, transformer_layers=2)
PROMPTS = ["a photo of a cat.", "a diagram", "a dog playing in the snow", "ÜBER café"]
IMAGES = ["rgb_640x480", "rgba_333x250", "l_129x400", "p_300x200"]
OPSET = 17
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def make_model(seed):
    torch.manual_seed(seed)
    model = CLIP(**CFG)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # The token embedding on a coarse grid of values, so git compresses
        # the textual graph (49408 rows).
        te = model.token_embedding.weight
        te.copy_(torch.randint(-2, 3, te.shape, generator=g).float() / 128.0)
        # The class token starts at zero (its embedding and position), so
        # that what it carries out is what it gathered from the patches:
        # random towers are otherwise nearly blind to the image.
        model.visual.class_embedding.zero_()
        model.visual.positional_embedding[0].zero_()
    return model.float().eval()


class Visual(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, image):
        e = self.m.encode_image(image)
        return e / e.norm(dim=-1, keepdim=True)


class Textual(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, text):
        e = self.m.encode_text(text)
        return e / e.norm(dim=-1, keepdim=True)


def write_configs(out, config, pre):
    """config.json and visual/preprocess_cfg.json, as Immich writes them."""
    os.makedirs(os.path.join(out, "visual"), exist_ok=True)
    os.makedirs(os.path.join(out, "textual"), exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump(pre, f, indent=2)


def export_graphs(model, out, res, context, token_dtype=torch.int32):
    """visual/model.onnx and textual/model.onnx, outputs normalised."""
    torch.onnx.export(Visual(model), (torch.randn(1, 3, res, res),),
                      os.path.join(out, "visual", "model.onnx"), input_names=["image"],
                      output_names=["embedding"], opset_version=OPSET, dynamo=False)
    torch.onnx.export(Textual(model), (torch.ones(1, context, dtype=token_dtype),),
                      os.path.join(out, "textual", "model.onnx"), input_names=["text"],
                      output_names=["embedding"], opset_version=OPSET, dynamo=False)


def check_sees_images(img):
    """The fixture must see the image: embeddings that differ between
    images."""
    cos = img @ img.T
    off = cos[~np.eye(len(img), dtype=bool)]
    print(f"image cosines between different images: max {off.max():.4f}")
    assert off.max() < 0.99, "the tiny tower is blind to the image"


def write_reference(name, paths, img, txt, tokens, **extra):
    """tests/fixtures/reference/{name}.json: what PyTorch computed."""
    ref = {
        "images": [os.path.relpath(p, ROOT) for p in paths],
        "prompts": PROMPTS,
        "image_embeddings": img.tolist(),
        "text_embeddings": txt.tolist(),
        "tokens": tokens.tolist(),
        **extra,
    }
    with open(os.path.join(FIX, "reference", f"{name}.json"), "w") as f:
        json.dump(ref, f)


def main():
    torch.set_num_threads(2)
    model = make_model(7)
    n = CFG["image_resolution"]
    config = {
        "embed_dim": CFG["embed_dim"],
        "vision_cfg": {"image_size": n, "layers": CFG["vision_layers"],
                       "width": CFG["vision_width"], "patch_size": CFG["vision_patch_size"]},
        "text_cfg": {"context_length": CFG["context_length"], "vocab_size": CFG["vocab_size"],
                     "width": CFG["transformer_width"], "heads": CFG["transformer_heads"],
                     "layers": CFG["transformer_layers"]},
    }
    pre = {"size": [n, n], "mode": "RGB", "mean": list(MEAN), "std": list(STD),
           "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    write_configs(OUT, config, pre)
    export_graphs(model, OUT, n, CFG["context_length"])
    paths = [os.path.join(FIX, "images", f"{i}.png") for i in IMAGES]
    with torch.no_grad():
        x = torch.cat([_transform(n)(Image.open(p)).unsqueeze(0) for p in paths])
        img = Visual(model)(x).numpy()
        tokens = clip.tokenize(PROMPTS, context_length=CFG["context_length"]).int()
        txt = Textual(model)(tokens).numpy()
    check_sees_images(img)
    write_reference("onnx_vit_tiny", paths, img, txt, tokens)


if __name__ == "__main__":
    sys.exit(main())
