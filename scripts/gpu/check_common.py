"""What every part of the GPU check shares: paths, tolerances and goals, logging, running commands, the
table of results and the context of a run (see check.py for the commands)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu-carry"
STAGE = Path(os.environ.get("OMC_GPU_STAGE", "/tmp/omc-gpu"))
# What one device call may carry beside the working tree (the tool's limit is 64 MiB for both together).
CALL_LIMIT = 64 << 20
# Wheels the GPU machine lacks (it has torch, transformers, safetensors, numpy, pillow, accelerate).
WHEELS = ["diffusers==0.42.1", "importlib_metadata==8.7.0"]
# The CUDA libraries the binaries link, by soname (CUDA 13), and where the GPU machine keeps them.
CUDA_LIBS = [
    "libcuda.so.1",
    "libcudart.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcurand.so.10",
    "libnvrtc.so.13",
]
BUDGET_S = 540  # every check must end inside the tool's 10 minutes, staging included

# Tolerances and goals (the issue's): see the README's GPU section.
LOGITS_REL_TOL = 0.05  # max |cuda - cpu| over max |cpu| of the last position's logits (Q4_1 on both)
IMAGE_MEAN_TOL = 3.0  # mean |cuda - cpu| in 8-bit levels (f16/bf16 against f32)
IMAGE_MAX_TOL = 48  # and no pixel off by more than this
DECODE_GOAL = 0.70  # share of the bandwidth limit

# Row statuses, and the exit status a run ends with.
PASS, FAIL, MISSED = "PASS", "FAIL", "GOAL MISSED"
LOG_LINES: list[str] = []


def log(msg: str) -> None:
    LOG_LINES.append(msg)
    print(msg, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sh(cmd: list, timeout: float, env: dict | None = None, cwd: Path | None = None) -> tuple[str, str, float]:
    """Runs a command; returns (stdout, stderr, seconds); raises with the end of stderr on failure."""
    log("$ " + " ".join(str(c) for c in cmd))
    t0 = time.monotonic()
    p = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
    secs = time.monotonic() - t0
    if p.stderr:
        LOG_LINES.append(p.stderr[-4000:])
    if p.returncode != 0:
        raise RuntimeError(f"{Path(str(cmd[0])).name} exited {p.returncode}: {p.stderr.strip()[-600:]}")
    return p.stdout, p.stderr, secs


class Report:
    """The rows of the one table a run prints, and the exit status they make."""

    COLUMNS = ["check", "status", "value", "reference", "note"]

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, check: str, status: str, value: str, reference: str = "", note: str = "") -> None:
        if status not in (PASS, FAIL, MISSED):
            raise ValueError(f"unknown status {status!r}")
        row = dict(check=check, status=status, value=value, reference=reference, note=note)
        self.rows.append(row)
        log(f"[{status}] {check}: {value} {reference} {note}".rstrip())

    def table(self) -> str:
        """A Markdown table (it goes into the README as printed); `|` inside a cell is escaped."""
        cells = [{c: r[c].replace("|", "\\|").replace("\n", " ") for c in self.COLUMNS} for r in self.rows]
        width = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in self.COLUMNS}

        def line(r: dict) -> str:
            return "| " + " | ".join(r[c].ljust(width[c]) for c in self.COLUMNS) + " |"

        rule = "|" + "|".join("-" * (width[c] + 2) for c in self.COLUMNS) + "|"
        return "\n".join([line({c: c for c in self.COLUMNS}), rule] + [line(r) for r in cells])

    def exit_status(self) -> int:
        """1 when a check failed (or none ran), 2 when all passed but a goal was missed, else 0."""
        statuses = {r["status"] for r in self.rows}
        if not self.rows or FAIL in statuses:
            return 1
        return 2 if MISSED in statuses else 0


class Ctx:
    """Where the binaries are, which device stands for the GPU, and the sizes of the run."""

    def __init__(self, bins: Path, gguf: Path, dry: bool, env: dict, work: Path) -> None:
        self.bins, self.gguf, self.dry, self.env, self.work = bins, gguf, dry, env, work
        self.dev = "cpu" if dry else "cuda:0"
        self.started = time.monotonic()

    def llm(self) -> Path:
        return self.bins / "worker-llm"

    def sd(self) -> Path:
        return self.bins / "worker-sd"

    def left(self) -> float:
        # The dry run on a busy 2-core machine takes what it takes; the GPU run must fit the tool's call.
        budget = 4 * 3600 if self.dry else BUDGET_S
        return budget - (time.monotonic() - self.started)

    def run(self, cmd: list, timeout: float = 240) -> tuple[str, str, float]:
        return sh(cmd, min(timeout, max(self.left(), 5)), env=self.env)
