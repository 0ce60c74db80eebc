"""Builds tiny LoRAs for the tiny SD 1.5 pipeline in each file layout and records diffusers' images with them.

Run once (not in CI) from the repository root, after sd_tiny_pipeline.py:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_lora.py

Pinned: torch==2.15.0, diffusers==0.42.1, peft (any recent), CPU, float32. Writes tests/fixtures/sd/lora/:

- `peft.safetensors`: diffusers/PEFT layout (`unet.<module>.lora_A.weight`, `lora_B.weight`,
  `text_encoder.<module>...`), rank 4, on the UNet's attention projections and the text encoder's
  attention and MLP; no alpha (scale 1), as `save_lora_weights` writes it.
- `kohya.safetensors`: the same difference in kohya's layout (`lora_unet_*`, `lora_te_*`, `lora_down`,
  `lora_up` scaled by 2, `alpha` = rank / 2), as the UIs' trainers write it.
- `locon.safetensors`: another LoRA in kohya/LyCORIS LoCon layout that also adapts the ResNet
  convolutions (3x3 `lora_down`, 1x1 `lora_up`).
- `loha.safetensors`, `lokr.safetensors`: LyCORIS LoHa (`hada_w1_a`...) and LoKr (`lokr_w1`, `lokr_w2_a`,
  `lokr_w2_b`) on the UNet's attention projections. diffusers does not load these; their reference merges
  LyCORIS' difference (`(w1a @ w1b) * (w2a @ w2b) * alpha / rank`, `kron(w1, w2a @ w2b) * alpha / rank`)
  into the UNet's weights and runs the same diffusers pipeline.
- `reference.safetensors`: the final latents and decoded image (VAE output in [-1, 1]) of "a red cat",
  4 Euler steps, CFG 7.5, 64x64, noise from `torch.Generator("cpu").manual_seed(0)`:
  `plain_*` without LoRA, `peft_*` with peft.safetensors at 0.8 through `load_lora_weights` and
  `set_adapters` (kohya.safetensors loaded the same way is checked here to give the same image),
  `pair_*` with peft at 0.8 plus locon at 0.5, `loha_*` at 1.0, `lokr_*` at 0.7.
"""

import json
import pathlib

import diffusers
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-sd15"
OUT = ROOT / "tests/fixtures/sd/lora"
RANK = 4
PROMPT = "a red cat"


