"""`dynbench` command line (Typer). Thin: parse → RunSpec points → library → render.

Errors a user can cause are `DynbenchError`s (and click usage errors): one line on stderr,
exit code 2. Set DYNBENCH_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dynbench import profile as profiling
from dynbench import regress
from dynbench.errors import DynbenchError
from dynbench.measure import env as envmod
from dynbench.models.build import METHODS, build_model, count_parameters
from dynbench.models.presets import DTYPES, PRESETS, get_preset
from dynbench.modes import MODES
from dynbench.report.tables import build_report, load_results, summary_table
from dynbench.results import RECORDS_FILE, recorded_keys
from dynbench.runner import SPEC_FIELDS, Runner, Source, SweepOutcome, spec_key
from dynbench.spec import MAX_POINTS, load_suite, points_from, resolve_device

# typer ≥ 0.20 vendors click: catch usage errors from whichever click raised them.
try:
    from typer._click import exceptions as _vendored_click
except ImportError:  # older typer uses click itself
    _vendored_click = click.exceptions
USAGE_ERRORS = (click.exceptions.UsageError, _vendored_click.UsageError)
EXITS = (click.exceptions.Exit, typer.Exit)
ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Efficiency benchmarking of Dynamic-LLaVA against dense LLaVA-1.5.",
)
# stdout piped to a file or CI log: do not squeeze tables into 80 columns
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ListOpt = list[str] | None


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated flags and comma-separated values → one list (`--gen-len 8,16 --gen-len 32`)."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _out_dir(out: str | None, resume: bool) -> Path | None:
    if out is None:
        if resume:
            raise DynbenchError("--resume needs --out DIR (the results folder to resume)")
        return None
    path = Path(out)
    if path.suffix == ".jsonl":  # --out results/x/records.jsonl names the file itself
        path = path.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".dynbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DynbenchError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    if (path / RECORDS_FILE).exists() and not resume:
        raise DynbenchError(
            f"--out {out} already holds {RECORDS_FILE}; add --resume to continue it or choose another folder"
        )
    return path


# ---- the options of one point, shared by `run` and `profile` ---------------------------------------
ModeOpt = Annotated[ListOpt, typer.Option(help=f"{' | '.join(MODES)} [run default: all three]")]
MethodOpt = Annotated[ListOpt, typer.Option(help=f"{' | '.join(METHODS)} [run default: llava, dynamic-llava]")]
ModelOpt = Annotated[str | None, typer.Option(help=f"preset: {' | '.join(PRESETS)} [default: tiny]")]
PromptLenOpt = Annotated[ListOpt, typer.Option(help="text tokens in the prompt, image excluded [default: 64]")]
GenLenOpt = Annotated[ListOpt, typer.Option(help="tokens generated in decode modes [default: 32]")]
VisionKeepOpt = Annotated[ListOpt, typer.Option(help="image keep ratio in (0, 1] [default: 0.2]")]
TextKeepOpt = Annotated[ListOpt, typer.Option(help="output-text keep ratio, budget policy [default: 0.5]")]
TextPolicyOpt = Annotated[str | None, typer.Option(help="learned | budget [default: budget]")]
ReuseVisionOpt = Annotated[bool | None, typer.Option("--reuse-vision", help="no-cache: encode the image once")]
BatchOpt = Annotated[int | None, typer.Option(help="batch size, one prompt replicated [default: 1]")]
SeedOpt = Annotated[int | None, typer.Option(help="seed of weights and synthetic inputs [default: 0]")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda | meta (counts only) [default: auto]")]
DtypeOpt = Annotated[str | None, typer.Option(help=f"{' | '.join(DTYPES)} [default: float32]")]
AttnOpt = Annotated[str | None, typer.Option(help="sdpa | eager | flash_attention_2 [default: sdpa]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print only JSON on stdout (tables go to stderr)")]
CheckpointOpt = Annotated[str | None, typer.Option(help="local weights: llava-hf or official Dynamic-LLaVA folder")]
VisionTowerOpt = Annotated[str | None, typer.Option(help="local CLIP folder (official checkpoints have none)")]
ImageOpt = Annotated[str | None, typer.Option(help="an image file (with --prompt and --checkpoint)")]
PromptOpt = Annotated[str | None, typer.Option(help="the user's question about --image")]
InputsOpt = Annotated[str | None, typer.Option(help="an .npz with exact input_ids and pixel_values")]
TeacherForceOpt = Annotated[str | None, typer.Option(help="an .npz with answer_ids fed in decode modes")]


def _with_source(values: dict, source: Source) -> dict:
    """Defaults that come from a checkpoint or real inputs (user flags still win)."""
    info = source.checkpoint_info(values.get("model"))
    if info is not None:
        values["model"] = info.preset_name
        if values["method"] is None:
            values["method"] = ["llava", "dynamic-llava"] if info.method == "dynamic-llava" else ["llava"]
        if values["text_policy"] is None and values["text_keep"] is None:
            values["text_policy"] = info.text_policy_default
        if values["vision_keep"] is None and info.vision_keep_default is not None:
            values["vision_keep"] = [info.vision_keep_default]
    preset = get_preset(values["model"] or "tiny")
    real = source.real_inputs(preset)
    if real is not None:
        if values.get("prompt_len") is not None:
            raise DynbenchError("--prompt-len is set by --inputs / --image --prompt; drop it")
        values["prompt_len"] = [real.layout.prompt_len]
    return values


def _point_values(mode, method, model, prompt_len, gen_len, vision_keep, text_keep, text_policy, reuse_vision,
                  batch, seed, device, dtype, attn, **extra) -> dict:  # fmt: skip
    return dict(mode=_split(mode), method=_split(method), model=model, prompt_len=_split(prompt_len),
                gen_len=_split(gen_len), vision_keep=_split(vision_keep), text_keep=_split(text_keep),
                text_policy=text_policy, reuse_vision=reuse_vision, batch=batch, seed=seed, device=device,
                dtype=dtype, attn=attn, **extra)  # fmt: skip


@app.command()
def run(
    mode: ModeOpt = None,
    method: MethodOpt = None,
    model: ModelOpt = None,
    prompt_len: PromptLenOpt = None,
    gen_len: GenLenOpt = None,
    vision_keep: VisionKeepOpt = None,
    text_keep: TextKeepOpt = None,
    text_policy: TextPolicyOpt = None,
    reuse_vision: ReuseVisionOpt = None,
    batch: BatchOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    attn: AttnOpt = None,
    warmup: Annotated[int | None, typer.Option(help="warm-up runs [default: prefill 3, decode 1]")] = None,
    repeats: Annotated[int | None, typer.Option(help="measured runs [default: prefill 10 GPU/5 CPU, decode 1]")] = None,
    regions: Annotated[bool, typer.Option("--regions", help="also time predictors, token drop and scoring inside "
                                          "every step (adds events to timed steps; recorded)")] = False,
    flops: Annotated[bool, typer.Option("--flops/--no-flops", help="count FLOPs with fvcore")] = True,
    match_budget: Annotated[str | None, typer.Option(
        help="flops | tokens: set fastv's R (random: its keep) so that its prefill paper TFLOPs or "
        "equivalent tokens equal dynamic-llava's at the same vision keep")] = None,
    fastv_k: Annotated[ListOpt, typer.Option(help="fastv: first pruned layer K [default: 2]")] = None,
    fastv_r: Annotated[ListOpt, typer.Option(help="fastv: fraction R of image tokens dropped [default: 0.5]")] = None,
    kv_budget: Annotated[ListOpt, typer.Option(help="h2o, streaming-llm: KV budget, share of P [default: 0.2]")] = None,
    checkpoint: CheckpointOpt = None,
    vision_tower: VisionTowerOpt = None,
    image: ImageOpt = None,
    prompt: PromptOpt = None,
    inputs: InputsOpt = None,
    teacher_force: TeacherForceOpt = None,
    suite: Annotated[str | None, typer.Option(help="a suite YAML file instead of the point flags")] = None,
    out: Annotated[str | None, typer.Option(help="results folder (records.jsonl is appended there)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="skip points already recorded in --out")] = False,
    yes: Annotated[bool, typer.Option("--yes", help=f"allow more than {MAX_POINTS:,} points")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure every point of the sweep: FLOPs, memory, latency and realized token counts."""
    values = _point_values(mode, method, model, prompt_len, gen_len, vision_keep, text_keep, text_policy,
                           reuse_vision, batch, seed, device, dtype, attn, warmup=warmup, repeats=repeats,
                           regions=regions or None,
                           match_budget=match_budget, fastv_k=_split(fastv_k), fastv_r=_split(fastv_r),
                           kv_budget=_split(kv_budget))  # fmt: skip
    source = Source(checkpoint, vision_tower, inputs, image, prompt, teacher_force)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if suite is not None:
            given = [k for k, v in values.items() if v is not None]
            if given:
                flags = ", ".join("--" + k.replace("_", "-") for k in given)
                raise DynbenchError(f"--suite sets the points; move {flags} into the suite file")
            source.checkpoint_info()
            points = load_suite(suite, source.labels)
        else:
            points = points_from(_with_source(values, source), source=source.labels)
    for message in dict.fromkeys(str(w.message) for w in caught):
        stderr.print(f"[yellow]Warning:[/] {message}")
    if len(points) > MAX_POINTS and not yes:
        raise DynbenchError(f"the sweep has {len(points):,} points (over {MAX_POINTS:,}); add --yes to run it")
    for attn_impl in {p.attn for p in points}:
        _check_attn(attn_impl)
    out_dir = _out_dir(out, resume)
    done = recorded_keys(out_dir / RECORDS_FILE, SPEC_FIELDS) if resume else set()
    outcome = _sweep(Runner(out_dir, flops=flops, source=source), points, done)
    if json_out:
        for row in outcome.rows:
            print(json.dumps(row, default=str), flush=True)
    (stderr if json_out else stdout).print(summary_table(outcome.rows))
    if outcome.skipped:
        stderr.print(f"{outcome.skipped} point(s) already recorded in {out_dir} were skipped (--resume)")
    if outcome.errors:
        stderr.print(f"[red]{outcome.errors} point(s) failed[/]; their rows have status 'error: …'")
        raise typer.Exit(1)


