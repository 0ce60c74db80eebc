#!/usr/bin/env python3
"""worker-llm against llama.cpp on the same GGUF, prompt and thread count, side by side.

Prints prefill tokens/s, decode tokens/s, time to first token and peak RSS for both, and the ratios
(ours / llama.cpp; above 1 is better for speeds, below 1 is better for time and memory). Each side runs in
its own process (so peak RSS is its own), `--runs` times; the best run of each is reported.

    bash scripts/bench/llm-bench.sh            # builds worker-llm (release) and runs this
    "$(bash scripts/reference/venv.sh)" scripts/bench/llm_vs_llamacpp.py --model PATH.gguf --threads 2

Needs llama-cpp-python==0.3.36 in the Python that runs it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden press. Within a few decades"
)


def llamacpp_child(model: str, threads: int, max_tokens: int) -> None:
    """Runs in a child process: one llama.cpp generation, figures printed as JSON."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - start
    tok = int(llm.scores[llm.n_tokens - 1].argmax())
    first = time.perf_counter()
    for _ in range(max_tokens - 1):
        llm.eval([tok])
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
    decode = time.perf_counter() - first
    print(json.dumps({
        "prompt_tokens": len(ids),
        "prefill_tps": len(ids) / prefill,
        "ttft_ms": (first - start) * 1000,
        "decode_tps": (max_tokens - 1) / decode,
    }))


def run(cmd, env=None):
    """Runs `cmd`, returning (stdout, stderr, peak RSS in MiB of that very process)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{err}")
    return out, err, usage.ru_maxrss / 1024


def ours(binary: str, model: str, threads: int, max_tokens: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [binary, "generate", "--model-path", model, "--prompt", PROMPT, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--ignore-eos"]
    _, err, rss = run(cmd, env)
    m = re.search(r"prompt tokens: (\d+), generated tokens: (\d+)", err)
    f = re.search(r"prefill: ([\d.]+) tok/s, time to first token: ([\d.]+) ms, generation: ([\d.]+) tok/s", err)
    if not (m and f):
        sys.exit(f"unexpected worker-llm output:\n{err}")
    return {"prompt_tokens": int(m[1]), "prefill_tps": float(f[1]), "ttft_ms": float(f[2]),
            "decode_tps": float(f[3]), "rss_mib": rss}


def llamacpp(model: str, threads: int, max_tokens: int) -> dict:
    out, _, rss = run([sys.executable, __file__, "--child", "--model", model, "--threads", str(threads),
                       "--max-tokens", str(max_tokens)])
    return {**json.loads(out), "rss_mib": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", default="target/release/worker-llm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return llamacpp_child(a.model, a.threads, a.max_tokens)

    best = {}
    for name, fn in (("llama.cpp", lambda: llamacpp(a.model, a.threads, a.max_tokens)),
                     ("worker-llm", lambda: ours(a.binary, a.model, a.threads, a.max_tokens))):
        runs = [fn() for _ in range(a.runs)]
        best[name] = {
            "prompt_tokens": runs[0]["prompt_tokens"],
            "prefill_tps": max(r["prefill_tps"] for r in runs),
            "decode_tps": max(r["decode_tps"] for r in runs),
            "ttft_ms": min(r["ttft_ms"] for r in runs),
            "rss_mib": max(r["rss_mib"] for r in runs),
        }
    w, l = best["worker-llm"], best["llama.cpp"]
    print(f"model: {os.path.basename(a.model)}, threads: {a.threads}, prompt tokens: {w['prompt_tokens']} "
          f"(llama.cpp {l['prompt_tokens']}), generated: {a.max_tokens}, best of {a.runs}")
    print(f"{'':18}{'worker-llm':>12}{'llama.cpp':>12}{'ratio':>8}")
    for key, label in (("prefill_tps", "prefill tok/s"), ("decode_tps", "decode tok/s"),
                       ("ttft_ms", "TTFT ms"), ("rss_mib", "peak RSS MiB")):
        print(f"{label:18}{w[key]:12.1f}{l[key]:12.1f}{w[key] / l[key]:8.2f}")


if __name__ == "__main__":
    main()
