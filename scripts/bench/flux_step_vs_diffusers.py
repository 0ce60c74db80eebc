"""worker-sd against diffusers on a Flux transformer at FLUX.1-dev's real widths, per transformer call.

    bash scripts/bench/flux-step-bench.sh [--size 512] [--calls 3] [--rounds 1] [--double 1] [--single 2]

The whole FLUX.1-dev transformer (12B parameters: 19 double-stream and 38 single-stream blocks) does not fit
in this machine's 24 GiB in float32 beside torch, so this builds (once, cached in FLUX_BENCH_DIR, default
~/.cache/omc-bench/flux-D-S) a diffusers `transformer/` folder with FLUX.1-dev's widths (3072 wide, 24 heads
of 128, 4096-wide T5 states, 768-wide pooled CLIP, guidance input, rotary axes 16/56/56) but only --double
double-stream and --single single-stream blocks, random weights (seed 0; speed does not depend on the
values), float32 safetensors. Each side then times, in its own process with the same thread count (THREADS),
one transformer call at --size pixels ((size/16)^2 image tokens) with 512 T5 tokens, as one step of a
FLUX.1-dev generation (guidance distilled: one batch item per step), median of --calls after a warm-up
call, and the child's peak RSS. Alternated rounds; prints both sides and the ratios.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sd_vs_diffusers import child  # noqa: E402

WIDTHS = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
              pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])


def build(folder: pathlib.Path, double: int, single: int):
    """Writes the transformer folder with random weights, unless it is already there."""
    if (folder / "transformer/config.json").exists():
        return
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(num_layers=double, num_single_layers=single, **WIDTHS)
    model.save_pretrained(folder / "transformer", safe_serialization=True, max_shard_size="100GB")


def diffusers_side(folder: pathlib.Path, size: int, calls: int, threads: int):
    """Times diffusers' FluxTransformer2DModel and prints one JSON line."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = FluxTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch.float32)
    load_s = time.perf_counter() - start
    side = size // 16
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
    inputs = dict(
        hidden_states=torch.randn(1, side * side, 64), encoder_hidden_states=torch.randn(1, 512, 4096),
        pooled_projections=torch.randn(1, 768), timestep=torch.tensor([0.5]), img_ids=img_ids,
        txt_ids=torch.zeros(512, 3), guidance=torch.tensor([3.5]), return_dict=False,
    )
    times = []
    with torch.no_grad():
        for call in range(calls + 1):
            start = time.perf_counter()
            model(**inputs)
            if call > 0:
                times.append(time.perf_counter() - start)
    print(json.dumps({"impl": "diffusers", "size": size, "load_s": load_s, "step_s": statistics.median(times)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--double", type=int, default=1)
    parser.add_argument("--single", type=int, default=2)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    parser.add_argument("--candle", help="the flux_step bench binary")
    parser.add_argument("--side", choices=["diffusers", "both"], default="both")
    parser.add_argument("--dir", help="the transformer folder's parent (default under ~/.cache/omc-bench)")
    args = parser.parse_args()
    default = pathlib.Path.home() / f".cache/omc-bench/flux-{args.double}-{args.single}"
    folder = pathlib.Path(args.dir or os.environ.get("FLUX_BENCH_DIR", default))
    if args.side == "diffusers":
        return diffusers_side(folder, args.size, args.calls, args.threads)
    build(folder, args.double, args.single)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    common = ["--size", str(args.size), "--calls", str(args.calls)]
    sides = {
        "worker-sd": [args.candle, "--model", str(folder)] + common,
        "diffusers": [sys.executable, __file__, "--side", "diffusers", "--dir", str(folder),
                      "--threads", str(args.threads)] + common,
    }
    results = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in list(sides) if round_ % 2 == 0 else list(reversed(sides)):
            results[name].append(child(sides[name], env))
            print(json.dumps(results[name][-1]), file=sys.stderr)
    med = {n: {k: statistics.median(r[k] for r in runs) for k in ("load_s", "step_s", "rss_gib")}
           for n, runs in results.items()}
    print(f"Flux transformer at FLUX.1-dev widths with {args.double} double + {args.single} single blocks "
          f"(the real model: 19 + 38), {args.size}x{args.size}, 512 T5 tokens, CPU float32, "
          f"{args.threads} threads, median of {args.rounds} round(s)")
    print(f"{'':32}{'worker-sd':>12}{'diffusers':>12}{'ratio':>10}")
    for key, label in (("load_s", "load (s)"), ("step_s", "transformer call (s)"), ("rss_gib", "peak RSS (GiB)")):
        a, b = med["worker-sd"][key], med["diffusers"][key]
        print(f"{label:32}{a:12.3f}{b:12.3f}{a / b:10.2f}")


if __name__ == "__main__":
    main()
