#!/usr/bin/env python3
"""Random-weight ViT-B/32 and RN50 (the OpenAI reference code, seeded), saved
three ways from the same weights for the side-by-side benchmark (run.py):

  WORK/<arch>.pt              an OpenAI-style TorchScript archive (fp16 weights,
                              as OpenAI ships them) for `clip-quantize build`
  WORK/<arch>.onnx            the image encoder in fp32 for ONNX Runtime
  WORK/<arch>.int8.onnx       the same, dynamically quantised (int8 weights per
                              channel, activations per tensor at run time)
  WORK/<arch>-immich/         the same weights as Immich exports open_clip models
                              (visual/ and textual/ ONNX files with normalised
                              outputs, preprocess_cfg.json, config.json), for
                              `clip-quantize build --checkpoint` from ONNX

Needs: pip install torch clip-anytorch onnx onnxruntime (and setuptools<70 for
clip-anytorch's pkg_resources). Run by hand, never in tests or CI:

    python3 bench/peers/make_models.py --work /tmp/peers
"""
import argparse
import os
import sys

import torch
from clip.model import CLIP, convert_weights

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
from openai_archive import save_traced  # noqa: E402

ARCHS = {
    # embed_dim, resolution, vision layers, vision width, patch
    "vit_b32": (512, 224, 12, 768, 32),
    "rn50": (1024, 224, (3, 4, 6, 3), 64, None),
}


def build(arch):
    embed, res, layers, width, patch = ARCHS[arch]
    torch.manual_seed(0)
    m = CLIP(embed, res, layers, width, patch, 77, 49408, 512, 8, 12).eval()
    convert_weights(m)  # fp16 matrices, as in OpenAI's released archives
    return m, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/peers")
    ap.add_argument("--arch", nargs="*", default=list(ARCHS))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    for arch in a.arch:
        m, res = build(arch)
        sd = m.state_dict()
        image = torch.randn(1, 3, res, res)
        tokens = torch.zeros(1, 77, dtype=torch.long)
        if not os.path.exists(os.path.join(a.work, f"{arch}.pt")):
            save_traced(sd, res, 77, 49408, image, tokens, os.path.join(a.work, f"{arch}.pt"))
        visual = m.visual.float().eval()
        onnx_path = os.path.join(a.work, f"{arch}.onnx")
        torch.onnx.export(visual, (image,), onnx_path, input_names=["image"],
                          output_names=["embedding"], opset_version=17, dynamo=False)
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
        # ONNX Runtime's recommended pre-pass (folds the constants that feed
        # convolution weights, which quantize_dynamic needs as initializers).
        pre = os.path.join(a.work, f"{arch}.pre.onnx")
        try:
            quant_pre_process(onnx_path, pre)
        except AssertionError:
            # ONNX Runtime 1.32's symbolic shape inference asserts on the
            # Reshape nodes PyTorch 2.12's exporter writes; the pre-pass
            # without it still folds the constants.
            print(f"{arch}: symbolic shape inference failed; pre-pass without it")
            quant_pre_process(onnx_path, pre, skip_symbolic_shape=True)
        quantize_dynamic(pre, os.path.join(a.work, f"{arch}.int8.onnx"),
                         per_channel=True, weight_type=QuantType.QInt8)
        os.remove(pre)
        if arch.startswith("vit"):
            immich(m.float().eval(), res, os.path.join(a.work, f"{arch}-immich"))
        print(f"{arch}: written to {a.work}")


class Normalised(torch.nn.Module):
    """`encode` with its output L2-normalised, as Immich exports it."""

    def __init__(self, encode):
        super().__init__()
        self.encode = encode

    def forward(self, x):
        e = self.encode(x)
        return e / e.norm(dim=-1, keepdim=True)


def immich(m, res, out):
    import json
    os.makedirs(os.path.join(out, "visual"), exist_ok=True)
    os.makedirs(os.path.join(out, "textual"), exist_ok=True)
    with open(os.path.join(out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump({"size": [res, res], "mode": "RGB",
                   "mean": [0.48145466, 0.4578275, 0.40821073],
                   "std": [0.26862954, 0.26130258, 0.27577711],
                   "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"embed_dim": m.text_projection.shape[1],
                   "vision_cfg": {"image_size": res},
                   "text_cfg": {"context_length": 77}}, f)
    for p in m.parameters():
        p.requires_grad_(False)
    v = Normalised(m.encode_image).eval()
    t = Normalised(m.encode_text).eval()
    torch.onnx.export(v, (torch.randn(1, 3, res, res),), os.path.join(out, "visual", "model.onnx"),
                      input_names=["image"], output_names=["embedding"], opset_version=17,
                      dynamo=False)
    torch.onnx.export(t, (torch.ones(1, 77, dtype=torch.int32),),
                      os.path.join(out, "textual", "model.onnx"), input_names=["text"],
                      output_names=["embedding"], opset_version=17, dynamo=False)


if __name__ == "__main__":
    main()
