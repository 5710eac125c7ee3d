"""The README's numbers are reproducible: its meta example is run and the quoted figures checked,
and its first lines are the two commands `.ci/run` runs."""

import json
import re
import shlex
from pathlib import Path

import pytest

from dynbench.cli import main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _example(name: str) -> tuple[list[str], str]:
    """The command in the code block after `<!-- readme-example: NAME … -->`, and the paragraph after it."""
    m = re.search(rf"<!-- readme-example: {name}\b.*?-->\n```bash\n(.+?)\n```\n(.+?)\n\n", README, re.S)
    assert m, f"README has no example {name!r}"
    argv = shlex.split(m.group(1))
    assert argv[0] == "dynbench"
    return argv[1:], " ".join(m.group(2).split())


@pytest.mark.slow
def test_meta_7b_prefill_example(capsys):
    argv, text = _example("meta-7b-prefill")
    assert main(argv) == 0
    rows = {r["method"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for column in ("tflops_paper", "tmacs"):
        quoted = re.search(rf"`{column}` (\d+\.\d+) → (\d+\.\d+)", text)
        assert quoted, f"the README quotes no {column}"
        for method, value in zip(("llava", "dynamic-llava"), quoted.groups(), strict=True):
            digits = len(value.split(".")[1])
            assert round(rows[method][column], digits) == float(value), (column, method, rows[method][column])
    tokens = re.search(r"(\d+) → (\d+) tokens from layer 2 on", text).groups()
    assert [rows[m]["layer_seq_lens"][2] for m in ("llava", "dynamic-llava")] == [int(t) for t in tokens]


def test_first_lines_are_the_two_commands_ci_runs():
    block = re.match(r"```bash\n(.+?)\n(.+?)\n```\n", README)
    assert block, "the README must open with the install and test commands"
    install, test = block.groups()
    assert "torch==" in install and "+cpu" in install and 'pip install -e ".[dev]"' in install
    assert "dynbench run" in install and test == "make test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and "make test" in ci  # .ci/run runs exactly these
