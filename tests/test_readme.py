"""Every fenced ```python block of README.md runs as written, each in a fresh interpreter.

The blocks are found generically (a new section's block is picked up without editing this
file); each runs in its own process from the repository root, so a block that calls
``jax.distributed.initialize`` or imports ``alearn`` with nothing else imported behaves as it
does for a reader pasting it into a new session.
"""

import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[str, str]]:
    """(heading above the block, code) for every fenced python block, in order."""
    out = []
    for m in BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[:m.start()], re.M)
        out.append((headings[-1] if headings else "(top)", m.group(1)))
    return out


BLOCKS = python_blocks(README.read_text())


def test_the_extractor_finds_the_readme_blocks():
    # The README has (at least) the "Using the library", pipeline and "Extending" blocks; a
    # regex that silently matched nothing would make the test below vacuous.
    headings = [h for h, _ in BLOCKS]
    assert len(BLOCKS) >= 3, headings
    assert any(h.startswith("Using the library") for h in headings), headings
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nb\n```\n```python\nc = 2\n```\n") \
        == [("(top)", "a = 1\n"), ("(top)", "c = 2\n")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("heading,code", BLOCKS,
                         ids=[f"{i}-{re.sub(r'[^a-z0-9]+', '_', h.lower())[:40]}"
                              for i, (h, _) in enumerate(BLOCKS)])
def test_readme_python_block_runs(heading, code, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COORDINATOR=f"localhost:{_free_port()}", MPLBACKEND="Agg")
    script = tmp_path / "block.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (f"README block under '{heading}' failed:\n{code}\n"
                                  f"--- stderr ---\n{proc.stderr[-4000:]}")
