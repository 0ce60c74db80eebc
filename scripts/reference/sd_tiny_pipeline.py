"""Builds a tiny random SD 1.5-shaped pipeline with diffusers and records reference outputs for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 /work/venv-ref/bin/python scripts/reference/sd_tiny_pipeline.py

Pinned: diffusers==0.42.1, transformers==5.23.0 (also recorded in reference.json), torch==2.15.0,
CPU, float32, seed 0. Writes tests/fixtures/sd/tiny-sd15/ in the diffusers folder layout (text_encoder/,
unet/, vae/, scheduler/ with config.json and model.safetensors / diffusion_pytorch_model.safetensors), and
tiny-sd15/reference.safetensors with the inputs and outputs a Rust test compares against:

- `tokens`, `uncond_tokens` (int64) -> `text_hidden`, `text_penultimate` (CLIP last and second-to-last
  hidden states), `uncond_hidden`;
- `unet_latents`, `unet_timestep` (one value) -> `unet_out` (one UNet call on `text_hidden`);
- `vae_latents` -> `vae_decoded` (one VAE decode; the latents are already divided by the scaling factor);
- a whole 4-step Euler generation with CFG 7.5 from `gen_noise` (unit Gaussian, scaled by the scheduler):
  `gen_latents` (final latents) and `gen_image` (decoded after dividing by the VAE scaling factor).

The tokenizer is not part of the pipeline: token ids are given.
"""

import json
import pathlib

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-sd15"
SCHEDULER_CONFIG = ROOT / "tests/fixtures/sd/sd15-scheduler_scheduler_config.json"
SEQ = 16  # max_position_embeddings: short prompts keep the fixture small
LATENT = (1, 4, 8, 8)
GUIDANCE = 7.5
STEPS = 4


def build():
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=100,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=SEQ,
            hidden_act="quick_gelu",
            projection_dim=16,
            bos_token_id=98,
            eos_token_id=99,
            pad_token_id=99,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    return text_encoder.eval(), unet.eval(), vae.eval()


@torch.no_grad()
def main():
    assert diffusers.__version__ == PINNED["diffusers"], diffusers.__version__
    assert torch.__version__.split("+")[0] == PINNED["torch"], torch.__version__
    assert transformers.__version__ == PINNED["transformers"], transformers.__version__
    text_encoder, unet, vae = build()
    OUT.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(OUT / "text_encoder", safe_serialization=True)
    unet.save_pretrained(OUT / "unet", safe_serialization=True)
    vae.save_pretrained(OUT / "vae", safe_serialization=True)
    scheduler = EulerDiscreteScheduler.from_config(json.loads(SCHEDULER_CONFIG.read_text()))
    scheduler.save_pretrained(OUT / "scheduler")

    gen = torch.Generator().manual_seed(1)
    ref = {}
    pad = [99] * SEQ
    tokens = torch.tensor([[98, 17, 56, 73, 42, 99] + pad[6:]], dtype=torch.int64)
    uncond = torch.tensor([[98, 99] + pad[2:]], dtype=torch.int64)
    out = text_encoder(tokens, output_hidden_states=True)
    ref["tokens"], ref["uncond_tokens"] = tokens, uncond
    ref["text_hidden"] = out.last_hidden_state
    ref["text_penultimate"] = out.hidden_states[-2]
    ref["uncond_hidden"] = text_encoder(uncond).last_hidden_state

    ref["unet_latents"] = torch.randn(LATENT, generator=gen)
    ref["unet_timestep"] = torch.tensor([500.0])
    ref["unet_out"] = unet(ref["unet_latents"], 500, encoder_hidden_states=ref["text_hidden"]).sample

    ref["vae_latents"] = torch.randn(LATENT, generator=gen)
    ref["vae_decoded"] = vae.decode(ref["vae_latents"]).sample

    # A whole short generation with classifier-free guidance, noise given explicitly.
    ref["gen_noise"] = torch.randn(LATENT, generator=gen)
    scheduler.set_timesteps(STEPS)
    latents = ref["gen_noise"] * scheduler.init_noise_sigma
    context = torch.cat([ref["uncond_hidden"], ref["text_hidden"]])
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_uncond, noise_text = unet(model_in, t, encoder_hidden_states=context).sample.chunk(2)
        noise = noise_uncond + GUIDANCE * (noise_text - noise_uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    ref["gen_latents"] = latents
    ref["gen_image"] = vae.decode(latents / vae.config.scaling_factor).sample

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {
        "pinned": PINNED,
        "guidance_scale": GUIDANCE,
        "steps": STEPS,
        "scheduler": "Euler",
        "vae_scaling_factor": vae.config.scaling_factor,
        "timesteps": [float(t) for t in scheduler.timesteps],
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
