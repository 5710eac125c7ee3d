"""`dynbench --help` must stay instant: no heavy library is imported to parse or to show help."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "fvcore", "matplotlib", "pandas", "numpy")


def test_help_of_every_command_imports_nothing_heavy():
    code = (
        "import sys, contextlib, io\n"
        "from dynbench.cli import main\n"
        "for argv in ([], ['--version'], *[[c, '--help'] for c in ('run', 'report', 'plot', 'baseline', 'check', "
        "'profile', 'models', 'env')]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv or ['--help']) == 0, argv\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported for --help: {out.stdout.strip()}"
    assert out.stderr == ""  # no warning on any invocation
