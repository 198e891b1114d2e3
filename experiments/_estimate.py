"""Estimated wall time of ``experiments.reproduce`` runs (printed by ``--dry_run``).

The cost model, from measured runs:

- ``MEASURED_CPU``: the wall time of every ``--scale=cpu`` run, in seconds, as measured by
  ``experiments.reproduce`` (its ``manifest.json``) for the committed report
  ``docs/results/README.md`` (its "wall (s)" column; tables with one row of several runs,
  al3.4, share the table's total). Machine: the 2-core dev VM shared with other jobs (load
  average 17-23), so these are upper bounds for an idle 2-core machine. A cpu-scale run is
  estimated by its own measurement.
- A run without a measurement (the paper scale) is estimated from the measured cost of one
  epoch of the same model at its cpu width on mnist5k (4,000 28x28x1 images), scaled
  linearly by epochs, training-set size and pixels per image, and by the square of the width
  ratio (convolution and dense FLOPs grow with width²); ResNet-34 counts as 2x ResNet-18.
  This is a CPU figure (the same 2-core machine): an accelerator is one to three orders of
  magnitude faster, and no accelerator measurement is stored yet, so paper-scale figures
  only rank the tables by cost.
"""

from __future__ import annotations

import statistics

from experiments import tables

CPU_EPOCH_EXAMPLES, CPU_PIXELS = 4000, 28 * 28 * 1
# Measured wall seconds per cpu-scale run (docs/results/README.md, "wall (s)").
MEASURED_CPU = {
    'al3.1': {'mlp_bp': 68, 'mlp_al': 119, 'cnn_bp': 166, 'cnn_al': 212},
    'al3.2': {
        'mlp_bp': 59, 'mlp_al': 101, 'cnn_bp': 143, 'cnn_al': 214, 'resnet20_bp': 219,
        'resnet20_al': 373},
    'al3.3': {'mlp_bp': 603, 'mlp_al': 552},
    'al3.4': {'mlp_cifar10': 532, 'cnn_cifar10': 532},
    'al_sigmoid': {'sigmoid_mlp_bp': 51, 'sigmoid_mlp_al': 48},
    'al_pipeline': {'al_sigmoid_mlp': 96},
    'wt3.1': {'linear_foa': 26, 'linear_bp': 7, 'relu_foa': 8, 'relu_bp': 8},
    'wt5.1': {
        'alexnet_cifar10_match1': 256, 'alexnet_cifar10_match2': 138,
        'alexnet_cifar10_match3': 162},
    'wt5.2': {
        'alexnet_mnist_bp': 179, 'alexnet_mnist_kp': 138, 'alexnet_mnist_fa': 79,
        'alexnet_mnist_dfa': 104, 'alexnet_mnist_asap': 123, 'resnet18_cifar10_bp': 150,
        'resnet18_cifar10_kp': 242, 'resnet18_cifar10_fa': 111, 'resnet18_cifar10_dfa': 129,
        'resnet18_cifar10_asap': 246},
    'wt5.3': {
        'resnet18_cifar10_bp': 45, 'resnet18_cifar10_local_fixed': 54,
        'resnet18_cifar10_predsim': 77, 'resnet18_cifar10_hsic': 46, 'resnet18_cifar10_asap': 99},
    'wt5.4': {
        'resnet34_bp_wd0': 123, 'resnet34_bp_wd5e-4': 71, 'resnet34_bp_wd5e-3': 55,
        'resnet34_asap_wd0': 216, 'resnet34_asap_wd5e-4': 202, 'resnet34_asap_wd5e-3': 175},
    'wt5.5': {
        'resnet18_cifar10_bp': 118, 'resnet18_cifar10_asap': 168, 'resnet18_cifar10_asfp': 211,
        'resnet18_cifar10_asfp_lc': 338},
    'wt_k4': {
        'resnet34_cifar10_bp': 186, 'resnet34_cifar10_kp': 260, 'resnet34_cifar10_fa': 297,
        'resnet34_cifar10_dfa': 177, 'resnet34_cifar10_asapk2': 462,
        'resnet34_cifar10_asapk4': 285},
    'wt6.1': {'access': 157},
}
FAMILY = {"resnet34": ("resnet18", 2.0), "resnet18_nsc": ("resnet18", 1.0)}
TRAIN_SIZES = {"mnist": 60000, "mnist5k": 4000, "svhn_cropped": 73257, "cifar10": 50000,
               "cifar100": 50000, "tiny_imagenet": 100000, "synthetic": 512}


def _width(config) -> float:
    return float(config.model_kwargs.get("width_multiplier", 1.0))


def _per_epoch() -> dict[str, tuple[float, float]]:
    """model -> (median measured seconds per cpu epoch, the cpu width it was measured at)."""
    costs: dict[str, list] = {}
    for tid, runs in MEASURED_CPU.items():
        for run in tables.runs(tid, "cpu"):
            if run.kind == "train" and run.config is not None and run.name in runs:
                c = run.config
                costs.setdefault(c.model, []).append((runs[run.name] / int(c.epochs), _width(c)))
    return {m: (statistics.median(s for s, _ in v), v[0][1]) for m, v in costs.items()}


def estimate(table_id: str, run: tables.Run, scale: str) -> float | None:
    """Estimated wall seconds of ``run`` on the 2-core CPU; None when the model has no data."""
    if scale == "cpu" and run.name in MEASURED_CPU.get(table_id, {}):
        return float(MEASURED_CPU[table_id][run.name])
    c = run.config
    if c is None or run.kind not in ("train", "foa"):
        return None
    model, factor = FAMILY.get(c.model, (c.model, 1.0))
    base = _per_epoch().get(model)
    if base is None:
        return None
    sec, width = base
    from alearn.data import specs

    spec = specs.SPECS.get(c.dataset)
    pixels = 1
    for d in (spec.image_shape if spec else (28, 28, 1)):
        pixels *= d
    size = TRAIN_SIZES.get(c.dataset, CPU_EPOCH_EXAMPLES)
    return (factor * sec * int(c.epochs) * size / CPU_EPOCH_EXAMPLES * pixels / CPU_PIXELS
            * (_width(c) / width) ** 2)


def fmt(seconds: float | None) -> str:
    """``"~42 s"``, ``"~12 min"``, ``"~3.4 h"``, ``"~5 days"``, ``"~9 years"``; ``"unknown"``
    for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"~{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"~{seconds / 86400:.0f} days"
    return f"~{seconds / (365 * 86400):.0f} years"
