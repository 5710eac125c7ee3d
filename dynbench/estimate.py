"""What a point will cost before it runs: MACs from the counting rules, and seconds on this machine.

`point_tmacs(spec)` adds up the analytic matmul MACs of every step the point's mode would run
(`modes.plan_mode`: per decoder layer (q, kv) shapes, vision passes, predictors' tokens, the LM
head), times the batch and the measured runs (warm-ups included). It is an *estimate* for
planning — the measured `tmacs` column comes from fvcore — accurate to a few percent for the
LLaVA shapes (elementwise work is not counted). Learned text decisions cannot be planned: such
points are costed as if every token were kept (an upper bound).

`machine_tmacs_per_s(device)` is the matmul throughput of this machine, measured once per process
on a small float32 (CPU) or bf16 (CUDA) product; `estimated_seconds` divides one by the other.
The sweep uses them to refuse a point far beyond the machine (unless `--yes`), to show an ETA
that weighs points by cost, and to balance shards.
"""

from __future__ import annotations

import dataclasses
import functools
import time

from dynbench.models.presets import get_preset
from dynbench.models.rules import analytic_layer_macs


def _vision_macs(p) -> int:
    """CLIP ViT (every layer runs) + the projector, one image: matmul MACs."""
    n = p.image_tokens + 1  # + CLS
    d, m = p.vision_hidden, p.vision_intermediate
    patch = p.image_tokens * 3 * p.patch_size**2 * d
    layers = p.vision_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    projector = p.image_tokens * (d * p.hidden + p.hidden * p.hidden)
    return patch + layers + projector


def point_tmacs(spec) -> float:
    """Estimated tera-MACs of every run of the point (warm-ups and measured runs)."""
    from dynbench.modes import plan_mode

    p = get_preset(spec.model)
    drop = spec.drop
    if drop.text_policy == "learned":  # decisions need the weights: cost as if every token is kept
        drop = dataclasses.replace(drop, text_keep=1.0, text_policy="budget")
    # a dataset point (prompt_len None): one sample with no text, an estimate per sample
    planned = plan_mode(p, spec.method, spec.mode, spec.prompt_len or 0, spec.gen_len or 1, drop,
                        bool(spec.reuse_vision), spec.batch)
    layer = functools.partial(analytic_layer_macs, hidden=p.hidden, intermediate=p.intermediate, heads=p.heads,
                              kv_heads=p.kv_heads, head_dim=p.head_dim)
    macs = 0
    for step in planned.steps:
        macs += sum(layer(q, kv) for q, kv in step.layer_shapes)
        macs += _vision_macs(p) if step.vision_ran else 0
        macs += p.hidden * p.vocab  # LM head, the last position
    runs = max(spec.warmup or 0, 0) + max(spec.repeats or 0, 0)
    return macs * spec.batch * max(runs, 1) / 1e12


@functools.cache
def machine_tmacs_per_s(device: str) -> float | None:
    """Matmul throughput of this device in tera-MACs/s (None for meta): a quick product."""
    if device == "meta":
        return None
    import torch

    n = 1024
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)
    a @ a  # warm-up (threads, cuBLAS handles)
    reps = 20 if device == "cuda" else 4
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    return reps * n**3 / (time.perf_counter() - t0) / 1e12


def estimated_seconds(spec) -> float | None:
    """Estimated wall time of the point's matmuls on this machine (None on meta)."""
    rate = machine_tmacs_per_s(spec.device)
    return None if rate is None else point_tmacs(spec) / rate
