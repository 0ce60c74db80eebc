"""Builds a tiny random SDXL pipeline with diffusers and records reference outputs for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_sdxl.py

Pinned: diffusers==0.42.1, transformers==5.23.0 (also recorded in reference.json), torch==2.15.0,
CPU, float32, seed 0. Every weight is stored in float16 to keep the fixtures small; the references run the
same (rounded) values in float32. Writes tests/fixtures/sd/tiny-sdxl/ in the diffusers folder layout:

- `text_encoder/` (CLIPTextModel, quick_gelu, as SDXL's CLIP ViT-L) and `text_encoder_2/`
  (CLIPTextModelWithProjection, gelu, as SDXL's OpenCLIP bigG), 16 wide each, 3 layers; `eos_token_id` 2 as
  in SDXL's configs, so the pooled output is taken at the argmax of the ids (transformers' legacy rule);
- `tokenizer/` (the 26-letter CLIP BPE vocabulary of tiny-sd15, padded with the end token) and
  `tokenizer_2/` (the same plus "!", its pad token, as SDXL's tokenizer_2 pads with "!");
- `unet/`: a UNet2DConditionModel shaped as SDXL's: `addition_embed_type="text_time"` (the pooled text
  embedding and the six size/crop "time ids" are embedded and added to the timestep embedding), linear
  projections, no attention in the first block, cross-attention width 32 (both encoders side by side),
  blocks (64, 32). 32 GroupNorm groups (candle's DownBlock2D/UpBlock2D ignore the configured count);
  the first level has 64 channels, two per group, since with one channel per group the norm after each
  ResNet's time-embedding add removes that add, and the test could not see the conditioning;
- `vae/`: a 4-level AutoencoderKL (8x downsampling, as SDXL's) with SDXL's scaling factor 0.13025;
- `scheduler/`: SDXL base's EulerDiscreteScheduler config (leading spacing, steps offset 1);
- `model_index.json` (`force_zeros_for_empty_prompt`: an empty negative prompt is zeros, not encoded).

`tests/fixtures/sd/tiny-sdxl.safetensors` is one single-file checkpoint in the original (Stability's `sgm`)
key layout, as CivitAI ships them, with the same text encoders and VAE and, to keep the fixtures small,
its own UNet, a 9-channel inpainting one of blocks (32, 32) (its config in reference.json as
`single_file_unet_config`): `model.diffusion_model.*`,
`first_stage_model.*`, `conditioner.embedders.0.transformer.*` (CLIP-L, transformers names) and
`conditioner.embedders.1.model.*` (OpenCLIP: fused qkv `in_proj_weight`, `text_projection` transposed).
The inverse mapping is checked by converting it back with diffusers' own single-file converters.

`reference.safetensors` (prompt "a red cat", negative prompt "dog" unless said otherwise, CFG 5, 64x64):
- `tokens`, `tokens_2` (both tokenizers' ids for the prompt) -> `text_context`, `text_pooled`,
  `text_negative_context`, `text_negative_pooled` (StableDiffusionXLPipeline.encode_prompt), and
  `text_context_skip2` (`clip_skip=1` in diffusers, the UIs' "Clip skip: 2");
- `unet_latents`, `unet_timestep`, `unet_context`, `unet_text_embeds`, `unet_time_ids` -> `unet_out`;
- txt2img, 4 steps Euler through StableDiffusionXLPipeline from `gen_noise` (unit Gaussian) ->
  `gen_latents` (before the VAE) and `gen_image` (decoded, in [-1, 1]);
- Turbo: 1 step Euler ancestral with trailing timesteps, CFG 0, from `gen_noise` -> `turbo_latents`
  (its last step adds no noise, so no other random numbers enter);
- img2img, StableDiffusionXLImg2ImgPipeline at strength 0.75 (the last 3 of 4 steps), empty negative
  prompt, from `i2i_image` and `i2i_noise` -> `i2i_latents`;
- inpainting, StableDiffusionXLInpaintPipeline with the 4-channel UNet (masked latents blended back after
  each step), strength 1, empty negative prompt, from `inp_image`, `inp_mask` (1 = repaint) and
  `inp_noise` -> `inp_latents`;
- the single file's 9-channel inpainting UNet on `sf_unet_latents` (the other inputs as above) ->
  `sf_unet_out`, and the same inpainting through it (mask and masked-image latents as extra UNet
  inputs, no blending) -> `sf_inp_latents`, `sf_inp_image` (decoded).
The VAE encoder is read at the mode of its distribution (both pipelines' `retrieve_latents` is replaced),
as worker-sd encodes deterministically; images lie on the 8-bit grid, as a PNG carries them.
"""

