"""worker-llm on the GPU: SmolLM2 Q4_1 says Paris and its logits match the CPU's; decode tok/s of a 1B
Llama in bf16 (random weights) against the card's memory-bandwidth limit; `serve` at 1 and 32 clients."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from check_common import DECODE_GOAL, FAIL, LOGITS_REL_TOL, MISSED, PASS, REPO, Ctx, Report, log

def check_paris(ctx: Ctx, rep: Report) -> None:
    out, _, _ = ctx.run([ctx.llm(), "generate", "--model-path", ctx.gguf, "--device", ctx.dev, "--chat",
                         # As scripts/demo.sh: with no system message SmolLM2's template adds its own,
                         # and the 135M model then names a landmark instead of the city.
                         "--system", "You are a helpful assistant.",
                         "--prompt", "What is the capital of France?", "--max-tokens", "24",
                         "--temperature", "0"])
    ok = "Paris" in out
    rep.add("llm: SmolLM2 Q4_1 says Paris", PASS if ok else FAIL, repr(out.strip()[:60]), "", ctx.dev)


def check_logits(ctx: Ctx, rep: Report) -> None:
    prompt = "The capital of France is"
    outs = {}
    for dev in ("cpu", ctx.dev):
        out, _, _ = ctx.run([ctx.bins / "logits", ctx.gguf, dev, prompt])
        outs[dev] = json.loads(out)["logits"]
    import numpy as np

    cpu, gpu = np.asarray(outs["cpu"], dtype=np.float64), np.asarray(outs[ctx.dev], dtype=np.float64)
    rel = float(np.max(np.abs(cpu - gpu)) / np.max(np.abs(cpu)))
    same_top = int(cpu.argmax()) == int(gpu.argmax())
    ok = rel <= LOGITS_REL_TOL and same_top and np.isfinite(gpu).all()
    rep.add("llm: logits vs CPU", PASS if ok else FAIL, f"max rel diff {rel:.2e}",
            f"<= {LOGITS_REL_TOL}", f"same top token: {same_top}")


def bandwidth(ctx: Ctx) -> float:
    """Device memory bandwidth in bytes/s: a large device-to-device copy, bytes read plus written."""
    if ctx.dry:
        import numpy as np

        a = np.ones(1 << 25, dtype=np.float32)
        b = np.empty_like(a)
        t0 = time.perf_counter()
        for _ in range(5):
            np.copyto(b, a)
        return 5 * 2 * a.nbytes / (time.perf_counter() - t0)
    import torch

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    secs = start.elapsed_time(end) / 1000
    del a, b
    torch.cuda.empty_cache()
    return 20 * 2 * (1 << 30) / secs


def make_llama(ctx: Ctx) -> tuple[Path, int]:
    """A Llama-3.2-1B-shaped model with random bf16 weights (speed does not depend on the values)."""
    import torch
    from safetensors.torch import save_file

    if ctx.dry:
        cfg = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=2048)
    else:
        cfg = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256)
    h, inter, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"]
    head_dim = h // cfg["num_attention_heads"]
    dev = "cpu" if ctx.dry else "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()

    tensors = {"model.embed_tokens.weight": rand(cfg["vocab_size"], h),
               "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors.update({
            p + "self_attn.q_proj.weight": rand(h, h),
            p + "self_attn.k_proj.weight": rand(kv * head_dim, h),
            p + "self_attn.v_proj.weight": rand(kv * head_dim, h),
            p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(inter, h),
            p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        })
    folder = ctx.work / "llama-1b-random"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if not ctx.dry:
        torch.cuda.empty_cache()
    config = dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama", head_dim=head_dim,
                  hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=500000.0,
                  tie_word_embeddings=True, bos_token_id=0, eos_token_id=cfg["vocab_size"] - 1,
                  torch_dtype="bfloat16", attention_bias=False, mlp_bias=False)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    # Any BPE tokenizer will do for timing: the tiny Flux fixture's CLIP one travels with the repo.
    shutil.copy2(REPO / "tests/fixtures/sd/tiny-flux/dev/tokenizer/tokenizer.json", folder / "tokenizer.json")
    weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return folder, weight_bytes


def check_decode(ctx: Ctx, rep: Report, folder: Path, weight_bytes: int, bw: float) -> None:
    _, err, _ = ctx.run([ctx.llm(), "generate", "--model-path", folder, "--device", ctx.dev,
                         "--prompt", "a red cat sat on the mat", "--max-tokens", "256", "--temperature", "0",
                         "--ignore-eos"])
    m = re.search(r"generation: ([\d.]+) tok/s", err)
    n = re.search(r"generated tokens: (\d+)", err)
    if not m or not n:
        raise RuntimeError(f"no generation figures in: {err.strip()[-300:]}")
    tps, tokens = float(m.group(1)), int(n.group(1))
    limit = bw / weight_bytes
    share = tps / limit
    status = PASS if share >= DECODE_GOAL else MISSED
    rep.add("llm: decode 1B Llama bf16", status, f"{tps:.1f} tok/s ({share:.0%} of limit)",
            f"limit {limit:.0f} tok/s = {bw / 1e12:.2f} TB/s / {weight_bytes / 1e9:.2f} GB",
            f"goal >= {DECODE_GOAL:.0%}; {tokens} tokens")


def check_serve(ctx: Ctx, rep: Report, folder: Path) -> None:
    clients_list = (1, 4) if ctx.dry else (1, 32)
    log_path = ctx.work / "serve.log"
    cmd = [ctx.llm(), "serve", "--model-path", folder, "--device", ctx.dev, "--host", "127.0.0.1", "--port", "0",
           "--concurrency", str(max(clients_list)), "--max-waiting", str(2 * max(clients_list))]
    log("$ " + " ".join(map(str, cmd)))
    with open(log_path, "w") as logf:
        server = subprocess.Popen([str(c) for c in cmd], stdout=logf, stderr=subprocess.STDOUT, env=ctx.env)
    try:
        port, deadline = None, time.monotonic() + min(180, ctx.left())
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"serve exited {server.returncode}: {log_path.read_text()[-600:]}")
            text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text())
            if port is None and (m := re.search(r"address=[\d.]+:(\d+)", text)):
                port = int(m.group(1))
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"serve not ready in time: {log_path.read_text()[-600:]}")

        def complete(max_tokens: int) -> int:
            body = json.dumps({"prompt": "a red cat sat on the mat", "max_tokens": max_tokens,
                               "temperature": 0, "ignore_eos": True}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as r:
                return int(json.load(r)["usage"]["completion_tokens"])

        complete(8)  # warm-up
        figures = []
        for clients in clients_list:
            counts: list[int] = []
            errors: list[str] = []

            def one() -> None:
                try:
                    counts.append(complete(64))
                except Exception as e:  # noqa: BLE001 - reported in the table
                    errors.append(str(e))

            threads = [threading.Thread(target=one) for _ in range(clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            secs = time.monotonic() - t0
            if errors:
                raise RuntimeError(f"{len(errors)} of {clients} requests failed: {errors[0]}")
            figures.append(f"{clients} client(s): {sum(counts) / secs:.1f} tok/s")
        rep.add("llm: serve aggregate", PASS, "; ".join(figures), "", "1B Llama bf16, 64 tokens each")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

