"""Executes experiments/notebooks/quickstart.ipynb headlessly at its tiny size (nbclient)."""

import ast
import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("ALEARN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = {i: "".join(o.get("text", "") for o in c.get("outputs", []))
               for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "backend=cpu" in text
    # The install cell is skipped when alearn is importable: no pip output.
    assert outputs[1] == ""
    for label in ("AL test accuracy:", "ASAP test accuracy:", "final angles:"):
        line = next(l for l in text.splitlines() if l.startswith(label))
        assert "nan" not in line.lower(), line
    # KP aligns B with W: every layer's angle falls from its first-step value (~90 degrees,
    # independent random B and W) by several degrees within the tiny run.
    def angles(label):
        line = next(l for l in text.splitlines() if l.startswith(label))
        return ast.literal_eval(line.split(":", 1)[1].strip())

    first, final = angles("first-step angles:"), angles("final angles:")
    assert first and set(first) == set(final)
    assert all(final[k] < first[k] - 5 for k in first), (first, final)
    # The alignment plot of the ASAP run and the KP figure were displayed.
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2
