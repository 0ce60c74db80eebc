"""Builds a random SD 1.5-sized pipeline (the UNet and CLIP ViT-L text encoder at their real shapes, random
weights stored in float16; the tiny fixture's VAE, tokenizer and scheduler) and a rank-16 kohya LoRA on every
attention projection of both, for measuring what applying and removing a LoRA costs at full size
(`OMC_LORA_COST_MODEL=DIR cargo test -p worker-sd --test integration lora_cost -- --ignored --nocapture`).

Not run by CI (it writes about 2 GB):

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_lora_cost_model.py /tmp/sd15-random
"""

import pathlib
import shutil
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-sd15"
RANK = 16


def main(out):
    out = pathlib.Path(out)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults are SD 1.5's UNet
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, vocab_size=49408))
    for name, model in [("unet", unet), ("text_encoder", text)]:
        (out / name).mkdir(parents=True, exist_ok=True)
        if name == "unet":
            model.save_config(out / name)
        else:
            model.config.save_pretrained(out / name)
        weights = {k: v.half().contiguous() for k, v in model.state_dict().items()}
        file = "diffusion_pytorch_model.safetensors" if name == "unet" else "model.safetensors"
        save_file(weights, out / name / file)
    for name in ["vae", "tokenizer", "scheduler"]:
        shutil.copytree(TINY / name, out / name, dirs_exist_ok=True)
    lora, params = {}, 0
    for prefix, model, kinds in [("lora_unet_", unet, ("to_q", "to_k", "to_v", "to_out.0")),
                                 ("lora_te_", text, ("q_proj", "k_proj", "v_proj", "out_proj"))]:
        for path, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and path.endswith(kinds):
                key = prefix + ("text_model." + path if prefix == "lora_te_" and not path.startswith("text_model.")
                                else path).replace(".", "_")
                out_f, in_f = module.weight.shape
                lora[f"{key}.lora_down.weight"] = (torch.randn(RANK, in_f) * 0.01).half()
                lora[f"{key}.lora_up.weight"] = (torch.randn(out_f, RANK) * 0.01).half()
                lora[f"{key}.alpha"] = torch.tensor(float(RANK)).half()
                params += out_f * in_f
    save_file(lora, out / "lora-rank16.safetensors")
    print(f"wrote {out}: {len(lora)} LoRA tensors adapting {params / 1e6:.1f}M weights")


if __name__ == "__main__":
    main(sys.argv[1])
