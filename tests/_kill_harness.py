"""SIGKILL a training run at many instants; every chain of restarts must end exactly as an
uninterrupted run (tests/test_kill_resume.py runs this; also usable by hand).

  python tests/_kill_harness.py OUT.json [--kills=24] [--seed=0]

The training process is ``experiments.train``'s ``main`` (flags, validation, the loop,
orbax) in a child forked from this pre-imported process (imports cost seconds here, a fork
milliseconds; no JAX backend exists before the fork). A chain runs the same command on one
workdir again and again, killing each run, until a run finishes; its results, metrics and
final checkpoint are then compared with the uninterrupted reference. Kill points:
- random: the parent waits until the run has written a random number of epochs, then a
  random fraction of an epoch more, and sends SIGKILL (lands in training, evaluation,
  metrics writes and asynchronous checkpoint writes);
- hooks (deterministic, set in the child): ``finalize:<k>`` kills inside orbax's save of
  checkpoint k after its files are written but before the rename (the case that used to
  make every restart fail); ``write:<k>`` kills right after the synchronous part of save k
  (background write in flight); ``metrics:<k>`` kills halfway through writing metrics line
  k; ``results`` kills while results.json is written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.pop("XLA_FLAGS", None)

import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from orbax.checkpoint._src.path import atomicity  # noqa: E402

from alearn.train import report  # noqa: E402
from experiments import _cli  # noqa: E402
from experiments import train as train_bin  # noqa: E402

CONFIG = os.path.join(ROOT, "tests", "_kill_config.py")
EPOCHS = 12


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _install_hook(hook: str) -> None:
    """Child side: make this process SIGKILL itself at a chosen point."""
    kind, _, arg = hook.partition(":")
    k = int(arg) if arg else None
    if kind == "finalize":
        orig = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *a, **kw):
            if os.path.basename(str(self.get_final())) == str(k):
                _die()
            return await orig(self, *a, **kw)
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "write":
        orig_save = ocp.CheckpointManager.save

        def save(self, step, *a, **kw):
            out = orig_save(self, step, *a, **kw)
            if step == k:
                _die()
            return out
        ocp.CheckpointManager.save = save
    elif kind == "metrics":
        orig_write = report.MetricsWriter.write

        def write(self, record):
            if record["epoch"] == k:
                line = json.dumps(report._jsonable(record)) + "\n"
                with open(self.path, "a") as f:
                    f.write(line[: len(line) // 2])
                _die()
            return orig_write(self, record)
        report.MetricsWriter.write = write
    elif kind == "results":
        def atomic(path, obj, **kw):
            with open(f"{path}.tmp-{os.getpid()}", "w") as f:
                f.write(json.dumps(report._jsonable(obj))[:20])
            _die()
        report.atomic_write_json = atomic


def _report_progress(fd: int) -> None:
    """Child side: send each epoch number to the parent once its metrics line is written."""
    orig_write = report.MetricsWriter.write

    def write(self, record):
        orig_write(self, record)
        os.write(fd, b"%d\n" % record["epoch"])
    report.MetricsWriter.write = write


def _fork_run(workdir: str, hook: str | None = None) -> tuple[int, int]:
    """Forks a training child on ``workdir``; returns (pid, read end of its progress pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the binary's main, as `python -m experiments.train` runs it
        try:
            os.close(r)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            _report_progress(w)
            if hook:
                _install_hook(hook)
            sys.argv = ["experiments.train", f"--config={CONFIG}", f"--workdir={workdir}"]
            _cli.run(train_bin.main)
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
        except BaseException:  # noqa: BLE001
            os._exit(99)
        os._exit(0)
    os.close(w)
    return pid, r


def _progress(fd: int, last: int) -> int:
    """The newest epoch the child reported (non-blocking)."""
    import select
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 4096)
        if not data:
            break
        last = int(data.split()[-1])
    return last


def _resume_epoch(workdir: str) -> int:
    return max([int(c) for c in _ckpts(workdir) if c.isdigit()] or [0])


def _run_to_end(workdir: str, hook: str | None = None) -> int:
    pid, fd = _fork_run(workdir, hook)
    code = _wait(pid)
    os.close(fd)
    return code


def _lines(workdir: str) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


def _ckpts(workdir: str) -> list[str]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _outcome(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        res = json.load(f)
    keep = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "best_test_accuracy",
            "steps", "epochs")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # (MetricsWriter would start JAX)
        hist = [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}
                for line in f]
    return {"results": {k: res[k] for k in keep}, "history": hist}


