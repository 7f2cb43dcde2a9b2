#!/usr/bin/env python3
"""Error of f16 accumulation on an MLP-sized dot product (K = 3072), the case
tract's arm64 fp16 kernels hit. Quoted in the README; not a test."""
import numpy as np

rng = np.random.default_rng(0)
K, N = 3072, 64
x = rng.normal(0, 1, (N, K)).astype(np.float16)  # activations after GELU, O(1)
w = rng.normal(0, 0.02, (K,)).astype(np.float16)  # c_proj-like weights
ref = x.astype(np.float64) @ w.astype(np.float64)
rel = lambda a: np.linalg.norm(a - ref) / np.linalg.norm(ref)
f32 = x.astype(np.float32) @ w.astype(np.float32)
acc8 = np.zeros((N, 8), np.float16)
for k in range(0, K, 8):  # 8 f16 lanes, rounded to f16 after every FMA
    acc8 = (acc8.astype(np.float32) + x[:, k:k + 8].astype(np.float32) * w[k:k + 8].astype(np.float32)).astype(np.float16)
print(f"f32 accumulation: relative error {rel(f32):.1e}")
print(f"f16 accumulation (8 lanes): relative error {rel(acc8.astype(np.float32).sum(1)):.1e}")
