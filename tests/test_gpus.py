import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dynbench.errors import DynbenchError
from dynbench.measure.gpus import GPUS, GpuSpec, custom_gpu, get_gpu, gpu_from_nvml_name, peak_tflops

REQUIRED = ("a100-40gb-sxm", "a100-80gb-sxm", "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200", "l4", "l40s",
            "a10g", "rtx-4090")


def test_required_entries_present_and_keyed_by_slug():
    assert set(REQUIRED) <= set(GPUS)
    for key, spec in GPUS.items():
        assert isinstance(spec, GpuSpec)
        assert key == spec.name
        assert re.fullmatch(r"[a-z0-9-]+", key), key


def test_h100_sxm_anchor():
    h100 = get_gpu("h100-sxm")
    assert h100.tflops_bf16 == 989.4
    assert h100.tflops_fp16 == 989.4
    assert h100.mem_gbps == 3350.0
    assert h100.label == "NVIDIA H100 SXM5 80GB"


@pytest.mark.parametrize("name", list(GPUS))
def test_entry_sanity(name):
    spec = GPUS[name]
    numbers = (spec.tflops_bf16, spec.tflops_fp16, spec.tflops_tf32, spec.tflops_fp32_nontensor, spec.mem_gbps,
               spec.mem_gib)
    assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in numbers)
    assert spec.source.strip() and spec.label.strip() and spec.nvml_names
    # dense tensor fp16 >= tf32 >= fp32 on the CUDA cores
    assert spec.tflops_fp16 >= spec.tflops_tf32 >= spec.tflops_fp32_nontensor
    assert spec.tflops_bf16 == spec.tflops_fp16
    # On every card here TF32 runs at half the 16-bit rate; a sparse figure in one column breaks this.
    assert spec.tflops_fp16 / spec.tflops_tf32 == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(("name", "dense_bf16_below"), [
    ("h100-sxm", 1000), ("h200", 1000), ("h100-pcie", 800), ("a100-40gb-sxm", 400), ("a100-80gb-sxm", 400),
    ("a100-80gb-pcie", 400), ("l4", 150), ("l40s", 400), ("a10g", 125), ("rtx-4090", 200),
])
def test_no_sparse_figures(name, dense_bf16_below):
    spec = get_gpu(name)
    assert spec.tflops_bf16 < dense_bf16_below
    assert spec.tflops_tf32 < dense_bf16_below / 2


def test_known_values():
    a100 = get_gpu("a100-40gb-sxm")
    assert (a100.tflops_bf16, a100.tflops_tf32, a100.tflops_fp32_nontensor, a100.mem_gbps) == (312, 156, 19.5, 1555)
    assert get_gpu("a100-80gb-sxm").mem_gbps == 2039
    assert get_gpu("a100-80gb-pcie").mem_gbps == 1935
    assert (get_gpu("h100-pcie").tflops_bf16, get_gpu("h100-pcie").mem_gbps) == (756, 2000)
    h200 = get_gpu("h200")
    assert (h200.tflops_bf16, h200.mem_gbps, h200.mem_gib) == (989.4, 4800, 141)
    assert (get_gpu("l4").tflops_bf16, get_gpu("l4").mem_gbps) == (121, 300)
    assert (get_gpu("l40s").tflops_bf16, get_gpu("l40s").mem_gbps) == (362.05, 864)
    assert get_gpu("a10g").mem_gbps == 600
    assert (get_gpu("rtx-4090").tflops_bf16, get_gpu("rtx-4090").mem_gbps) == (165.2, 1008)


def test_get_gpu_unknown_lists_known_names_on_one_line():
    with pytest.raises(DynbenchError) as info:
        get_gpu("nope")
    message = str(info.value)
    assert "\n" not in message and "nope" in message
    assert all(name in message for name in GPUS)


@pytest.mark.parametrize("name", ["H100-SXM", "h100", "h100-sxm ", "h100sxm"])
def test_get_gpu_is_exact(name):
    with pytest.raises(DynbenchError):
        get_gpu(name)


@pytest.mark.parametrize(("device_name", "slug"), [
    ("NVIDIA A100-SXM4-40GB", "a100-40gb-sxm"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
    ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA A10G", "a10g"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    # normalization: case, surrounding/double whitespace, no "NVIDIA " prefix (older drivers), bytes
    ("nvidia h100 80gb hbm3", "h100-sxm"),
    ("  NVIDIA  H100 PCIe \n", "h100-pcie"),
    ("A100-SXM4-40GB", "a100-40gb-sxm"),
    (b"NVIDIA L4", "l4"),
])
def test_nvml_names_map(device_name, slug):
    spec = gpu_from_nvml_name(device_name)
    assert spec is not None and spec.name == slug


@pytest.mark.parametrize("device_name", [
    "NVIDIA B200", "Tesla T4", "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA H100", "NVIDIA L40", "NVIDIA A10",
    "NVIDIA A100-PCIE-40GB", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 4090 Laptop GPU",
    "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "NVIDIA GH200 480GB", "", "NVIDIA",
])
def test_unknown_nvml_names_return_none(device_name):
    assert gpu_from_nvml_name(device_name) is None


def test_every_listed_nvml_name_maps_back_to_its_entry():
    for spec in GPUS.values():
        for device_name in spec.nvml_names:
            assert gpu_from_nvml_name(device_name) is spec


def test_custom_gpu():
    gpu = custom_gpu("400,1500")
    assert (gpu.tflops_bf16, gpu.tflops_fp16, gpu.tflops_tf32, gpu.tflops_fp32_nontensor) == (400, 400, 400, 400)
    assert gpu.mem_gbps == 1500 and gpu.mem_gib is None
    assert all(peak_tflops(gpu, dtype) == 400 for dtype in ("bfloat16", "float16", "float32"))
    assert custom_gpu(" 312.5 , 2039 ").tflops_bf16 == 312.5


@pytest.mark.parametrize("spec", ["x", "0,100", "100,0", "-1,100", "1,2,3", "", "400", "400,", "nan,100", "inf,100",
                                  "400;1500"])
def test_custom_gpu_rejects(spec):
    with pytest.raises(DynbenchError) as info:
        custom_gpu(spec)
    assert "\n" not in str(info.value)


def test_peak_tflops_dtypes():
    h100 = get_gpu("h100-sxm")
    assert peak_tflops(h100, "bfloat16") == 989.4
    assert peak_tflops(h100, "float16") == 989.4
    assert peak_tflops(h100, "float32") == h100.tflops_tf32 == 494.7
    for bad in ("fp32", "bf16", "int8", "torch.float32"):
        with pytest.raises(DynbenchError):
            peak_tflops(h100, bad)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        get_gpu("h100-sxm").mem_gbps = 1.0  # type: ignore[misc]


def test_import_does_not_pull_torch():
    code = "import sys, dynbench.measure.gpus; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
