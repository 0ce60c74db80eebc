"""Records diffusers' tiled VAE decode (`enable_vae_tiling`) on the tiny SD 1.5-shaped VAE for worker-sd's test.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_vae_tiling.py

Pinned: diffusers==0.42.1, torch==2.15.0, CPU, float32, seed 0. The VAE is tests/fixtures/sd/tiny-sd15/vae
(8x downsampling). Tiles are 4 latents (32 pixels; `tile_sample_min_size` 32, `tile_latent_min_size` 4) with
diffusers' overlap factor 0.25, so 10x14 latents make 4x5 tiles, blended in both directions. Writes
tests/fixtures/sd/vae-tiling/reference.safetensors: `latents` (unscaled, 1x4x10x14), `tiled` (diffusers'
tiled decode) and `whole` (the untiled decode), and reference.json with the versions and the tiled/untiled gap.
"""

import json
import pathlib

import diffusers
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/vae-tiling"


@torch.no_grad()
def main():
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(ROOT / "tests/fixtures/sd/tiny-sd15/vae").eval()
    latents = torch.randn(1, 4, 10, 14)
    whole = vae.decode(latents).sample
    vae.enable_tiling()
    vae.tile_sample_min_size = 32
    vae.tile_latent_min_size = 4
    vae.tile_overlap_factor = 0.25
    tiled = vae.decode(latents).sample
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous(), "tiled": tiled.contiguous(), "whole": whole.contiguous()},
              OUT / "reference.safetensors")
    gap = (tiled - whole).abs()
    (OUT / "reference.json").write_text(json.dumps({
        "diffusers": diffusers.__version__, "torch": torch.__version__, "tile_latents": 4,
        "tiled_vs_whole_max": gap.max().item(), "tiled_vs_whole_mean": gap.mean().item(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
