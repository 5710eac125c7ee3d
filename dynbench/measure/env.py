"""Environment snapshot: what a number was measured on, and the id that says which numbers compare.

`snapshot()` records GPU, driver, CUDA, library versions, Python, platform, CPU model, attention
implementation, dtype, device and the git SHA of the dynbench checkout. The hostname is not
in the snapshot (privacy: snapshots are copied into baselines); rows carry it instead, with the
scheduler job and the GPU's UUID (`where_it_ran`, `gpu_uuid`), so a report can tell machines
apart. `env_id()` hashes only the fields that change the numbers, so a regression check can refuse
to compare across environments; the git SHA and time are deliberately left out (the code under
test is what a check compares).

It also holds the NVML helpers shared by the latency and memory trackers. NVML is optional: with
no GPU, no driver or no `nvidia-ml-py`, they return None and warn once, never raise.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch

from dynbench.records import ENV_ID, env_fields

# Fields whose change makes two measurements incomparable (declared in records.py). Order is
# irrelevant (sorted on hash).
ENV_ID_FIELDS = env_fields(ENV_ID)

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """`warnings.warn` a message the first time this process sees it."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def nvml_handle(device: torch.device | str) -> Any | None:
    """NVML handle of a CUDA device, or None (warns once) when NVML cannot be used.

    Does not initialize CUDA when it is not yet initialized, so a memory baseline taken before
    the model loads also excludes the CUDA context. Mapping: once CUDA is up, by the device's UUID
    (robust to CUDA_VISIBLE_DEVICES); before that, through CUDA_VISIBLE_DEVICES (index or UUID
    entries), else by index. With several different GPUs and no CUDA_DEVICE_ORDER=PCI_BUS_ID the
    pre-init index mapping may pick the wrong GPU.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index
        if torch.cuda.is_initialized():
            index = torch.cuda.current_device() if index is None else index
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            for prefix in ("GPU-", "MIG-", ""):
                try:
                    return pynvml.nvmlDeviceGetHandleByUUID(prefix + uuid)
                except pynvml.NVMLError:
                    pass
        index = 0 if index is None else index
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
        if visible != [""] and index < len(visible):
            entry = visible[index]
            if entry.isdigit():
                return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
            return pynvml.nvmlDeviceGetHandleByUUID(entry)
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:  # ImportError, NVMLError (no driver / library), bad index
        warn_once(f"NVML unavailable ({type(exc).__name__}: {exc}); clock and NVML memory "
                  "figures will be null. Install nvidia-ml-py and run on an NVIDIA driver.")
        return None


def nvml_why(exc: BaseException) -> str:
    """One line saying why an NVML quantity is missing: sandboxes and containers answer
    `NotSupported` / `NoPermission` per call, so each quantity records its own reason."""
    return f"{type(exc).__name__}: {exc}"


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_sha() -> str | None:
    """SHA of the checkout containing this package, or None (not a checkout, no git, no commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


def snapshot(device: torch.device | str, dtype: torch.dtype | str, attn: str) -> dict:
    """Environment of a run; GPU name and driver are None off CUDA (driver also without NVML)."""
    device = torch.device(device)
    gpu_name = driver = None
    if device.type == "cuda":
        handle = nvml_handle(device)
        if handle is not None:
            import pynvml

            try:
                gpu_name = _as_str(pynvml.nvmlDeviceGetName(handle))
                driver = _as_str(pynvml.nvmlSystemGetDriverVersion())
            except pynvml.NVMLError as exc:
                warn_once(f"NVML query failed ({exc}); GPU name or driver may be null.")
        if gpu_name is None and torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name(device)
    return {
        "gpu_name": gpu_name,
        "driver_version": driver,
        "cuda_version": torch.version.cuda,
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "fvcore_version": _version("fvcore"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),  # intra-op threads torch uses: CPU timings scale with it
        "attn": attn,
        "dtype": _dtype_name(dtype),
        "device": str(device),
        "device_type": device.type,
        "git_sha": _git_sha(),
    }


# DYNBENCH_* are set by dynbench's own job function (`cluster.run_task`) for the `dynbench run` it
# starts; a plain `sbatch` array falls back to Slurm's variables.
ARRAY_INDEX_VARS = ("DYNBENCH_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID")


def where_it_ran() -> dict:
    """`hostname`, `job_id`, `array_index` of this process (None outside a job): row columns."""
    import socket

    env = os.environ
    job_id = env.get("DYNBENCH_JOB_ID")
    if not job_id and env.get("SLURM_ARRAY_JOB_ID"):
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    job_id = job_id or env.get("SLURM_JOB_ID") or None
    index = next((env[v] for v in ARRAY_INDEX_VARS if env.get(v, "").isdigit()), None)
    return {"hostname": socket.gethostname() or None, "job_id": job_id,
            "array_index": None if index is None else int(index)}


def gpu_uuid(device: torch.device | str) -> str | None:
    """UUID of the CUDA device (`GPU-…` / `MIG-…` as NVML and nvidia-smi print it); None off CUDA.
    Call it after the model is built: it initializes CUDA."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    handle = nvml_handle(device)
    if handle is not None:
        import pynvml

        try:
            return _as_str(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:
            pass
    index = torch.cuda.current_device() if device.index is None else device.index
    return f"GPU-{torch.cuda.get_device_properties(index).uuid}"


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none). Above the core count, other
    work competes with the benchmark for the CPU and CPU timings are noise."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def env_id(snap: dict) -> str:
    """12-hex sha256 of the comparability fields (`ENV_ID_FIELDS`); missing fields count as null."""
    key = {name: snap.get(name) for name in ENV_ID_FIELDS}
    if key["device_type"] is None and snap.get("device") is not None:
        key["device_type"] = torch.device(snap["device"]).type
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