def _check_attn(attn: str) -> None:
    if attn == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise DynbenchError("--attn flash_attention_2 needs the flash-attn package; use sdpa or eager")


def _sweep(runner: Runner, points: list, done: set) -> SweepOutcome:
    """Run the points not yet recorded, with a progress bar; Ctrl-C keeps every finished row."""
    outcome = SweepOutcome()
    pending = [p for p in points if spec_key(p) not in done]
    outcome.skipped = len(points) - len(pending)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("starting", total=len(points), completed=outcome.skipped)
        try:
            for spec in pending:
                progress.update(task, description=f"{spec.method} {spec.mode} P={spec.prompt_len} g={spec.gen_len}")
                row = runner.run_point(spec)
                outcome.rows.append(row)
                outcome.errors += row["status"].startswith("error")
                progress.advance(task)
        except KeyboardInterrupt:
            progress.stop()
            hint = ""
            if runner.out_dir is not None:
                argv = [a for a in sys.argv[1:] if a != "--resume"]
                hint = f"; resume with: dynbench {shlex.join(argv)} --resume"
            stderr.print(f"Interrupted after {len(outcome.rows)} point(s); every finished row is kept{hint}")
            raise
    return outcome


@app.command()
def models() -> None:
    """List the model presets with parameter counts (built on the meta device, no weights)."""
    table = Table(title="dynbench model presets")
    for col in ("preset", "params llava", "params dynamic-llava", "image tokens", "layers",
                "hidden", "sparse layer", "description"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for name, p in PRESETS.items():
        # the baselines (random, fastv, h2o, streaming-llm) have llava's parameters
        counts = [count_parameters(build_model(name, m, device="meta")) for m in ("llava", "dynamic-llava")]
        table.add_row(
            name, *(f"{n / 1e9:.3f} B" if n > 1e8 else f"{n / 1e6:.2f} M" for n in counts),
            str(p.image_tokens), str(p.layers), str(p.hidden), str(p.sparse_layer), p.description,
        )  # fmt: skip
    stdout.print(table)


@app.command()
def profile(
    out: Annotated[str, typer.Option(help="folder for the trace (TensorBoard / Perfetto)")],
    mode: ModeOpt = None,
    method: MethodOpt = None,
    model: ModelOpt = None,
    prompt_len: PromptLenOpt = None,
    gen_len: GenLenOpt = None,
    vision_keep: VisionKeepOpt = None,
    text_keep: TextKeepOpt = None,
    text_policy: TextPolicyOpt = None,
    reuse_vision: ReuseVisionOpt = None,
    batch: BatchOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    attn: AttnOpt = None,
    checkpoint: CheckpointOpt = None,
    vision_tower: VisionTowerOpt = None,
    image: ImageOpt = None,
    prompt: PromptOpt = None,
    inputs: InputsOpt = None,
    teacher_force: TeacherForceOpt = None,
    wait: Annotated[int, typer.Option(help="profiler schedule: runs skipped")] = 1,
    warmup: Annotated[int, typer.Option(help="profiler schedule: warm-up runs (traced, discarded)")] = 1,
    active: Annotated[int, typer.Option(help="profiler schedule: recorded runs")] = 1,
    with_stack: Annotated[bool, typer.Option("--with-stack", help="record Python stacks")] = False,
    shapes: Annotated[bool, typer.Option("--shapes/--no-shapes", help="record input shapes")] = True,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="record allocations")] = True,
    gzip: Annotated[bool, typer.Option("--gzip", help="write the trace as .json.gz")] = False,
    top: Annotated[int, typer.Option(help="rows in the top-operator table")] = 15,
    json_out: JsonOpt = False,
) -> None:
    """Profile one point with torch.profiler: a trace for TensorBoard / Perfetto and per-range tables."""
    values = _point_values(mode or ["kv-cache"], method or ["dynamic-llava"], model, prompt_len, gen_len,
                           vision_keep, text_keep, text_policy, reuse_vision, batch, seed, device, dtype, attn)
    source = Source(checkpoint, vision_tower, inputs, image, prompt, teacher_force)
    points = points_from(_with_source(values, source), source=source.labels)
    if len(points) != 1:
        raise DynbenchError(f"profile takes one point, the flags give {len(points)}: give one value per flag")
    spec = points[0]
    if spec.device == "meta":
        raise DynbenchError("--device meta runs nothing, so there is nothing to profile; use cpu or cuda")
    _check_attn(spec.attn)
    net = Runner(source=source).build_net(spec)
    inputs = source.point_inputs(spec, net.preset)
    result = profiling.profile_point(
        net, inputs, spec.drop, spec.mode, spec.gen_len or 1, out, reuse_vision=bool(spec.reuse_vision),
        wait=wait, warmup=warmup, active=active, record_shapes=shapes, profile_memory=memory,
        with_stack=with_stack, use_gzip=gzip, top=top,
    )  # fmt: skip
    console = stderr if json_out else stdout
    for table in profiling.render(result):
        console.print(table)
    stderr.print(f"trace: {result.trace_path}  (open it in https://ui.perfetto.dev or TensorBoard)")
    if json_out:
        print(json.dumps(profiling.to_json(result), default=str))


