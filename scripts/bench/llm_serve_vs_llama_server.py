#!/usr/bin/env python3
"""Concurrent streaming clients against `worker-llm serve` and llama.cpp's `llama-server` on the same GGUF.

For each client count (1, 4, 8, 16 by default) each server is started with that many sequences in its batch
(`--concurrency N` / `-np N`), the same threads and the same context per sequence; every client sends a fixed
list of chat prompts of mixed length one after the other (`max_tokens` 128, greedy, end-of-sequence ignored so
every answer has the same length), streaming. Printed per server and as ratios (worker-llm / llama-server):
aggregate output tokens/s, time to first token p50/p95, inter-token latency p50, the server's peak RSS.
With `--busy K`, K busy-looping processes compete for the CPU during the runs (a shared machine).

Only the standard library: run it with any Python 3.9+ (scripts/bench/llm-serve-bench.sh builds both servers).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import http.client

PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Explain in a short paragraph why the sky looks blue during the day and red at sunset, for a curious "
    "ten-year-old who likes science.",
    "List three fruits.",
    "Summarise the plot of a detective story in which a missing painting is found in the last place anyone "
    "would look, in a few sentences, keeping the twist for the end. Mention the detective's name, the city, "
    "the museum, and the clue that solved the case.",
    "Translate 'good morning' into Spanish.",
    "Give advice to someone learning to cook their first dinner for friends, in a friendly tone.",
    "What is 12 times 12?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server on port {port} was not ready within {timeout} s")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one_request(port: int, prompt: str, max_tokens: int, result: list) -> None:
    body = json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:300]!r}")
    times, usage, buffer = [], None, b""
    while True:
        chunk = response.read1(65536) if hasattr(response, "read1") else response.read(1)
        if not chunk:
            break
        now = time.perf_counter()
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    continue
                parsed = json.loads(data)
                if parsed.get("usage"):
                    usage = parsed["usage"]
                for choice in parsed.get("choices", []):
                    if (choice.get("delta") or {}).get("content"):
                        times.append(now)
    if not times:
        raise RuntimeError("no token streamed")
    tokens = usage["completion_tokens"] if usage else len(times)
    result.append({"ttft": times[0] - start, "itl": [b - a for a, b in zip(times, times[1:])], "tokens": tokens})


def drive(port: int, clients: int, rounds: int, max_tokens: int) -> dict:
    results, errors = [], []

    def client(i: int) -> None:
        try:
            for r in range(rounds):
                one_request(port, PROMPTS[(i + r) % len(PROMPTS)], max_tokens, results)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client errors, first: {errors[0]}")
    ttfts = sorted(r["ttft"] for r in results)
    itls = [x for r in results for x in r["itl"]]
    q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return {
        "tok_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50": q(ttfts, 0.5),
        "ttft_p95": q(ttfts, 0.95),
        "itl_p50": statistics.median(itls) if itls else float("nan"),
    }


def run_server(cmd: list, port: int, ready_path: str, clients: int, rounds: int, max_tokens: int) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, ready_path, proc)
        drive(port, 1, 1, 8)  # warm-up
        figures = drive(port, clients, rounds, max_tokens)
        figures["rss_mib"] = peak_rss_mib(proc.pid)
        return figures
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--worker", required=True, help="the worker-llm binary")
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ctx-per-seq", type=int, default=1024)
    ap.add_argument("--busy", type=int, default=0, help="busy-looping processes competing for the CPU")
    ap.add_argument("--kv-bytes-per-token", type=int, default=30 * 2 * 192 * 2,
                    help="f16 KV bytes per token of the model (SmolLM2-135M: 23040)")
    args = ap.parse_args()

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), RUST_LOG="warn")
    rows = []
    try:
        for n in [int(c) for c in args.clients.split(",")]:
            kv_mib = max(1, -(-n * args.ctx_per_seq * args.kv_bytes_per_token // (1 << 20)))
            port = free_port()
            ours = run_server(
                [args.worker, "serve", "--model-path", args.model, "--port", str(port), "--concurrency", str(n),
                 "--max-waiting", str(4 * n), "--kv-cache-mib", str(kv_mib)],
                port, "/ready", n, args.rounds, args.max_tokens)
            port = free_port()
            theirs = run_server(
                [args.llama_server, "-m", args.model, "--port", str(port), "-np", str(n), "-t", str(args.threads),
                 "-c", str(n * args.ctx_per_seq), "--no-webui"],
                port, "/health", n, args.rounds, args.max_tokens)
            rows.append((n, ours, theirs))
            print(f"{n} clients done", file=sys.stderr, flush=True)
    finally:
        for p in busy:
            p.kill()

    print(f"model {os.path.basename(args.model)}, {args.threads} threads, {args.max_tokens} tokens per request, "
          f"{args.rounds} requests per client, {args.busy} competing busy process(es)")
    head = f"{'clients':>7} {'':13} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'peak RSS':>9}"
    print(head)
    for n, ours, theirs in rows:
        for name, f in (("worker-llm", ours), ("llama-server", theirs)):
            print(f"{n:>7} {name:13} {f['tok_s']:8.1f} {f['ttft_p50'] * 1e3:7.0f}ms {f['ttft_p95'] * 1e3:7.0f}ms "
                  f"{f['itl_p50'] * 1e3:6.1f}ms {f['rss_mib']:6.0f}MiB")
        r = {k: ours[k] / theirs[k] if theirs[k] else float("nan") for k in ours}
        print(f"{n:>7} {'ratio':13} {r['tok_s']:7.2f}x {r['ttft_p50']:8.2f}x {r['ttft_p95']:8.2f}x "
              f"{r['itl_p50']:7.2f}x {r['rss_mib']:8.2f}x")
    single = rows[0][1]["tok_s"] if rows and rows[0][0] == 1 else None
    if single:
        for n, ours, _ in rows[1:]:
            print(f"worker-llm at {n} clients: {ours['tok_s'] / single:.2f}x its single-client throughput")


if __name__ == "__main__":
    main()
