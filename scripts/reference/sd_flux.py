"""Builds tiny random Flux models with diffusers and records reference outputs for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_flux.py

Pinned: diffusers==0.42.1, transformers==5.23.0, tokenizers==0.23.3 (also recorded in reference.json),
torch==2.15.0, CPU, float32, seed 0. Writes tests/fixtures/sd/tiny-flux/:

- `dev/`: a FLUX.1-dev-shaped pipeline in the diffusers folder layout (transformer with the guidance
  embedding, T5 encoder as `text_encoder_2` with a tiny Unigram T5 tokenizer in `tokenizer_2/tokenizer.json`,
  CLIP as `text_encoder` with a tiny BPE vocabulary in `tokenizer/`, a 16-channel AutoencoderKL with four
  levels (8 pixels per latent, as FLUX.1's) and Flux's shift and scale factors, the
  FlowMatchEulerDiscreteScheduler config with dynamic shifting);
- `schnell.safetensors`: a FLUX.1-schnell-shaped transformer (no guidance embedding) written in the original
  Black Forest Labs layout with ComfyUI's `model.diffusion_model.` prefix, as single-file checkpoints ship;
  its config is `schnell.json`;
- `reference.safetensors`: inputs and outputs a Rust test compares against:
  - `dev_*` and `schnell_*`: one transformer call each with explicit inputs: `img` (packed latents,
    (1, 16, 64)), `img_ids`, `txt` (T5 states), `txt_ids`, `vec` (pooled CLIP), `timestep`, and for dev
    `guidance` -> `out`;
  - `t5_tokens` -> `t5_hidden`, `clip_tokens` -> `clip_pooled` (the text encoders);
  - `gen_noise` (packed unit Gaussian latents) -> `gen_latents` (packed, after FluxPipeline's 4 steps with
    guidance 3.5 on `t5_hidden`/`clip_pooled`, 64x64) and `gen_image` (the decoded image, NCHW in [0, 1]);
  - `vae_latents` -> `vae_decoded` (one VAE decode of unscaled latents, in [-1, 1]); `vae_encoded`: the
    mode of the encoder's distribution for `i2i_init`, shifted and scaled as Flux does;
  - from prompts (the tokenizers' ids for PROMPT: `prompt_t5_ids` padded to 512, `prompt_clip_ids`;
    `long_t5_ids`: LONG_PROMPT truncated to 16 with its end token kept):
    - `t2i_noise` (unit Gaussian latents, unpacked (1, 16, 8, 8)) -> `t2i_image`: FluxPipeline, dev folder,
      PROMPT, 4 steps, guidance 3.5, T5 padded to 512 (NCHW in [0, 1]);
    - `schnell_t2i_image`: the same with the schnell transformer and FLUX.1-schnell's scheduler config,
      T5 padded to 256, as a single file with the dev folder's other parts would run;
    - `i2i_init` (uint8 HWC) and `i2i_noise` -> `i2i_image`: FluxImg2ImgPipeline, strength I2I_STRENGTH;
    - `inp_mask` (uint8, white = repaint) and `inp_noise` -> `inp_image`: FluxInpaintPipeline on `i2i_init`,
      strength INP_STRENGTH.
- `reference.json`: versions and the FlowMatchEulerDiscreteScheduler timesteps and sigmas for schnell's and
  dev's configs over a few step counts and image sequence lengths (dev's `mu` from the sequence length).

The noise is given explicitly so that the comparison does not depend on two random number generators: for
img2img and inpainting, diffusers' `randn_tensor` in those pipelines is replaced by the recorded noise, and
the VAE encodes to the mode of its latent distribution (worker-sd's deterministic choice) instead of a
sample (`retrieve_latents` replaced likewise).
"""

import json
import pathlib

