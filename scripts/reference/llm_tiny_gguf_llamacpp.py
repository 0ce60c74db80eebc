#!/usr/bin/env python3
"""llama.cpp's logits on the tiny random GGUFs of tests/fixtures/llm/gguf/, for tests/tiny_gguf_llamacpp.rs.

The GGUFs (llama, qwen2, qwen3, phi3, gemma3, and phi3 with LongRoPE factors; 2 layers, mixed GGML types, a SentencePiece vocabulary of 300)
are written by the repo's own writer, `cargo run -p worker-llm --example tiny_gguf -- tests/fixtures/llm/gguf`.
For each, llama.cpp evaluates a fixed 8-token prompt, then decodes greedily; the whole logit row (300 values)
of the prompt's last position and of each decode step is recorded.
Output: tests/fixtures/llm/gguf/llamacpp.json.

Run once, by hand (CI only reads the output):
    cargo run -p worker-llm --example tiny_gguf -- tests/fixtures/llm/gguf
    "$(bash scripts/reference/venv.sh)" scripts/reference/llm_tiny_gguf_llamacpp.py
Pinned: llama-cpp-python==0.3.36 (built from source), checked below.
"""

import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

VERSION = "0.3.36"
HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "..", "tests", "fixtures", "llm", "gguf")
ARCHS = ["llama", "qwen2", "qwen3", "phi3", "gemma3", "phi3_longrope"]
PROMPT = [1, 17, 42, 299, 5, 8, 100, 200]
STEPS = 3


def run(path: str) -> dict:
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True, verbose=False)
    llm.reset()
    llm.eval(PROMPT)
    rows, tokens = [], []
    for step in range(STEPS + 1):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        rows.append([round(float(x), 5) for x in logits])
        if step == STEPS:
            break
        tok = int(np.argmax(logits))
        tokens.append(tok)
        llm.eval([tok])
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {"sha256": sha, "greedy_tokens": tokens, "logits": rows}


def main() -> None:
    if llama_cpp.__version__ != VERSION:
        sys.exit(f"made with llama-cpp-python {VERSION}, this is {llama_cpp.__version__}")
    ref = {
        "source": f"llama-cpp-python {VERSION} (llama.cpp, CPU, 2 threads)",
        "prompt": PROMPT,
        "models": {arch: run(os.path.join(DIR, f"{arch}.gguf")) for arch in ARCHS},
    }
    out = os.path.join(DIR, "llamacpp.json")
    with open(out, "w") as f:
        json.dump(ref, f, indent=None, separators=(",", ":"))
        f.write("\n")
    for arch, r in ref["models"].items():
        print(f"{arch}: greedy {r['greedy_tokens']}, largest logit {max(map(abs, r['logits'][0])):.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
