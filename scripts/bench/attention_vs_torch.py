"""torch's scaled_dot_product_attention on the self-attention shapes that worker-sd's
`cpu::attention::tests::time_self_attention` times, same thread count (THREADS, default 2): run both, one
after the other, and compare the seconds per call (GF/s counts 4 * b * heads * n^2 * d).

    cargo test -p worker-sd --lib --release cpu::attention::tests::time -- --ignored --nocapture
    THREADS=2 python scripts/bench/attention_vs_torch.py
"""

import os
import time

import torch

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
for b, heads, n, d in [(2, 8, 4096, 40), (1, 24, 1536, 128), (2, 10, 4096, 64), (2, 20, 1024, 64)]:
    q, k, v = (torch.randn(b, heads, n, d) for _ in range(3))
    torch.nn.functional.scaled_dot_product_attention(q, k, v)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        best = min(best, time.perf_counter() - start)
    print(f"({b}, {heads}, {n}, {d}): {best:.3f} s  {4 * b * heads * n * n * d / best / 1e9:.0f} GF/s")