import diffusers
import diffusers.pipelines.flux.pipeline_flux_img2img as flux_img2img
import diffusers.pipelines.flux.pipeline_flux_inpaint as flux_inpaint
import numpy as np
import tokenizers
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0", "tokenizers": "0.23.3"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-flux"
GRID = 4  # transformer calls: a 4 x 4 grid of packed tokens
HEIGHT = WIDTH = 64  # pipeline runs: the 8x VAE gives 16 x 8 x 8 latents, packed to 16 tokens of 64
T5_SEQ = 8
CLIP_SEQ = 16
STEPS = 4
GUIDANCE = 3.5
PROMPT = "a red cat on the mat"
LONG_PROMPT = " ".join(["a red cat on the mat"] * 6)
I2I_STRENGTH = 0.6  # 4 steps: diffusers runs the last 3 (t_start = int(4 - 2.4) = 1)
INP_STRENGTH = 0.7  # 4 steps: the last 3 (t_start = int(4 - 2.8) = 1)
T5_WORDS = ["a", "red", "cat", "on", "the", "mat", "dog", "blue", "sky", "photo", "of", "in"]

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
    seq = GRID * GRID
    img = torch.randn(1, seq, 64)
    img_ids = ids(GRID, GRID)
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


def t5_tokenizer():
    """A tiny T5 tokenizer: transformers' T5Tokenizer (the Unigram model with Metaspace and the `</s>`
    post-processor FLUX.1's `tokenizer_2/tokenizer.json` has) over a few words and the letters."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + w, -4.0) for w in T5_WORDS]
    pieces += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    assert len(tokenizer) <= 100, len(tokenizer)
    return tokenizer


def clip_tokenizer(folder: pathlib.Path):
    """A tiny CLIP BPE vocabulary (ids 98 and 99 for the start and end tokens, as the tiny CLIP's config)."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges = [("c", "a"), ("ca", "t</w>"), ("r", "e"), ("re", "d</w>"), ("m", "a"), ("ma", "t</w>")]
    vocab = letters + [c + "</w>" for c in letters] + ["".join(m) for m in merges]
    vocab = {token: i for i, token in enumerate(vocab)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 98, 99
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=CLIP_SEQ,
    )


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
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=HEIGHT,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def pack(latents: torch.Tensor) -> torch.Tensor:
    return FluxPipeline._pack_latents(latents, *latents.shape)


class GivenNoise:
    """Stands in for `randn_tensor` in diffusers' Flux img2img and inpainting modules: returns the noise
    set before each run, so both sides start from the same numbers."""

    noise = None

    def __call__(self, shape, generator=None, device=None, dtype=None, **kwargs):
        assert tuple(shape) == tuple(self.noise.shape), (shape, self.noise.shape)
        return self.noise.clone()


def encoder_mode(encoder_output, generator=None, sample_mode="sample"):
    """The VAE encodes to its distribution's mode in worker-sd (deterministic img2img)."""
    return encoder_output.latent_dist.mode()


def init_image() -> np.ndarray:
    """A smooth 64x64 picture with some structure (gradients and a square)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / HEIGHT
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    rgb[20:44, 24:40] = [0.9, 0.2, 0.1]
    return (rgb * 255).round().clip(0, 255).astype(np.uint8)


def main():
    assert {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
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
    tokenizer = clip_tokenizer(OUT / "clip-tokenizer-src")
    tokenizer_2 = t5_tokenizer()
    parts = dict(vae=vae, text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer_2)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER), transformer=dev, **parts)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(OUT / "dev", safe_serialization=True)
    for f in (OUT / "clip-tokenizer-src").iterdir():
        f.unlink()
    (OUT / "clip-tokenizer-src").rmdir()

    t5_tokens = torch.tensor([[5, 17, 42, 8, 23, 1, 0, 0]])
    clip_tokens = torch.tensor([[98, 12, 34, 56, 99] + [99] * (CLIP_SEQ - 5)])
    with torch.no_grad():
        t5_hidden = t5(t5_tokens).last_hidden_state
        clip_pooled = clip(clip_tokens).pooler_output
    ref.update(t5_tokens=t5_tokens, t5_hidden=t5_hidden, clip_tokens=clip_tokens, clip_pooled=clip_pooled)

    latent_shape = (1, 16, HEIGHT // 8, WIDTH // 8)
    gen_noise = pack(torch.randn(latent_shape))
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
        vae_latents = torch.randn(latent_shape)
        vae_decoded = vae.decode(vae_latents).sample
    ref.update(gen_noise=gen_noise, gen_latents=latents, gen_image=image)
    ref.update(vae_latents=vae_latents, vae_decoded=vae_decoded)

    # From prompts, through the tokenizers.
    ref["prompt_t5_ids"] = tokenizer_2(PROMPT, padding="max_length", max_length=512, truncation=True).input_ids
    ref["prompt_clip_ids"] = tokenizer(PROMPT, padding="max_length", max_length=CLIP_SEQ, truncation=True).input_ids
    ref["long_t5_ids"] = tokenizer_2(LONG_PROMPT, padding="max_length", max_length=16, truncation=True).input_ids
    for key in ("prompt_t5_ids", "prompt_clip_ids", "long_t5_ids"):
        ref[key] = torch.tensor([ref[key]], dtype=torch.int64)
    assert ref["long_t5_ids"][0, -1] == 1, "truncation keeps the end token"

    t2i_noise = torch.randn(latent_shape)
    prompt_run = dict(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, output_type="pt")
    with torch.no_grad():
        ref["t2i_image"] = pipe(
            **prompt_run, guidance_scale=GUIDANCE, latents=pack(t2i_noise), max_sequence_length=512
        ).images
        schnell_pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**SCHNELL_SCHEDULER), transformer=schnell, **parts
        )
        schnell_pipe.set_progress_bar_config(disable=True)
        ref["schnell_t2i_image"] = schnell_pipe(
            **prompt_run, guidance_scale=0.0, latents=pack(t2i_noise), max_sequence_length=256
        ).images
    ref["t2i_noise"] = t2i_noise

    given = GivenNoise()
    for module in (flux_img2img, flux_inpaint):
        module.randn_tensor = given
        module.retrieve_latents = encoder_mode
    init = init_image()
    init_pil = Image.fromarray(init)
    ref["i2i_init"] = torch.from_numpy(init)
    with torch.no_grad():
        pixels = torch.from_numpy(init).permute(2, 0, 1)[None].float() / 127.5 - 1
        mode = vae.encode(pixels).latent_dist.mode()
        ref["vae_encoded"] = (mode - vae.config.shift_factor) * vae.config.scaling_factor

        i2i = FluxImg2ImgPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER), transformer=dev, **parts)
        i2i.set_progress_bar_config(disable=True)
        given.noise = ref["i2i_noise"] = torch.randn(latent_shape)
        ref["i2i_image"] = i2i(
            **prompt_run, image=init_pil, strength=I2I_STRENGTH, guidance_scale=GUIDANCE, max_sequence_length=512
        ).images

        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[8:40, 16:56] = 255
        ref["inp_mask"] = torch.from_numpy(mask)
        inp = FluxInpaintPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER), transformer=dev, **parts)
        inp.set_progress_bar_config(disable=True)
        given.noise = ref["inp_noise"] = torch.randn(latent_shape)
        ref["inp_image"] = inp(
            **prompt_run,
            image=init_pil,
            mask_image=Image.fromarray(mask),
            strength=INP_STRENGTH,
            guidance_scale=GUIDANCE,
            max_sequence_length=512,
        ).images

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {
        "pinned": PINNED,
        "height": HEIGHT,
        "width": WIDTH,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "prompt": PROMPT,
        "long_prompt": LONG_PROMPT,
        "i2i_strength": I2I_STRENGTH,
        "inp_strength": INP_STRENGTH,
        "schedulers": {"schnell": SCHNELL_SCHEDULER, "dev": DEV_SCHEDULER},
        "schedules": schedules(),
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
