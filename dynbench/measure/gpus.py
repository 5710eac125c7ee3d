"""GPU spec table for roofline projections.

A roofline bound says a piece of work cannot finish faster than
`max(FLOPs / peak_flops, bytes / memory_bandwidth)`: whichever of compute or memory traffic is
the tighter limit. This module holds the two numbers that bound needs for the GPUs people
usually run LLaVA on, so a measurement on one card can be compared with what the card could do
at best, or projected onto a card that is not at hand (`custom_gpu` for one not in the table).

The figures are *dense* peaks from the vendors' datasheets and architecture whitepapers, at boost
clock. NVIDIA datasheets print the tensor-core figures "with sparsity" (2:4 structured sparsity,
marked with an asterisk); those are halved here, because nothing dynbench runs uses 2:4 sparse
kernels. Real kernels reach maybe 60–80 % of these peaks (large GEMMs at the top of that range,
attention, small or skinny matmuls and everything element-wise far lower; sustained clocks under
power or thermal limits are often below boost), so a roofline time is a lower bound, never a
prediction.

bfloat16 and float16 use the dense tensor-core figure with FP32 accumulate, which is what
PyTorch's cuBLAS matmuls use. float32 uses the dense TF32 tensor-core figure; see `peak_tflops`
for why, and `GpuSpec.tflops_fp32_nontensor` for the plain FP32 CUDA-core throughput that applies
when TF32 is off (PyTorch's default for matmuls).

Memory bandwidth is in decimal GB/s (1 GB = 1e9 bytes), as datasheets print it. No torch import
here: `dynbench gpus --help` imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynbench.errors import DynbenchError


@dataclass(frozen=True)
class GpuSpec:
    """Dense peak throughput and memory of one GPU model, for roofline bounds.

    `tflops_tf32` vs `tflops_fp32_nontensor`: PyTorch runs float32 matmuls on TF32 tensor cores
    only when `torch.backends.cuda.matmul.allow_tf32 = True` or
    `torch.set_float32_matmul_precision("high")` (or "medium") is set; otherwise (the default
    for matmuls) they run on the FP32 CUDA cores at `tflops_fp32_nontensor`. cuDNN convolutions
    default to TF32 (`torch.backends.cudnn.allow_tf32` is True by default).

    `nvml_names` are the exact names `nvmlDeviceGetName` (and `torch.cuda.get_device_name`)
    return for this card; `gpu_from_nvml_name` compares them case-insensitively, with runs of
    whitespace collapsed and an optional leading "NVIDIA " ignored, never as substrings ("NVIDIA
    L4" is a prefix of "NVIDIA L40S", "NVIDIA H100" of "NVIDIA H100 NVL").
    """

    name: str  # lowercase slug, the key in GPUS
    label: str  # human-readable name
    tflops_bf16: float  # dense bf16 tensor-core peak, FP32 accumulate, TFLOP/s
    tflops_fp16: float  # dense fp16 tensor-core peak, FP32 accumulate, TFLOP/s
    tflops_tf32: float  # dense TF32 tensor-core peak, TFLOP/s (float32 matmuls with TF32 allowed)
    tflops_fp32_nontensor: float  # FP32 CUDA-core peak, TFLOP/s (float32 matmuls with TF32 off)
    mem_gbps: float  # peak memory bandwidth, decimal GB/s
    mem_gib: float | None  # nominal memory size as the datasheet prints it; None when unknown
    source: str  # where the numbers come from: document name and date
    nvml_names: tuple[str, ...] = ()  # exact NVML device names of this card


# Every figure below is dense (sparse datasheet figures halved) and at boost clock. "Confirmed"
# means the figure was matched against a copy of the vendor table found while writing this;
# where it could not be, the comment says so.
_SPECS: tuple[GpuSpec, ...] = (
    # NVIDIA A100 Tensor Core GPU datasheet (2020 launch edition, 40GB SXM4) and the NVIDIA A100
    # Tensor Core GPU Architecture whitepaper (2020), Table 1: BF16/FP16 tensor 312 (624 sparse),
    # TF32 156 (312 sparse), FP32 19.5, HBM2 1,555 GB/s. Confirmed against reproductions of the
    # datasheet table.
    GpuSpec(
        name="a100-40gb-sxm",
        label="NVIDIA A100 SXM4 40GB",
        tflops_bf16=312.0,
        tflops_fp16=312.0,
        tflops_tf32=156.0,
        tflops_fp32_nontensor=19.5,
        mem_gbps=1555.0,
        mem_gib=40.0,
        source="NVIDIA A100 Tensor Core GPU datasheet (2020) / A100 architecture whitepaper (2020), Table 1",
        nvml_names=("NVIDIA A100-SXM4-40GB",),
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (1758950-r4, 2021), A100 80GB SXM column: compute as
    # the 40GB part, HBM2e 2,039 GB/s. Confirmed against reproductions of the datasheet table.
    GpuSpec(
        name="a100-80gb-sxm",
        label="NVIDIA A100 SXM4 80GB",
        tflops_bf16=312.0,
        tflops_fp16=312.0,
        tflops_tf32=156.0,
        tflops_fp32_nontensor=19.5,
        mem_gbps=2039.0,
        mem_gib=80.0,
        source="NVIDIA A100 Tensor Core GPU datasheet (1758950-r4, 2021), A100 80GB SXM",
        nvml_names=("NVIDIA A100-SXM4-80GB",),
    ),
    # Same datasheet, A100 80GB PCIe column: same peak compute as SXM (the datasheet lists one
    # compute column for both; sustained clocks are lower at 300 W), HBM2e 1,935 GB/s. Confirmed.
    GpuSpec(
        name="a100-80gb-pcie",
        label="NVIDIA A100 80GB PCIe",
        tflops_bf16=312.0,
        tflops_fp16=312.0,
        tflops_tf32=156.0,
        tflops_fp32_nontensor=19.5,
        mem_gbps=1935.0,
        mem_gib=80.0,
        source="NVIDIA A100 Tensor Core GPU datasheet (1758950-r4, 2021), A100 80GB PCIe",
        nvml_names=("NVIDIA A100 80GB PCIe",),
    ),
    # NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), H100 SXM5 table: BF16/FP16
    # tensor 989.4 dense (1,978.9 sparse), TF32 494.7, FP32 66.9. The H100 datasheet (2023)
    # rounds these to 1,979* / 989* / 67 and gives HBM3 3.35 TB/s. Confirmed.
    GpuSpec(
        name="h100-sxm",
        label="NVIDIA H100 SXM5 80GB",
        tflops_bf16=989.4,
        tflops_fp16=989.4,
        tflops_tf32=494.7,
        tflops_fp32_nontensor=66.9,
        mem_gbps=3350.0,
        mem_gib=80.0,
        source="NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022); H100 datasheet (2023), H100 SXM",
        nvml_names=("NVIDIA H100 80GB HBM3",),
    ),
    # NVIDIA H100 Tensor Core GPU datasheet (2023), H100 PCIe column: BF16/FP16 1,513* -> 756,
    # TF32 756* -> 378, FP32 51, HBM2e 2,000 GB/s. Confirmed against a reproduction of the
    # datasheet table. (H100 NVL is a different card, not in this table.)
    GpuSpec(
        name="h100-pcie",
        label="NVIDIA H100 PCIe 80GB",
        tflops_bf16=756.0,
        tflops_fp16=756.0,
        tflops_tf32=378.0,
        tflops_fp32_nontensor=51.0,
        mem_gbps=2000.0,
        mem_gib=80.0,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023), H100 PCIe",
        nvml_names=("NVIDIA H100 PCIe",),
    ),
    # NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM column: same GH100 compute as H100
    # SXM (BF16/FP16 1,979*, TF32 989*, FP32 67; whitepaper-precision values used, as for
    # h100-sxm), HBM3e 4.8 TB/s, 141 GB. Memory figures confirmed; compute confirmed as "same as
    # H100 SXM" from secondary copies of the datasheet. (H200 NVL is a different, lower-power card.)
    GpuSpec(
        name="h200",
        label="NVIDIA H200 SXM 141GB",
        tflops_bf16=989.4,
        tflops_fp16=989.4,
        tflops_tf32=494.7,
        tflops_fp32_nontensor=66.9,
        mem_gbps=4800.0,
        mem_gib=141.0,
        source="NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM",
        nvml_names=("NVIDIA H200",),
    ),
    # NVIDIA L4 Tensor Core GPU datasheet (2023): BF16/FP16 242* -> 121, TF32 120* -> 60, FP32
    # 30.3, GDDR6 300 GB/s, 24 GB. TF32 120*, bandwidth and size confirmed against a reproduction
    # of the datasheet table, FP16 242* against a secondary summary of it (BF16 assumed equal, as
    # on every Ada part).
    GpuSpec(
        name="l4",
        label="NVIDIA L4 24GB",
        tflops_bf16=121.0,
        tflops_fp16=121.0,
        tflops_tf32=60.0,
        tflops_fp32_nontensor=30.3,
        mem_gbps=300.0,
        mem_gib=24.0,
        source="NVIDIA L4 Tensor Core GPU datasheet (2023)",
        nvml_names=("NVIDIA L4",),
    ),
    # NVIDIA L40S GPU datasheet (2023): BF16/FP16 362.05 (733*), TF32 183 (366*), FP32 91.6,
    # GDDR6 864 GB/s, 48 GB. Confirmed against a reproduction of the datasheet table. (L40, a
    # different card with half the FP32-accumulate tensor rate, is not in this table.)
    GpuSpec(
        name="l40s",
        label="NVIDIA L40S 48GB",
        tflops_bf16=362.05,
        tflops_fp16=362.05,
        tflops_tf32=183.0,
        tflops_fp32_nontensor=91.6,
        mem_gbps=864.0,
        mem_gib=48.0,
        source="NVIDIA L40S GPU datasheet (2023)",
        nvml_names=("NVIDIA L40S",),
    ),
    # UNCERTAIN. The A10G is an AWS-only variant (EC2 G5); NVIDIA publishes no datasheet for it,
    # and the NVIDIA A10 datasheet (125 dense FP16/BF16, 62.5 TF32, 31.2 FP32) does not apply: the
    # A10G has more SMs (80) and GeForce-rate FP32-accumulate tensor cores. 70 BF16/FP16, 35 TF32
    # and 35 FP32 are the figures third-party comparisons cite (e.g. Baseten, "NVIDIA A10 vs A10G
    # for ML model inference", 2023); its table could not be read back here, so they are not
    # re-checked. They agree with 80 SMs x ~1.71 GHz boost at GA102 GeForce rates. Bandwidth 600 GB/s
    # and 24 GB GDDR6 (same as A10) confirmed from the same article's text.
    GpuSpec(
        name="a10g",
        label="NVIDIA A10G 24GB (AWS)",
        tflops_bf16=70.0,
        tflops_fp16=70.0,
        tflops_tf32=35.0,
        tflops_fp32_nontensor=35.0,
        mem_gbps=600.0,
        mem_gib=24.0,
        source="no vendor datasheet (AWS-only part); third-party figures (Baseten A10 vs A10G, 2023), not re-checked",
        nvml_names=("NVIDIA A10G",),
    ),
    # NVIDIA Ada Lovelace GPU Architecture whitepaper (2022), Appendix A, GeForce RTX 4090: FP16
    # and BF16 tensor with FP32 accumulate 165.2 dense (330.4 sparse); FP16 with FP16 accumulate
    # is 330.3 dense, but PyTorch matmuls accumulate in FP32, so that figure does not apply. TF32
    # 82.6 (165.2 sparse), FP32 82.6, GDDR6X 1,008 GB/s, 24 GB. Confirmed against a third-party
    # copy of the table (165.15 / 82.58 / 1008 GB/s); the whitepaper itself was not opened here.
    GpuSpec(
        name="rtx-4090",
        label="NVIDIA GeForce RTX 4090",
        tflops_bf16=165.2,
        tflops_fp16=165.2,
        tflops_tf32=82.6,
        tflops_fp32_nontensor=82.6,
        mem_gbps=1008.0,
        mem_gib=24.0,
        source="NVIDIA Ada Lovelace GPU Architecture whitepaper (2022), Appendix A, GeForce RTX 4090",
        nvml_names=("NVIDIA GeForce RTX 4090",),
    ),
)

GPUS: dict[str, GpuSpec] = {spec.name: spec for spec in _SPECS}
assert len(GPUS) == len(_SPECS), "duplicate GPU slug"


def _normalize_device_name(device_name: str) -> str:
    """Casefold, collapse whitespace and drop a leading "nvidia " (older drivers omit it)."""
    norm = " ".join(device_name.split()).casefold()
    return norm.removeprefix("nvidia ")


_BY_NVML_NAME: dict[str, GpuSpec] = {}
for _spec in _SPECS:
    for _nvml_name in _spec.nvml_names:
        _key = _normalize_device_name(_nvml_name)
        assert _key not in _BY_NVML_NAME, f"NVML name {_nvml_name!r} listed twice"
        _BY_NVML_NAME[_key] = _spec
del _spec, _nvml_name, _key

DTYPE_NAMES = ("bfloat16", "float16", "float32")


def get_gpu(name: str) -> GpuSpec:
    """The table entry for a slug (exact match, e.g. "h100-sxm"); DynbenchError naming the known slugs."""
    try:
        return GPUS[name]
    except KeyError:
        raise DynbenchError(f"unknown GPU {name!r}; known GPUs: {', '.join(GPUS)}") from None


def gpu_from_nvml_name(device_name: str | bytes) -> GpuSpec | None:
    """The table entry for an NVML / `torch.cuda.get_device_name` name, or None when not in the table.

    Exact match after normalization (case, whitespace, optional "NVIDIA " prefix), never a
    substring or fuzzy match: "NVIDIA H100 80GB HBM3" is the H100 SXM, "NVIDIA H100 PCIe" the
    PCIe card, and "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA L40", "NVIDIA A10",
    "NVIDIA A100-PCIE-40GB" or a MIG slice ("... MIG 1g.10gb") return None rather than a wrong
    spec. `bytes` (what old pynvml versions return) is decoded as UTF-8.
    """
    if isinstance(device_name, bytes):
        device_name = device_name.decode("utf-8", errors="replace")
    return _BY_NVML_NAME.get(_normalize_device_name(device_name))


def custom_gpu(spec: str) -> GpuSpec:
    """A GpuSpec from "TFLOPS,GBPS", e.g. "400,1500": one peak TFLOP/s for every dtype, and GB/s.

    Both numbers must be finite and positive; the memory size is unknown (None).
    """
    parts = [part.strip() for part in spec.split(",")]
    usage = f"bad custom GPU spec {spec!r}: expected 'TFLOPS,GBPS', two positive numbers, e.g. '400,1500'"
    if len(parts) != 2:
        raise DynbenchError(usage)
    try:
        tflops, gbps = (float(part) for part in parts)
    except ValueError:
        raise DynbenchError(usage) from None
    if not all(math.isfinite(x) and x > 0 for x in (tflops, gbps)):
        raise DynbenchError(usage)
    return GpuSpec(
        name="custom",
        label=f"custom ({tflops:g} TFLOP/s, {gbps:g} GB/s)",
        tflops_bf16=tflops,
        tflops_fp16=tflops,
        tflops_tf32=tflops,
        tflops_fp32_nontensor=tflops,
        mem_gbps=gbps,
        mem_gib=None,
        source=f"user-supplied {spec.strip()!r}",
    )


def peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    """Dense peak TFLOP/s of `gpu` for matmuls in `dtype` ("bfloat16" | "float16" | "float32").

    float32 returns the TF32 tensor-core figure, not the FP32 CUDA-core one. A roofline time is a
    lower bound, and it stays one only with the highest rate the hardware could run float32
    matmuls at: with TF32 allowed (`torch.backends.cuda.matmul.allow_tf32` /
    `torch.set_float32_matmul_precision("high")`, and by default for cuDNN convolutions) that is
    the TF32 rate. With TF32 off (PyTorch's default for matmuls) float32 matmuls run at
    `gpu.tflops_fp32_nontensor`, several times lower, so the bound is loose; use that field for
    a tighter one when you know TF32 is off.
    """
    if dtype == "bfloat16":
        return gpu.tflops_bf16
    if dtype == "float16":
        return gpu.tflops_fp16
    if dtype == "float32":
        return gpu.tflops_tf32
    raise DynbenchError(f"unknown dtype {dtype!r} for a peak-TFLOP/s lookup; choose one of: {', '.join(DTYPE_NAMES)}")
