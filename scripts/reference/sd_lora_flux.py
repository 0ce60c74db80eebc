"""Builds a tiny LoRA for the tiny FLUX.1-dev transformer in the three layouts Flux LoRAs come in and records
diffusers' transformer output with each loaded through `FluxPipeline.load_lora_weights`.

Run once (not in CI) from the repository root, after sd_flux.py:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_lora_flux.py

Pinned as sd_flux.py. Writes tests/fixtures/sd/lora/:

- `flux-kohya.safetensors`: kohya's layout on the original module names (`lora_unet_double_blocks_0_img_attn_qkv`
  with one `lora_down`/`lora_up` pair over the fused q, k, v; `..._single_blocks_0_linear1`, `_linear2`,
  `_modulation_lin`, `_img_mod_lin`, the MLPs, the projections, `lora_unet_img_in`, `_txt_in`,
  `_time_in_in_layer`, `_final_layer_adaLN_modulation_1`), `alpha` = rank / 2, rank 4;
- `flux-bfl.safetensors`: the same under the original names as ComfyUI saves them
  (`diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight`, alpha folded into `lora_up`);
- `flux-diffusers.safetensors`: the same as diffusers/ai-toolkit write it (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`...,
  the fused projections split into q, k, v and the single blocks' MLP input, the shared `lora_down` repeated,
  the final norm's halves swapped into diffusers' `norm_out.linear`, alpha / rank folded in);
- each file also adapts the CLIP text encoder's attention projections (`lora_te1_text_model_...`,
  `text_encoders.clip_l.transformer.text_model...`, `text_encoder.text_model...`);
- `flux-reference.safetensors`: `plain_out` and `lora_out`, the transformer's output for sd_flux.py's `dev_*`
  inputs, and `plain_pooled` and `lora_pooled`, CLIP's pooled output for its `clip_tokens`, without and with
  the LoRA at 0.8, through `FluxPipeline.load_lora_weights` and `set_adapters` on the tiny dev pipeline.

diffusers' kohya converter hard-codes FLUX.1's full widths where it splits a single block's `linear1` (3072 x 3,
12288), so it cannot convert the tiny model's kohya or ComfyUI file whole. The diffusers-layout file is made here
by the same split; it is checked against diffusers' converter on a kohya file without the single blocks (where
the converter splits by the tensors' own shapes), and the BFL/ComfyUI and kohya files are checked to convert to
the same tensors there.
"""

import pathlib

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/sd/tiny-flux"
OUT = ROOT / "tests/fixtures/sd/lora"
RANK = 4
WEIGHT = 0.8


class Holder(torch.nn.Module):
    """What `load_lora_into_transformer` needs of a pipeline: just the transformer."""


def call(model, ref):
    with torch.no_grad():
        return model(
            hidden_states=ref["dev_img"],
            encoder_hidden_states=ref["dev_txt"],
            pooled_projections=ref["dev_vec"],
            timestep=ref["dev_timestep"],
            img_ids=ref["dev_img_ids"],
            txt_ids=ref["dev_txt_ids"],
            guidance=ref["dev_guidance"],
            return_dict=False,
        )[0]


def original_modules(config):
    """(original module name, out, in) of every linear the LoRA adapts."""
    h = config.num_attention_heads * config.attention_head_dim
    mlp = 4 * h
    mods = [
        ("img_in", h, config.in_channels),
        ("txt_in", h, config.joint_attention_dim),
        ("time_in.in_layer", h, 256),
        ("final_layer.adaLN_modulation.1", 2 * h, h),
    ]
    for i in range(config.num_layers):
        d = f"double_blocks.{i}"
        for side in ("img", "txt"):
            mods += [
                (f"{d}.{side}_attn.qkv", 3 * h, h),
                (f"{d}.{side}_attn.proj", h, h),
                (f"{d}.{side}_mlp.0", mlp, h),
                (f"{d}.{side}_mlp.2", h, mlp),
                (f"{d}.{side}_mod.lin", 6 * h, h),
            ]
    for i in range(config.num_single_layers):
        s = f"single_blocks.{i}"
        mods += [(f"{s}.linear1", 3 * h + mlp, h), (f"{s}.linear2", h, h + mlp), (f"{s}.modulation.lin", 3 * h, h)]
    return mods


