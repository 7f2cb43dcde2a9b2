#!/usr/bin/env python3
"""Writes the `tokenizer.json` fixture the Rust tests read, and its reference
tokens. Run once by hand:

    pip install tokenizers open_clip_torch
    python3 tests/reference/hf_tokenizer.py

A small SentencePiece-style Unigram tokenizer (as SigLIP's: NFKC, the
Metaspace pre-tokenizer, `</s>` appended, `<pad>` padding) trained with the
Hugging Face `tokenizers` library on the prompts of the CLIP tokenizer
corpus, written to tests/fixtures/hf_tokenizer/ with a tokenizer_config.json
(its class and pad token, as Hugging Face writes them). The reference runs
each corpus text as open_clip's `HFTokenizer` does: the text cleaned by
open_clip's `get_clean_fn(clean)`, then encoded truncated and padded to the
context length (`padding="max_length", truncation=True`), for the context
lengths and cleanings tested. The tests never run Python.
"""
import json
import os

from open_clip.tokenizer import get_clean_fn
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.abspath(os.path.join(HERE, "..", "fixtures"))
OUT = os.path.join(FIX, "hf_tokenizer")
CASES = [("canonicalize", 16), ("whitespace", 8), ("lower", 64)]


def main():
    corpus = [c["text"] for c in json.load(open(os.path.join(FIX, "tokenizer_corpus.json")))]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(corpus, trainer)
    tok.decoder = __import__("tokenizers").decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    os.makedirs(OUT, exist_ok=True)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GemmaTokenizer", "pad_token": "<pad>",
                   "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
    pad = tok.token_to_id("<pad>")
    cases = []
    # Texts ftfy would repair as mojibake are left out: the Rust side
    # implements ftfy's other repairs, not its mojibake detection (see
    # quantize/src/tokenizer.rs).
    plain = [c["text"] for c in json.load(open(os.path.join(FIX, "tokenizer_corpus.json")))
             if not c["mojibake"]]
    texts = plain[:400] + [c for c in plain if not c.isascii()][:100]
    for clean, context in CASES:
        t = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
        t.enable_truncation(max_length=context)
        t.enable_padding(length=context, pad_id=pad, pad_token="<pad>")
        fn = get_clean_fn(clean)
        cases.append({"clean": clean, "context_length": context,
                      "ids": [t.encode(fn(x)).ids for x in texts]})
    with open(os.path.join(FIX, "reference", "hf_tokenizer.json"), "w") as f:
        json.dump({"texts": texts, "cases": cases}, f)
    print(f"{len(texts)} texts, vocabulary {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
