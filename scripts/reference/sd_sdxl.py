"""Builds a tiny random SDXL-shaped UNet with diffusers and records one UNet call for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 /work/venv-ref/bin/python scripts/reference/sd_sdxl.py

Pinned: diffusers==0.42.1, transformers==5.23.0 (also recorded in reference.json), torch==2.15.0,
CPU, float32, seed 0. Writes tests/fixtures/sd/tiny-sdxl/:

- `unet/`: a UNet2DConditionModel shaped as SDXL's: `addition_embed_type="text_time"` (the pooled text
  embedding and the six size/crop "time ids" are embedded and added to the timestep embedding), linear
  projections, transformer depth per block as SDXL's (1, 2, 10) shrunk to (1, 2), no attention in the first
  block. 32 GroupNorm groups: candle's DownBlock2D/UpBlock2D ignore the configured group count. The
  attending level has 64 channels, two per group, since with one channel per group the norm after each
  ResNet's time-embedding add removes that add, and the test could not see the conditioning. Stored in
  float16 to keep the fixture small (the reference runs the same values in float32);
- `reference.safetensors`: `unet_latents`, `unet_timestep`, `unet_context` (random, in place of the two
  text encoders' concatenated penultimate states), `unet_text_embeds` (in place of the projected pooled
  output of the second encoder), `unet_time_ids` -> `unet_out`.
"""

import json
import pathlib

import diffusers
import torch
import transformers
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-sdxl"
SEQ = 16
TIME_EMBED = 8  # addition_time_embed_dim (256 in SDXL)


def main():
    assert {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
    } == PINNED, "versions differ from the pinned ones"
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        cross_attention_dim=32,
        use_linear_projection=True,
        norm_num_groups=32,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=16 + 6 * TIME_EMBED,
    ).eval()
    # With PyTorch's default init the timestep and added embeddings barely move the output (1e-6), so a
    # test could not tell whether they are applied: make the embedding path's weights larger.
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if any(k in name for k in ("time_embedding", "add_embedding", "time_emb_proj")):
                p.copy_(torch.randn_like(p) * 0.5)
    # float16 on disk keeps the fixture small; the reference runs the same values in float32.
    unet.half().save_pretrained(OUT / "unet", safe_serialization=True)
    unet.float()

    with torch.no_grad():
        latents = torch.randn(1, 4, 8, 8)
        timestep = torch.tensor(499.0)
        context = torch.randn(1, SEQ, 32)
        text_embeds = torch.randn(1, 16)
        time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
        unet_out = unet(
            latents,
            timestep,
            encoder_hidden_states=context,
            added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
        ).sample
    ref = {
        "unet_latents": latents,
        "unet_timestep": timestep.reshape(1),
        "unet_context": context,
        "unet_text_embeds": text_embeds,
        "unet_time_ids": time_ids,
        "unet_out": unet_out,
    }
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    (OUT / "reference.json").write_text(json.dumps({"pinned": PINNED}, indent=1) + "\n")


if __name__ == "__main__":
    main()
