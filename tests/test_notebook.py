"""Executes experiments/notebooks/quickstart.ipynb headlessly at its tiny size (nbclient), and
its install cell against a wheel of this repository built in the test."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

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
    # The install cell installs nothing when alearn is importable.
    assert outputs[1].strip() == "alearn is importable: nothing to install"
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


def _install_cell() -> str:
    nb = json.loads(NOTEBOOK.read_text())
    return next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "code" and "#@title Install alearn" in "".join(c["source"]))


# Run before the cell: hide the repository's own editable install of alearn (CI and the dev
# venv have one), as on a fresh Colab runtime where alearn is not installed.
_HIDE_EDITABLE = """import sys
_ed = lambda f: getattr(f, "__module__", "").startswith("__editable__")
sys.meta_path[:] = [f for f in sys.meta_path if not _ed(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not _ed(h)]
sys.path_importer_cache.clear()
"""


def test_install_cell_installs_a_wheel_past_a_clone_folder(tmp_path):
    """The install cell with its form field set to a wheel: a bare folder named ``alearn`` in
    the working directory (a clone, seen as a namespace package) does not fool the check, pip
    installs the wheel, and ``alearn.train`` imports from the installed copy."""
    pytest.importorskip("setuptools")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("alearn-*.whl")
    work, site = tmp_path / "content", tmp_path / "site"
    (work / "alearn").mkdir(parents=True)  # the namespace-package trap of a clone folder
    site.mkdir()
    cell, n = re.subn(r'^ALEARN_SOURCE = "".*$', f"ALEARN_SOURCE = {str(wheel)!r}", _install_cell(),
                      flags=re.M)
    assert n == 1, "the install cell has no ALEARN_SOURCE form field"
    script = work / "cell.py"
    script.write_text(_HIDE_EDITABLE + cell
                      + "\nimport alearn.train\nprint('FROM', alearn.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), PIP_TARGET=str(site), PIP_NO_DEPS="1", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"installed alearn from {wheel}" in proc.stdout
    assert f"FROM {site / 'alearn' / '__init__.py'}" in proc.stdout
    # Run again: now importable, nothing is installed.
    again = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
    assert "alearn is importable: nothing to install" in again.stdout, again.stderr[-3000:]


def test_install_cell_warns_before_replacing_jax():
    ns: dict = {}
    cell = _install_cell()
    exec(cell[:cell.index("print(install_alearn(")], ns)  # the definitions, not the install
    report = {"install": [{"metadata": {"name": "alearn", "version": "0.1.0"}},
                          {"metadata": {"name": "jax", "version": "0.7.0"}}]}
    msg = ns["jax_change"](report, "0.5.3")
    assert msg.startswith("WARNING: installing alearn replaces the preinstalled jax 0.5.3 with "
                          "jax 0.7.0")
    assert ns["jax_change"](report, "0.7.0") is None  # same version: nothing replaced
    assert ns["jax_change"](report, None) is None  # no jax before: nothing to warn about
    assert ns["jax_change"]({"install": report["install"][:1]}, "0.5.3") is None