def to_diffusers(kohya, h):
    """kohya's Flux LoRA in diffusers/ai-toolkit names: fused q, k, v (and MLP input) split by rows, the shared
    down projection repeated, alpha / rank folded into `lora_B`."""
    renames = {
        "img_attn_proj": ["attn.to_out.0"],
        "txt_attn_proj": ["attn.to_add_out"],
        "img_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
        "txt_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
        "img_mlp_0": ["ff.net.0.proj"],
        "img_mlp_2": ["ff.net.2"],
        "txt_mlp_0": ["ff_context.net.0.proj"],
        "txt_mlp_2": ["ff_context.net.2"],
        "img_mod_lin": ["norm1.linear"],
        "txt_mod_lin": ["norm1_context.linear"],
        "linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
        "linear2": ["proj_out"],
        "modulation_lin": ["norm.linear"],
    }
    top = {
        "img_in": "x_embedder",
        "txt_in": "context_embedder",
        "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    }
    out = {}
    for key in [k[: -len(".lora_down.weight")] for k in kohya if k.endswith(".lora_down.weight")]:
        down, up = kohya[f"{key}.lora_down.weight"], kohya[f"{key}.lora_up.weight"]
        up = up * (kohya[f"{key}.alpha"] / down.shape[0])
        name = key[len("lora_unet_") :]
        if name == "final_layer_adaLN_modulation_1":
            # diffusers' norm_out is (scale, shift), the original's (shift, scale).
            targets, chunks = ["norm_out.linear"], [torch.cat([up[h:], up[:h]])]
        elif name in top:
            targets, chunks = [top[name]], [up]
        else:
            kind, index, rest = name.split("_", 2)[0] + "_blocks", name.split("_")[2], name.split("_", 3)[3]
            block = "transformer_blocks" if kind == "double_blocks" else "single_transformer_blocks"
            targets = [f"{block}.{index}.{t}" for t in renames[rest]]
            sizes = [h] * 3 + [up.shape[0] - 3 * h] if rest == "linear1" else [up.shape[0] // len(targets)] * len(targets)
            chunks = torch.split(up, sizes) if len(targets) > 1 else [up]
        for target, chunk in zip(targets, chunks):
            out[f"transformer.{target}.lora_A.weight"] = down.clone()
            out[f"transformer.{target}.lora_B.weight"] = chunk.contiguous()
    return out


def load(path):
    transformer = FluxTransformer2DModel.from_pretrained(TINY / "dev/transformer").eval()
    state = {k: v for k, v in FluxPipeline.lora_state_dict(str(path)).items() if k.startswith("transformer.")}
    FluxPipeline.load_lora_into_transformer(state, None, transformer=transformer, adapter_name="x")
    transformer.set_adapters(["x"], [WEIGHT])
    return transformer, state


def main():
    ref_in = load_file(TINY / "reference.safetensors")
    plain = FluxTransformer2DModel.from_pretrained(TINY / "dev/transformer").eval()
    gen = torch.Generator().manual_seed(1331)
    kohya, bfl = {}, {}
    for name, out_f, in_f in original_modules(plain.config):
        down = torch.randn((RANK, in_f), generator=gen) * 0.3
        up = torch.randn((out_f, RANK), generator=gen) * 0.3
        key = "lora_unet_" + name.replace(".", "_")
        kohya[f"{key}.lora_down.weight"] = down
        kohya[f"{key}.lora_up.weight"] = up * 2
        kohya[f"{key}.alpha"] = torch.tensor(RANK / 2)
        bfl[f"diffusion_model.{name}.lora_down.weight"] = down
        bfl[f"diffusion_model.{name}.lora_up.weight"] = up
    h = plain.config.num_attention_heads * plain.config.attention_head_dim
    # The CLIP text encoder too: kohya's `lora_te1_`, ComfyUI's `text_encoders.clip_l.transformer.`,
    # diffusers' `text_encoder.` (alpha folded into lora_B there).
    clip = CLIPTextModel.from_pretrained(TINY / "dev/text_encoder")
    te = {}
    for path, module in clip.named_modules():
        if isinstance(module, torch.nn.Linear) and path.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
            path = path if path.startswith("text_model.") else f"text_model.{path}"
            out_f, in_f = module.weight.shape
            down = torch.randn((RANK, in_f), generator=gen) * 0.3
            up = torch.randn((out_f, RANK), generator=gen) * 0.3
            key = "lora_te1_" + path.replace(".", "_")
            kohya[f"{key}.lora_down.weight"] = down
            kohya[f"{key}.lora_up.weight"] = up * 2
            kohya[f"{key}.alpha"] = torch.tensor(RANK / 2)
            bfl[f"text_encoders.clip_l.transformer.{path}.lora_down.weight"] = down
            bfl[f"text_encoders.clip_l.transformer.{path}.lora_up.weight"] = up
            te[f"text_encoder.{path}.lora_A.weight"] = down
            te[f"text_encoder.{path}.lora_B.weight"] = up
    assert te, "no CLIP projections found"
    save_file(kohya, OUT / "flux-kohya.safetensors")
    save_file(bfl, OUT / "flux-bfl.safetensors")
    diffusers_sd = to_diffusers({k: v for k, v in kohya.items() if not k.startswith("lora_te1_")}, h)
    diffusers_sd.update(te)
    save_file(diffusers_sd, OUT / "flux-diffusers.safetensors")
    # diffusers' own converter agrees wherever it can run on the tiny shapes (all but single blocks).
    for source in (kohya, bfl):
        part = {k: v for k, v in source.items() if "single_blocks" not in k and "te1" not in k and "clip_l" not in k}
        theirs = FluxPipeline.lora_state_dict(part)
        theirs = {k if k.startswith("transformer.") else f"transformer.{k}": v for k, v in theirs.items()}
        ours = {k: v for k, v in diffusers_sd.items() if k.startswith("transformer.") and "single_transformer_blocks" not in k}
        assert theirs.keys() == ours.keys(), sorted(set(theirs) ^ set(ours))[:6]
        for k in ours:
            # diffusers' converter leaves kohya's alpha off the final layer ("TODO: alphas" there), which
            # kohya and ComfyUI apply: compare that module on the ComfyUI file, which has no alpha.
            if source is kohya and "norm_out" in k:
                continue
            # diffusers splits alpha / rank between A and B; compare the products.
            if k.endswith("lora_B.weight"):
                a = k.replace("lora_B", "lora_A")
                assert torch.allclose(theirs[k] @ theirs[a], ours[k] @ ours[a], atol=1e-6), k

    pipe = FluxPipeline.from_pretrained(TINY / "dev", torch_dtype=torch.float32)
    with torch.no_grad():
        ref = {"plain_out": call(pipe.transformer, ref_in), "plain_pooled": pipe.text_encoder(ref_in["clip_tokens"]).pooler_output}
        pipe.load_lora_weights(str(OUT / "flux-diffusers.safetensors"), adapter_name="x")
        pipe.set_adapters(["x"], [WEIGHT])
        ref["lora_out"] = call(pipe.transformer, ref_in)
        ref["lora_pooled"] = pipe.text_encoder(ref_in["clip_tokens"]).pooler_output
    # The transformer part through the transformer's own loader gives the same.
    model, _ = load(OUT / "flux-diffusers.safetensors")
    assert (call(model, ref_in) - ref["lora_out"]).abs().max() < 1e-5
    assert (ref["lora_out"] - ref["plain_out"]).abs().max() > 0.05, "the LoRA should change the output"
    assert (ref["lora_pooled"] - ref["plain_pooled"]).abs().max() > 0.05, "the LoRA should change CLIP"
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "flux-reference.safetensors")
    print("wrote", {p.name: p.stat().st_size for p in OUT.glob("flux-*")})


if __name__ == "__main__":
    main()
