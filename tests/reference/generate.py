#!/usr/bin/env python3
"""Writes the reference fixtures the Rust tests read. Run once by hand:

    pip install torch clip-anytorch ftfy regex transformers safetensors numpy pillow "setuptools<70"
    python3 tests/reference/generate.py            # small fixtures, committed
    python3 tests/reference/generate.py --big      # full-size ViT-B/32 + RN50 (tests/fixtures/big/, not committed)

Everything is seeded; the tests never run Python.

Outputs (under tests/fixtures/):
  models/<name>_jit.pt           TorchScript archive, like OpenAI's released files (mixed fp16/fp32)
  models/<name>_sd.pt            torch.save(state_dict) zip of the same weights
  models/vit_tiny_hf.safetensors HuggingFace CLIPModel weights of the tiny ViT
  reference/<name>.json          hyperparameters, prompts, images, logit scale
  reference/<name>_image.npy     encode_image of the images (fp32 PyTorch, unnormalised)
  reference/<name>_text.npy      encode_text of the prompts
  reference/<name>_tokens.npy    clip.tokenize of the prompts
  images/*.png                   images of awkward sizes and modes
  preprocessed/<image>_<n>.npy   reference _transform(n) of each image
  tokenizer_corpus.json          [{"text", "ids", "fits"}]: clip.tokenize(truncate=True) rows
                                 without padding; fits = no truncation was needed
"""
import argparse
import html
import json
import os
import random
import sys

import numpy as np
import ftfy
import torch
from PIL import Image

import clip
from clip.model import CLIP, convert_weights, build_model
from clip.clip import _transform

from openai_archive import save_traced

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "clip"))

TINY = {
    # ViT: 2 heads in both towers (width 128)
    "vit_tiny": dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                     vision_patch_size=8, context_length=77, vocab_size=49408,
                     transformer_width=128, transformer_heads=2, transformer_layers=2),
    # ModifiedResNet: width 16 -> attention pool over 512 channels, 8 heads; text 1 head
    "rn_tiny": dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=49408,
                    transformer_width=64, transformer_heads=1, transformer_layers=2),
}
BIG = {
    "ViT-B-32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, context_length=77, vocab_size=49408,
                 transformer_width=512, transformer_heads=8, transformer_layers=12),
}

PROMPTS = [
    "a photo of a cat.",
    "a diagram",
    "a photo of a dog playing in the snow, taken with an old camera",
    "<|endoftext|> twice <|endoftext|>",
    "ÜBER café — naïve “quotes” ﬁne",
]


