"""Table registry: every table/figure of the two theses as a list of runs at each scale.

``runs(table_id, scale)`` -> list of :class:`Run`; ``TABLES[table_id]`` -> :class:`Table`.
Every training run is built from the existing config files (``experiments/configs/al.py``,
``asap.py``, ``asap_foa.py``) with overrides; nothing here restates their hyperparameters.

Scales:
- ``paper``: the papers' models, datasets, epochs and hyperparameters (accelerator + TFDS data).
- ``cpu``: converged, seeded runs on a 2-core CPU (under two hours for the whole set but the
  ResNet tables, which take days at low priority: ``_tables_cpu``'s "ResNet"):
  Fashion-MNIST for every dataset, widths, epochs and the learning-rate rule of
  ``experiments/paper/_tables_cpu.py`` (a held-out lr sweep, table ``lr_sweep``, which runs first),
  three seeds per cell. Tables whose claims are not among the ones the cpu scale tests
  (al3.2, al3.3: CIFAR rows; wt5.1: matching methods; wt5.3: local learning) are paper
  scale only; ResNet-34 rows use ResNet-18.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import ml_collections

from experiments.paper import _tables_cpu as cpu_scale
from experiments.paper import _tables_seq
from experiments.paper._run import SCALES, Run  # noqa: F401 - re-exported
from experiments.configs import al as al_cfg
from experiments.configs import asap as asap_cfg
from experiments.configs import asap_foa as foa_cfg

DATA_NAMES = {"mnist": "MNIST", "mnist5k": "mnist5k", "fashion_mnist": "Fashion-MNIST", "svhn_cropped": "SVHN",
              "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny_imagenet": "Tiny ImageNet"}
MODEL_NAMES = {"alexnet": "AlexNet", "resnet18_nsc": "ResNet-18 nsc", "resnet18": "ResNet-18",
               "resnet34": "ResNet-34", "mlp": "MLP", "cnn": "CNN", "resnet20": "ResNet-20",
               "resnet32": "ResNet-32", "vgg": "VGG", "sigmoid_mlp": "sigmoid MLP"}
RULE_NAMES = {"bp": "BP", "kp": "KP", "fa": "FA", "dfa": "DFA", "asap": "ASAP", "as": "AS",
              "asfp": "ASFP", "asfp_lc": "ASFP+LC", "local_fixed": "Mostafa LC",
              "predsim": "PredSim", "hsic": "HSIC", "al": "AL", "foa": "FoA"}


@dataclasses.dataclass(frozen=True)
class Table:
    """A table or figure of a thesis."""

    id: str
    title: str
    build: Callable[[str], list]
    metric: str = "accuracy"  # accuracy | metafeatures | memory | pipeline | sweep
    note: str = ""  # deviations and what a scale leaves out, shown by the report
    seeds: tuple[int, ...] | None = None  # None: SEEDS[scale]


def _quiet(c: ml_collections.ConfigDict, cpu: bool) -> ml_collections.ConfigDict:
    c.progress_bar = False
    if cpu:
        c.tensorboard = False
    return c


# --------------------------------------------------------------------- Associated Learning
def _al_cpu(model: str, *, sweep: tuple[str, float] | None = None) -> ml_collections.ConfigDict:
    """The cpu-scale AL config of ``model`` (its BP twin's lr in ``c.bp``): the MNIST config
    (the code's MNIST preprocessing) on Fashion-MNIST, learning rates from the lr sweep.
    ``sweep=(method, factor)``: the sweep's own run instead (held-out split, half the epochs).
    """
    family = cpu_scale.family_of(f"al_{model}")
    c = al_cfg.get_config(f"{model},mnist,cpu")
    # The sweep multiplies the paper's rates and keeps the code's schedule (_tables_cpu), not
    # the ``cpu`` flag's first-try rates (the sweep's own earlier choice) and constant lr.
    paper = al_cfg.get_config(f"{model},mnist")
    c.learning_rate, c.bp.learning_rate = paper.learning_rate, paper.bp.learning_rate
    c.schedule = paper.schedule
    if sweep is None:
        cpu_scale.apply(c, family)
        c.learning_rate *= cpu_scale.chosen_factor(family, "al")
        c.bp.learning_rate *= cpu_scale.chosen_factor(family, "bp")
    else:
        cpu_scale.apply(c, family, epochs=cpu_scale.sweep_epochs(family), validation=True)
        method, factor = sweep
        c.learning_rate *= factor if method == "al" else 1.0
        c.bp.learning_rate *= factor if method == "bp" else 1.0
    return c


def _al(model: str, dataset: str, method: str, scale: str) -> ml_collections.ConfigDict:
    cpu = scale == "cpu"
    c = _al_cpu(model) if cpu else al_cfg.get_config(f"{model},{dataset}")
    c = al_cfg.as_bp(c) if method == "bp" else c
    c.rule = method
    return _quiet(c, cpu)


def _al_table(dataset: str, models_paper: tuple, models_cpu: tuple):
    def build(scale: str) -> list[Run]:
        models = models_cpu if scale == "cpu" else models_paper
        data = cpu_scale.DATASET if scale == "cpu" else dataset
        return [Run(f"{m}_{meth}", f"{DATA_NAMES[data]} / {MODEL_NAMES[m]}", meth.upper(),
                    config=_al(m, dataset, meth, scale))
                for m in models for meth in ("bp", "al")]
    return build


def _al_meta(scale: str) -> list[Run]:
    """Sec. 3.3's distances. cpu: on al3.1's Fashion-MNIST MLP and CNN runs (shared, not
    trained again: the configs are the same)."""
    if scale == "cpu":
        return [Run(f"{m}_fashion_mnist", f"Fashion-MNIST / {MODEL_NAMES[m]}", "AL vs BP",
                    kind="al_compare", config=_al(m, "", "al", scale),
                    options={"num_examples": 1000, "tsne_layers": ["2", "4", "last"]})
                for m in ("mlp", "cnn")]
    pairs = [(d, m) for d in ("cifar10", "cifar100") for m in ("mlp", "cnn")]
    n = 2000
    return [Run(f"{m}_{d}", f"{DATA_NAMES[d]} / {MODEL_NAMES[m]}", "AL vs BP", kind="al_compare",
                config=_al(m, d, "al", scale),
                options={"num_examples": n, "tsne_layers": ["2", "4", "last"]})
            for d, m in pairs]


def _al_sigmoid(scale: str) -> list[Run]:
    data = "Fashion-MNIST" if scale == "cpu" else "MNIST"
    return [Run(f"sigmoid_mlp_{meth}", f"{data} / sigmoid MLP (depth 8)", meth.upper(),
                config=_al("sigmoid_mlp", "mnist", meth, scale)) for meth in ("bp", "al")]


def _al_pipeline(scale: str) -> list[Run]:
    cpu = scale == "cpu"
    return [Run("al_sigmoid_mlp", "AL sigmoid MLP (depth 8), one stage per block", "pipeline",
                kind="pipeline",
                options={"model": "al_sigmoid_mlp", "width_multiplier": 0.25 if cpu else 1.0,
                         "micro_batch": 32, "micro_batches": 16 if cpu else 256,
                         "reps": 3 if cpu else 20})]


# ----------------------------------------------------------------- weight transport (ASAP)
def _wt(rule: str, model: str, dataset: str, scale: str, extra: str = "", *,
        sweep_factor: float | None = None) -> Any:
    """A weight-transport config; cpu: the family's setup, lr x the BP sweep's factor (or
    ``sweep_factor`` for the sweep's own held-out run)."""
    if scale == "cpu":
        dataset = "cifar10" if model.startswith("resnet") else "mnist"  # a config to shrink
    c = asap_cfg.get_config(f"{rule},{model},{dataset}" + (f",{extra}" if extra else ""))
    if scale == "cpu":
        if model == "resnet34":
            c.model = "resnet18"
        family = cpu_scale.family_of(model)
        if sweep_factor is None:
            cpu_scale.apply(c, family)
            c.learning_rate *= cpu_scale.rule_factor(family, rule)
        else:
            cpu_scale.apply(c, family, epochs=cpu_scale.sweep_epochs(family), validation=True)
            c.learning_rate *= sweep_factor
    return _quiet(c, scale == "cpu")


def _row(model: str, dataset: str) -> str:
    return f"{DATA_NAMES[dataset]} / {MODEL_NAMES[model]}"


def _cpu_row(model: str) -> str:
    return f"Fashion-MNIST / {MODEL_NAMES['resnet18' if model == 'resnet34' else model]}"


def _wt_grid(pairs_paper, pairs_cpu, rules, extra: Callable[[str], str] = lambda r: "",
             rules_cpu: dict | None = None):
    """Rows x rules; cpu: ``pairs_cpu`` rows (their datasets ignored: Fashion-MNIST) with
    ``rules_cpu[model]`` rules where given."""
    def build(scale: str) -> list[Run]:
        cpu = scale == "cpu"
        pairs = pairs_cpu if cpu else pairs_paper
        return [Run(f"{m}_{d}_{r}", _cpu_row(m) if cpu else _row(m, d), RULE_NAMES[r],
                    config=_wt(r, m, d, scale, extra(r)))
                for d, m in pairs for r in ((rules_cpu or {}).get(m, rules) if cpu else rules)]
    return build


def _paper_only(build: Callable[[str], list]) -> Callable[[str], list]:
    """A table the cpu scale leaves out (its claim is not among the ones it tests)."""
    return lambda scale: [] if scale == "cpu" else build(scale)


def _t52_pairs() -> list[tuple[str, str]]:
    from experiments.configs import wt
    return [(d, m) for d, ms in wt.PAIRS.items() if d != "mnist5k" for m in ms]


def _foa_cpu(rule: str, net: str, sweep_factor: float | None = None):
    c = foa_cfg.get_config(f"{rule},{net},mnist")
    if sweep_factor is None:
        cpu_scale.apply(c, "foa")
        c.learning_rate *= cpu_scale.chosen_factor("foa", "bp")
    else:
        cpu_scale.apply(c, "foa", epochs=cpu_scale.sweep_epochs("foa"), validation=True)
        c.learning_rate *= sweep_factor
    return c


def _foa(scale: str) -> list[Run]:
    out = []
    data = "Fashion-MNIST" if scale == "cpu" else "MNIST"
    for net, label in (("linear", "linear"), ("relu", "nonlinear")):
        for rule in ("foa", "bp"):
            c = _foa_cpu(rule, net) if scale == "cpu" else foa_cfg.get_config(f"{rule},{net},mnist")
            if rule == "foa":
                c.checkpoint_keep = int(c.epochs)  # every epoch's W for Fig. 3.2's angles
            out.append(Run(f"{net}_{rule}", f"{data} / {label} 10-10-10", RULE_NAMES[rule],
                           kind="foa" if rule == "foa" else "train",
                           config=_quiet(c, scale == "cpu")))
    return out


def _match(scale: str) -> list[Run]:
    return [Run(f"alexnet_cifar10_match{m}", "CIFAR-10 / AlexNet", f"method {m}",
                config=_wt("asap", "alexnet", "cifar10", scale, f"match={m}")) for m in (1, 2, 3)]


def _wd(scale: str) -> list[Run]:
    out = []
    wds = ("0", "5e-4", "5e-3") if scale == "cpu" else ("0", "5e-6", "5e-5", "5e-4", "5e-3")
    # cpu: ASAP only (the claim is about ASAP's response to λ); λ = 5e-4 is the default, so
    # that run is Table 5.2's (shared)
    for rule in (("asap",) if scale == "cpu" else ("bp", "asap")):
        for wd in wds:
            out.append(Run(f"resnet34_{rule}_wd{wd}", RULE_NAMES[rule], f"λ={wd}",
                           config=_wt(rule, "resnet34", "cifar10", scale, f"wd={wd}")))
    return out


def _k4(scale: str) -> list[Run]:
    data = ("cifar10",) if scale == "cpu" else ("cifar10", "cifar100")
    out = []
    for d in data:
        for rule, extra, col in (("bp", "", "BP"), ("kp", "", "KP"), ("fa", "", "FA"),
                                 ("dfa", "", "DFA"), ("asap", "", "ASAP"),
                                 ("asap", "k=4", "ASAP k=4")):
            row = _cpu_row("resnet34") if scale == "cpu" else _row("resnet34", d)
            out.append(Run(f"resnet34_{d}_{rule}{extra.replace('=', '') or ('k2' if rule == 'asap' else '')}",
                           row, col, config=_wt(rule, "resnet34", d, scale, extra)))
    return out


def _lr_sweep(scale: str) -> list[Run]:
    """The cpu scale's learning-rate rule (``_tables_cpu``): held-out accuracy per factor."""
    if scale != "cpu":
        return []
    out = []
    for family, method in cpu_scale.SWEPT:
        for x in cpu_scale.factors(family, method):
            if family.startswith("al_"):
                model = "sigmoid_mlp" if family == "al_sigmoid" else family[3:]
                c = _al_cpu(model, sweep=(method, x))
                c = al_cfg.as_bp(c) if method == "bp" else c
                c.rule = method
            elif family == "foa":
                c = _foa_cpu("bp", "relu", sweep_factor=x)
            else:
                c = _wt(method, cpu_scale.SWEEP_MODEL.get(family, family), "", "cpu",
                        sweep_factor=x)
            out.append(Run(cpu_scale.sweep_name(family, method, x), family, method.upper(),
                           config=_quiet(c, True), options={"factor": x}))
    return out


def _memory(scale: str) -> list[Run]:
    cpu = scale == "cpu"
    return [Run("access", "model", "rule", kind="memory",
                options={"models": ["alexnet", "resnet18", "resnet34"], "batch": 128,
                         "input_shape": [32, 32, 3],
                         "compiled_models": ["resnet18"] if cpu else
                         ["alexnet", "resnet18", "resnet34"],
                         "compiled_batch": 32 if cpu else 128})]


_R18 = [("cifar10", "resnet18")]
_R18_34 = [("cifar10", "resnet18"), ("cifar10", "resnet34")]

TABLES: dict[str, Table] = {t.id: t for t in (
    Table("lr_sweep", "cpu scale: the learning-rate rule (held-out sweep, one seed)", _lr_sweep,
          metric="sweep", seeds=(0,),
          note="cpu scale only. Each family's lr = the paper's x the factor with the best "
               "accuracy on 10 % of the training split held out (never the test set); half "
               "the epochs, seed 0. experiments/paper/_tables_cpu.py states the rule."),
    Table("al3.1", "AL thesis Table 3.1: MNIST, BP vs AL",
          _al_table("mnist", ("mlp", "cnn"), ("mlp", "cnn")),
          note="BP = the parameter-matched BP twin of each AL model (configs/al.py); the "
               "authors' MNIST baselines are the same nets. Paper scale: full 60k MNIST; "
               "cpu scale: the MNIST configs on Fashion-MNIST (MLP: all 60k training "
               "images; CNN: a 12k subset), swept learning rates, 3 seeds."),
    Table("al3.2", "AL thesis Table 3.2: CIFAR-10, BP vs AL",
          _paper_only(_al_table("cifar10", ("mlp", "cnn", "resnet20", "resnet32", "vgg"), ())),
          note="BP rows: the parameter-matched twins (the authors' BP VGG / ResNet were not "
               "parameter-matched; configs/al.py flag 'authors'). Paper scale only: the cpu "
               "scale tests the AL ≈ BP claim on Fashion-MNIST in al3.1."),
    Table("al3.3", "AL thesis Table 3.3: CIFAR-100, BP vs AL",
          _paper_only(_al_table("cifar100", ("mlp", "cnn", "resnet20", "resnet32", "vgg"), ())),
          note="BP rows: the parameter-matched twins. Paper scale only (100 classes)."),
    Table("al3.4", "AL thesis Table 3.4 + Figs 3.6-3.9: metafeature distances, t-SNE",
          _al_meta, metric="metafeatures",
          note="Distances of the last prediction-path layer on the first num_examples test "
               "examples (all layers in each run's results.json); cpu scale: al3.1's "
               "Fashion-MNIST MLP and CNN runs (the same trained models, not trained again)."),
    Table("al_sigmoid", "AL thesis claim: deep sigmoid nets train with AL", _al_sigmoid),
    Table("al_pipeline", "AL journal: pipelined AL schedule, O(n + L)", _al_pipeline,
          metric="pipeline",
          note="Block step costs are measured on one device; makespans are MODELLED "
               "(alearn.al.schedule; hand-over time not modelled). The real multi-device "
               "pipeline is alearn.al.Pipeline (tests/test_pipeline.py)."),
    Table("al_seq", "AL beyond the thesis: LSTM / Transformer blocks vs their BP twins",
          _tables_seq.al_seq,
          note="BP = the parameter-matched twin (configs/al_seq.py). cpu scale: sequential "
               "Fashion-MNIST (28 rows), width 32, 8 epochs; paper scale: byte-token AG News, "
               "IMDB, SST-2."),
    Table("wt3.1", "ASAP thesis Table 3.1 + Fig. 3.2: Forward Alignment vs BP (10-10-10)", _foa,
          note="Deviation (configs/asap_foa.py): the nonlinear net is ReLU without BatchNorm; "
               "SGD momentum 0.9 (the thesis names no optimizer)."),
    Table("wt5.1", "ASAP thesis Fig. 5.1: dimension matching methods (ASAP, AlexNet)",
          _paper_only(_match), note="Paper scale only (the cpu scale's budget goes to the "
                                    "claims of Tables 5.2, 5.4, 5.5 and Fig. 5.4)."),
    Table("wt5.2", "ASAP thesis Table 5.2: BP / KP / FA / DFA / ASAP (k=2)",
          _wt_grid(_t52_pairs(), [("mnist", "alexnet"), ("cifar10", "resnet18"),
                                  ("cifar10", "resnet18_nsc")],
                   ("bp", "kp", "fa", "dfa", "asap"), rules_cpu={"resnet18_nsc": ("asap",)}),
          note="cpu scale: AlexNet x0.125 on a 6k and ResNet-18 x0.25 on a 12k Fashion-MNIST "
               "subset, and ASAP on ResNet-18 without shortcuts (the shortcut claim); Table "
               "5.1's per-rule learning rates x the BP sweep's factor."),
    Table("wt5.3", "ASAP thesis Table 5.3: ASAP vs local learning (CIFAR-10)",
          _paper_only(_wt_grid(_R18_34, (), ("bp", "local_fixed", "predsim", "hsic", "asap"))),
          note="Paper scale only at the cpu budget (its claim is not among the cpu scale's)."),
    Table("wt5.4", "ASAP thesis Table 5.4: weight decay sweep (ResNet-34, CIFAR-10)", _wd,
          note="cpu scale: ASAP only, ResNet-18 x0.25 on the 12k Fashion-MNIST subset "
               "standing in for ResNet-34; λ ∈ {0, 5e-4, 5e-3}."),
    Table("wt5.5", "ASAP thesis Table 5.5: ASFP and ASFP + local classifier (CIFAR-10)",
          _wt_grid(_R18_34, _R18, ("bp", "asap", "asfp", "asfp_lc")),
          note="cpu scale: the ResNet-18 row only (x0.25, the 12k Fashion-MNIST subset)."),
    Table("wt_k4", "ASAP thesis Fig. 5.4 / Sec. 5.2.2: ASAP k=4 on ResNet-34", _k4,
          note="Paper numbers for BP/KP/FA/DFA/ASAP k=2 are Table 5.2's ResNet-34 rows. cpu "
               "scale: ResNet-18 x0.25 (12k Fashion-MNIST) stands in for ResNet-34; every "
               "cell but ASAP k=4 is Table 5.2's run."),
    Table("wt6.1", "ASAP thesis Fig. 6.1: external memory access, BP vs ASAP k=2, k=4",
          _memory, metric="memory",
          note="Accesses: Mostafa et al.'s model (eqs. 6.1-6.2) with Act counted from each "
               "rule's residuals, batch 128, 32x32x3; XLA temp: compiled step memory."),
)}
TABLE_IDS = tuple(TABLES)
# Bare thesis numbers that name one table ("3.2" is a table only in the AL thesis; the ASAP
# thesis has a Fig. 3.2); "3.1" is a table in both theses.
ALIASES = {"5.1": "wt5.1", "5.2": "wt5.2", "5.3": "wt5.3", "5.4": "wt5.4", "5.5": "wt5.5",
           "6.1": "wt6.1", "3.2": "al3.2", "3.3": "al3.3", "3.4": "al3.4"}
AMBIGUOUS = {"3.1": ("al3.1", "wt3.1")}


# Seeds per cell: ``cpu`` reports mean ± std over three; ``paper`` runs one by default
# (``experiments.reproduce --seeds=0,1,2`` for more).
SEEDS = {"cpu": (0, 1, 2), "paper": (0,)}
SEEDED_KINDS = ("train", "foa", "al_compare")


def with_seeds(cells: list[Run], seeds: tuple[int, ...]) -> list[Run]:
    """One run per (cell, seed) for the training kinds, named ``<cell>_s<seed>``."""
    out = []
    for cell in cells:
        if cell.kind not in SEEDED_KINDS or cell.config is None:
            out.append(cell)
            continue
        for seed in seeds:
            c = copy.deepcopy(cell.config)
            c.seed = int(seed)
            out.append(dataclasses.replace(cell, name=f"{cell.name}_s{seed}", cell=cell.name,
                                           seed=int(seed), config=c))
    return out


def runs(table_id: str, scale: str, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """The runs of ``table_id`` at ``scale``, one per cell and seed (default ``SEEDS``).

    Errors name the valid ids / scales.
    """
    if table_id not in TABLES:
        raise ValueError(f"unknown table {table_id!r}; valid ids: {', '.join(TABLE_IDS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    table = TABLES[table_id]
    return with_seeds(table.build(scale), tuple(table.seeds or seeds or SEEDS[scale]))
