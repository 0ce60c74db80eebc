"""Records what each named sampler takes from a model's own scheduler config, as diffusers pipelines build
it: `Sampler.from_config(pipe.scheduler.config)`, where `pipe.scheduler` is the class the model's
`scheduler_config.json` names, loaded from that file.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_scheduler_configs.py

Pinned as sd_schedulers.py. Writes tests/fixtures/sd/scheduler-configs.json: for four model configs whose
beta schedule, `timestep_spacing`, `steps_offset` and prediction type differ from SD 1.5's (SD 2.1's
v-prediction DDIM file, SDXL Turbo's trailing Euler a file, a linear-beta trailing DDPM file, SDXL's
leading Euler file), and every sampler, the schedule at 4 and 10 steps and a 6-step run on fixed tensors
(as sd_schedulers.py records them).
"""

import json
import pathlib
import sys

import diffusers
import torch
from diffusers.schedulers import scheduling_euler_ancestral_discrete

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sd_schedulers as base  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sd/scheduler-configs.json"
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
CONFIGS = {
    "sd21-v-ddim": {
        "_class_name": "DDIMScheduler",
        **SD_BETAS,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "prediction_type": "v_prediction",
    },
    "sdxl-turbo-trailing": {
        "_class_name": "EulerAncestralDiscreteScheduler",
        **SD_BETAS,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
        "prediction_type": "epsilon",
    },
    "linear-betas-trailing": {
        "_class_name": "DDPMScheduler",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "num_train_timesteps": 1000,
        "clip_sample": False,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    },
    "sdxl-leading": json.loads((ROOT / "tests/fixtures/sd/tiny-sdxl/scheduler/scheduler_config.json").read_text()),
}


def main():
    assert diffusers.__version__ == base.PINNED["diffusers"], diffusers.__version__
    given = base.GivenNoise()
    scheduling_euler_ancestral_discrete.randn_tensor = given
    out = {"pinned": base.PINNED, "shape": list(base.SHAPE), "configs": []}
    for seed, (label, config) in enumerate(CONFIGS.items()):
        loaded = getattr(diffusers, config["_class_name"]).from_config(config)
        cases = []
        for name, (cls, extra) in base.SCHEDULERS.items():
            make = lambda: cls.from_config(loaded.config, **extra)  # noqa: E731
            gen = torch.Generator().manual_seed(100 + seed)
            cases.append(
                {
                    "scheduler": name,
                    "schedules": [base.schedule(make(), n) for n in [4, 10]],
                    "run": base.run(make(), gen, given, name == "Euler a"),
                }
            )
        out["configs"].append({"label": label, "config": config, "cases": cases})
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
