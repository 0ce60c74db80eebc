"""Builds tiny random Flux models with diffusers and records reference outputs for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 /work/venv-ref/bin/python scripts/reference/sd_flux.py

Pinned: diffusers==0.42.1, transformers==5.23.0 (also recorded in reference.json), torch==2.15.0,
CPU, float32, seed 0. Writes tests/fixtures/sd/tiny-flux/:

- `dev/`: a FLUX.1-dev-shaped pipeline in the diffusers folder layout (transformer with the guidance
  embedding, T5 encoder as `text_encoder_2`, CLIP as `text_encoder`, a 16-channel AutoencoderKL with Flux's
  shift and scale factors, the FlowMatchEulerDiscreteScheduler config with dynamic shifting);
- `schnell.safetensors`: a FLUX.1-schnell-shaped transformer (no guidance embedding) written in the original
  Black Forest Labs layout with ComfyUI's `model.diffusion_model.` prefix, as single-file checkpoints ship;
  its config is `schnell.json`;
- `reference.safetensors`: inputs and outputs a Rust test compares against:
  - `dev_*` and `schnell_*`: one transformer call each with explicit inputs: `img` (packed latents,
    (1, 16, 64)), `img_ids`, `txt` (T5 states), `txt_ids`, `vec` (pooled CLIP), `timestep`, and for dev
    `guidance` -> `out`;
  - `t5_tokens` -> `t5_hidden`, `clip_tokens` -> `clip_pooled` (the text encoders);
  - `gen_noise` (packed unit Gaussian latents) -> `gen_latents` (packed, after FluxPipeline's 4 steps with
    guidance 3.5 on `t5_hidden`/`clip_pooled`) and `gen_image` (FluxPipeline's decoded image, NCHW in [0, 1]);
  - `vae_latents` -> `vae_decoded` (one VAE decode of unscaled latents, in [-1, 1]).
- `reference.json`: versions and the FlowMatchEulerDiscreteScheduler timesteps and sigmas for schnell's and
  dev's configs over a few step counts and image sequence lengths (dev's `mu` from the sequence length).

Tokenizers are not part of the fixture: token ids are given.
"""

import json
import pathlib

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-flux"
HEIGHT = WIDTH = 16  # pixels; latents are 16 x 8 x 8, packed to 16 tokens of 64
T5_SEQ = 8
CLIP_SEQ = 16
STEPS = 4
GUIDANCE = 3.5

# FLUX.1's scheduler configs as the HF repos ship them (scheduler/scheduler_config.json).
SCHNELL_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=False,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
DEV_SCHEDULER = dict(SCHNELL_SCHEDULER, shift=3.0, use_dynamic_shifting=True)


def transformer(guidance: bool, layers: int) -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def randomize(module: torch.nn.Module):
    """diffusers zero-initialises some Flux layers; random values make every weight matter in the test."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


def to_bfl(sd: dict, hidden: int) -> dict:
    """diffusers -> original Black Forest Labs names: the inverse of diffusers'
    `convert_flux_transformer_checkpoint_to_diffusers` (which hard-codes the full-size width)."""
    out = {}

    def lin(dst, src):
        out[f"{dst}.weight"] = sd.pop(f"{src}.weight")
        out[f"{dst}.bias"] = sd.pop(f"{src}.bias")

    def cat(dst, srcs):
        out[f"{dst}.weight"] = torch.cat([sd.pop(f"{s}.weight") for s in srcs])
        out[f"{dst}.bias"] = torch.cat([sd.pop(f"{s}.bias") for s in srcs])

    lin("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    lin("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    lin("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    lin("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    if "time_text_embed.guidance_embedder.linear_1.weight" in sd:
        lin("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        lin("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    lin("txt_in", "context_embedder")
    lin("img_in", "x_embedder")
    i = 0
    while f"transformer_blocks.{i}.norm1.linear.weight" in sd:
        d, b = f"double_blocks.{i}", f"transformer_blocks.{i}"
        lin(f"{d}.img_mod.lin", f"{b}.norm1.linear")
        lin(f"{d}.txt_mod.lin", f"{b}.norm1_context.linear")
        cat(f"{d}.img_attn.qkv", [f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v"])
        cat(f"{d}.txt_attn.qkv", [f"{b}.attn.add_q_proj", f"{b}.attn.add_k_proj", f"{b}.attn.add_v_proj"])
        out[f"{d}.img_attn.norm.query_norm.scale"] = sd.pop(f"{b}.attn.norm_q.weight")
        out[f"{d}.img_attn.norm.key_norm.scale"] = sd.pop(f"{b}.attn.norm_k.weight")
        out[f"{d}.txt_attn.norm.query_norm.scale"] = sd.pop(f"{b}.attn.norm_added_q.weight")
        out[f"{d}.txt_attn.norm.key_norm.scale"] = sd.pop(f"{b}.attn.norm_added_k.weight")
        lin(f"{d}.img_mlp.0", f"{b}.ff.net.0.proj")
        lin(f"{d}.img_mlp.2", f"{b}.ff.net.2")
        lin(f"{d}.txt_mlp.0", f"{b}.ff_context.net.0.proj")
        lin(f"{d}.txt_mlp.2", f"{b}.ff_context.net.2")
        lin(f"{d}.img_attn.proj", f"{b}.attn.to_out.0")
        lin(f"{d}.txt_attn.proj", f"{b}.attn.to_add_out")
        i += 1
    i = 0
    while f"single_transformer_blocks.{i}.norm.linear.weight" in sd:
        s, b = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        lin(f"{s}.modulation.lin", f"{b}.norm.linear")
        cat(f"{s}.linear1", [f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v", f"{b}.proj_mlp"])
        out[f"{s}.norm.query_norm.scale"] = sd.pop(f"{b}.attn.norm_q.weight")
        out[f"{s}.norm.key_norm.scale"] = sd.pop(f"{b}.attn.norm_k.weight")
        lin(f"{s}.linear2", f"{b}.proj_out")
        i += 1
    lin("final_layer.linear", "proj_out")
    for kind in ("weight", "bias"):
        scale, shift = sd.pop(f"norm_out.linear.{kind}").chunk(2, dim=0)  # diffusers: scale first
        out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    assert not sd, f"unmapped: {sorted(sd)}"
    assert out["img_in.weight"].shape[0] == hidden
    return out


def ids(h: int, w: int) -> torch.Tensor:
    """Flux's image position ids: (0, row, column) per packed token."""
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return img_ids.reshape(h * w, 3)


