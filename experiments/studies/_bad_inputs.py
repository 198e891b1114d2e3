"""Runs every bad input we know of through the binaries and tabulates what the user sees.

  python -m experiments.studies._bad_inputs [--out=table.md]

For each case: the exit status, the first line of stderr (the message), whether a Python
traceback appears, the wall and CPU time to fail, and whether anything was trained (a
checkpoint in a fresh workdir). The table in docs/notes/train.md is this script's output.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = ["-m", "experiments.train"]
DEFAULT = "--config=experiments/configs/default.py"
TINY = "--config=tests/_kill_config.py"

# (what the user got wrong, command args after `python`, needs a prepared workdir)
CASES = [
    ("unknown rule", [*TRAIN, DEFAULT, "--config.rule=bogus"], None),
    ("unknown model", [*TRAIN, DEFAULT, "--config.model=mlpp"], None),
    ("unknown dataset", [*TRAIN, DEFAULT, "--config.dataset=mnist6k"], None),
    ("unknown optimizer", [*TRAIN, DEFAULT, "--config.optimizer=rmsprop"], None),
    ("unknown schedule", [*TRAIN, DEFAULT, "--config.schedule=warm"], None),
    ("batch_size 0", [*TRAIN, DEFAULT, "--config.batch_size=0"], None),
    ("epochs -1", [*TRAIN, DEFAULT, "--config.epochs=-1"], None),
    ("TFDS dataset not prepared", [*TRAIN, DEFAULT, "--config.dataset=cifar10"], "empty_tfds"),
    ("text dataset not prepared", [*TRAIN, "--config=experiments/configs/al.py:mlp,mnist5k",
                                   "--config.dataset=imdb_reviews"], "empty_tfds"),
    ("unknown config key", [*TRAIN, DEFAULT, "--config.bogus=1"], None),
    ("unknown rule hyperparameter", [*TRAIN, "--config=experiments/configs/default.py:kp",
                                     "--config.rule_hparams.bogus=1"], None),
    ("invalid rule hyperparameter", [*TRAIN, "--config=experiments/configs/default.py:kp",
                                     "--config.rule_hparams.weight_decay=-1.0"], None),
    ("too many pipeline stages", [*TRAIN, "--config=experiments/configs/al.py:cnn,mnist5k,cpu",
                                  "--config.pipeline_stages=8"], None),
    ("pipeline stages do not divide the blocks",
     [*TRAIN, "--config=experiments/configs/al.py:cnn,mnist5k,cpu",
      "--config.pipeline_stages=3"], None),
    ("pipeline needs more devices than there are",
     [*TRAIN, "--config=experiments/configs/al.py:cnn,mnist5k,cpu",
      "--config.pipeline_stages=4"], None),
    ("zero-width layer", [*TRAIN, DEFAULT, "--config.model_kwargs.widths=(0,)"], None),
    ("negative learning rate", [*TRAIN, DEFAULT, "--config.learning_rate=-0.001"], None),
    ("learning rate nan", [*TRAIN, DEFAULT, "--config.learning_rate=nan"], None),
    ("config-file argument rejected by the file",
     [*TRAIN, "--config=experiments/configs/asap.py:sign,alexnet,mnist5k"], None),
    ("config file does not exist", [*TRAIN, "--config=experiments/configs/nope.py"], None),
    ("every checkpoint damaged", [*TRAIN, TINY, "--config.epochs=2"], "damaged"),
    ("other config in a used workdir", [*TRAIN, TINY, "--config.epochs=2",
                                        "--config.learning_rate=0.1"], "finished"),
    ("fewer epochs than the finished run", [*TRAIN, TINY, "--config.epochs=1"], "finished"),
    ("missing --workdir", [*TRAIN, DEFAULT], "no_workdir"),
    ("unexpected positional argument", [*TRAIN, DEFAULT, "extra"], None),
    ("value of the wrong type", [*TRAIN, DEFAULT, "--config.epochs=abc"], None),
    ("batch larger than the training set", [*TRAIN, DEFAULT, "--config.batch_size=100000"],
     None),
    ("data_dir does not exist", [*TRAIN, DEFAULT, "--config.data_dir=/nonexistent/data"], None),
    ("decay epochs not increasing", [*TRAIN, DEFAULT, "--config.schedule=step",
                                     "--config.decay_epochs=(5,2)"], None),
    ("negative weight decay", [*TRAIN, DEFAULT, "--config.weight_decay=-0.1"], None),
    ("momentum above 1", [*TRAIN, DEFAULT, "--config.optimizer=sgd", "--config.momentum=1.5"],
     None),
    ("unknown distributed mode", [*TRAIN, DEFAULT, "--config.distributed=yes"], None),
    ("AL MLP with unequal widths", [*TRAIN, DEFAULT, "--config.rule=al", "--config.model=mlp",
                                    "--config.model_kwargs.widths=(8,16)"], None),
    ("reproduce: unknown table", ["-m", "experiments.reproduce", "--table=bogus"], None),
    ("reproduce: paper scale without data", ["-m", "experiments.reproduce", "--table=wt5.3",
                                             "--scale=paper"], "empty_tfds"),
    ("report: workdir does not exist", ["-m", "experiments.report",
                                        "--workdir=/nonexistent/runs"], "no_workdir"),
    ("bench_rules: unknown benchmark", ["-m", "experiments.bench.bench_rules", "--models=foo"],
     "no_workdir"),
]


def _prepare_finished(path: str) -> None:
    proc = subprocess.run([sys.executable, *TRAIN, TINY, "--config.epochs=2",
                           f"--workdir={path}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])


def _damage_all(path: str) -> None:
    ck = os.path.join(path, "checkpoints")
    for step in os.listdir(ck):
        with open(os.path.join(ck, step, "default", "_METADATA"), "w") as f:
            f.write("{not json")
    os.remove(os.path.join(path, "results.json"))


def run_case(args: list[str], workdir: str | None, env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    argv = [sys.executable, *args] + ([f"--workdir={workdir}"] if workdir else [])
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "error:" in ln[:60]]
    return {"exit": proc.returncode, "message": (errors or lines or [""])[0][:400],
            "traceback": "Traceback" in proc.stderr, "wall_s": wall, "cpu_s": cpu}


def main(out: str | None = None) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="alearn_bad_")
    finished = os.path.join(tmp, "finished")
    _prepare_finished(finished)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    rows = []
    for i, (what, args, setup) in enumerate(CASES):
        case_env = dict(env)
        wd = os.path.join(tmp, f"case{i}")
        if setup == "empty_tfds":
            os.makedirs(os.path.join(tmp, "empty_tfds"), exist_ok=True)
            case_env["TFDS_DATA_DIR"] = os.path.join(tmp, "empty_tfds")
        elif setup in ("finished", "damaged"):
            shutil.copytree(finished, wd)
            if setup == "damaged":
                _damage_all(wd)
        if setup == "no_workdir":
            wd = None
        r = run_case(args, wd, case_env)
        fresh = setup not in ("finished", "damaged")
        r["trained"] = bool(wd and fresh and os.path.isdir(os.path.join(wd, "checkpoints")))
        r.update(case=what, command="python " + " ".join(args) + (" --workdir=W" if wd else ""))
        rows.append(r)
        print(json.dumps(r), flush=True)
    table = ["| # | bad input | command | exit | what the user sees (stderr, first line) | "
             "traceback | wall s | CPU s |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        msg = r["message"].replace("|", "\\|")
        table.append(f"| {i} | {r['case']} | `{r['command'].replace('|', '/')}` | {r['exit']} | "
                     f"{msg} | {'yes' if r['traceback'] else 'no'} | {r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.1f} |")
    text = "\n".join(table) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    print(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")), None))
