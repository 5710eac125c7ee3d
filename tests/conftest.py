import os

# One intra-op thread per test process, set before torch is imported so that the `dynbench` subprocesses
# some tests start inherit it too: the tiny preset's ops are too small to gain from a second thread,
# and on 2 shared cores (two xdist workers, or another job) OpenMP threads that contend for a core
# spin and run several times slower (measured: tests/test_latency_columns.py + test_records.py +
# test_model.py under a load of 2, 19 s on one thread vs 59 s on two).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from dynbench.inputs import synthetic_inputs  # noqa: E402
from dynbench.models.build import build_model  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # torch may have been imported before this file


# The session fixtures that take seconds to build: under `-n 2` the files that use one run on one worker.
SHARED_FIXTURES = ("shared_assets", "every_method_sweep")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the `xdist_group` marks
def pytest_collection_modifyitems(config, items):
    uses = {}
    for item in items:
        uses.setdefault(item.path, set()).update(f for f in SHARED_FIXTURES if f in item.fixturenames)
    for item in items:
        if uses[item.path]:
            item.add_marker(pytest.mark.xdist_group("+".join(sorted(uses[item.path]))))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # optional: pytest-xdist is a dev extra
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs `-n 2 --dist loadgroup`: each test file goes whole to one worker (its module
    fixtures are built once), and so do all the files marked with one `xdist_group` (a costly session
    fixture they share is built once) — xdist's own loadgroup spreads unmarked tests one by one."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.rsplit("@", 1)[-1] if "@" in nodeid else nodeid.split("::", 1)[0]

    return FileOrGroup(config, log)


def tiny_pair(attn: str = "sdpa"):
    """A tiny `llava` and a `dynamic-llava` that share every LLaVA weight."""
    llava = build_model("tiny", "llava", attn=attn, seed=0)
    dyn = build_model("tiny", "dynamic-llava", attn=attn, seed=1)
    missing, unexpected = dyn.load_state_dict(llava.state_dict(), strict=False)
    assert not unexpected and all("score_predictor" in k for k in missing)
    return llava, dyn


@pytest.fixture(scope="session")
def pair():
    return tiny_pair("sdpa")


@pytest.fixture(scope="session")
def shared_assets(tmp_path_factory):
    """`assets.checkpoints` and `assets.datasets`, built once per session (the checkpoints take seconds
    to build and write): read-only for the tests; a module writes its own extra files elsewhere."""
    from assets import checkpoints, datasets

    root = tmp_path_factory.mktemp("assets")
    return {**checkpoints(root), **datasets(root)}


@pytest.fixture(scope="session")
def every_method_sweep(tmp_path_factory):
    """`assets.every_method_sweep`'s results folders {repeats: folder}, run once per session (a dozen
    seconds): read-only for the tests."""
    from assets import every_method_sweep

    return every_method_sweep(tmp_path_factory.mktemp("every-method"))


@pytest.fixture(scope="session")
def prompt():
    llava = build_model("tiny", "llava", device="meta")
    return synthetic_inputs(llava.preset, prompt_len=48, batch=1, seed=3)


# issue 23: a longer fuzzing run, `pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long`
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("fuzz-long", max_examples=1000, deadline=None)
except ImportError:  # hypothesis is a dev extra; only tests/test_fuzz.py needs it
    pass
