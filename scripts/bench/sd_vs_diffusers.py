"""worker-sd against diffusers at the real shapes of Stable Diffusion 1.5 or SDXL, stage by stage.

    bash scripts/bench/sd-bench.sh [--model sd15|sdxl] [--size 512] [--steps 3] [--rounds 1]

Builds (once, cached in SD_BENCH_DIR, default ~/.cache/omc-bench/MODEL) a diffusers folder with the real UNet,
VAE and CLIP text encoder configs and random weights (seed 0; speed does not depend on the values), and the tiny
fixture's tokenizer (ids differ from CLIP's, the 77-token rows do not). SD 1.5's weights are stored as float32
(4.3 GB); SDXL's as float16 (7 GB instead of 14; both sides load them as float32, so the memory figures are
those of a float32 model, apart from the moment of conversion). Then, in
alternated rounds, runs worker-sd's stage bench (benches/sd_stages.rs, the binary given by --candle) and
diffusers 0.42.1 (this script with --side diffusers), each in its own process with the same thread count
(THREADS: RAYON_NUM_THREADS for candle, torch.set_num_threads for torch), and prints: load, text encoding
(prompt + negative), seconds per UNet step (CFG 7.5: batch 2), VAE decode, whole generation at --steps, the
whole generation projected to 20 steps, and peak RSS (the child's ru_maxrss), with worker-sd/diffusers ratios.
Each side is timed after a 64x64 warm-up generation.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests/fixtures/diffusers-config"

# SD 1.5's text encoder (openai/clip-vit-large-patch14's text tower) and VAE configs, as published.
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
# SDXL's second text encoder (OpenCLIP ViT-bigG-14's text tower) and VAE, as published.
CLIP_G = dict(CLIP_L, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)


def tokenizer(tmp: pathlib.Path):
    """The tiny fixture's tokenizer with CLIP's 77-token rows."""
    from transformers import CLIPTokenizer

    tok_dir = tmp / "tok-src"
    shutil.copytree(ROOT / "tests/fixtures/sd/tiny-sd15/tokenizer", tok_dir)
    tok_config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = 77
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    shutil.rmtree(tok_dir)
    return tok


def build_sdxl(folder: pathlib.Path):
    """Writes the SDXL-shaped diffusers folder (float16 weights) with random weights, unless it is there."""
    if (folder / "model_index.json").exists():
        return
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = tokenizer(tmp)
    parts = dict(
        unet=UNet2DConditionModel.from_config(
            json.loads((CONFIGS / "sdxl-base-1.0-unet_config.json").read_text())).half(),
        vae=AutoencoderKL(**SDXL_VAE).half(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).half(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).half(),
    )
    scheduler = EulerDiscreteScheduler.from_config(
        json.loads((CONFIGS / "sd15-scheduler_scheduler_config.json").read_text()))
    pipe = StableDiffusionXLPipeline(tokenizer=tok, tokenizer_2=tok, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=False, **parts)
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)


def build(folder: pathlib.Path):
    """Writes the SD 1.5-shaped diffusers folder with random weights, unless it is already there."""
    if (folder / "model_index.json").exists():
        return
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet_config = json.loads((CONFIGS / "sd15-unet_config.json").read_text())
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL(**SD_VAE)
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = tokenizer(tmp)
    scheduler = EulerDiscreteScheduler.from_config(
        json.loads((CONFIGS / "sd15-scheduler_scheduler_config.json").read_text()))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)


def diffusers_side(folder: pathlib.Path, size: int, steps: int, threads: int):
    """Times diffusers' StableDiffusion(XL)Pipeline stage by stage and prints one JSON line."""
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - start
    with torch.no_grad():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            # A negative prompt that is not empty: SDXL pipelines may skip encoding an empty one.
            pipe.encode_prompt(prompt="a red cat", device="cpu", num_images_per_prompt=1,
                               do_classifier_free_guidance=True, negative_prompt="blurry")
            times.append(time.perf_counter() - start)
        text_s = min(times)

        def run(size, steps, marks):
            def on_step(_pipe, _i, _t, kwargs):
                marks.append(time.perf_counter())
                return kwargs

            pipe("a red cat", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
                 generator=torch.Generator().manual_seed(0), output_type="np", callback_on_step_end=on_step)

        run(64, 2, [])
        marks = []
        start = time.perf_counter()
        run(size, steps, marks)
        image_s = time.perf_counter() - start
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    print(json.dumps({
        "impl": "diffusers", "size": size, "steps": steps, "load_s": load_s, "text_s": text_s,
        "step_s": statistics.median(gaps), "decode_s": start + image_s - marks[-1], "image_s": image_s,
    }))


def child(cmd, env):
    """Runs one side; returns its JSON line with its peak RSS in GiB added."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed with status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_gib"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    parser.add_argument("--candle", help="the sd_stages bench binary")
    parser.add_argument("--side", choices=["diffusers", "both"], default="both")
    parser.add_argument("--only", choices=["diffusers", "worker-sd"], help="time one side only")
    parser.add_argument("--dir", help="the model folder (default SD_BENCH_DIR or ~/.cache/omc-bench/MODEL)")
    args = parser.parse_args()
    folder = pathlib.Path(args.dir or os.environ.get("SD_BENCH_DIR")
                          or pathlib.Path.home() / ".cache/omc-bench" / args.model)
    if args.side == "diffusers":
        return diffusers_side(folder, args.size, args.steps, args.threads)
    (build_sdxl if args.model == "sdxl" else build)(folder)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    common = ["--size", str(args.size), "--steps", str(args.steps)]
    sides = {
        "worker-sd": [args.candle, "--model", str(folder)] + common,
        "diffusers": [sys.executable, __file__, "--side", "diffusers", "--dir", str(folder),
                      "--threads", str(args.threads)] + common,
    }
    if args.only:
        sides = {args.only: sides[args.only]}
    results = {name: [] for name in sides}
    for round_ in range(args.rounds):
        # Alternate which side goes first, so drift in the machine's load hits both.
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            results[name].append(child(sides[name], env))
            print(json.dumps(results[name][-1]), file=sys.stderr)
    keys = [("load_s", "load (s)"), ("text_s", "text encoding (s)"), ("step_s", "UNet step, CFG (s)"),
            ("decode_s", "VAE decode (s)"), ("image_s", f"whole, {args.steps} steps (s)"),
            ("whole20_s", "whole, 20 steps (s, projected)"), ("rss_gib", "peak RSS (GiB)")]
    med = {}
    for name, runs in results.items():
        for r in runs:
            r["whole20_s"] = r["image_s"] + (20 - args.steps) * r["step_s"]
        med[name] = {k: statistics.median(r[k] for r in runs) for k, _ in keys}
    name = {"sd15": "SD 1.5", "sdxl": "SDXL"}[args.model]
    print(f"{name} shapes, {args.size}x{args.size}, CPU float32, {args.threads} threads, median of {args.rounds} round(s)")
    names = list(med)
    header = f"{'':32}" + "".join(f"{n:>12}" for n in names)
    print(header + (f"{'ratio':>10}" if len(names) == 2 else ""))
    for key, label in keys:
        row = f"{label:32}" + "".join(f"{med[n][key]:12.3f}" for n in names)
        if len(names) == 2:
            row += f"{med['worker-sd'][key] / med['diffusers'][key]:10.2f}"
        print(row)


if __name__ == "__main__":
    main()
