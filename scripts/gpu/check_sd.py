"""worker-sd on the GPU: the tiny SD 1.5, SDXL and Flux pipelines against the CPU's images; an SD 1.5-sized
UNet (random weights) at 512x512 in f16, seconds per step against diffusers on the same card."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from check_common import FAIL, IMAGE_MAX_TOL, IMAGE_MEAN_TOL, MISSED, PASS, REPO, Ctx, Report

def png(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def check_tiny_sd(ctx: Ctx, rep: Report) -> None:
    fixtures = REPO / "tests/fixtures/sd"
    for name, folder in (("SD 1.5", "tiny-sd15"), ("SDXL", "tiny-sdxl"), ("Flux", "tiny-flux/dev")):
        try:
            images = {}
            for dev in ("cpu", ctx.dev):
                out_dir = ctx.work / f"{folder.replace('/', '-')}-{dev.replace(':', '')}"
                out_dir.mkdir(parents=True, exist_ok=True)
                out, _, _ = ctx.run([ctx.sd(), "generate", "--model-path", fixtures / folder, "--device", dev,
                                     "--prompt", "a red cat", "--steps", "4", "--seed", "7", "--width", "64",
                                     "--height", "64", "--out", out_dir])
                images[dev] = png(Path(out.strip().splitlines()[-1]))
            import numpy as np

            diff = np.abs(images["cpu"] - images[ctx.dev])
            ok = diff.mean() <= IMAGE_MEAN_TOL and diff.max() <= IMAGE_MAX_TOL
            rep.add(f"sd: tiny {name} vs CPU", PASS if ok else FAIL,
                    f"mean {diff.mean():.2f}, max {diff.max():.0f} levels",
                    f"<= {IMAGE_MEAN_TOL}, <= {IMAGE_MAX_TOL}", "64x64, 4 steps")
        except Exception as e:  # noqa: BLE001 - one base failing must not hide the others
            rep.add(f"sd: tiny {name} vs CPU", FAIL, str(e)[:300])


def make_sd15_sized(ctx: Ctx):
    """An SD 1.5-shaped pipeline with random weights: the real UNet (860M parameters) and text width
    (768), a one-layer text encoder and a narrow VAE (the UNet is what is timed). Returns (folder, pipe)."""
    import torch

    tiny = REPO / "tests/fixtures/sd/tiny-sd15"
    torch.manual_seed(0)
    # Initialise on the GPU: the CPU takes long over 860M parameters.
    with torch.device("cpu" if ctx.dry else "cuda"):
        return _make_sd15_sized(ctx, tiny)


def _make_sd15_sized(ctx: Ctx, tiny: Path):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if ctx.dry:
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=768, attention_head_dim=8)
    else:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the rest is SD 1.5's
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
                        sample_size=512, scaling_factor=0.18215)
    text_cfg = json.loads((tiny / "text_encoder/config.json").read_text())
    text_cfg.update(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=1,
                    projection_dim=768)
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_cfg.items() if k != "architectures"}))
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    scheduler = EulerDiscreteScheduler.from_pretrained(tiny / "scheduler")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    dtype = torch.float32 if ctx.dry else torch.float16
    pipe = pipe.to("cpu" if ctx.dry else "cuda", dtype)
    pipe.set_progress_bar_config(disable=True)
    folder = ctx.work / "sd15-sized-random"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder, pipe


def check_sd15_speed(ctx: Ctx, rep: Report) -> None:
    import torch

    folder, pipe = make_sd15_sized(ctx)
    size = 64 if ctx.dry else 512
    # worker-sd prints its time to 0.1 s: enough steps apart that this is a few per cent of the difference.
    few, many = 2, 7 if ctx.dry else 22

    def ours(steps: int) -> float:
        out_dir = ctx.work / f"sd15-sized-{steps}"
        out_dir.mkdir(exist_ok=True)
        _, err, _ = ctx.run([ctx.sd(), "generate", "--model-path", folder, "--device", ctx.dev,
                             "--prompt", "a red cat", "--steps", str(steps), "--seed", "7", "--width", str(size),
                             "--height", str(size), "--cfg", "7.5", "--scheduler", "Euler", "--out", out_dir])
        m = re.search(r"image\(s\) in ([\d.]+) s", err.replace("\r", "\n"))
        if not m:
            raise RuntimeError(f"no timing in worker-sd's output: {err.strip()[-300:]}")
        return float(m.group(1))

    def theirs(steps: int) -> float:
        sync = (lambda: None) if ctx.dry else torch.cuda.synchronize
        sync()
        t0 = time.perf_counter()
        pipe("a red cat", num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
             generator=torch.Generator().manual_seed(7))
        sync()
        return time.perf_counter() - t0

    theirs(few)  # warm-up (cuDNN autotuning, allocator)
    d_step = (theirs(many) - theirs(few)) / (many - few)
    o_step = (ours(many) - ours(few)) / (many - few)
    status = PASS if o_step <= d_step else MISSED
    precision = "f32" if ctx.dry else "f16"
    rep.add("sd: SD 1.5-sized UNet s/step", status, f"{o_step:.4f} s/step ({o_step / d_step:.2f}x diffusers)",
            f"diffusers {d_step:.4f} s/step", f"{size}x{size} {precision}, CFG; goal <= diffusers")
    del pipe
    if not ctx.dry:
        torch.cuda.empty_cache()

