#!/usr/bin/env python3
"""Proves the CUDA builds of worker-llm and worker-sd on an NVIDIA GPU and takes their figures.

Driven by scripts/gpu/check.sh (read it first). Four commands:
  pack                  (here, no GPU) build the CUDA binaries, gather SmolLM2 and the Python wheels the GPU
                        machine lacks into one payload, and split it into `.gpu-carry/N/` folders, each small
                        enough for one call of the device tool (64 MiB with the working tree).
  run                   (on the GPU machine) stage the parts this call carried; once all are there, check:
                        worker-llm (check_llm.py): SmolLM2 Q4_1 answers Paris on cuda:0, its logits match the
                        CPU's; decode tok/s of a 1B Llama in bf16 (random weights made there with PyTorch)
                        against the card's memory-bandwidth limit; aggregate tok/s of `serve` at 1 and 32
                        clients.
                        worker-sd (check_sd.py): the tiny SD 1.5, SDXL and Flux pipelines on cuda:0 against the
                        CPU's images; an SD 1.5-sized UNet (random weights) at 512x512 in f16, seconds per step
                        against diffusers on the same card.
                        Prints one table; writes it as JSON and the full log to $OUT.
  run --cpu-dry-run     (here) the same checks with cuda:0 replaced by the CPU and small sizes, with the
                        CUDA binaries of build.sh (their CUDA libraries stubbed): proves the script itself.
  selftest              (anywhere, seconds, no binaries) the table, the exit status and the split and staging
                        of parts, on made-up inputs.
Exit status: 0 all checks passed and goals met; 1 a check failed; 2 checks passed but a goal was missed;
0 also after a call that only staged parts (it says which parts are still to come).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import check_carry
from check_common import FAIL, LOG_LINES, REPO, STAGE, Ctx, Report, log, sh


def run_checks(ctx: Ctx) -> int:
    import check_llm
    import check_sd

    rep = Report()
    llama: dict = {}

    def decode() -> None:
        llama["bw"] = check_llm.bandwidth(ctx)
        llama["folder"], llama["bytes"] = check_llm.make_llama(ctx)
        check_llm.check_decode(ctx, rep, llama["folder"], llama["bytes"], llama["bw"])

    def serve() -> None:
        if "folder" not in llama:
            raise RuntimeError("no 1B model (its step failed)")
        check_llm.check_serve(ctx, rep, llama["folder"])

    steps = [("llm: SmolLM2 Q4_1 says Paris", lambda: check_llm.check_paris(ctx, rep)),
             ("llm: logits vs CPU", lambda: check_llm.check_logits(ctx, rep)),
             ("llm: decode 1B Llama bf16", decode),
             ("llm: serve aggregate", serve),
             ("sd: tiny pipelines", lambda: check_sd.check_tiny_sd(ctx, rep)),
             ("sd: SD 1.5-sized UNet s/step", lambda: check_sd.check_sd15_speed(ctx, rep))]
    for name, step in steps:
        if ctx.left() < 20:
            rep.add(name, FAIL, "not reached: out of time")
            continue
        try:
            step()
        except Exception as e:  # noqa: BLE001 - every failure becomes a row
            rep.add(name, FAIL, f"{type(e).__name__}: {str(e)[:400]}")
    table = rep.table()
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ctx.work
    (out / "gpu-check.json").write_text(json.dumps({"device": ctx.dev, "rows": rep.rows}, indent=1))
    (out / "gpu-check.log").write_text("\n".join(LOG_LINES))
    print("\n" + table + "\n", flush=True)
    return rep.exit_status()


def dry_run_inputs(args) -> tuple[Path, Path, str, Path]:
    """Here: the binaries of build.sh, SmolLM2 from the model cache, and the link stubs standing in for
    the driver and cuBLAS (enough to start a CUDA build that stays on the CPU)."""
    # This machine is small and shared: keep PyTorch and the workers to two threads.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("RAYON_NUM_THREADS", "2")
    cache = Path(sh(["bash", "scripts/gpu/toolkit.sh"], 1800, cwd=REPO)[0].strip().splitlines()[-1])
    bins = Path(args.bin_dir or REPO / "target/gpu/release")
    if not (bins / "logits").exists() and (bins / "examples/logits").exists():
        bins_link = Path(tempfile.mkdtemp()) / "bin"
        bins_link.mkdir()
        for b in ("worker-llm", "worker-sd", "examples/logits"):
            os.symlink(bins / b, bins_link / Path(b).name)
        bins = bins_link
    gguf = Path(sh(["bash", "scripts/fetch-models.sh", "smollm2"], 1800, cwd=REPO)[0].strip().splitlines()[-1])
    libs = f"{cache / 'link-stubs'}:{cache / 'cuda' / 'lib'}"
    return bins, gguf, libs, Path(tempfile.mkdtemp(prefix="omc-gpu-dry-"))


def run(args) -> int:
    if args.cpu_dry_run:
        bins, gguf, libs, work = dry_run_inputs(args)
    else:
        payload = check_carry.stage(REPO / ".gpu-carry", STAGE)
        if payload is None:
            return 0
        check_carry.install_wheels(payload / "whl", STAGE / "site")
        bins, gguf = payload / "bin", next((payload / "models").glob("*.gguf"))
        libs = check_carry.cuda_library_path()
        work = STAGE / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    env = dict(os.environ, LD_LIBRARY_PATH=libs + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
    for b in ("worker-llm", "worker-sd", "logits"):
        ldd = subprocess.run(["ldd", str(bins / b)], capture_output=True, text=True, env=env).stdout
        if "not found" in ldd:
            raise SystemExit(f"{b} cannot find its libraries:\n{ldd}")
    if not args.cpu_dry_run:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
        log(f"GPU: {out}")
    return run_checks(Ctx(bins, gguf, args.cpu_dry_run, env, work))


def selftest(_args) -> int:
    """The parts of this script that need no binaries and no GPU, on made-up inputs."""
    import check_common

    rep = Report()
    assert rep.exit_status() == 1, "a run with no rows must fail"
    rep.add("a", check_common.PASS, "1 | 2")
    assert rep.exit_status() == 0
    rep.add("b", check_common.MISSED, "slow")
    assert rep.exit_status() == 2
    rep.add("c", FAIL, "broke\nhere", "ref", "note")
    assert rep.exit_status() == 1
    lines = rep.table().splitlines()
    assert len(lines) == 5 and len({len(line) for line in lines}) == 1, lines
    assert "1 \\| 2" in lines[2] and "broke here" in lines[4], lines
    try:
        rep.add("d", "OK", "")
        raise AssertionError("an unknown status was taken")
    except ValueError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        payload = tmp / "src" / "payload"
        (payload / "bin").mkdir(parents=True)
        (payload / "bin" / "tool").write_bytes(os.urandom(5000))
        digest = check_common.sha256(payload / "bin" / "tool")
        (payload / "manifest.json").write_text(json.dumps({"commit": "0" * 40, "files": {"bin/tool": digest}}))
        blob = tmp / "payload.tar.xz"
        check_carry.write_payload(payload, blob)
        n = check_carry.split(blob, tmp / "carry", 1000)
        assert n == -(-blob.stat().st_size // 1000) and n > 1, n
        stage_dir = tmp / "stage"
        # One call per part, each carrying only its own: nothing unpacks until the last.
        for k in range(1, n + 1):
            one = tmp / f"call{k}"
            shutil.copytree(tmp / "carry" / str(k), one / str(k))
            got = check_carry.stage(one, stage_dir)
            assert (got is None) == (k < n), (k, got)
        assert check_common.sha256(got / "bin" / "tool") == digest
        # A later call carrying nothing finds the staged payload.
        assert check_carry.stage(tmp / "empty", stage_dir) == got
        # A corrupt part is refused by its checksum, and its parts are dropped.
        shutil.rmtree(stage_dir)
        last = next((tmp / "carry" / str(n)).glob("payload.part.*"))
        last.write_bytes(b"x" + last.read_bytes()[1:])
        try:
            check_carry.stage(tmp / "carry", stage_dir)
            raise AssertionError("a corrupt part was staged")
        except SystemExit as e:
            assert "sha256 differs" in str(e), e
        assert not list(stage_dir.glob("parts-*/*")), "the corrupt parts were kept"
        try:
            check_carry.stage(tmp / "nothing", tmp / "fresh")
            raise AssertionError("staging with no parts passed")
        except SystemExit as e:
            assert "check.sh pack" in str(e), e
    print(f"selftest passed (table, exit status, {n} parts split and staged)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack", help="build and pack what the GPU machine needs into .gpu-carry/")
    r = sub.add_parser("run", help="stage carried parts; run every check once all are there")
    r.add_argument("--cpu-dry-run", action="store_true", help="run here on the CPU with small sizes")
    r.add_argument("--bin-dir", help="dry run: the folder of worker-llm, worker-sd and examples/logits")
    sub.add_parser("selftest", help="check the table, exit status and staging code, no binaries needed")
    args = parser.parse_args()
    return {"pack": check_carry.pack, "run": run, "selftest": selftest}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