def make_model(cfg, seed):
    torch.manual_seed(seed)
    model = CLIP(**cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Token embedding on a coarse grid of values so git compresses the file.
        te = model.token_embedding.weight
        te.copy_(torch.randint(-2, 3, te.shape, generator=g).float() / 128.0)
        # Random BatchNorm statistics and affine parameters.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        # Larger-than-init text projection / logit scale so outputs are not tiny.
        model.logit_scale.fill_(float(np.log(1 / 0.07)))
    convert_weights(model)
    return model.eval()


def save_images():
    """Synthetic images of awkward sizes and every mode the preprocessor handles."""
    os.makedirs(os.path.join(FIX, "images"), exist_ok=True)
    rng = np.random.default_rng(1234)
    out = []

    def smooth(h, w, c):
        # low-frequency content plus noise, so resampling is exercised
        yy, xx = np.mgrid[0:h, 0:w]
        base = []
        for k in range(c):
            fx, fy, ph = rng.uniform(0.01, 0.2, 3)
            v = 127 + 100 * np.sin(xx * fx + ph * 10) * np.cos(yy * fy)
            v = v + rng.normal(0, 25, (h, w))
            base.append(v)
        return np.clip(np.stack(base, -1), 0, 255).astype(np.uint8)

    specs = [
        ("rgb_640x480", "RGB", 640, 480),
        ("rgb_97x301", "RGB", 97, 301),
        ("rgb_225x224", "RGB", 225, 224),
        ("rgb_227x229", "RGB", 227, 229),
        ("rgb_17x13", "RGB", 17, 13),
        ("rgb_1x1", "RGB", 1, 1),
        ("rgb_1000x3", "RGB", 1000, 3),
        ("rgba_333x250", "RGBA", 333, 250),
        ("l_129x400", "L", 129, 400),
        ("la_256x300", "LA", 256, 300),
        ("p_300x200", "P", 300, 200),
        ("bilevel_150x151", "1", 150, 151),
        ("rgb_224x224", "RGB", 224, 224),
    ]
    for name, mode, w, h in specs:
        if mode == "RGB":
            im = Image.fromarray(smooth(h, w, 3), "RGB")
        elif mode == "RGBA":
            a = smooth(h, w, 4)
            a[..., 3] = np.where(rng.random((h, w)) < 0.2, 0, a[..., 3])
            im = Image.fromarray(a, "RGBA")
        elif mode == "L":
            im = Image.fromarray(smooth(h, w, 1)[..., 0], "L")
        elif mode == "LA":
            im = Image.fromarray(smooth(h, w, 2), "LA")
        elif mode == "P":
            im = Image.fromarray(smooth(h, w, 3), "RGB").quantize(colors=37)
        elif mode == "1":
            im = Image.fromarray(smooth(h, w, 1)[..., 0], "L").convert("1")
        path = os.path.join(FIX, "images", name + ".png")
        im.save(path)
        assert Image.open(path).mode == mode, (name, Image.open(path).mode)
        out.append(path)
    return out


def preprocess_all(paths, sizes):
    os.makedirs(os.path.join(FIX, "preprocessed"), exist_ok=True)
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        for n in sizes:
            t = _transform(n)(Image.open(p)).unsqueeze(0).numpy().astype(np.float32)
            np.save(os.path.join(FIX, "preprocessed", f"{stem}_{n}.npy"), t)


def hf_from_openai(model, cfg):
    """The same weights as a HuggingFace CLIPModel (ViT only)."""
    from transformers import CLIPConfig, CLIPModel
    sd = {k: v.float() for k, v in model.state_dict().items()}
    w, tw = cfg["vision_width"], cfg["transformer_width"]
    config = CLIPConfig(
        text_config=dict(vocab_size=cfg["vocab_size"], hidden_size=tw, intermediate_size=4 * tw,
                         num_hidden_layers=cfg["transformer_layers"], num_attention_heads=tw // 64,
                         max_position_embeddings=cfg["context_length"], hidden_act="quick_gelu",
                         layer_norm_eps=1e-5, projection_dim=cfg["embed_dim"]),
        vision_config=dict(hidden_size=w, intermediate_size=4 * w, num_hidden_layers=cfg["vision_layers"],
                           num_attention_heads=w // 64, image_size=cfg["image_resolution"],
                           patch_size=cfg["vision_patch_size"], hidden_act="quick_gelu", layer_norm_eps=1e-5,
                           projection_dim=cfg["embed_dim"]),
        projection_dim=cfg["embed_dim"],
    )
    hf = {}

    def block(src, dst, width):
        q, k, v = sd[src + "attn.in_proj_weight"].split(width)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].split(width)
        hf[dst + "self_attn.q_proj.weight"], hf[dst + "self_attn.k_proj.weight"], hf[dst + "self_attn.v_proj.weight"] = q, k, v
        hf[dst + "self_attn.q_proj.bias"], hf[dst + "self_attn.k_proj.bias"], hf[dst + "self_attn.v_proj.bias"] = qb, kb, vb
        hf[dst + "self_attn.out_proj.weight"] = sd[src + "attn.out_proj.weight"]
        hf[dst + "self_attn.out_proj.bias"] = sd[src + "attn.out_proj.bias"]
        for a, b in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")]:
            hf[dst + b + ".weight"] = sd[src + a + ".weight"]
            hf[dst + b + ".bias"] = sd[src + a + ".bias"]
        for a, b in [("c_fc", "fc1"), ("c_proj", "fc2")]:
            hf[dst + "mlp." + b + ".weight"] = sd[src + "mlp." + a + ".weight"]
            hf[dst + "mlp." + b + ".bias"] = sd[src + "mlp." + a + ".bias"]

    for i in range(cfg["transformer_layers"]):
        block(f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}.", tw)
    for i in range(cfg["vision_layers"]):
        block(f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}.", w)
    hf["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    hf["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    hf["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    hf["text_projection.weight"] = sd["text_projection"].t().contiguous()
    hf["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    hf["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
    hf["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    hf["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
    hf["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
    hf["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    hf["logit_scale"] = sd["logit_scale"].reshape(())
    m = CLIPModel(config)
    missing, unexpected = m.load_state_dict(hf, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    return m.eval(), {k: v.contiguous() for k, v in hf.items()}


def write_model(name, cfg, seed, image_paths, outdir, jit=True, hf=False):
    os.makedirs(outdir, exist_ok=True)
    model = make_model(cfg, seed)
    sd = model.state_dict()
    torch.save(sd, os.path.join(outdir, f"{name}_sd.pt"))
    # fp32 reference, exactly what build_model() + .float() gives a user
    ref = build_model({k: v.clone() for k, v in sd.items()}).float().eval()
    n = cfg["image_resolution"]
    images = torch.cat([_transform(n)(Image.open(p)).unsqueeze(0) for p in image_paths])
    tokens = clip.tokenize(PROMPTS, context_length=cfg["context_length"], truncate=True)
    with torch.no_grad():
        img_emb = ref.encode_image(images).float().numpy()
        txt_emb = ref.encode_text(tokens).float().numpy()
    if jit:
        # Like the released archives: a traced module with the JIT-only buffers.
        save_traced(sd, n, cfg["context_length"], cfg["vocab_size"], images[:1], tokens[:1],
                    os.path.join(outdir, f"{name}_jit.pt"))
        chk = torch.jit.load(os.path.join(outdir, f"{name}_jit.pt"))
        jsd = chk.state_dict()
        for k, v in sd.items():
            assert torch.equal(jsd[k], v) and jsd[k].dtype == v.dtype, k
    if hf:
        from safetensors.torch import save_file
        m, hsd = hf_from_openai(model, cfg)
        with torch.no_grad():
            hi = m.get_image_features(pixel_values=images)
            ht = m.get_text_features(input_ids=tokens)
            hi = getattr(hi, "pooler_output", hi)
            ht = getattr(ht, "pooler_output", ht)
        err_i = (hi.numpy() - img_emb).std() / img_emb.std()
        err_t = (ht.numpy() - txt_emb).std() / txt_emb.std()
        assert err_i < 1e-4 and err_t < 1e-4, (err_i, err_t)
        save_file(hsd, os.path.join(outdir, f"{name}_hf.safetensors"))
    refdir = os.path.join(os.path.dirname(outdir), "reference") if outdir.endswith("models") else outdir
    os.makedirs(refdir, exist_ok=True)
    np.save(os.path.join(refdir, f"{name}_image.npy"), img_emb)
    np.save(os.path.join(refdir, f"{name}_text.npy"), txt_emb)
    np.save(os.path.join(refdir, f"{name}_tokens.npy"), tokens.numpy().astype(np.int64))
    meta = dict(
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        prompts=PROMPTS,
        images=[os.path.relpath(p, ROOT) for p in image_paths],
        logit_scale=float(ref.logit_scale.exp()),
        parameters=int(sum(p.numel() for p in ref.parameters())),
    )
    with open(os.path.join(refdir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)


def tokenizer_corpus():
    rng = random.Random(7)
    classes = [l.strip() for l in open(os.path.join(SHARED, "imagenet_classes.txt")) if l.strip()]
    templates = [l.strip() for l in open(os.path.join(SHARED, "imagenet_templates.txt")) if l.strip()]
    texts = []
    for c in classes:
        texts.append(rng.choice(templates).replace("{}", c) if "{}" in "".join(templates) else c)
        texts.append(c)
    for line in open(os.path.join(SHARED, "prompts.md"), encoding="utf-8"):
        line = line.strip()
        if line and len(texts) < 2600:
            texts.append(line)
    texts += [
        "", " ", "   leading and trailing   ", "tabs\tand\nnewlines\r\nhere", "\x1cfile\x1dgroup\x1erecord\x1funit",
        "non\u00a0breaking\u2003em\u3000ideographic", "A&amp;B", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp; twice",
        "&quot;quoted&quot; &#39;single&#39;", "&eacute;t&eacute; &copy; 2024", "&#x1F600; &#128512;", "&notanentity;",
        "&amp", "caf&eacute", "AT&T", "&#0;&#x80;&#150;", "&#xD800;", "&nbsp;space",
        "I'm you're we've they'll she'd it's don't", "I'M YOU'RE WE'VE", "rock'n'roll", "o'clock",
        "“curly” ‘quotes’ don’t", "ﬁsh ﬂour ﬀ ﬃ", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２３", "Ａｎ ｅｘａｍｐｌｅ！",
        "e\u0301 composed", "Å vs A\u030a", "naïve café résumé", "Straße ĞÜŞİÖÇ", "İstanbul", "ΣΊΣΥΦΟΣ ΟΔΟΣ",
        "Привет мир", "こんにちは世界", "你好，世界", "안녕하세요", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
        "🙂🙃😀 emoji", "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "✨🔥💯", "a 🐱 photo", "I ❤️ NY",
        "12345 numbers 3.14159 1,000,000", "2024-01-01T12:00:00Z", "x²+y²=z²", "½ ¼ ¾", "①②③",
        "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<|STARTOFTEXT|> upper", "<|startoftext|>x<|endoftext|>",
        "hello!!! ??? ... --- ___", "@user #hashtag $100 %50 ^caret *star", "C++ C# F# .NET", "http://example.com/path?q=1",
        "snake_case camelCase PascalCase kebab-case", "wow" * 30, "supercalifragilisticexpialidocious",
        "\u200bzero\u200cwidth\u200djoiners", "soft\u00adhyphen", "tab\u000bvertical\u000cformfeed", "bell\u0007char",
    ]
    words = "the a photo of picture small large red blue dog cat bird car tree house in on with and".split()
    for i in range(150):
        n = rng.randint(40, 120)
        texts.append(" ".join(rng.choice(words) for _ in range(n)))
    alphabet = "abcxyzé€😀ß'’ -.,!?&;#0123456789ÅΣ\t\n<|>ﬁＡ"
    for i in range(300):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
    tok = clip.simple_tokenizer.SimpleTokenizer()
    out = []
    for t in texts:
        ids = tokens_of(tok, t)
        fits = len(ids) <= 77
        row = clip.tokenize([t], context_length=77, truncate=True)[0].tolist()
        while row and row[-1] == 0:
            row.pop()
        # ftfy's mojibake repair (fix_encoding) is not reimplemented: mark the
        # strings where it changes the result so the test can report them apart.
        mojibake = ftfy.fix_text(t) != ftfy.fix_text(t, fix_encoding=False)
        out.append(dict(text=t, ids=row, fits=fits, mojibake=mojibake))
    with open(os.path.join(FIX, "tokenizer_corpus.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print(f"tokenizer corpus: {len(out)} strings")


def html_entities():
    """quantize/data/html5_entities.json: Python's html.unescape table."""
    import html.entities
    with open(os.path.join(ROOT, "quantize", "data", "html5_entities.json"), "w") as f:
        json.dump(html.entities.html5, f, ensure_ascii=False, sort_keys=True, indent=0)


def tokens_of(tok, t):
    return [tok.encoder["<|startoftext|>"]] + tok.encode(t) + [tok.encoder["<|endoftext|>"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--only", choices=["corpus", "entities"], help="regenerate one fixture only")
    args = ap.parse_args()
    if args.only == "corpus":
        return tokenizer_corpus()
    if args.only == "entities":
        return html_entities()
    torch.set_num_threads(2)
    if args.big:
        paths = [os.path.join(FIX, "images", "rgb_640x480.png"), os.path.join(SHARED, "CLIP.png")]
        for i, (name, cfg) in enumerate(BIG.items()):
            write_model(name, cfg, 100 + i, paths, os.path.join(FIX, "big"), jit=True, hf=False)
        return
    paths = save_images()
    preprocess_all(paths, [32, 64])
    preprocess_all([p for p in paths if "640x480" in p or "rgba" in p or "p_300" in p or "97x301" in p], [224])
    # the shared JPEG, reference preprocessing as in the upstream test
    kafka = os.path.join(SHARED, "franz-kafka.jpg")
    t = _transform(224)(Image.open(kafka)).unsqueeze(0).numpy()
    exp = np.load(os.path.join(SHARED, "expected_preprocessed_image.npy"))
    assert np.abs(t - exp).max() < 1e-6, "Pillow here does not reproduce expected_preprocessed_image.npy"
    model_imgs = [p for p in paths if os.path.basename(p).split(".")[0] in
                  ("rgb_640x480", "rgba_333x250", "l_129x400", "p_300x200")]
    write_model("vit_tiny", TINY["vit_tiny"], 1, model_imgs, os.path.join(FIX, "models"), hf=True)
    write_model("rn_tiny", TINY["rn_tiny"], 2, model_imgs, os.path.join(FIX, "models"))
    tokenizer_corpus()
    html_entities()


if __name__ == "__main__":
    sys.exit(main())
