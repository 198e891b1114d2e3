"""The experiment binary end to end, in a subprocess (as a user runs it)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=240):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one device, as on a laptop
    return subprocess.run(
        [sys.executable, "-m", "experiments.train",
         "--config=experiments/configs/default.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_binary_trains_on_mnist5k_and_writes_results(tmp_path):
    wd = str(tmp_path / "run")
    proc = _run(f"--workdir={wd}", "--config.epochs=1", "--config.model_kwargs.widths=(32,)",
                "--config.progress_bar=False", "--config.tensorboard=False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(wd, "results.json")) as f:
        res = json.load(f)
    assert (res["rule"], res["model"], res["dataset"], res["epochs"]) == ("bp", "mlp", "mnist5k", 1)
    # One epoch of a 784-32-10 MLP on 4,000 real digits: well above chance (0.1).
    assert 0.7 <= res["test_accuracy"] <= 1.0
    assert res["num_params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert res["config"]["model_kwargs"]["widths"] == [32]
    assert f"test accuracy: {res['test_accuracy']:.4f}" in proc.stdout
    # One line names the run and where its config is; the config itself is only in the file.
    assert (f"run: rule=bp model=mlp dataset=mnist5k epochs=1; full config in {wd}/config.json"
            in proc.stdout.splitlines())
    assert "weight_decay_mask" not in proc.stdout + proc.stderr  # no dump of every field
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["weight_decay_mask"] == "params"
    # The same command again reports the finished run (once) instead of training it again.
    again = _run(f"--workdir={wd}", "--config.epochs=1", "--config.model_kwargs.widths=(32,)",
                 "--config.progress_bar=False", "--config.tensorboard=False")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already holds this finished run") == 1
    assert "already holds this finished run" in again.stdout
    assert f"test accuracy: {res['test_accuracy']:.4f}" in again.stdout


def test_binary_rejects_unknown_name_before_training(tmp_path):
    wd = str(tmp_path / "bad")
    proc = _run(f"--workdir={wd}", "--config.model=mlpp")
    assert proc.returncode != 0
    assert "unknown model 'mlpp'; choose one of:" in proc.stderr and "mlp" in proc.stderr
    assert not os.path.exists(os.path.join(wd, "checkpoints"))


@pytest.mark.parametrize("args,message", [
    (["--config.learning_rate=nan"], "error: config.learning_rate=nan must be a finite number > 0"),
    (["--config.bogus=1"], "error: unknown config field 'config.bogus'; valid there: alignment,"),
    (["--config.learning_rat=0.1"], "error: unknown config field 'config.learning_rat' (did you "
                                    "mean 'config.learning_rate'?); valid there: alignment,"),
    (["--config.rule=kp", "--config.rule_hparams.decay_kernl=True"],
     "error: unknown config field 'config.rule_hparams.decay_kernl' (did you mean "
     "'config.rule_hparams.decay_kernel'?); valid there: decay_kernel, feedback_init,"),
    (["--config.rule=kp", "--config.rule_hparams.weight_decay=5e-4"],
     "error: rule 'kp': optimizer 'adam' rescales per weight the decay added to the gradient "
     "(rule_hparams.weight_decay=0.0005), so W − B does not shrink by (1 − ηλ) per step "
     "(Kolen–Pollack, Sec. 4.2.1). Fix: --config.optimizer=adamw --config.weight_decay=0.0005 "
     "--config.weight_decay_mask=all --config.rule_hparams.weight_decay=0.0; or "
     "--config.rule_hparams.weight_decay=0.0"),
    (["--config=experiments/configs/asap.py:sign,alexnet,mnist5k"],
     "error: flag --config=experiments/configs/asap.py:sign,alexnet,mnist5k: Error whilst "
     "parsing config file: ValueError: unknown rule 'sign'; choose one of: bp,"),
])
def test_binary_usage_errors_exit_2_with_one_line_and_no_traceback(tmp_path, args, message):
    proc = _run(f"--workdir={tmp_path / 'wd'}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(message), proc.stderr[-2000:]
    if "config field" in message:  # one clean line: no escaped quotes, no literal \n
        assert len(proc.stderr.strip().splitlines()) == 1 and "\\" not in proc.stderr
    assert not os.path.exists(tmp_path / "wd" / "checkpoints")
