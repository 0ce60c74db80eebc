"""Builds tiny textual-inversion embeddings for the tiny SD 1.5 and SDXL pipelines and records diffusers'
prompt encodings and images with them (`load_textual_inversion`).

Run once (not in CI) from the repository root, after sd_tiny_pipeline.py and sd_sdxl.py:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_embeddings.py

Pinned as sd_lora.py (torch 2.15.0, diffusers 0.42.1, CPU, float32). Writes tests/fixtures/sd/embeddings/:

- `mystyle.safetensors`: AUTOMATIC1111's converted layout, one key `emb_params` of shape (2, 16) (two
  vectors); used in the prompt "a mystyle red cat".
- `easyneg.safetensors`: the older layout flattened, one key `string_to_param.*` of shape (3, 16); used as
  the negative prompt "easyneg".
- `xlstyle.safetensors`: SDXL's layout, `clip_l` (2, 16) for the first encoder and `clip_g` (2, 16) for the
  second, loaded into each encoder with its tokenizer as diffusers documents it.
- `reference.safetensors`: `sd15_cond`/`sd15_uncond` (the text encoder's last hidden state of the prompt and
  negative prompt), `sd15_image` (4 Euler steps, CFG 7.5, 64x64, `torch.Generator("cpu").manual_seed(0)`),
  `sdxl_context`/`sdxl_pooled` of "a xlstyle red cat" and `sdxl_image` (4 Euler steps, CFG 5, no negative
  prompt: zeros, as `force_zeros_for_empty_prompt` gives; same noise).
"""

import json
import pathlib
import sys

import diffusers
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sd_lora  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_XL = ROOT / "tests/fixtures/sd/tiny-sdxl"
OUT = ROOT / "tests/fixtures/sd/embeddings"
PROMPT, NEGATIVE, XL_PROMPT = "a mystyle red cat", "easyneg", "a xlstyle red cat"


@torch.no_grad()
def image(pipe, prompt, negative, cfg):
    latents = pipe(
        prompt,
        negative_prompt=negative,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=cfg,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="latent",
    ).images
    return pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample


def dense_resize(text_encoder, tokenizer):
    """The tiny tokenizers' ids are sparse (60 tokens, `<|endoftext|>` = 99), so the tokenizer gives an added
    token id 100 while diffusers resizes the embedding matrix to len(tokenizer) + n rows (62). Resize to the
    largest id + 1 + n instead: on real CLIP vocabularies (dense, 49408 = len) this is the same number."""
    resize = text_encoder.resize_token_embeddings

    def patched(n):
        added = n - len(tokenizer)
        return resize(max(n, max(tokenizer.get_vocab().values()) + 1 + added))

    text_encoder.resize_token_embeddings = patched


def main():
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1313)
    vec = lambda n: torch.randn((n, 16), generator=gen) * 2.0  # noqa: E731
    save_file({"emb_params": vec(2)}, OUT / "mystyle.safetensors")
    save_file({"string_to_param.*": vec(3)}, OUT / "easyneg.safetensors")
    save_file({"clip_l": vec(2), "clip_g": vec(2)}, OUT / "xlstyle.safetensors")

    ref = {}
    pipe = sd_lora.pipeline()
    plain = image(pipe, PROMPT, NEGATIVE, 7.5)
    dense_resize(pipe.text_encoder, pipe.tokenizer)
    pipe.load_textual_inversion(str(OUT / "mystyle.safetensors"), token="mystyle")
    pipe.load_textual_inversion(str(OUT / "easyneg.safetensors"), token="easyneg")
    ids = pipe.tokenizer(pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer)).input_ids
    assert ids[2:4] == [100, 101], ids  # the two vectors of "mystyle" after "a"
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    ref["sd15_cond"], ref["sd15_uncond"] = cond, uncond
    ref["sd15_image"] = image(pipe, PROMPT, NEGATIVE, 7.5)
    assert (ref["sd15_image"] - plain).abs().max() > 0.05, "the embeddings should change the image"

    xl = StableDiffusionXLPipeline.from_pretrained(TINY_XL, torch_dtype=torch.float32)
    xl.set_progress_bar_config(disable=True)
    plain = image(xl, XL_PROMPT, None, 5.0)
    dense_resize(xl.text_encoder, xl.tokenizer)
    dense_resize(xl.text_encoder_2, xl.tokenizer_2)
    state = load_file(OUT / "xlstyle.safetensors")
    xl.load_textual_inversion(state["clip_g"], token="xlstyle", text_encoder=xl.text_encoder_2, tokenizer=xl.tokenizer_2)
    xl.load_textual_inversion(state["clip_l"], token="xlstyle", text_encoder=xl.text_encoder, tokenizer=xl.tokenizer)
    with torch.no_grad():
        context, _, pooled, _ = xl.encode_prompt(XL_PROMPT, device="cpu", do_classifier_free_guidance=False)
    ref["sdxl_context"], ref["sdxl_pooled"] = context, pooled
    ref["sdxl_image"] = image(xl, XL_PROMPT, None, 5.0)
    assert (ref["sdxl_image"] - plain).abs().max() > 0.05, "the embedding should change the SDXL image"

    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "prompt": PROMPT, "negative": NEGATIVE,
            "sdxl_prompt": XL_PROMPT, "seed": 0, "steps": 4}
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", OUT, {p.name: p.stat().st_size for p in OUT.iterdir()})


if __name__ == "__main__":
    main()
