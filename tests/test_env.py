import re
import socket
import warnings

import pynvml
import torch

from dynbench.measure import env


def test_env_id_stable_and_sensitive_to_dtype():
    a = env.snapshot("cpu", torch.float32, "sdpa")
    b = env.snapshot(torch.device("cpu"), "float32", "sdpa")
    assert env.env_id(a) == env.env_id(b)
    assert re.fullmatch(r"[0-9a-f]{12}", env.env_id(a))
    assert env.env_id(a) != env.env_id(env.snapshot("cpu", torch.float16, "sdpa"))
    assert env.env_id(a) != env.env_id({**a, "attn": "eager"})


def test_env_id_ignores_git_sha_and_platform():
    a = env.snapshot("cpu", torch.float32, "sdpa")
    other = {**a, "git_sha": "deadbeef", "platform": "x", "cpu_model": "y"}
    assert env.env_id(a) == env.env_id(other)


def test_snapshot_fields_cpu():
    snap = env.snapshot("cpu", torch.bfloat16, "eager")
    assert snap["dtype"] == "bfloat16" and snap["device_type"] == "cpu"
    assert snap["torch_version"] == torch.__version__
    assert snap["gpu_name"] is None and snap["driver_version"] is None
    assert "hostname" not in snap
    assert socket.gethostname() not in snap.values()
    assert snap["git_sha"] is None or len(snap["git_sha"]) == 40


def test_nvml_handle_without_nvml_warns_and_returns_none(monkeypatch):
    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    monkeypatch.setattr(env, "_warned", set())
    assert env.nvml_handle("cpu") is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert env.nvml_handle("cuda") is None
        assert env.nvml_handle("cuda:0") is None
    assert [str(w.message) for w in caught if "NVML unavailable" in str(w.message)] \
        and len(caught) == 1


def test_snapshot_cuda_without_nvml_or_gpu(monkeypatch):
    monkeypatch.setattr(env, "nvml_handle", lambda device: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    snap = env.snapshot("cuda", torch.float16, "sdpa")
    assert snap["gpu_name"] is None and snap["device_type"] == "cuda"


def test_snapshot_holds_exactly_the_declared_env_fields():
    # records.ENV_SNAPSHOT_FIELDS declares each field's roles (row, env id, baseline, gate): a field
    # the snapshot gains or loses must be declared there, or the lists built from it miss it
    from dynbench.records import ENV_SNAPSHOT_FIELDS

    assert set(env.snapshot("cpu", torch.float32, "sdpa")) == {f.name for f in ENV_SNAPSHOT_FIELDS}
