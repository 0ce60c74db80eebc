"""Getting what the GPU machine needs onto it: `pack` (here) builds the CUDA binaries, gathers SmolLM2 and
the wheels into one xz payload and splits it into `.gpu-carry/N/` parts, one per device call; `stage` (there)
collects the parts that each call carried and unpacks the payload once all are in; then the wheels are
installed and the CUDA libraries found."""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from check_common import CALL_LIMIT, CUDA_LIBS, REPO, WHEELS, log, sh, sha256


def tree_bytes() -> int:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in out if f and (REPO / f.decode()).is_file())


def strip_copy(src: Path, dst: Path) -> None:
    """Copies a binary without its symbol tables (a third of its size) when `strip` is there."""
    shutil.copy2(src, dst)
    if shutil.which("strip"):
        subprocess.run(["strip", str(dst)], check=True)


def pack(_args) -> int:
    bin_dir = Path(sh(["bash", "scripts/gpu/build.sh"], 7200, cwd=REPO)[0].strip().splitlines()[-1])
    gguf = Path(sh(["bash", "scripts/fetch-models.sh", "smollm2"], 1800, cwd=REPO)[0].strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "payload"
        for sub in ("bin", "models", "whl"):
            (payload / sub).mkdir(parents=True)
        for name in ("worker-llm", "worker-sd", "examples/logits"):
            strip_copy(bin_dir / name, payload / "bin" / Path(name).name)
        shutil.copy2(gguf, payload / "models" / gguf.name)
        sh([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
            "--platform", "any", "-d", payload / "whl", *WHEELS], 600)
        files = sorted(p for p in payload.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(payload)): sha256(p) for p in files}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        (payload / "manifest.json").write_text(json.dumps({"commit": commit.strip(), "files": manifest}, indent=1))
        blob = Path(tmp) / "payload.tar.xz"
        write_payload(payload, blob)
        room = CALL_LIMIT - tree_bytes() - (2 << 20)
        if room < (8 << 20):
            raise SystemExit(f"the working tree leaves only {room >> 20} MiB per device call")
        n = split(blob, REPO / ".gpu-carry", room)
        size = blob.stat().st_size
    log(f"payload {size / 2**20:.1f} MiB in {n} part(s) of at most {room / 2**20:.1f} MiB under .gpu-carry/")
    log("On the GPU machine, make these device-tool calls one right after the other (the machine keeps the")
    log("staged parts only while it stays warm, 30 s after a call), from the checkout this was packed in:")
    for k in range(n):
        log(f'  run(command="bash scripts/gpu/check.sh run", carry=[".gpu-carry/{k + 1}"], timeout_s=600)')
    return 0


def write_payload(payload: Path, blob: Path) -> None:
    """Tars and xz-compresses `payload` as `payload/`. The 384 MiB window (about 4 GiB to compress, 384 MiB
    to unpack) spans the whole payload, so the CUDA kernels that all three binaries hold are stored once;
    the x86 filter helps on machine code."""
    filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 384 << 20}]
    with lzma.open(blob, "wb", filters=filters) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        tar.add(payload, arcname="payload")


def split(blob: Path, carry: Path, room: int) -> int:
    """Cuts `blob` into parts of at most `room` bytes, `carry/1/`, `carry/2/`...; returns their count."""
    size = blob.stat().st_size
    n = max(1, -(-size // room))
    shutil.rmtree(carry, ignore_errors=True)
    info = json.dumps({"parts": n, "sha256": sha256(blob), "bytes": size})
    with open(blob, "rb") as f:
        for k in range(n):
            part = carry / str(k + 1)
            part.mkdir(parents=True)
            (part / f"payload.part.{k:02}").write_bytes(f.read(room))
            (part / "parts.json").write_text(info)
    return n


def stage(carry: Path, stage_dir: Path) -> Path | None:
    """Moves this call's parts into `stage_dir`; returns the payload folder once every part is there.

    Parts are kept by their payload's checksum, so that parts of an older pack never mix in."""
    carried = sorted(carry.glob("*/payload.part.*"))
    payload = stage_dir / "payload"
    if not carried:
        if (payload / "manifest.json").exists():
            return payload
        raise SystemExit(
            f"no parts carried and none staged in {stage_dir}: run `bash scripts/gpu/check.sh pack` here, then "
            "call the device tool with carry=['.gpu-carry/1'] (and the next ones)"
        )
    info = json.loads((carried[0].parent / "parts.json").read_text())
    parts = stage_dir / f"parts-{info['sha256'][:16]}"
    parts.mkdir(parents=True, exist_ok=True)
    for part in carried:
        shutil.copy2(part, parts / part.name)
    have = sorted(int(p.name.rsplit(".", 1)[1]) for p in parts.glob("payload.part.*"))
    missing = [k + 1 for k in range(info["parts"]) if k not in have]
    if missing:
        log(f"staged part(s) {[k + 1 for k in have]} of {info['parts']} in {parts}; still to carry: "
            + ", ".join(f".gpu-carry/{k}" for k in missing)
            + " (in calls right after this one; a machine given back in between starts bare)")
        return None
    blob = stage_dir / "payload.tar.xz"
    with open(blob, "wb") as out:
        for k in range(info["parts"]):
            out.write((parts / f"payload.part.{k:02}").read_bytes())
    shutil.rmtree(parts)
    if sha256(blob) != info["sha256"]:
        blob.unlink()
        raise SystemExit("the staged parts do not add up to the packed payload (sha256 differs): pack again")
    shutil.rmtree(payload, ignore_errors=True)
    with tarfile.open(blob) as tar:
        tar.extractall(stage_dir, filter="data")
    blob.unlink()
    manifest = json.loads((payload / "manifest.json").read_text())
    for rel, digest in manifest["files"].items():
        if sha256(payload / rel) != digest:
            raise SystemExit(f"{rel}: sha256 differs from the manifest")
    if (payload / "bin").is_dir():
        for b in (payload / "bin").iterdir():
            b.chmod(0o755)
    log(f"payload of commit {manifest['commit'][:12]} staged in {payload}")
    return payload


def install_wheels(whl_dir: Path, site: Path) -> None:
    if not site.exists():
        wheels = sorted(str(w) for w in whl_dir.glob("*.whl"))
        sh([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--target", site, *wheels], 300)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")


def cuda_library_path(extra_dirs: list[str] | None = None) -> str:
    """The folders holding the driver's and PyTorch's CUDA 13 libraries, by the sonames the binaries need."""
    dirs = list(extra_dirs or [])
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "lib")) + glob.glob(os.path.join(entry, "nvidia", "lib"))
    dirs += ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/local/cuda/lib64",
             "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib/x86_64-linux-gnu"]
    # The loader's cache knows where the driver put libcuda.so.1.
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    dirs += [os.path.dirname(m) for m in re.findall(r"=> (\S+)", ldconfig)]
    found, missing = [], []
    for lib in CUDA_LIBS:
        where = next((d for d in dirs if os.path.exists(os.path.join(d, lib))), None)
        if where is None:
            missing.append(lib)
        elif where not in found:
            found.append(where)
    if missing:
        raise SystemExit(f"no {', '.join(missing)} on this machine (looked in {sorted(set(dirs))})")
    return os.pathsep.join(found)
