#!/usr/bin/env python3
"""Writes the MobileCLIP ONNX import fixture the Rust tests read. Run once by
hand:

    pip install torch open_clip_torch timm onnx numpy pillow
    python3 tests/reference/onnx_export_mobileclip.py

A tiny MobileCLIP2 (open_clip's `MobileCLIP2-S0` architecture: a timm FastViT
`fastvit_mci0` image tower with fewer and narrower blocks, open_clip's text
transformer without a causal mask; random, seeded weights), re-parameterised
for inference as MobileCLIP deploys it, exported in Immich's layout (see
`onnx_export.py`), with MobileCLIP's preprocessing: bilinear resize of the
short side, centre crop, mean 0 and std 1. The PyTorch reference goes to
tests/fixtures/reference/onnx_mobileclip_tiny.json. The tests never run
Python.
"""
import os
import sys

import open_clip
import timm
import torch
from PIL import Image
from timm.utils.model import reparameterize_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_export import (FIX, IMAGES, PROMPTS, Textual, Visual, check_sees_images,  # noqa: E402
                         export_graphs, write_configs, write_reference)

OUT = os.path.join(FIX, "onnx", "mobileclip_tiny")
RES = 64
EMBED = 32
CONTEXT = 77
TEXT = dict(context_length=CONTEXT, vocab_size=49408, width=32, heads=2, layers=2,
            no_causal_mask=True)
TRUNK = dict(layers=(1, 1, 2, 1), embed_dims=(8, 16, 32, 64))
MEAN = (0.0, 0.0, 0.0)
STD = (1.0, 1.0, 1.0)


def make_model(seed):
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(
        embed_dim=EMBED,
        vision_cfg=dict(timm_model_name="fastvit_mci0", timm_model_pretrained=False,
                        timm_pool="avg", timm_proj=None, image_size=RES),
        text_cfg=TEXT)
    # The same tower as `fastvit_mci0`, fewer and narrower blocks.
    model.visual.trunk = timm.create_model("fastvit_mci0", num_classes=EMBED,
                                           global_pool="avg", **TRUNK)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        te = model.text.token_embedding.weight
        te.copy_(torch.randint(-2, 3, te.shape, generator=g).float() / 128.0)
        # timm initialises weights at std 0.02, which loses the image
        # within a few stages: fan-in scaling keeps the signal.
        for m in model.visual.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
        for name, p in model.visual.named_parameters():
            # Layer scales start at 1e-5, which would leave every block an
            # identity: give them weight, so that the test sees the blocks.
            if "layer_scale" in name or name.endswith(".gamma"):
                p.copy_(0.3 + 0.4 * torch.rand(p.shape, generator=g))
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    model = model.float().eval()
    return reparameterize_model(model).eval()


def center_head(model, x):
    """Sets the head's bias so that the images' embeddings are centred: the
    part every image shares would otherwise dominate a random tower's
    embedding (cosines between different images near 1)."""
    trunk = model.visual.trunk
    with torch.no_grad():
        pooled = trunk.forward_head(trunk.forward_features(x), pre_logits=True)
        fc = trunk.head.fc
        fc.bias.copy_(-(pooled.mean(0) @ fc.weight.T))


def transform():
    from torchvision import transforms as T
    return T.Compose([T.Resize(RES, interpolation=T.InterpolationMode.BILINEAR),
                      T.CenterCrop(RES), lambda im: im.convert("RGB"), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def main():
    torch.set_num_threads(2)
    model = make_model(11)
    paths = [os.path.join(FIX, "images", f"{i}.png") for i in IMAGES]
    x = torch.cat([transform()(Image.open(p)).unsqueeze(0) for p in paths])
    center_head(model, x)
    config = {
        "embed_dim": EMBED,
        "vision_cfg": {"timm_model_name": "fastvit_mci0", "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": None, "image_size": RES},
        "text_cfg": TEXT,
        "custom_text": True,
    }
    pre = {"size": [RES, RES], "mode": "RGB", "mean": list(MEAN), "std": list(STD),
           "interpolation": "bilinear", "resize_mode": "shortest", "fill_color": 0}
    write_configs(OUT, config, pre)
    tokenizer = open_clip.get_tokenizer("MobileCLIP2-S0")
    with torch.no_grad():
        img = Visual(model)(x).numpy()
        tokens = tokenizer(PROMPTS, context_length=CONTEXT).int()
        txt = Textual(model)(tokens).numpy()
    check_sees_images(img)
    # Exported after the reference is taken: tracing FastViT for the export
    # changes what the PyTorch module computes afterwards.
    export_graphs(model, OUT, RES, CONTEXT)
    write_reference("onnx_mobileclip_tiny", paths, img, txt, tokens)


if __name__ == "__main__":
    sys.exit(main())
