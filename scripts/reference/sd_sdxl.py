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
  output of the second encoder), `unet_time_ids` -> `unet_out`;
  - a whole 4-step Euler run with CFG 5 through StableDiffusionXLPipeline at 64 x 64 (its own size and
    crop time ids): `gen_context`, `gen_pooled`, `gen_negative_context`, `gen_negative_pooled`, `gen_noise`
    (unit Gaussian, scaled by the scheduler) -> `gen_latents` (final latents, before the VAE);
- `scheduler/`: SDXL base's EulerDiscreteScheduler config (leading spacing, steps offset 1).
"""

import json
import pathlib

import diffusers
import torch
import transformers
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-sdxl"
SEQ = 16
TIME_EMBED = 8  # addition_time_embed_dim (256 in SDXL)
HEIGHT = WIDTH = 64  # pixels: 8 x 8 latents with SDXL's VAE factor of 8
STEPS = 4
GUIDANCE = 5.0


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
    # A whole 4-step Euler run with CFG through StableDiffusionXLPipeline, from given encodings and noise.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )  # SDXL base's scheduler/scheduler_config.json
    scheduler.save_pretrained(OUT / "scheduler")
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=scheduler,
    )
    gen = {
        "gen_context": torch.randn(1, SEQ, 32),
        "gen_pooled": torch.randn(1, 16),
        "gen_negative_context": torch.randn(1, SEQ, 32),
        "gen_negative_pooled": torch.randn(1, 16),
        "gen_noise": torch.randn(1, 4, 8, 8),
    }
    with torch.no_grad():
        gen["gen_latents"] = pipe(
            prompt_embeds=gen["gen_context"],
            pooled_prompt_embeds=gen["gen_pooled"],
            negative_prompt_embeds=gen["gen_negative_context"],
            negative_pooled_prompt_embeds=gen["gen_negative_pooled"],
            latents=gen["gen_noise"],
            height=HEIGHT,
            width=WIDTH,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            output_type="latent",
        ).images
    ref.update(gen)
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {"pinned": PINNED, "height": HEIGHT, "width": WIDTH, "steps": STEPS, "guidance_scale": GUIDANCE}
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