def pipeline():
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(TINY / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(TINY / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(TINY / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(TINY / "unet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(TINY / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def run(pipe, name, ref):
    latents = pipe(
        PROMPT,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="latent",
    ).images
    ref[f"{name}_latents"] = latents
    ref[f"{name}_image"] = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return ref[f"{name}_image"]


def modules(model, kinds, names):
    """(path, module) of the Linear/Conv2d modules whose last name component is in `names`."""
    return [
        (path, m)
        for path, m in model.named_modules()
        if isinstance(m, kinds) and path.split(".")[-1] in names
        or isinstance(m, kinds) and path.endswith("to_out.0") and "to_out" in names
    ]


def low_rank(gen, module, scale):
    """Random A (rank, in[, k, k]) and B (out, rank[, 1, 1]) for a Linear or Conv2d module."""
    w = module.weight
    if w.dim() == 4:
        a = torch.randn((RANK, w.shape[1], w.shape[2], w.shape[3]), generator=gen) * scale
        b = torch.randn((w.shape[0], RANK, 1, 1), generator=gen) * scale
    else:
        a = torch.randn((RANK, w.shape[1]), generator=gen) * scale
        b = torch.randn((w.shape[0], RANK), generator=gen) * scale
    return a, b


def kohya_name(prefix, path):
    return prefix + path.replace(".", "_")


def te_path(path):
    return path if path.startswith("text_model.") else "text_model." + path


def main():
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(13)
    pipe = pipeline()
    lin, conv = torch.nn.Linear, torch.nn.Conv2d
    unet_attn = modules(pipe.unet, lin, {"to_q", "to_k", "to_v", "to_out"})
    te_mods = modules(pipe.text_encoder, lin, {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"})
    unet_convs = modules(pipe.unet, conv, {"conv1", "conv2"})
    assert unet_attn and te_mods and unet_convs

    peft, kohya = {}, {}
    for prefix, kohya_prefix, mods, path_of in [
        ("unet.", "lora_unet_", unet_attn, lambda p: p),
        ("text_encoder.", "lora_te_", te_mods, te_path),
    ]:
        for path, module in mods:
            a, b = low_rank(gen, module, 0.3)
            peft[f"{prefix}{path_of(path)}.lora_A.weight"] = a
            peft[f"{prefix}{path_of(path)}.lora_B.weight"] = b
            k = kohya_name(kohya_prefix, path_of(path))
            kohya[f"{k}.lora_down.weight"] = a
            kohya[f"{k}.lora_up.weight"] = b * 2
            kohya[f"{k}.alpha"] = torch.tensor(RANK / 2)
    locon = {}
    for path, module in unet_attn + unet_convs:
        a, b = low_rank(gen, module, 0.3)
        k = kohya_name("lora_unet_", path)
        locon[f"{k}.lora_down.weight"] = a
        locon[f"{k}.lora_up.weight"] = b
        locon[f"{k}.alpha"] = torch.tensor(float(RANK))
    save_file(peft, OUT / "peft.safetensors")
    save_file(kohya, OUT / "kohya.safetensors")
    save_file(locon, OUT / "locon.safetensors")

    # LyCORIS LoHa and LoKr, and their differences merged by hand (diffusers does not load them).
    loha, lokr = {}, {}
    loha_delta, lokr_delta = {}, {}
    for path, module in unet_attn:
        out_dim, in_dim = module.weight.shape
        k = kohya_name("lora_unet_", path)
        w1a, w1b = torch.randn((out_dim, RANK), generator=gen) * 0.4, torch.randn((RANK, in_dim), generator=gen) * 0.4
        w2a, w2b = torch.randn((out_dim, RANK), generator=gen) * 0.4, torch.randn((RANK, in_dim), generator=gen) * 0.4
        alpha = 2.0
        loha.update({f"{k}.hada_w1_a": w1a, f"{k}.hada_w1_b": w1b, f"{k}.hada_w2_a": w2a, f"{k}.hada_w2_b": w2b})
        loha[f"{k}.alpha"] = torch.tensor(alpha)
        loha_delta[path] = (w1a @ w1b) * (w2a @ w2b) * (alpha / RANK)
        # LoKr: out = 4 * (out / 4), in = 2 * (in / 2); w1 full (4, 2), w2 low-rank.
        w1 = torch.randn((4, 2), generator=gen) * 0.5
        w2a = torch.randn((out_dim // 4, 2), generator=gen) * 0.5
        w2b = torch.randn((2, in_dim // 2), generator=gen) * 0.5
        lokr.update({f"{k}.lokr_w1": w1, f"{k}.lokr_w2_a": w2a, f"{k}.lokr_w2_b": w2b, f"{k}.alpha": torch.tensor(1.0)})
        lokr_delta[path] = torch.kron(w1, w2a @ w2b) * (1.0 / 2)
    save_file(loha, OUT / "loha.safetensors")
    save_file(lokr, OUT / "lokr.safetensors")

    ref = {}
    plain = run(pipe, "plain", ref)
    pipe.load_lora_weights(str(OUT / "peft.safetensors"), adapter_name="peft")
    pipe.set_adapters(["peft"], [0.8])
    with_peft = run(pipe, "peft", ref)
    assert (with_peft - plain).abs().max() > 0.05, "the LoRA should change the image"
    pipe.load_lora_weights(str(OUT / "locon.safetensors"), adapter_name="locon")
    pipe.set_adapters(["peft", "locon"], [0.8, 0.5])
    run(pipe, "pair", ref)
    pipe.unload_lora_weights()
    assert torch.equal(run(pipe, "check", {}), plain)
    pipe.load_lora_weights(str(OUT / "kohya.safetensors"), adapter_name="kohya")
    pipe.set_adapters(["kohya"], [0.8])
    kohya_image = run(pipe, "check", {})
    assert (kohya_image - with_peft).abs().max() < 1e-4, (kohya_image - with_peft).abs().max()
    pipe.unload_lora_weights()

    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    for name, deltas, weight in [("loha", loha_delta, 1.0), ("lokr", lokr_delta, 0.7)]:
        state = dict(base)
        for path, delta in deltas.items():
            state[f"{path}.weight"] = base[f"{path}.weight"] + weight * delta
        pipe.unet.load_state_dict(state)
        image = run(pipe, name, ref)
        assert (image - plain).abs().max() > 0.05, name
    pipe.unet.load_state_dict(base)

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "prompt": PROMPT, "seed": 0, "steps": 4}
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in OUT.iterdir()}
    print("wrote", OUT, sizes)


if __name__ == "__main__":
    main()
