#!/usr/bin/env python3
"""Tiny random transformers models and their reference logits, for worker-llm's parity tests.

For each safetensors architecture worker-llm runs, builds a 2-layer model with a small width but the real
layer layout and the options that matter (grouped-query attention, tied embeddings, sliding windows,
logit soft-capping, partial rotary, q/k norms), saves it under tests/fixtures/llm/tiny/<arch>/ (bf16
safetensors + config.json), runs it in float32 with transformers, and writes reference.json: the prompt
ids, the greedy tokens, and the logits of the prompt's last position and of each decode step (fed one
token at a time through the KV cache, as the engine does).

Run once, by hand, in the reference venv (CI only reads the outputs):
    "$(bash scripts/reference/venv.sh)" scripts/reference/llm_fixtures.py
Pinned: transformers==5.23.0, torch==2.15.0 (checked below so the outputs say what made them).
"""

import json
import os
import sys

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
    Qwen3Config,
    AutoModelForCausalLM,
)

TRANSFORMERS_VERSION = "5.23.0"
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "llm", "tiny")
VOCAB = 256
PROMPT = [1, 17, 42, 99, 3, 250, 7, 64, 128, 5]
DECODE_STEPS = 4
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA everywhere it exists
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# name -> (config class, extra config fields, legacy fields candle reads from config.json)
ARCHS = {
    "llama": (LlamaConfig, dict(rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True), {}),
    "mistral": (
        MistralConfig,
        dict(rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=64, head_dim=16, tie_word_embeddings=False),
        {},
    ),
    "phi": (
        PhiConfig,
        dict(
            num_key_value_heads=4,
            layer_norm_eps=1e-5,
            rope_theta=10000.0,
            partial_rotary_factor=0.5,
            hidden_act="gelu_new",
            qk_layernorm=False,
            tie_word_embeddings=False,
        ),
        dict(partial_rotary_factor=0.5),
    ),
    "phi3": (Phi3Config, dict(rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False), {}),
    # Phi-3's LongRoPE: a prompt longer than the original context, so transformers takes the long
    # factors, as worker-llm does for a context longer than the original; attention factor from 128 / 8.
    "phi3_longrope": (
        Phi3Config,
        dict(
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            original_max_position_embeddings=8,
            rope_parameters=dict(
                rope_type="longrope",
                rope_theta=10000.0,
                short_factor=[1.0, 1.02, 1.05, 1.1, 1.2, 1.4, 1.7, 2.0],
                long_factor=[1.0, 1.3, 1.9, 2.8, 4.1, 6.0, 9.0, 13.0],
                original_max_position_embeddings=8,
            ),
        ),
        {},
    ),
    # Qwen2 with YaRN (factor 4 over an original context of 32: the ramp falls inside the 8 pairs).
    "qwen2_yarn": (
        Qwen2Config,
        dict(
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32),
        ),
        dict(sliding_window=128, max_window_layers=2, use_sliding_window=False),
    ),
    "qwen2": (
        Qwen2Config,
        dict(rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, use_sliding_window=False),
        dict(sliding_window=128, max_window_layers=2, use_sliding_window=False),
    ),
    "qwen3": (
        Qwen3Config,
        dict(rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=16, tie_word_embeddings=True, use_sliding_window=False),
        dict(sliding_window=None, max_window_layers=2, use_sliding_window=False, attention_bias=False),
    ),
    "gemma": (
        GemmaConfig,
        dict(rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=16, hidden_activation="gelu_pytorch_tanh"),
        dict(attention_bias=False, hidden_act=None),
    ),
    "gemma2": (
        Gemma2Config,
        dict(
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            head_dim=16,
            hidden_activation="gelu_pytorch_tanh",
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            query_pre_attn_scalar=16,
            sliding_window=64,
        ),
        dict(attention_bias=False),
    ),
    "gemma3": (
        Gemma3TextConfig,
        dict(
            rms_norm_eps=1e-6,
            head_dim=16,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=16,
            # Longer than the prompt (candle 0.11.1's gemma3 fails to prefill past its window), shorter
            # than prompt + decode: the local layer really slides during decode.
            sliding_window=12,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        ),
        dict(rope_theta=1000000.0, rope_local_base_freq=10000.0, sliding_window_pattern=2, attention_bias=False),
    ),
}


def legacy_fields(cfg: dict, extra: dict) -> dict:
    """transformers 5 moved `rope_theta` into `rope_parameters`; checkpoints candle reads still carry it."""
    rp = cfg.get("rope_parameters")
    if "rope_theta" not in cfg and isinstance(rp, dict) and "rope_theta" in rp:
        cfg["rope_theta"] = rp["rope_theta"]
    cfg.update(extra)
    return {k: v for k, v in cfg.items() if v is not None or k not in extra}


def build(name: str, cls, fields: dict, extra: dict) -> None:
    torch.manual_seed(sum(map(ord, name)))
    config = cls(**{**COMMON, **fields})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            # Wider than the default init so differences show in the logits; bf16-exact so the
            # committed bf16 file is the very model the reference ran.
            p.copy_((torch.randn_like(p) * 0.2).to(torch.bfloat16).to(torch.float32))
    model.eval()
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    model.to(torch.float32)
    for stray in ("generation_config.json",):
        path = os.path.join(folder, stray)
        if os.path.exists(path):
            os.remove(path)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    with open(cfg_path, "w") as f:
        json.dump(legacy_fields(cfg, extra), f, indent=2, sort_keys=True)

    rows, tokens = [], []
    with torch.no_grad():
        out = model(torch.tensor([PROMPT]), use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
        for _ in range(DECODE_STEPS):
            rows.append([round(float(x), 5) for x in logits])
            tok = int(torch.argmax(logits))
            tokens.append(tok)
            out = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
        rows.append([round(float(x), 5) for x in logits])
    ref = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, greedy",
        "prompt": PROMPT,
        "greedy_tokens": tokens,
        "logits": rows,
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f)
    size = sum(os.path.getsize(os.path.join(folder, x)) for x in os.listdir(folder))
    print(f"{name}: {size // 1024} KB, greedy {tokens}")


def main() -> None:
    if transformers.__version__ != TRANSFORMERS_VERSION:
        sys.exit(f"made with transformers {TRANSFORMERS_VERSION}, this is {transformers.__version__}")
    only = set(sys.argv[1:])
    for name, (cls, fields, extra) in ARCHS.items():
        if not only or name in only:
            build(name, cls, fields, extra)


if __name__ == "__main__":
    main()
