"""Run a sweep: build each model once, measure every point, append its rows, survive failures.

`Sweep.run(points)` yields one summary row per point, in order, after its step rows and summary
row were appended to the results folder (one fsync'd line each, summary last — so a point cut
short has no summary and `--resume` runs it again). Policy:

* one model in memory at a time, keyed by (preset, method, dtype, device, attention, seed,
  checkpoint) — order points so each model is built once (`order_points`); a checkpoint is
  loaded once per (dtype, device, attention) and serves `llava` and the baselines as a view;
* an out-of-memory point becomes an `oom` row (memory is released after leaving the handler,
  when the traceback no longer holds the network's tensors), any other exception an
  `error: …` row; the sweep goes on. A `DynbenchError` (the user's input) ends it;
* roofline bounds on the GPU `--gpu` / `--gpu-spec` name (a projection on CPU / meta), or on CUDA
  on the card NVML names (`measure/roofline.py`); none otherwise;
* a dataset point (`spec.dataset`) is the same spec measured once per sample — warm-up, repeats
  and memory per sample, as each sample is a new shape — each sample's rows (steps, rounds, the
  sample row; `samples.py`) appended as it ends, the aggregate last. A failing sample is a sample
  row with its status and the rest go on; `--resume` reruns a point without its aggregate whole
  (its earlier sample rows stay in the file, but readers take the samples of the latest aggregate,
  by `point_id`).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dynbench.errors import DynbenchError
from dynbench.names import ERROR_PREFIX, STATUS_OK, STATUS_OOM
from dynbench.records import COLUMNS, ENV_COLUMNS, MODEL_KEY, RESUME_KEY, STEP, SUMMARY, is_summary, key_of
from dynbench.results import RECORDS_FILE, append_record, recorded_keys, write_atomic
from dynbench.sources import Source

# the allocator's message, cuBLAS failing to allocate its workspace, and older gVisor sandboxes,
# where PyTorch's OOM report trips an NVML assertion inside the caching allocator
OOM_MARKERS = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED",
               "NVML_SUCCESS == r INTERNAL ASSERT FAILED")
# every row carries every column of its kind (null = not measured here): summary-shaped rows
# (point, sample, round) and step rows
SUMMARY_NAMES = tuple(c.name for c in COLUMNS if c.rows != STEP)
STEP_NAMES = tuple(c.name for c in COLUMNS if c.rows != SUMMARY)


def failure_status(exc: BaseException) -> str:
    """The status of a point (or sample) that raised `exc`: oom, or the error and its message."""
    return STATUS_OOM if is_oom(exc) else f"{ERROR_PREFIX}{type(exc).__name__}: {exc}"


def is_oom(exc: BaseException) -> bool:
    """CUDA / host out-of-memory, including cuBLAS failing to allocate its workspace."""
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MARKERS)


def order_points(points: Iterable) -> list:
    """Points grouped by the model they need (first appearance order), so each is built once."""
    groups: dict[tuple, list] = {}
    for p in points:
        groups.setdefault(key_of(p, MODEL_KEY), []).append(p)
    return [p for group in groups.values() for p in group]


@dataclass
class LoadedModel:
    """A built model and what is measured once per model."""

    net: object  # models.llava.LlavaForBench
    memory: object  # measure.memory.MemoryTracker
    cost: object  # measure.model_cost.ModelCost; None with --no-flops (fvcore is then never imported)
    env: dict
    env_id: str
    facts: object  # rows.ModelFacts
    gpu_uuid: str | None = None  # where it ran (CUDA): a row column, not in the env snapshot


def _model_cost(net):
    from dynbench.measure.model_cost import ModelCost  # imports fvcore: only where FLOPs are counted

    return ModelCost(net)


class Sweep:
    def __init__(self, out_dir: Path | None = None, flops: bool = True, source: Source | None = None,
                 warn: Callable[[str], None] | None = None, gpu=None):
        self.out_dir = out_dir
        self.flops = flops
        self.gpu = gpu  # measure.gpus.GpuSpec of --gpu / --gpu-spec; None: from NVML on CUDA, else no roofline
        self._gpu_warned = False
        self.source = source or Source()
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=3))  # the CLI prints a line
        self._loaded: tuple[tuple, LoadedModel] | None = None  # one model in memory at a time
        self._load_warned = False
        self._where: dict | None = None  # hostname, job_id, array_index: once per sweep
        self._rounds_warned = False

    def pending(self, points: list, resume: bool) -> tuple[list, int]:
        """(points still to run, how many `--resume` skips)."""
        done = recorded_keys(self.out_dir / RECORDS_FILE, RESUME_KEY) if resume and self.out_dir else set()
        todo = [p for p in points if key_of(p, RESUME_KEY) not in done]
        return todo, len(points) - len(todo)

    def run(self, points: Iterable) -> Iterator[dict]:
        for spec in points:
            yield self.run_point(spec)

    # ---- models ---------------------------------------------------------------------------------
    def model(self, spec) -> LoadedModel:
        import torch

        from dynbench.measure import env as envmod
        from dynbench.measure.memory import MemoryTracker, weights_bytes
        from dynbench.measure.roofline import module_bytes
        from dynbench.models.build import DTYPES, count_parameters
        from dynbench.rows import ModelFacts

        key = key_of(spec, MODEL_KEY)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        self._release()  # free the previous model before building the next
        memory = MemoryTracker(spec.device)
        net = self.source.build_net(spec)
        if spec.device == "cuda":
            torch.cuda.synchronize()
        snap = envmod.snapshot(spec.device, DTYPES[spec.dtype], spec.attn)
        facts = ModelFacts(net.preset, count_parameters(net), weights_bytes(net), module_bytes(net))
        loaded = LoadedModel(net, memory, _model_cost(net) if self.flops else None, snap, envmod.env_id(snap), facts,
                             envmod.gpu_uuid(spec.device))
        if self.out_dir is not None:
            snapshot = json.dumps(snap, indent=2, sort_keys=True) + "\n"
            write_atomic(self.out_dir / "env" / f"{loaded.env_id}.json", snapshot)
        self._loaded = (key, loaded)
        return loaded

    def _release(self) -> None:
        """Drop the model's references (a checkpoint's weights stay with the source), then give the memory
        back."""
        device = self._loaded[1].net.device.type if self._loaded is not None else None
        self._loaded = None
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ---- one point ------------------------------------------------------------------------------
    def run_point(self, spec) -> dict:
        """Measure one point, append its rows, return the summary row (status ok / oom / error)."""
        from dynbench.registry import get as get_method

        spec = spec.resolved()  # `auto` → this machine's device (`run_sweep` resolved it already: a no-op there)
        base = {**spec.as_dict(), "point_id": uuid.uuid4().hex[:12], "time_utc": _now(),
                "text_keep_imposed": get_method(spec.method).text_policy and spec.text_policy == "budget",
                **self.source.columns(), **self.where()}
        if spec.dataset is not None:
            return self._run_dataset(spec, base)

        def measure():
            loaded = self.model(spec)
            base.update(self._env_columns(loaded))
            return self._measure(spec, loaded)

        rows, failure = self._attempt(measure)
        if failure is not None:
            return self._failed(base, failure)
        for step_row in rows.steps:
            self._write({**base, **step_row, "status": STATUS_OK})
        row = {**base, **rows.summary, "step": None, "status": STATUS_OK}
        self._write(row)
        return row

    def _attempt(self, work: Callable[[], object]) -> tuple[object, str | None]:
        """(`work()`, None), or (None, the failure's status) when it fails for any reason but bad input
        (a `DynbenchError` ends the sweep): an OOM or a failing point must not end the sweep. The
        failed work's frames (and the model they hold) are gone when this returns."""
        try:
            return work(), None
        except DynbenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            return None, failure_status(exc)

    def _failed(self, row: dict, failure: str) -> dict:
        """A failed point's (or sample's) row, written once the model is released."""
        self._release()
        row = {**row, "step": None, "status": failure}
        self._write(row)
        return row

    @staticmethod
    def _env_columns(loaded: LoadedModel) -> dict:
        return {"env_id": loaded.env_id, "git_sha": loaded.env.get("git_sha"), "gpu_uuid": loaded.gpu_uuid,
                **{k: loaded.env.get(k) for k in ENV_COLUMNS}}

    def where(self) -> dict:
        """Where the rows run (`measure.env.where_it_ran`); the GPU's UUID comes with the model."""
        if self._where is None:
            from dynbench.measure.env import where_it_ran

            self._where = where_it_ran()
        return self._where

    def _measure(self, spec, loaded: LoadedModel):
        from dynbench.measure.point import plan_point
        from dynbench.rows import point_rows

        if spec.device == "meta":
            cost = loaded.cost if self.flops else None
            rows = point_rows(spec, loaded.facts, plan_point(spec, loaded.facts.preset), cost,
                              self._roof(spec, loaded))
            rows.summary["load_avg_1m"] = None  # nothing ran
            return rows
        return self._measure_inputs(spec, loaded, self.source.point_inputs(spec, loaded.facts.preset))[0]

    def _measure_inputs(self, spec, loaded: LoadedModel, inputs):
        """(rows, measurement) of one point on `inputs` (a real device)."""
        from dynbench.measure import env as envmod
        from dynbench.measure.point import measure_point
        from dynbench.rows import point_rows

        cost = loaded.cost if self.flops else None
        roof = self._roof(spec, loaded)
        load = envmod.load_average()
        self._warn_load(spec, load)
        if spec.device == "cuda":  # cached blocks of earlier points must not count in this one's reserved peak
            import torch

            torch.cuda.empty_cache()
        inputs = inputs.to(loaded.net.device)  # once, before warm-up
        measured = measure_point(spec, loaded.net, inputs, loaded.memory, loaded.facts.weights_bytes)
        rows = point_rows(spec, loaded.facts, measured, cost, roof)
        rows.summary["load_avg_1m"] = load
        return rows, measured

    # ---- a dataset point ------------------------------------------------------------------------
    def _run_dataset(self, spec, base: dict) -> dict:
        """Every sample of the point's dataset, then the aggregate row (written last, returned)."""
        from dynbench.samples import aggregate

        data = self.source.dataset(spec)
        if spec.free_run and spec.mode != "prefill" and any(t.answer for s in data.samples for t in s.turns) \
                and self.source.tokenizer() is not None:
            from dynbench.quality import require_meteor

            require_meteor()  # METEOR will score these answers: nltk and WordNet, before the first sample
        base = {**base, "inputs_source": "dataset", "preprocessing": None}
        sample_rows = [self._run_sample(spec, base, sample) for sample in data.samples]
        shared = {k: sample_rows[0].get(k) for k in ("env_id", "git_sha", "gpu_uuid", *ENV_COLUMNS)}
        row = {**base, **shared, **aggregate(sample_rows, len(data.skipped)), "step": None, "sample": None}
        self._write(row)
        return row

    def _run_sample(self, spec, base: dict, sample) -> dict:
        """One sample: its step rows, round rows and sample row appended; the sample row returned."""
        import dataclasses

        from dynbench.quality import conversation_ppl
        from dynbench.samples import round_rows

        mine = {**base, "sample": sample.index, "sample_id": sample.id}

        def measure():
            loaded = self.model(spec)
            mine.update(self._env_columns(loaded))
            inputs = self.source.sample_inputs(spec, sample, loaded.facts.preset)
            conversation = spec.mode == "kv-cache" and len(inputs.rounds) > 1
            # the sample's own lengths: its prompt, and the tokens it produces (Σ rounds run)
            ran = inputs.rounds if conversation else inputs.rounds[:1]
            produced = None if spec.gen_len is None else sum(r.gen_len for r in ran)
            mine.update(prompt_len=inputs.layout.prompt_len, gen_len=produced, preprocessing=inputs.preprocessing)
            one = dataclasses.replace(spec, prompt_len=inputs.layout.prompt_len, gen_len=produced)
            return (inputs, conversation, *self._measure_inputs(one, loaded, inputs),
                    loaded.facts.preset.image_tokens)

        done, failure = self._attempt(measure)  # one failing sample must not end the point
        if failure is not None:
            return self._failed(mine, failure)
        inputs, conversation, rows, measured, image_tokens = done
        if len(inputs.rounds) > 1 and not conversation and not self._rounds_warned:
            self._rounds_warned = True
            self.warn(f"{spec.mode} runs the first round of a conversation (the official multi-round "
                      "evaluation keeps a KV cache); use --mode kv-cache for every round")
        steps = [s for run in measured.runs for s in run.steps]
        for step_row, step in zip(rows.steps, steps, strict=True):
            self._write({**mine, **step_row, "round": step.round, "status": STATUS_OK})
        summary = dict(rows.summary, rounds=len(inputs.rounds) if conversation else 1)
        rounds = []
        if conversation:
            first = measured.runs[0].steps
            prompts = [inputs.layout.seq_len, *(r.prompt_ids.shape[1] for r in inputs.rounds[1:])]
            tmacs = [r.get("tmacs") for r in rows.steps[: len(first)]]
            rounds = round_rows(first, measured.step_ms, tmacs, image_tokens, prompts)
            summary["ppl"] = conversation_ppl(rounds)
        if spec.mode != "prefill":
            self._score_free_run(sample, inputs, summary, rounds)
        for round_row in rounds:
            self._write({**mine, **round_row, "step": None, "status": STATUS_OK})
        row = {**mine, **summary, "step": None, "status": STATUS_OK}
        self._write(row)
        return row

    def _score_free_run(self, sample, inputs, summary: dict, rounds: list[dict]) -> None:
        """METEOR of each free-run round's output against the dataset's answer (after the timed
        runs); the sample row: the mean over rounds (`quality.combine_meteor`)."""
        from dynbench.quality import combine_meteor, meteor_columns

        ran = rounds or [summary]
        refs = [t.answer if r.answer_ids is None else None for t, r in zip(sample.turns, inputs.rounds, strict=False)]
        if all(ref is None for ref in refs[: len(ran)]):
            return  # teacher-forced, npz samples, or no answers: nothing to score
        tokenizer = self.source.tokenizer()
        cols = [meteor_columns(row.get("generated_ids") or [], ref, tokenizer)
                for row, ref in zip(ran, refs, strict=False)]
        for row, col in zip(rounds, cols, strict=False):
            row.update(col)
        summary.update(combine_meteor(cols))

    def _roof(self, spec, loaded: LoadedModel):
        """The point's roofline (`measure.roofline.Roof`): --gpu / --gpu-spec, else on CUDA the
        card NVML names; None without either (a CUDA card not in the table is warned about once)."""
        from dynbench.measure.roofline import gpu_for_device, point_roof

        gpu = gpu_for_device(self.gpu, spec.device, loaded.env.get("gpu_name"))
        if gpu is None:
            if spec.device == "cuda" and not self._gpu_warned:
                self._gpu_warned = True
                self.warn(f"GPU {loaded.env.get('gpu_name')!r} is not in the spec table (dynbench gpus): "
                          "no roofline columns; name it with --gpu or --gpu-spec TFLOPS,GBPS")
            return None
        return point_roof(gpu, spec.dtype, spec.device)

    def _warn_load(self, spec, load: float | None) -> None:
        """Warn (once per sweep) when other work competes for the CPU the timings come from."""
        cores = os.cpu_count()
        if spec.device == "cpu" and load is not None and cores and load > cores and not self._load_warned:
            self._load_warned = True
            self.warn(f"the 1-minute load average ({load:.2f}) exceeds the {cores} CPU cores: "
                      "other work competes for the CPU and CPU timings are noisy")

    def _write(self, row: dict) -> None:
        row.update({name: None for name in (SUMMARY_NAMES if is_summary(row) else STEP_NAMES) if name not in row})
        if self.out_dir is not None:
            append_record(self.out_dir / RECORDS_FILE, row)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