@app.command()
def report(
    results: Annotated[list[str], typer.Argument(help="result folders or records.jsonl files")],
    format: Annotated[str, typer.Option(help="table | md | csv")] = "table",
    paper: Annotated[bool, typer.Option("--paper", help="the paper's Table-4 view")] = False,
) -> None:
    """Tables of llava vs dynamic-llava per point, with Δ% (terminal, Markdown or CSV)."""
    rendered = build_report(load_results(results), format, paper)
    if isinstance(rendered, str):
        sys.stdout.write(rendered)
    else:
        for table in rendered:
            stdout.print(table)


@app.command()
def plot(
    results: Annotated[list[str], typer.Argument(help="result folders or records.jsonl files")],
    out: Annotated[Path, typer.Option(help="folder for the charts (PNG + SVG)")],
) -> None:
    """Paper-style charts of each mode (PNG and SVG)."""
    from dynbench.report.plots import plot_all  # matplotlib only when plotting

    skipped: list[str] = []
    for path in plot_all(load_results(results), out, skipped=skipped):
        stdout.print(str(path))
    for reason in skipped:
        stderr.print(f"[yellow]skipped[/] {reason}")


@app.command()
def baseline(
    results: Annotated[Path, typer.Argument(help="results folder or its records.jsonl")],
    out: Annotated[Path, typer.Option(help="baseline file, e.g. results/baselines/NAME.jsonl")],
) -> None:
    """Store a run's summary rows and environment as a baseline for `dynbench check`."""
    written = regress.write_baseline(results, out)
    stderr.print(f"wrote {out}: {written.describe()}")