import json
import pathlib
import sys

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from diffusers.pipelines.stable_diffusion_xl import (
    pipeline_stable_diffusion_xl_img2img,
    pipeline_stable_diffusion_xl_inpaint,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from sd_tiny_pipeline import unet_to_ldm, vae_to_ldm  # noqa: E402  (the SD 1.5 script's inverse mapping)

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-sdxl"
SINGLE_FILE = ROOT / "tests/fixtures/sd/tiny-sdxl.safetensors"
SEQ = 16
TIME_EMBED = 8  # addition_time_embed_dim (256 in SDXL)
HEIGHT = WIDTH = 64  # pixels: 8 x 8 latents with the VAE's factor of 8
LATENT = (1, 4, 8, 8)
STEPS = 4
GUIDANCE = 5.0
STRENGTH = 0.75
PROMPT, NEGATIVE = "a red cat", "dog"
TURBO_SCHEDULER = {  # stabilityai/sdxl-turbo's scheduler/scheduler_config.json
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "prediction_type": "epsilon",
}


def write_tokenizer(folder, pad):
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>")]
    vocab = letters + [c + "</w>" for c in letters] + ["".join(m) for m in merges]
    if pad == "!":
        vocab.append("!")
    vocab = {token: i for i, token in enumerate(vocab)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 98, 99
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"model_max_length": SEQ, "pad_token": pad, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad, model_max_length=SEQ)


def clip_config(act):
    return CLIPTextConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=SEQ,
        hidden_act=act,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=2,  # as SDXL's configs: the pooled token is the argmax of the ids
        pad_token_id=1,
    )


def sdxl_unet(channels, heads=(2, 4), in_channels=4):
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1),
        attention_head_dim=heads,
        cross_attention_dim=32,
        use_linear_projection=True,
        norm_num_groups=32,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=16 + 6 * TIME_EMBED,
    ).eval()
    # With PyTorch's default init the timestep and added embeddings barely move the output (1e-6), so a
    # test could not tell whether they are applied: make the embedding path's weights larger. Not the
    # ResNets' `time_emb_proj`: large per-channel adds that a one-channel GroupNorm then subtracts again
    # cancel catastrophically in float32, and the UNet's output jumped by 1e-2 for input changes of 1e-7.
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if any(k in name for k in ("time_embedding", "add_embedding")):
                p.copy_(torch.randn_like(p) * 0.5)
    return unet


def build():
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config("quick_gelu")).eval()
    text_encoder_2 = CLIPTextModelWithProjection(clip_config("gelu")).eval()
    unet = sdxl_unet((64, 32), heads=(4, 2))
    # The single file's UNet: a 9-channel inpainting UNet of the same shape at one width, half the size.
    # (With one channel per GroupNorm group the time conditioning cannot be seen, but the name mapping can.)
    single_file_unet = sdxl_unet((32, 32), in_channels=9)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    ).eval()
    models = {"text_encoder": text_encoder, "text_encoder_2": text_encoder_2, "unet": unet, "vae": vae}
    models["single_file_unet"] = single_file_unet
    # Round every weight to float16 (what is stored), then run in float32.
    for model in models.values():
        model.half().float()
    return models


