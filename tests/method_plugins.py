"""Plug-in methods for the method-API tests: installed for real (`pip install --target`) or made
visible as entry points of a hand-written distribution, plus local `module:Name` methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dynbench.method_api import Method, Option

ROOT = Path(__file__).resolve().parents[1]
PDROP = ROOT / "examples" / "dynbench-pdrop"


class PrefillOnly(Method):
    """A local method (`--method method_plugins:PrefillOnly`): keeps half the image at layer 1."""

    name = "prefill-only"
    modes = ("prefill",)
    options = (Option("keep", "int", 288, "image tokens kept from layer 1 on"),)

    def image_stages(self, preset, options):
        return [(1, options["keep"])]


def install_pdrop(site: Path) -> Path:
    """`pip install` of examples/dynbench-pdrop into `site`: offline with the setuptools at hand
    (a venv without setuptools builds it in isolation, which fetches setuptools)."""
    import importlib.util

    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline, "--target", str(site),
                    str(PDROP)], check=True, capture_output=True)
    return site


def broken_site(site: Path) -> Path:
    """A distribution with three bad entry points: a module that fails to import, an object that is
    not a Method, and a plug-in reusing a shipped name."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "exploding_plugin.py").write_text("raise RuntimeError('this plug-in is broken on purpose')\n")
    info = site / "broken_plugins-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dynbench.methods]\nexploding = exploding_plugin:Method\nnotamethod = json:dumps\n"
        "fastv = json:loads\n")
    return site


def env_with(*paths: Path) -> dict:
    """The environment of a `dynbench` subprocess that sees `paths` (and this worktree) first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), str(ROOT), str(ROOT / "tests"),
                                         env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    return env


def dynbench(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynbench", *args], capture_output=True, text=True, env=env)
