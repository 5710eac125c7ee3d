"""Build a model for a (preset, method) pair on any device — `meta` for shape-only work."""

from __future__ import annotations

import functools
import importlib
from contextlib import contextmanager

import torch

from dynbench.errors import DynbenchError
from dynbench.fields import FIELD
from dynbench.models.baselines import BASELINES
from dynbench.models.dynamic_llava import DynamicLlava
from dynbench.models.llava import LlavaForBench
from dynbench.models.presets import get_preset
from dynbench.names import ATTN_IMPLEMENTATIONS, DTYPE_NAMES, METHODS
from dynbench.registry import MethodError
from dynbench.registry import get as get_method

# the shipped methods' models (their declarations name them: `models/methods.py`); baselines
# (`baselines.py`) share every module and weight name with `llava`
MODEL_CLASSES: dict[str, type[LlavaForBench]] = {"llava": LlavaForBench, "dynamic-llava": DynamicLlava, **BASELINES}
assert tuple(MODEL_CLASSES) == METHODS, (tuple(MODEL_CLASSES), METHODS)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
assert tuple(DTYPES) == DTYPE_NAMES


@contextmanager
def default_dtype(dtype: torch.dtype):
    """`torch.set_default_dtype` for a block: modules built inside it get `dtype` parameters."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(
    model: str = FIELD["model"].default,
    method: str = FIELD["method"].default,
    *,
    attn: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> LlavaForBench:
    """Random-weight model, built directly on `device` in `dtype` (no float32 copy of a 7B)."""
    cls = model_class(method)
    if attn not in ATTN_IMPLEMENTATIONS:
        raise DynbenchError(
            f"unknown attention implementation {attn!r}; choose one of: {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    preset = get_preset(model)
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype):
        net = cls(preset, attn=attn)
    return net.eval().requires_grad_(False)


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@functools.cache
def model_class(method: str) -> type[LlavaForBench]:
    """The model class of a method (any registered name, or `package.module:Name`): the one its
    declaration names, or `AttentionRankedPruner` running its `image_stages`; `.method` is the
    name the method was asked by and `.info` its declaration."""
    info = get_method(method)
    if info.model is None:
        from dynbench.models.method_api import AttentionRankedPruner

        cls = AttentionRankedPruner
        return type(cls.__name__, (cls,), {"method": method, "info": info, "__module__": cls.__module__})
    module, _, attr = info.model.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise MethodError(f"method {method}: its model {info.model} cannot be imported: "
                          f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, LlavaForBench)):
        raise MethodError(f"method {method}: its model {info.model} is not a LlavaForBench subclass")
    if cls.method == method:  # the shipped models, a plug-in's own class
        return cls
    return type(cls.__name__, (cls,), {"method": method, "__module__": cls.__module__})