def open_clip_state(model):
    """transformers' CLIPTextModelWithProjection state dict in OpenCLIP's names (the inverse of diffusers'
    convert_open_clip_checkpoint)."""
    state = model.state_dict()
    prefix = "text_model." if any(k.startswith("text_model.") for k in state) else ""
    out = {
        "positional_embedding": state[prefix + "embeddings.position_embedding.weight"],
        "token_embedding.weight": state[prefix + "embeddings.token_embedding.weight"],
        "ln_final.weight": state[prefix + "final_layer_norm.weight"],
        "ln_final.bias": state[prefix + "final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].T.contiguous(),
        "logit_scale": torch.tensor(4.6052),  # present in real checkpoints, unused
    }
    for i in range(model.config.num_hidden_layers):
        hf, oc = f"{prefix}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[oc + f"attn.in_proj_{kind}"] = torch.cat(
                [state[hf + f"self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0
            )
            for a, b in [
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ]:
                out[oc + f"{b}.{kind}"] = state[hf + f"{a}.{kind}"]
    return out


def single_file(models):
    unet, vae = models["single_file_unet"], models["vae"]
    unet_state = unet.state_dict()
    base = {k: v for k, v in unet_state.items() if not k.startswith("add_embedding.")}
    ckpt = unet_to_ldm(base, unet.config)
    for i, j in ((1, 0), (2, 2)):  # add_embedding.linear_N <- label_emb.0.M (sgm's Sequential indices)
        for kind in ("weight", "bias"):
            ckpt[f"model.diffusion_model.label_emb.0.{j}.{kind}"] = unet_state[f"add_embedding.linear_{i}.{kind}"]
    ckpt.update(vae_to_ldm(vae.state_dict(), vae.config))
    for key, value in models["text_encoder"].state_dict().items():
        key = key.removeprefix("text_model.")
        ckpt["conditioner.embedders.0.transformer.text_model." + key] = value
    for key, value in open_clip_state(models["text_encoder_2"]).items():
        ckpt["conditioner.embedders.1.model." + key] = value
    # The inverse mappings are right when diffusers' own converters map them back to the same tensors.
    back = convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    assert back.keys() == unet_state.keys(), set(back) ^ set(unet_state)
    assert all(torch.equal(back[k], unet_state[k]) for k in back)
    vae_state = vae.state_dict()
    back = convert_ldm_vae_checkpoint(ckpt, dict(vae.config))
    assert back.keys() == vae_state.keys(), set(back) ^ set(vae_state)
    assert all(torch.equal(back[k].reshape(vae_state[k].shape), vae_state[k]) for k in back)
    state = models["text_encoder_2"].state_dict()
    back = convert_open_clip_checkpoint(models["text_encoder_2"], ckpt, prefix="conditioner.embedders.1.model.")
    norm = lambda d: {k.removeprefix("text_model."): v for k, v in d.items()}  # noqa: E731
    back, state = norm(back), norm(state)
    assert back.keys() == state.keys(), set(back) ^ set(state)
    assert all(torch.equal(back[k], state[k]) for k in back)
    return {k: v.half().contiguous() for k, v in ckpt.items()}


def eight_bit(image):
    """An image in [-1, 1] on the 8-bit grid, as a PNG carries it to the worker."""
    return torch.round((image + 1) * 127.5) / 127.5 - 1


def to_pil(image):
    array = ((image[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(array)


def mode_latents(encoder_output, generator=None, sample_mode="sample"):
    """worker-sd encodes to the mode of the latent distribution: no random numbers."""
    return encoder_output.latent_dist.mode()


@torch.no_grad()
def main():
    assert {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
    } == PINNED, "versions differ from the pinned ones"
    models = build()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        if name == "single_file_unet":
            continue
        model.half().save_pretrained(OUT / name, safe_serialization=True)
        model.float()
    tokenizer = write_tokenizer(OUT / "tokenizer", "<|endoftext|>")
    tokenizer_2 = write_tokenizer(OUT / "tokenizer_2", "!")
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )  # SDXL base's scheduler/scheduler_config.json
    scheduler.save_pretrained(OUT / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": PINNED["diffusers"],
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (OUT / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    save_file(single_file(models), SINGLE_FILE)

    single_file_unet = models.pop("single_file_unet")
    components = dict(models, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler)
    pipe = StableDiffusionXLPipeline(**components)
    unet, vae = models["unet"], models["vae"]
    sf = vae.config.scaling_factor
    gen = torch.Generator().manual_seed(1)
    ref = {}

    ids = lambda tok: torch.tensor([tok(PROMPT, padding="max_length", max_length=SEQ).input_ids])  # noqa: E731
    ref["tokens"], ref["tokens_2"] = ids(tokenizer), ids(tokenizer_2)
    context, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
    )
    ref.update(
        text_context=context,
        text_pooled=pooled,
        text_negative_context=negative,
        text_negative_pooled=negative_pooled,
        text_context_skip2=pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, clip_skip=1)[0],
    )

    ref["unet_latents"] = torch.randn(LATENT, generator=gen)
    ref["unet_timestep"] = torch.tensor([499.0])
    ref["unet_context"] = torch.randn((1, SEQ, 32), generator=gen)
    ref["unet_text_embeds"] = torch.randn((1, 16), generator=gen)
    ref["unet_time_ids"] = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
    ref["unet_out"] = unet(
        ref["unet_latents"],
        ref["unet_timestep"],
        encoder_hidden_states=ref["unet_context"],
        added_cond_kwargs={"text_embeds": ref["unet_text_embeds"], "time_ids": ref["unet_time_ids"]},
    ).sample

    common = dict(height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, output_type="latent")
    ref["gen_noise"] = torch.randn(LATENT, generator=gen)
    ref["gen_latents"] = pipe(
        PROMPT, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE, latents=ref["gen_noise"], **common
    ).images
    ref["gen_image"] = vae.decode(ref["gen_latents"] / sf).sample

    turbo = StableDiffusionXLPipeline(**dict(components, scheduler=EulerAncestralDiscreteScheduler(**TURBO_SCHEDULER)))
    ref["turbo_latents"] = turbo(
        PROMPT, guidance_scale=0.0, latents=ref["gen_noise"], **dict(common, num_inference_steps=1)
    ).images

    pipeline_stable_diffusion_xl_img2img.retrieve_latents = mode_latents
    pipeline_stable_diffusion_xl_inpaint.retrieve_latents = mode_latents
    ref["i2i_image"] = eight_bit(torch.rand((1, 3, HEIGHT, WIDTH), generator=gen) * 2 - 1)
    seed = 3  # the img2img pipeline draws its noise (the only random numbers) from this generator
    ref["i2i_noise"] = torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))
    i2i = StableDiffusionXLImg2ImgPipeline(**components)
    ref["i2i_latents"] = i2i(
        PROMPT,
        image=to_pil(ref["i2i_image"]),
        strength=STRENGTH,
        guidance_scale=GUIDANCE,
        generator=torch.Generator().manual_seed(seed),
        **common,
    ).images

    ref["inp_image"] = eight_bit(torch.rand((1, 3, HEIGHT, WIDTH), generator=gen) * 2 - 1)
    mask = torch.zeros((1, 1, HEIGHT, WIDTH))
    mask[:, :, 16:48, 8:40] = 1.0
    ref["inp_mask"] = mask
    ref["inp_noise"] = torch.randn(LATENT, generator=gen)
    inpaint = StableDiffusionXLInpaintPipeline(**components)
    ref["inp_latents"] = inpaint(
        PROMPT,
        image=to_pil(ref["inp_image"]),
        mask_image=Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8), mode="L"),
        strength=1.0,
        guidance_scale=GUIDANCE,
        latents=ref["inp_noise"],
        **common,
    ).images

    # The single file's pipeline: its own (9-channel inpainting) UNet, the same text encoders and VAE.
    ref["sf_unet_latents"] = torch.randn((1, 9, 8, 8), generator=gen)
    ref["sf_unet_out"] = single_file_unet(
        ref["sf_unet_latents"],
        ref["unet_timestep"],
        encoder_hidden_states=ref["unet_context"],
        added_cond_kwargs={"text_embeds": ref["unet_text_embeds"], "time_ids": ref["unet_time_ids"]},
    ).sample
    inpaint_9 = StableDiffusionXLInpaintPipeline(**dict(components, unet=single_file_unet))
    ref["sf_inp_latents"] = inpaint_9(
        PROMPT,
        image=to_pil(ref["inp_image"]),
        mask_image=Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8), mode="L"),
        strength=1.0,
        guidance_scale=GUIDANCE,
        latents=ref["inp_noise"],
        **common,
    ).images
    ref["sf_inp_image"] = vae.decode(ref["sf_inp_latents"] / sf).sample

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {
        "pinned": PINNED,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "height": HEIGHT,
        "width": WIDTH,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "strength": STRENGTH,
        "vae_scaling_factor": sf,
        "turbo_scheduler": TURBO_SCHEDULER,
        "single_file_unet_config": {k: v for k, v in single_file_unet.config.items() if not k.startswith("_")},
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file()) + SINGLE_FILE.stat().st_size
    print(f"wrote {OUT} and {SINGLE_FILE} ({total} bytes)")


if __name__ == "__main__":
    main()
