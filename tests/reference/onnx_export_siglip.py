#!/usr/bin/env python3
"""Writes the SigLIP ONNX import fixture the Rust tests read. Run once by
hand, after hf_tokenizer.py (whose tokenizer it uses):

    pip install torch open_clip_torch timm onnx numpy pillow tokenizers
    python3 tests/reference/onnx_export_siglip.py

A tiny SigLIP (open_clip's `ViT-B-16-SigLIP2` architecture: a timm ViT
without a class token, pooled by a MAP attention head; open_clip's text
transformer with SigLIP's settings; random, seeded weights) exported in
Immich's layout (see `onnx_export.py`) with the fixture `tokenizer.json`
(tests/fixtures/hf_tokenizer) as its tokenizer, SigLIP's preprocessing
(bicubic resize of the whole image to the input, no crop: `squash`; mean
and std 0.5) and its reference (tests/fixtures/reference/onnx_siglip_tiny.json).
The tests never run Python.
"""
import os
import shutil
import sys

import open_clip
import timm
import torch
from open_clip.tokenizer import get_clean_fn
from PIL import Image
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_export import (FIX, IMAGES, PROMPTS, Textual, Visual, check_sees_images,  # noqa: E402
                         export_graphs, write_configs, write_reference)

OUT = os.path.join(FIX, "onnx", "siglip_tiny")
TOK = os.path.join(FIX, "hf_tokenizer")
RES = 32
WIDTH = 32
CONTEXT = 16
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def text_cfg(vocab):
    return dict(context_length=CONTEXT, vocab_size=vocab, width=WIDTH, heads=2, layers=2,
                no_causal_mask=True, proj_bias=True, pool_type="last",
                norm_kwargs={"eps": 1e-6}, act_kwargs={"approximate": "tanh"})


def make_model(seed, vocab):
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(
        embed_dim=WIDTH,
        vision_cfg=dict(timm_model_name="vit_base_patch16_siglip_224", timm_model_pretrained=False,
                        timm_pool="map", timm_proj="none", image_size=RES),
        text_cfg=text_cfg(vocab), init_logit_bias=-10)
    # The same tower as `vit_base_patch16_siglip_224`, tiny.
    model.visual.trunk = timm.create_model(
        "vit_base_patch16_siglip_224", img_size=RES, patch_size=8, embed_dim=WIDTH, depth=2,
        num_heads=2, num_classes=0, global_pool="map")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Weights at fan-in scale (timm's 0.02 loses the image), the latent
        # query too.
        for m in model.visual.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
        model.visual.trunk.attn_pool.latent.copy_(
            torch.randn(model.visual.trunk.attn_pool.latent.shape, generator=g))
    return model.float().eval()


def transform():
    from torchvision import transforms as T
    return T.Compose([T.Resize((RES, RES), interpolation=T.InterpolationMode.BICUBIC),
                      lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(MEAN, STD)])


def main():
    torch.set_num_threads(2)
    tok = Tokenizer.from_file(os.path.join(TOK, "tokenizer.json"))
    model = make_model(13, tok.get_vocab_size())
    paths = [os.path.join(FIX, "images", f"{i}.png") for i in IMAGES]
    x = torch.cat([transform()(Image.open(p)).unsqueeze(0) for p in paths])
    config = {
        "embed_dim": WIDTH,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {"image_size": RES, "timm_model_name": "vit_base_patch16_siglip_224",
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": dict(text_cfg(tok.get_vocab_size()), tokenizer_kwargs={"clean": "canonicalize"}),
    }
    pre = {"size": [RES, RES], "mode": "RGB", "mean": list(MEAN), "std": list(STD),
           "interpolation": "bicubic", "resize_mode": "squash", "fill_color": 0}
    write_configs(OUT, config, pre)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(TOK, f), os.path.join(OUT, "textual", f))
    pad = tok.token_to_id("<pad>")
    tok.enable_truncation(max_length=CONTEXT)
    tok.enable_padding(length=CONTEXT, pad_id=pad, pad_token="<pad>")
    clean = get_clean_fn("canonicalize")
    tokens = torch.tensor([tok.encode(clean(p)).ids for p in PROMPTS], dtype=torch.int64)
    with torch.no_grad():
        img = Visual(model)(x).numpy()
        txt = Textual(model)(tokens).numpy()
    check_sees_images(img)
    export_graphs(model, OUT, RES, CONTEXT, torch.int64)
    write_reference("onnx_siglip_tiny", paths, img, txt, tokens,
                    logit_scale=float(model.logit_scale.exp().detach()),
                    logit_bias=float(model.logit_bias.detach()))


if __name__ == "__main__":
    sys.exit(main())
