"""Builds a tiny random SD 1.5-shaped pipeline with diffusers and records reference outputs for worker-sd.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_tiny_pipeline.py

Pinned: diffusers==0.42.1, transformers==5.23.0 (also recorded in reference.json), torch==2.15.0,
CPU, float32, seed 0. Writes tests/fixtures/sd/tiny-sd15/ in the diffusers folder layout (text_encoder/,
unet/, vae/, scheduler/ with config.json and model.safetensors / diffusion_pytorch_model.safetensors),
tiny-sd15/unet-inpaint/ (a 9-channel inpainting UNet of the same shape), tiny-sd15.safetensors (the same
weights in float16 as one single-file checkpoint in the original LDM key layout, as CivitAI ships them; the inverse
mapping below is checked by converting it back with diffusers' own single-file converter), and
tiny-sd15/reference.safetensors with the inputs and outputs a Rust test compares against:

- `tokens`, `uncond_tokens` (int64; GEN_PROMPT and "" tokenized) -> `text_hidden`, `text_penultimate` (CLIP last and second-to-last
  hidden states), `text_clip_skip2` (second-to-last with the final layer norm, as diffusers' `clip_skip=1`
  and the UIs' "Clip skip: 2"), `uncond_hidden`;
- `unet_latents`, `unet_timestep` (one value) -> `unet_out` (one UNet call on `text_hidden`);
- `vae_latents` -> `vae_decoded` (one VAE decode; the latents are already divided by the scaling factor);
  `vae_image` -> `vae_encoded_mean` (the mode of the encoder's latent distribution, unscaled);
- a whole 4-step Euler generation with CFG 7.5 from `gen_noise` (unit Gaussian, scaled by the scheduler):
  `gen_latents` (final latents) and `gen_image` (decoded after dividing by the VAE scaling factor);
- the same with `prediction_type="v_prediction"` (SD 2.x): `genv_latents`;
- img2img at strength 0.5 (4 steps Euler: the last 2 run) from `i2i_image` and `i2i_noise`: `i2i_latents`;
  the init latents are the encoder's mode times the scaling factor (deterministic, no sampling);
- inpainting with the 9-channel UNet, 4 steps Euler, from `inp_image`, `inp_mask` (1 = repaint) and
  `inp_noise`: `inp_latents`. The masked image is `image * (mask < 0.5)`, its latents the encoder's mode
  times the scaling factor, the mask resized to the latents by nearest neighbour, as diffusers does.

The tokenizer (tokenizer/vocab.json and merges.txt, as SD repos ship them) is a CLIP BPE vocabulary of
the 26 letters and a few merged words ("cat", "dog", "red") within the encoder's 100 tokens;
`tokenizer_prompt` and `tokenizer_ids` (transformers' CLIPTokenizer, padded to 16) check a tokenizer built
from those files. The pipeline tests give token ids directly.
"""

import json
import pathlib

import diffusers
import torch
import torch.nn.functional as F
import transformers
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0", "transformers": "5.23.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/tiny-sd15"
SINGLE_FILE = ROOT / "tests/fixtures/sd/tiny-sd15.safetensors"
SCHEDULER_CONFIG = ROOT / "tests/fixtures/sd/sd15-scheduler_scheduler_config.json"
SEQ = 16  # max_position_embeddings: short prompts keep the fixture small
LATENT = (1, 4, 8, 8)  # a 64x64 image: the VAE downsamples by 8 as the real one does
GUIDANCE = 7.5
STEPS = 4
STRENGTH = 0.5


PROMPT = "A red cat,  and a DOG!"
GEN_PROMPT = "a red cat"  # the prompt of every generation below; the negative prompt is empty


def write_tokenizer(folder):
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>")]
    vocab = letters + [c + "</w>" for c in letters] + ["".join(m) for m in merges]
    vocab = {token: i for i, token in enumerate(vocab)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 98, 99
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"model_max_length": SEQ, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    return lambda text: tokenizer(text, padding="max_length", max_length=SEQ, truncation=True).input_ids


def unet_of(in_channels):
    # candle's UNet uses 32 GroupNorm groups in places, so the channels are multiples of 32.
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=32,
    ).eval()


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
    unet = unet_of(4)
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
    )
    inpaint = unet_of(9)
    return text_encoder.eval(), unet, vae.eval(), inpaint


