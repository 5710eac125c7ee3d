"""`dynbench --help` must stay instant: no heavy library is imported to parse or to show help."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "fvcore", "matplotlib", "pandas", "numpy")


def test_help_of_every_command_imports_nothing_heavy():
    code = (
        "import sys, contextlib, io, typer\n"
        "import dynbench.cli.commands\n"  # registers the commands, as main() does
        "from dynbench.cli import app, main\n"
        "for argv in ([], ['--version'], *[[c, '--help'] for c in typer.main.get_command(app).commands]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv or ['--help']) == 0, argv\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported for --help: {out.stdout.strip()}"
    assert out.stderr == ""  # no warning on any invocation


def test_every_command_help_shows_an_example_and_its_defaults(capsys, monkeypatch):
    """A newcomer reads `COMMAND --help`: each shows at least one example and every option's default."""
    import typer

    import dynbench.cli.commands  # noqa: F401 — registers the commands, as main() does
    from dynbench.cli import app, main

    monkeypatch.setenv("COLUMNS", "400")  # one line per option: a default is never wrapped apart
    commands = typer.main.get_command(app).commands
    assert {"run", "report", "plot", "check", "doctor", "show", "merge", "models", "gpus", "env"} <= set(commands)
    for name, command in commands.items():
        assert main([name, "--help"]) == 0, name
        out = capsys.readouterr().out
        assert "Examples" in out and f"dynbench {name}" in out.split("Examples", 1)[1], name
        for param in command.params:
            shown = not (getattr(param, "is_flag", False) or param.required or param.default in (None, ()))
            if shown and param.param_type_name == "option":
                line = next(ln for ln in out.splitlines() if param.opts[0] in ln.split())
                assert "[default: " in line, (name, param.opts[0], line)