def transformer_call(model, prefix, ref, guidance):
    seq = (HEIGHT // 2 // 2) * (WIDTH // 2 // 2)
    img = torch.randn(1, seq, 64)
    img_ids = ids(HEIGHT // 4, WIDTH // 4)
    txt = torch.randn(1, T5_SEQ, 32)
    txt_ids = torch.zeros(T5_SEQ, 3)
    vec = torch.randn(1, 32)
    timestep = torch.tensor([0.7])
    kwargs = {}
    if guidance:
        kwargs["guidance"] = torch.tensor([3.5])
    with torch.no_grad():
        out = model(
            hidden_states=img,
            encoder_hidden_states=txt,
            pooled_projections=vec,
            timestep=timestep,
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
            **kwargs,
        )[0]
    ref.update(
        {
            f"{prefix}_img": img,
            f"{prefix}_img_ids": img_ids,
            f"{prefix}_txt": txt,
            f"{prefix}_txt_ids": txt_ids,
            f"{prefix}_vec": vec,
            f"{prefix}_timestep": timestep,
            f"{prefix}_out": out,
        }
    )
    if guidance:
        ref[f"{prefix}_guidance"] = kwargs["guidance"]


def schedules():
    cases = []
    for name, config in (("schnell", SCHNELL_SCHEDULER), ("dev", DEV_SCHEDULER)):
        for steps in (1, 4, 20):
            for seq in (16, 1024, 4096):
                scheduler = FlowMatchEulerDiscreteScheduler(**config)
                sigmas = np.linspace(1.0, 1 / steps, steps)
                mu = calculate_shift(seq, 256, 4096, 0.5, 1.15)
                scheduler.set_timesteps(sigmas=sigmas, mu=mu)
                cases.append(
                    {
                        "config": name,
                        "steps": steps,
                        "image_seq_len": seq,
                        "timesteps": scheduler.timesteps.tolist(),
                        "sigmas": scheduler.sigmas.tolist(),
                    }
                )
                if not config["use_dynamic_shifting"]:
                    break  # the sequence length changes nothing without dynamic shifting
    return cases


def text_encoders():
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=100,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=0,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            tie_word_embeddings=False,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CLIP_SEQ,
            hidden_act="quick_gelu",
            projection_dim=32,
            bos_token_id=98,
            eos_token_id=99,
            pad_token_id=99,
        )
    ).eval()
    return t5, clip


def vae_model():
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=HEIGHT,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def main():
    assert {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
    } == PINNED, "versions differ from the pinned ones"
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    ref = {}

    dev = transformer(guidance=True, layers=2)
    randomize(dev)
    schnell = transformer(guidance=False, layers=1)
    randomize(schnell)
    transformer_call(dev, "dev", ref, guidance=True)
    transformer_call(schnell, "schnell", ref, guidance=False)

    bfl = to_bfl({k: v.clone().contiguous() for k, v in schnell.state_dict().items()}, 32)
    save_file({f"model.diffusion_model.{k}": v for k, v in bfl.items()}, OUT / "schnell.safetensors")
    (OUT / "schnell.json").write_text(json.dumps(dict(schnell.config), indent=2, default=list) + "\n")

    t5, clip = text_encoders()
    vae = vae_model()
    scheduler = FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=None,
        text_encoder_2=t5,
        tokenizer_2=None,
        transformer=dev,
    )
    pipe.save_pretrained(OUT / "dev", safe_serialization=True)

    t5_tokens = torch.tensor([[5, 17, 42, 8, 23, 1, 0, 0]])
    clip_tokens = torch.tensor([[98, 12, 34, 56, 99] + [99] * (CLIP_SEQ - 5)])
    with torch.no_grad():
        t5_hidden = t5(t5_tokens).last_hidden_state
        clip_pooled = clip(clip_tokens).pooler_output
    ref.update(t5_tokens=t5_tokens, t5_hidden=t5_hidden, clip_tokens=clip_tokens, clip_pooled=clip_pooled)

    gen_noise = torch.randn(1, 16, 64)
    run = dict(
        prompt_embeds=t5_hidden,
        pooled_prompt_embeds=clip_pooled,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=gen_noise,
    )
    with torch.no_grad():
        latents = pipe(**run, output_type="latent").images
        image = pipe(**run, output_type="pt").images
        vae_latents = torch.randn(1, 16, HEIGHT // 2, WIDTH // 2)
        vae_decoded = vae.decode(vae_latents).sample
    ref.update(gen_noise=gen_noise, gen_latents=latents, gen_image=image)
    ref.update(vae_latents=vae_latents, vae_decoded=vae_decoded)

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {
        "pinned": PINNED,
        "height": HEIGHT,
        "width": WIDTH,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "schedulers": {"schnell": SCHNELL_SCHEDULER, "dev": DEV_SCHEDULER},
        "schedules": schedules(),
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