# The original (LDM / CompVis) names of the diffusers ones, as in diffusers'
# scripts/convert_diffusers_to_original_stable_diffusion.py, generalized to any block count and
# layers_per_block (the script hard-codes SD 1.5's 4 blocks of 2).
def unet_to_ldm(state, config):
    layers = config.layers_per_block
    blocks = len(config.block_out_channels)
    down_attn = [t.startswith("CrossAttn") for t in config.down_block_types]
    up_attn = [t.startswith("CrossAttn") for t in config.up_block_types]
    prefixes = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(blocks):
        for j in range(layers):
            n = (layers + 1) * i + j + 1
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0."))
            if down_attn[i]:
                prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1."))
        if i < blocks - 1:
            n = (layers + 1) * (i + 1)
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n}.0.op."))
        for j in range(layers + 1):
            n = (layers + 1) * i + j
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0."))
            if up_attn[i]:
                prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1."))
        if i < blocks - 1:
            n = (layers + 1) * i + layers
            prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{n}.{2 if up_attn[i] else 1}."))
    resnet = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("time_emb_proj.", "emb_layers.1."),
        ("conv_shortcut.", "skip_connection."),
    ]
    out = {}
    for key, value in state.items():
        new = None
        for hf, sd in prefixes:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if ".resnets." in hf or hf.startswith("mid_block.resnets"):
                    for a, b in resnet:
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                new = sd + rest
                break
        assert new is not None, key
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state, config):
    blocks = len(config.block_out_channels)
    layers = config.layers_per_block
    prefixes = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for side in ("encoder", "decoder"):
        prefixes.append((f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1."))
        for i in range(2):
            prefixes.append((f"{side}.mid_block.resnets.{i}.", f"{side}.mid.block_{i + 1}."))
    for i in range(blocks):
        for j in range(layers):
            prefixes.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        for j in range(layers + 1):
            prefixes.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{blocks - 1 - i}.block.{j}."))
        if i < blocks - 1:
            prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample."))
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in state.items():
        new = key
        for hf, sd in prefixes:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if "attentions" in hf:
                    for a, b in attn:
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                    if value.dim() == 2:  # the original attention projections are 1x1 convolutions
                        value = value[:, :, None, None]
                else:
                    rest = rest.replace("conv_shortcut.", "nin_shortcut.")
                new = sd + rest
                break
        out["first_stage_model." + new] = value
    return out


def single_file(text_encoder, unet, vae):
    unet_state, vae_state = unet.state_dict(), vae.state_dict()
    ckpt = unet_to_ldm(unet_state, unet.config)
    ckpt.update(vae_to_ldm(vae_state, vae.config))
    for key, value in text_encoder.state_dict().items():
        ckpt["cond_stage_model.transformer.text_model." + key] = value
    # The inverse mapping is right when diffusers' own converter maps it back to the same tensors.
    back = convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    assert back.keys() == unet_state.keys(), set(back) ^ set(unet_state)
    assert all(torch.equal(back[k], unet_state[k]) for k in back)
    back = convert_ldm_vae_checkpoint(ckpt, dict(vae.config))
    assert back.keys() == vae_state.keys(), set(back) ^ set(vae_state)
    assert all(torch.equal(back[k].reshape(vae_state[k].shape), vae_state[k]) for k in back)
    # float16, as CivitAI's pruned checkpoints are (and half the size in the repository).
    return {k: v.half().contiguous() for k, v in ckpt.items()}


def eight_bit(image):
    """An image in [-1, 1] on the 8-bit grid, as a PNG carries it to the worker."""
    return torch.round((image + 1) * 127.5) / 127.5 - 1


def euler(prediction_type="epsilon"):
    config = json.loads(SCHEDULER_CONFIG.read_text())
    config["prediction_type"] = prediction_type
    scheduler = EulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(STEPS)
    return scheduler


def denoise(unet, scheduler, latents, timesteps, context, extra=None):
    for t in timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        if extra is not None:
            model_in = torch.cat([model_in, torch.cat([extra] * 2)], dim=1)
        noise_uncond, noise_text = unet(model_in, t, encoder_hidden_states=context).sample.chunk(2)
        noise = noise_uncond + GUIDANCE * (noise_text - noise_uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    return latents


@torch.no_grad()
def main():
    assert diffusers.__version__ == PINNED["diffusers"], diffusers.__version__
    assert torch.__version__.split("+")[0] == PINNED["torch"], torch.__version__
    assert transformers.__version__ == PINNED["transformers"], transformers.__version__
    text_encoder, unet, vae, inpaint = build()
    OUT.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(OUT / "text_encoder", safe_serialization=True)
    unet.save_pretrained(OUT / "unet", safe_serialization=True)
    inpaint.save_pretrained(OUT / "unet-inpaint", safe_serialization=True)
    vae.save_pretrained(OUT / "vae", safe_serialization=True)
    euler().save_pretrained(OUT / "scheduler")
    save_file(single_file(text_encoder, unet, vae), SINGLE_FILE)
    sf = vae.config.scaling_factor

    gen = torch.Generator().manual_seed(1)
    ref = {}
    tokenize = write_tokenizer(OUT / "tokenizer")
    ref["tokenizer_ids"] = torch.tensor([tokenize(PROMPT)], dtype=torch.int64)
    tokens = torch.tensor([tokenize(GEN_PROMPT)], dtype=torch.int64)
    uncond = torch.tensor([tokenize("")], dtype=torch.int64)
    out = text_encoder(tokens, output_hidden_states=True)
    ref["tokens"], ref["uncond_tokens"] = tokens, uncond
    ref["text_hidden"] = out.last_hidden_state
    ref["text_penultimate"] = out.hidden_states[-2]
    ref["text_clip_skip2"] = text_encoder.final_layer_norm(out.hidden_states[-2])
    ref["uncond_hidden"] = text_encoder(uncond).last_hidden_state

    ref["unet_latents"] = torch.randn(LATENT, generator=gen)
    ref["unet_timestep"] = torch.tensor([500.0])
    ref["unet_out"] = unet(ref["unet_latents"], 500, encoder_hidden_states=ref["text_hidden"]).sample

    ref["vae_latents"] = torch.randn(LATENT, generator=gen)
    ref["vae_decoded"] = vae.decode(ref["vae_latents"]).sample
    ref["vae_image"] = torch.rand((1, 3, 64, 64), generator=gen) * 2 - 1
    ref["vae_encoded_mean"] = vae.encode(ref["vae_image"]).latent_dist.mode()

    # A whole short generation with classifier-free guidance, noise given explicitly.
    context = torch.cat([ref["uncond_hidden"], ref["text_hidden"]])
    ref["gen_noise"] = torch.randn(LATENT, generator=gen)
    scheduler = euler()
    latents = denoise(unet, scheduler, ref["gen_noise"] * scheduler.init_noise_sigma, scheduler.timesteps, context)
    ref["gen_latents"] = latents
    ref["gen_image"] = vae.decode(latents / sf).sample

    scheduler = euler("v_prediction")
    latents = ref["gen_noise"] * scheduler.init_noise_sigma
    ref["genv_latents"] = denoise(unet, scheduler, latents, scheduler.timesteps, context)

    # img2img: diffusers' StableDiffusionImg2ImgPipeline.get_timesteps and prepare_latents.
    ref["i2i_image"] = eight_bit(torch.rand((1, 3, 64, 64), generator=gen) * 2 - 1)
    ref["i2i_noise"] = torch.randn(LATENT, generator=gen)
    scheduler = euler()
    init_timestep = min(int(STEPS * STRENGTH), STEPS)
    t_start = max(STEPS - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    scheduler.set_begin_index(t_start * scheduler.order)
    init = vae.encode(ref["i2i_image"]).latent_dist.mode() * sf
    latents = scheduler.add_noise(init, ref["i2i_noise"], timesteps[:1])
    ref["i2i_latents"] = denoise(unet, scheduler, latents, timesteps, context)

    # Inpainting with the 9-channel UNet (StableDiffusionInpaintPipeline at strength 1).
    ref["inp_image"] = eight_bit(torch.rand((1, 3, 64, 64), generator=gen) * 2 - 1)
    mask = torch.zeros((1, 1, 64, 64))
    mask[:, :, 16:48, 8:40] = 1.0
    ref["inp_mask"] = mask
    ref["inp_noise"] = torch.randn(LATENT, generator=gen)
    masked = ref["inp_image"] * (mask < 0.5)
    masked_latents = vae.encode(masked).latent_dist.mode() * sf
    small_mask = F.interpolate(mask, size=(8, 8))
    scheduler = euler()
    latents = ref["inp_noise"] * scheduler.init_noise_sigma
    extra = torch.cat([small_mask, masked_latents], dim=1)
    ref["inp_latents"] = denoise(inpaint, scheduler, latents, scheduler.timesteps, context, extra)

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {
        "pinned": PINNED,
        "guidance_scale": GUIDANCE,
        "steps": STEPS,
        "strength": STRENGTH,
        "scheduler": "Euler",
        "tokenizer_prompt": PROMPT,
        "prompt": GEN_PROMPT,
        "vae_scaling_factor": sf,
        "timesteps": [float(t) for t in euler().timesteps],
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file()) + SINGLE_FILE.stat().st_size
    print(f"wrote {OUT} and {SINGLE_FILE} ({total} bytes)")


if __name__ == "__main__":
    main()
