"""Every command-line tool answers --help: exit 0, a usage line, a description, its options (in-process)."""

from __future__ import annotations

import runpy
import sys

import pytest
from conftest import ROOT

SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for folder in ("analysis", "bench", "search", "netaug", "studies")
                 for p in (ROOT / folder).rglob("*.py") if "ArgumentParser(" in p.read_text())


def test_the_list_holds_the_main_tools():
    assert {"search/run.py", "analysis/report.py", "search/evidence/__main__.py", "netaug/train/__main__.py",
            "studies/equal-compute/quote.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, monkeypatch, capsys):
    path = ROOT / script
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as stop:
        if path.name == "__main__.py":
            runpy.run_module(".".join(path.parent.relative_to(ROOT).parts), run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert stop.value.code in (0, None), out
    usage, _, rest = out.partition("\n\n")
    description, _, options = rest.partition("options:")
    assert usage.startswith("usage: ") and description.strip() and "--help" in options, out
