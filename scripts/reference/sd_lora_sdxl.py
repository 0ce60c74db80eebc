"""Builds a tiny LoRA for the tiny SDXL pipeline in PEFT and kohya-SDXL layouts and records diffusers' image.

Run once (not in CI) from the repository root, after sd_sdxl.py:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_lora_sdxl.py

Pinned as sd_lora.py. Writes tests/fixtures/sd/lora/:

- `sdxl-peft.safetensors`: `unet.<module>.lora_A/B.weight`, `text_encoder.<module>...` and
  `text_encoder_2.<module>...`, rank 4, on the UNet's attention projections and ResNet convolutions and
  both text encoders' attention projections;
- `sdxl-kohya.safetensors`: the same difference as kohya's SDXL trainer writes it: the UNet under its
  original names (`lora_unet_input_blocks_2_1_transformer_blocks_0_attn1_to_q`, `..._in_layers_2`),
  `lora_te1_*`, `lora_te2_*`, `alpha` = rank / 2 with `lora_up` doubled;
- `sdxl-reference.safetensors`: `plain_image` and `lora_image` (x0.8 through `load_lora_weights` and
  `set_adapters`; the kohya file loaded the same way is checked here to give the same image) of "a red cat",
  4 Euler steps, CFG 5, 64x64, noise from `torch.Generator("cpu").manual_seed(0)`.
"""

import pathlib
import sys

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sd_lora  # noqa: E402
import sd_tiny_pipeline  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-sdxl"
OUT = ROOT / "tests/fixtures/sd/lora"


@torch.no_grad()
def run(pipe):
    latents = pipe(
        "a red cat",
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="latent",
    ).images
    return pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample


def main():
    pipe = StableDiffusionXLPipeline.from_pretrained(TINY, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(131)
    lin, conv = torch.nn.Linear, torch.nn.Conv2d
    unet_mods = sd_lora.modules(pipe.unet, lin, {"to_q", "to_k", "to_v", "to_out"}) + sd_lora.modules(
        pipe.unet, conv, {"conv1", "conv2"}
    )
    attn = {"q_proj", "k_proj", "v_proj", "out_proj"}
    te1 = sd_lora.modules(pipe.text_encoder, lin, attn)
    te2 = sd_lora.modules(pipe.text_encoder_2, lin, attn)
    ldm = lambda path: next(iter(sd_tiny_pipeline.unet_to_ldm({path + ".w": None}, pipe.unet.config)))  # noqa: E731
    peft, kohya = {}, {}
    for prefix, kohya_name, mods in [
        ("unet.", lambda p: "lora_unet_" + ldm(p)[len("model.diffusion_model.") : -2].replace(".", "_"), unet_mods),
        ("text_encoder.", lambda p: sd_lora.kohya_name("lora_te1_", sd_lora.te_path(p)), te1),
        ("text_encoder_2.", lambda p: sd_lora.kohya_name("lora_te2_", sd_lora.te_path(p)), te2),
    ]:
        for path, module in mods:
            a, b = sd_lora.low_rank(gen, module, 0.3)
            name = sd_lora.te_path(path) if prefix != "unet." else path
            peft[f"{prefix}{name}.lora_A.weight"] = a
            peft[f"{prefix}{name}.lora_B.weight"] = b
            k = kohya_name(path)
            kohya[f"{k}.lora_down.weight"] = a
            kohya[f"{k}.lora_up.weight"] = b * 2
            kohya[f"{k}.alpha"] = torch.tensor(sd_lora.RANK / 2)
    assert any("input_blocks" in k for k in kohya), list(kohya)[:4]
    save_file(peft, OUT / "sdxl-peft.safetensors")
    save_file(kohya, OUT / "sdxl-kohya.safetensors")

    ref = {"plain_image": run(pipe)}
    pipe.load_lora_weights(str(OUT / "sdxl-peft.safetensors"), adapter_name="peft")
    pipe.set_adapters(["peft"], [0.8])
    ref["lora_image"] = run(pipe)
    assert (ref["lora_image"] - ref["plain_image"]).abs().max() > 0.05
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(OUT / "sdxl-kohya.safetensors"), adapter_name="kohya")
    pipe.set_adapters(["kohya"], [0.8])
    diff = (run(pipe) - ref["lora_image"]).abs().max()
    assert diff < 1e-4, diff
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "sdxl-reference.safetensors")
    print("wrote", OUT, {p.name: p.stat().st_size for p in OUT.glob("sdxl-*")})


if __name__ == "__main__":
    main()
