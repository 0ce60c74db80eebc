"""Records torch's random noise and a whole diffusers generation from a seed, for worker-sd's `--rng`.

Run once (not in CI) from the repository root, after sd_tiny_pipeline.py:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_rng.py

Pinned: torch==2.15.0, diffusers==0.42.1, CPU, float32. Writes tests/fixtures/sd/rng/reference.safetensors:

- `cpu_<case>`: `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))` for the cases in
  CASES (the vectorized path of 16 or more elements, with and without a tail, the scalar path under 16 and
  its cached second sample across calls, seeds past 32 bits, and two draws from one generator);
- `cuda_<case>`: AUTOMATIC1111's emulation of torch's CUDA Philox `randn` (modules/rng_philox.py, its "NV"
  random source), the same cases; no GPU was at hand to record torch's own CUDA output;
- `seed_image`, `seed_latents`: StableDiffusionPipeline on tests/fixtures/sd/tiny-sd15 with
  `EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)` ("Euler a", which draws noise at
  every step), prompt "a red cat", 4 steps, CFG 7.5, 64x64, `generator=torch.Generator("cpu").manual_seed(42)`:
  the seed alone decides the noise. `seed_image` is the VAE's output in [-1, 1] (before clamping).
"""

import json
import pathlib

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-sd15"
OUT = ROOT / "tests/fixtures/sd/rng"

# name -> (seed, shapes drawn one after the other from the same generator)
CASES = {
    "latent": (0, [(1, 4, 8, 8)]),
    "tail": (7, [(37,)]),
    "small": (3, [(5,), (4,)]),
    "big_seed": ((1 << 32) + 11, [(1, 4, 8, 8)]),
    "two_draws": (123456789, [(1, 4, 8, 8), (1, 4, 8, 8)]),
}

# --- AUTOMATIC1111's Philox emulation of torch.randn on CUDA (modules/rng_philox.py) ---
PHILOX_M = [0xD2511F53, 0xCD9E8D57]
PHILOX_W = [0x9E3779B9, 0xBB67AE85]
TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def uint32(x):
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def philox4_round(counter, key):
    v1 = uint32(counter[0].astype(np.uint64) * PHILOX_M[0])
    v2 = uint32(counter[2].astype(np.uint64) * PHILOX_M[1])
    counter[0] = v2[1] ^ counter[1] ^ key[0]
    counter[1] = v2[0]
    counter[2] = v1[1] ^ counter[3] ^ key[1]
    counter[3] = v1[0]


def philox4_32(counter, key, rounds=10):
    for _ in range(rounds - 1):
        philox4_round(counter, key)
        key[0] = key[0] + PHILOX_W[0]
        key[1] = key[1] + PHILOX_W[1]
    philox4_round(counter, key)
    return counter


def box_muller(x, y):
    u = x * TWO_POW32_INV + TWO_POW32_INV / 2
    v = y * TWO_POW32_INV_2PI + TWO_POW32_INV_2PI / 2
    s = np.sqrt(-2.0 * np.log(u))
    return (s * np.sin(v)).astype(np.float32)


class Philox:
    def __init__(self, seed):
        self.seed, self.offset = seed, 0

    def randn(self, shape):
        n = int(np.prod(shape))
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        key = np.empty(n, dtype=np.uint64)
        key.fill(self.seed)
        g = philox4_32(counter, uint32(key))
        return box_muller(g[0], g[1]).reshape(shape)


@torch.no_grad()
def main():
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    ref = {}
    for name, (seed, shapes) in CASES.items():
        cpu = torch.Generator("cpu").manual_seed(seed)
        cuda = Philox(seed)
        for i, shape in enumerate(shapes):
            ref[f"cpu_{name}_{i}"] = torch.randn(shape, generator=cpu)
            ref[f"cuda_{name}_{i}"] = torch.from_numpy(cuda.randn(shape))

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(TINY / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(TINY / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(TINY / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(TINY / "unet"),
        scheduler=diffusers.EulerDiscreteScheduler.from_pretrained(TINY / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    latents = pipe(
        "a red cat",
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="latent",
    ).images
    ref["seed_latents"] = latents
    ref["seed_image"] = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "cases": CASES, "seed": 42}
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
