"""Times diffusers on the tiny pipelines of tests/fixtures/sd/ (tiny-sd15, SD 1.5-shaped; tiny-sdxl), for
the side-by-side benchmark `cargo bench -p worker-sd --bench tiny_vs_diffusers` (which runs this script
and prints both).

    "$(bash scripts/reference/venv.sh)" scripts/reference/sd_bench_diffusers.py [tiny-sd15|tiny-sdxl] SIZE STEPS [SIZE STEPS ...]

Pinned: diffusers==0.42.1, transformers==5.23.0, torch==2.15.0; CPU, float32. For each (size, steps):
one warm-up run, then the best of 3 whole generations (prompt "a red cat", CFG 7.5, Euler), and per step
the difference with a 1-step generation divided by (steps - 1). Prints one JSON object per line:
{"size": S, "steps": N, "image_s": ..., "step_s": ...}. `BENCH_THREADS=N` sets torch's thread count
(the Rust side sets candle's to the same): on a busy machine, 1 keeps torch's spinning threads from
starving each other.
"""

import json
import os
import pathlib
import sys
import time

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-sd15"
TINY_SDXL = ROOT / "tests/fixtures/sd/tiny-sdxl"


def load_sdxl():
    """The tiny SDXL pipeline, its float16 weights run in float32 as worker-sd runs them on CPU."""
    f32 = {"torch_dtype": torch.float32}
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(TINY_SDXL / "vae", **f32),
        text_encoder=CLIPTextModel.from_pretrained(TINY_SDXL / "text_encoder", **f32),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(TINY_SDXL / "text_encoder_2", **f32),
        tokenizer=CLIPTokenizer.from_pretrained(TINY_SDXL / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(TINY_SDXL / "tokenizer_2"),
        unet=UNet2DConditionModel.from_pretrained(TINY_SDXL / "unet", **f32),
        scheduler=EulerDiscreteScheduler.from_pretrained(TINY_SDXL / "scheduler"),
    ).to("cpu")


def load():
    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(TINY / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(TINY / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(TINY / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(TINY / "unet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(TINY / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to("cpu")


def best(pipe, size, steps, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        pipe("a red cat", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
             generator=torch.Generator().manual_seed(0), output_type="np")
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def main():
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    args = sys.argv[1:]
    fixture = args.pop(0) if args and not args[0].isdigit() else "tiny-sd15"
    pipe = load_sdxl() if fixture == "tiny-sdxl" else load()
    pipe.set_progress_bar_config(disable=True)
    args = [int(a) for a in args] or [64, 20]
    for size, steps in zip(args[::2], args[1::2]):
        best(pipe, size, 2, runs=1)  # warm-up
        image = best(pipe, size, steps)
        one = best(pipe, size, 1)
        step = (image - one) / max(steps - 1, 1)
        print(json.dumps({"size": size, "steps": steps, "image_s": image, "step_s": step}), flush=True)


if __name__ == "__main__":
    main()
