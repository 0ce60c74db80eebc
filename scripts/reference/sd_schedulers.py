"""Records diffusers scheduler references for worker-sd's scheduler tests.

Run once (not in CI) from the repository root:

    nice -n 10 "$(bash scripts/reference/venv.sh)" scripts/reference/sd_schedulers.py

Pinned: diffusers==0.42.1, torch==2.15.0 (CPU, float32). The output,
tests/fixtures/sd/schedulers.json, is committed; worker-sd/tests/schedulers.rs compares against it.

For each scheduler and prediction type it records timesteps, sigmas and init_noise_sigma for several step
counts, and a whole short run on a (1, 4, 2, 2) latent: the initial noise, the model output fed at each step
(fixed random tensors standing in for a UNet), the scaled model input, the noise of ancestral steps (given
explicitly by patching diffusers' `randn_tensor`) and the sample after each step.
"""

import json
import pathlib

import diffusers
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete

PINNED = {"diffusers": "0.42.1", "torch": "2.15.0"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests/fixtures/sd/sd15-scheduler_scheduler_config.json"
OUT = ROOT / "tests/fixtures/sd/schedulers.json"
SHAPE = (1, 4, 2, 2)
RUN_STEPS = 6
SCHEDULE_STEPS = [1, 4, 20, 25]

# UI name -> (diffusers class, extra config), as the diffusers docs map A1111 names.
SCHEDULERS = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "UniPC": (UniPCMultistepScheduler, {}),
}


class GivenNoise:
    """Stands in for diffusers' randn_tensor so ancestral steps use the recorded noise."""

    def __init__(self):
        self.next = None

    def __call__(self, shape, **_kwargs):
        assert self.next is not None and tuple(self.next.shape) == tuple(shape)
        noise, self.next = self.next, None
        return noise


def f32(x):
    """Nine significant digits: exact for a float32, and half the size of a full repr."""
    return float(f"{float(x):.9g}")


def flat(t):
    return [f32(x) for x in t.reshape(-1).tolist()]


def make(name, prediction_type):
    cls, extra = SCHEDULERS[name]
    config = json.loads(CONFIG.read_text())
    return cls.from_config(config, prediction_type=prediction_type, **extra)


def schedule(sched, steps):
    sched.set_timesteps(steps)
    sigmas = getattr(sched, "sigmas", None)
    return {
        "steps": steps,
        "timesteps": [f32(t) for t in sched.timesteps.tolist()],
        "sigmas": None if sigmas is None else [f32(s) for s in sigmas.tolist()],
        "init_noise_sigma": f32(sched.init_noise_sigma),
    }


def run(sched, gen, given, ancestral):
    sched.set_timesteps(RUN_STEPS)
    initial_noise = torch.randn(SHAPE, generator=gen)
    sample = initial_noise * sched.init_noise_sigma
    rec = {"initial_noise": flat(initial_noise), "model_outputs": [], "noises": [], "scaled_inputs": [], "samples": []}
    # Noise is drawn at every step for every scheduler, so each run's model outputs come from the same stream.
    for t in sched.timesteps:
        scaled = sched.scale_model_input(sample, t)
        model_output = torch.randn(SHAPE, generator=gen)
        noise = torch.randn(SHAPE, generator=gen)
        given.next = noise
        sample = sched.step(model_output, t, sample).prev_sample
        rec["scaled_inputs"].append(flat(scaled))
        rec["model_outputs"].append(flat(model_output))
        if ancestral:
            rec["noises"].append(flat(noise))
        rec["samples"].append(flat(sample))
    return rec


def main():
    assert diffusers.__version__ == PINNED["diffusers"], diffusers.__version__
    assert torch.__version__.split("+")[0] == PINNED["torch"], torch.__version__
    given = GivenNoise()
    scheduling_euler_ancestral_discrete.randn_tensor = given
    cases = []
    for seed, name in enumerate(SCHEDULERS):
        for prediction_type in ["epsilon", "v_prediction"]:
            case = {"scheduler": name, "class": SCHEDULERS[name][0].__name__, "prediction_type": prediction_type}
            if prediction_type == "epsilon":  # the schedule does not depend on the prediction type
                case["schedules"] = [schedule(make(name, prediction_type), n) for n in SCHEDULE_STEPS]
            gen = torch.Generator().manual_seed(seed)
            case["run"] = run(make(name, prediction_type), gen, given, name == "Euler a")
            cases.append(case)
    out = {"pinned": PINNED, "config": CONFIG.name, "shape": list(SHAPE), "run_steps": RUN_STEPS, "cases": cases}
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