def _same_final_state(dir_a: str, dir_b: str) -> bool:
    """Whether the two runs' final checkpoints hold identical arrays (checked in a forked
    child, so this process never starts a JAX backend and later forks stay safe)."""
    pid = os.fork()
    if pid == 0:
        try:
            import jax
            a, b = (jax.tree.leaves(ocp.StandardCheckpointer().restore(
                os.path.join(d, "checkpoints", str(EPOCHS), "default"))) for d in (dir_a, dir_b))
            same = len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                            for x, y in zip(a, b))
            os._exit(0 if same else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    return _wait(pid) == 0


def main(out_path: str, kills: int = 24, seed: int = 0) -> dict:
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="alearn_kill_")
    t0 = time.time()
    ref_dir = os.path.join(root, "reference")
    start = time.time()
    pid, fd = _fork_run(ref_dir)
    marks, epoch = [], 0
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        new = _progress(fd, epoch)
        if new > epoch:
            marks.append(time.time() - start)
            epoch = new
        time.sleep(0.002)
    os.close(fd)
    assert _lines(ref_dir) == EPOCHS, "reference run failed"
    epoch_s = max((marks[-1] - marks[0]) / max(len(marks) - 1, 1), 0.005)
    reference = _outcome(ref_dir)

    kinds = ["finalize", "write", "metrics", "results", "finalize", "write", "metrics"]
    plan = kinds + ["random"] * max(kills - len(kinds), 0)
    rng.shuffle(plan)
    log, chains, chain_dir, chain_no = [], [], None, 0
    while plan and len(log) < 3 * kills:
        point = plan.pop(0)
        if chain_dir is None:
            chain_no += 1
            chain_dir = os.path.join(root, f"chain{chain_no}")
        resume = _resume_epoch(chain_dir)
        before = {"epochs_logged": _lines(chain_dir), "checkpoints": _ckpts(chain_dir)}
        if point == "random":  # one of the next 3 epochs this run trains, then a random part
            # of one: small steps keep every chain's kills spread over the epochs (a uniform
            # draw up to the last epoch halves the distance each time and piles kills up late)
            lo = min(resume, EPOCHS - 1)
            target, frac = rng.randint(lo, min(lo + 2, EPOCHS - 1)), rng.random()
            pid, fd = _fork_run(chain_dir)
            seen, code = 0, None
            while seen < target:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:  # the run ended before the chosen instant
                    code = os.waitstatus_to_exitcode(status)
                    break
                seen = _progress(fd, seen)
                time.sleep(0.001)
            if code is None:
                time.sleep(frac * epoch_s)
            killed_at = {"epochs_logged": _lines(chain_dir), "checkpoints": _ckpts(chain_dir)}
            if code is None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = _wait(pid)
            os.close(fd)
            entry = {"point": f"random: epoch {target} done + {frac:.2f} epoch",
                     "at_kill": killed_at}
        else:
            if point == "results" or resume >= EPOCHS:  # only results.json is left to write
                hook = "results"
            else:
                hook = f"{point}:{rng.randint(resume + 1, EPOCHS)}"
            code = _run_to_end(chain_dir, hook)
            entry = {"point": hook}
        entry.update(chain=chain_no, resumed_from=resume, before=before, exit=code,
                     after={"epochs_logged": _lines(chain_dir), "checkpoints": _ckpts(chain_dir)})
        log.append(entry)
        if code != -signal.SIGKILL:  # the run ended before the instant: draw another one
            plan.append("random")
        if code == 0 or hook_used(entry) == "results":  # finished (or only results were left)
            chains.append(_finish(chain_dir, chain_no, reference, ref_dir))
            chain_dir = None
    if chain_dir is not None:
        chains.append(_finish(chain_dir, chain_no, reference, ref_dir))
    summary = {"kills": sum(1 for e in log if e["exit"] == -signal.SIGKILL),
               "points": len(log), "chains": chains, "log": log, "epoch_s": epoch_s,
               "wall_s": time.time() - t0, "all_identical": all(c["identical"] for c in chains)}
    with open(out_path, "w") as f:
        json.dump(summary, f, indent=1)
    shutil.rmtree(root, ignore_errors=True)
    return summary


def hook_used(entry: dict) -> str:
    return entry["point"].split(":")[0]


def _finish(chain_dir: str, chain_no: int, reference: dict, ref_dir: str) -> dict:
    """Runs the chain's command once more without a kill and compares with the reference."""
    code = _run_to_end(chain_dir)
    got = _outcome(chain_dir) if code == 0 else None
    same_arrays = code == 0 and _same_final_state(ref_dir, chain_dir)
    return {"chain": chain_no, "final_exit": code, "identical": bool(
        got == reference and same_arrays), "results": got and got["results"]}


if __name__ == "__main__":
    args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
    s = main(sys.argv[1], int(args.get("kills", 24)), int(args.get("seed", 0)))
    print(json.dumps({k: s[k] for k in ("kills", "points", "wall_s", "all_identical")}))
    print(json.dumps(s["chains"], indent=1))