@app.command()
def check(
    results: Annotated[Path, typer.Argument(help="results folder or its records.jsonl")],
    baseline: Annotated[Path, typer.Option(help="file written by `dynbench baseline`")],
    latency_tol: Annotated[float, typer.Option(help="latency tolerance on the median ratio")] = 0.05,
    summary_md: Annotated[str | None, typer.Option(help="append a Markdown summary to FILE")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines on stdout, one per check")] = False,
    fail_on_improvement: Annotated[bool, typer.Option(help="exit 1 on improvements (stale baseline)")] = False,
    gate_cpu_latency: Annotated[bool, typer.Option(help="gate CPU timings too (noisy)")] = False,
    allow_missing: Annotated[bool, typer.Option(help="pass although baseline points or metrics are missing "
                                                "from the run (a partial run)")] = False,
) -> None:
    """Compare a run with a baseline: exit 0 no regression, 1 regression or missing points, 2 bad input."""
    report = regress.check_results(results, baseline, latency_tol=latency_tol,
                                   fail_on_improvement=fail_on_improvement,
                                   gate_cpu_latency=gate_cpu_latency, allow_missing=allow_missing)  # fmt: skip
    stderr.print(report.render())
    missing = report.missing_message()
    if missing:
        stderr.print(missing, style="yellow" if allow_missing else "bold red", markup=False, highlight=False)
    if summary_md:  # "$GITHUB_STEP_SUMMARY" is empty outside Actions
        report.write_markdown(summary_md)
    if json_out:
        for line in report.to_json():
            print(json.dumps(line, allow_nan=False))
    raise typer.Exit(report.exit_code)


@app.command("env")
def env_command(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help=" | ".join(DTYPES))] = "float32",
    attn: Annotated[str, typer.Option(help="sdpa | eager | flash_attention_2")] = "sdpa",
    json_out: Annotated[bool, typer.Option("--json", help="print the snapshot as JSON")] = False,
) -> None:
    """Show the environment a run would record (GPU, driver, versions, env_id)."""
    if dtype not in DTYPES:
        raise DynbenchError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    snap = envmod.snapshot(resolve_device(device), DTYPES[dtype], attn)
    snap["env_id"] = envmod.env_id(snap)
    if json_out:
        print(json.dumps(snap, indent=2, sort_keys=True))
        return
    table = Table(title="dynbench env", show_header=False)
    for key, value in snap.items():
        table.add_row(key, "—" if value is None else str(value))
    stdout.print(table)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 ok, 1 failure, 2 usage or input error (one line on stderr)."""
    debug = os.environ.get("DYNBENCH_DEBUG") == "1"
    try:
        rc = app(args=argv, prog_name="dynbench", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except DynbenchError as e:
        if debug:
            raise
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except USAGE_ERRORS as e:
        if debug:
            raise
        print(f"Error: {e.format_message()} (see dynbench {' '.join((argv or sys.argv[1:])[:1])} --help)",
              file=sys.stderr)  # fmt: skip
        return 2
    except EXITS as e:
        return e.exit_code
    except ABORTS:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
