"""Times diffusers' FluxPipeline on the tiny FLUX.1-dev-shaped fixture (tests/fixtures/sd/tiny-flux/dev) the
way `cargo bench -p worker-sd --bench flux` times worker-sd, and prints both side by side with the ratio.

    bash scripts/bench/flux-bench.sh [--size 64] [--steps 4] [--runs 5]

Pinned: diffusers==0.42.1, torch==2.15.0 (CPU, float32, the same thread count as candle: THREADS, default
2). The candle figures come as one JSON line on stdin from the Rust bench.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
from diffusers import FluxPipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    candle = json.loads(sys.stdin.read().strip().splitlines()[-1])
    torch.set_num_threads(args.threads)

    pipe = FluxPipeline.from_pretrained(ROOT / "tests/fixtures/sd/tiny-flux/dev", tokenizer=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    t5_tokens = torch.tensor([[5, 17, 42, 8, 23, 1, 0, 0]])
    clip_tokens = torch.tensor([[98, 12, 34, 56] + [99] * 12])
    seq = (args.size // pipe.vae_scale_factor // 2) ** 2
    noise = torch.randn(1, seq, 64)
    image_s, step_s = [], []
    for run in range(args.runs + 1):
        with torch.no_grad():
            start = time.perf_counter()
            t5 = pipe.text_encoder_2(t5_tokens).last_hidden_state
            pooled = pipe.text_encoder(clip_tokens).pooler_output
            step_start = time.perf_counter()
            latents = pipe(
                prompt_embeds=t5,
                pooled_prompt_embeds=pooled,
                height=args.size,
                width=args.size,
                num_inference_steps=args.steps,
                guidance_scale=3.5,
                latents=noise,
                output_type="latent",
            ).images
            denoise = time.perf_counter() - step_start
            latents = pipe._unpack_latents(latents, args.size, args.size, pipe.vae_scale_factor)
            latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            pipe.vae.decode(latents).sample.clamp(-1, 1)
            if run > 0:
                image_s.append(time.perf_counter() - start)
                step_s.append(denoise / args.steps)
    ref = {"s_per_step": statistics.median(step_s), "s_per_image": statistics.median(image_s)}
    print(f"tiny Flux dev, {args.size}x{args.size}, {args.steps} steps, median of {args.runs} runs, CPU f32")
    print(f"{'':14}{'candle':>12}{'diffusers':>12}{'candle/diffusers':>18}")
    for key, label in (("s_per_step", "s/step"), ("s_per_image", "s/image")):
        print(f"{label:14}{candle[key]:12.5f}{ref[key]:12.5f}{candle[key] / ref[key]:18.2f}")


if __name__ == "__main__":
    main()
