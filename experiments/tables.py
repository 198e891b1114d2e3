"""Table registry: every table/figure of the two theses as a list of runs at each scale.

``runs(table_id, scale)`` -> list of :class:`Run`; ``TABLES[table_id]`` -> :class:`Table`.
Every training run is built from the existing config files (``experiments/configs/al.py``,
``asap.py``, ``asap_foa.py``) with overrides; nothing here restates their hyperparameters.

Scales:
- ``paper``: the papers' models, datasets, epochs and hyperparameters (accelerator + TFDS data).
- ``cpu``: the documented shrink that runs on a shared 2-core CPU in minutes per table: the
  bundled mnist5k digits (4,000 train / 1,000 test) replace every dataset, widths are scaled
  (``CPU_WIDTH``), epochs cut (``CPU_EPOCHS``), ResNet-34 rows use ResNet-18, the AL
  ResNet-32/VGG rows, Table 5.4's λ = 5e-6 / 5e-5 columns and the CIFAR-100 runs of the
  k=4 figure are left out, and Table 5.2 keeps two rows (MNIST / AlexNet and CIFAR-10 /
  ResNet-18). Paper hyperparameters (learning rates, optimizer,
  decay) are kept: CPU numbers are not tuned to match the papers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from experiments.configs import al as al_cfg
from experiments.configs import asap as asap_cfg
from experiments.configs import asap_foa as foa_cfg

SCALES = ("cpu", "paper")
CPU_DATASET = "mnist5k"
CPU_EPOCHS = {"mlp": 10, "conv": 1}  # AL MLPs vs conv nets
CPU_FOA_EPOCHS = 10
CPU_WIDTH = {"alexnet": 0.125, "resnet": 0.0625}  # AL models: al.py's cpu flag (0.25)

DATA_NAMES = {"mnist": "MNIST", "mnist5k": "mnist5k", "svhn_cropped": "SVHN",
              "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny_imagenet": "Tiny ImageNet"}
MODEL_NAMES = {"alexnet": "AlexNet", "resnet18_nsc": "ResNet-18 nsc", "resnet18": "ResNet-18",
               "resnet34": "ResNet-34", "mlp": "MLP", "cnn": "CNN", "resnet20": "ResNet-20",
               "resnet32": "ResNet-32", "vgg": "VGG", "sigmoid_mlp": "sigmoid MLP"}
RULE_NAMES = {"bp": "BP", "kp": "KP", "fa": "FA", "dfa": "DFA", "asap": "ASAP", "as": "AS",
              "asfp": "ASFP", "asfp_lc": "ASFP+LC", "local_fixed": "Mostafa LC",
              "predsim": "PredSim", "hsic": "HSIC", "al": "AL", "foa": "FoA"}


@dataclasses.dataclass
class Run:
    """One unit of work, written to ``<workdir>/<table>/<name>/``.

    kind: ``train`` (``alearn.train.train_and_evaluate``), ``foa`` (train, then the W-vs-C
    angle of every epoch's checkpoint, Fig. 3.2), ``al_compare`` (AL and its BP twin, then
    Sec. 3.3 metafeature distances and t-SNE), ``memory`` (Ch. 6 access model and XLA step
    memory), ``pipeline`` (AL pipeline schedule and modelled makespan).
    """

    name: str
    row: str
    col: str
    kind: str = "train"
    config: Any = None
    options: dict = dataclasses.field(default_factory=dict)

    def setup(self) -> str:
        """A one-line description of what ours ran (model, width, data, epochs)."""
        c = self.config
        if c is None:
            return ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        w = c.model_kwargs.get("width_multiplier", 1.0)
        text = f"{c.model} x{w:g}, {c.dataset}, {c.epochs} ep"
        if str(c.model).startswith("al_") and c.rule != "al":  # which BP baseline this row is
            kind = c.model_kwargs.get("baseline", "matched")
            text += (", BP baseline: authors' code (not parameter-matched)" if kind == "authors"
                     else ", BP baseline: parameter-matched twin")
        if c.get("preprocessing", None):
            text += f", preprocessing {c.preprocessing}"
        return text


@dataclasses.dataclass(frozen=True)
class Table:
    """A table or figure of a thesis."""

    id: str
    title: str
    build: Callable[[str], list]
    metric: str = "accuracy"  # accuracy | metafeatures | memory | pipeline
    note: str = ""  # deviations and what a scale leaves out, shown by the report


def _quiet(c: ml_collections.ConfigDict, cpu: bool) -> ml_collections.ConfigDict:
    c.progress_bar = False
    if cpu:
        c.tensorboard = False
    return c


def _shrink(c, epochs: int, width: float | None = None) -> ml_collections.ConfigDict:
    """The cpu-scale override of a paper config: mnist5k, fewer epochs, narrower model."""
    c.dataset = CPU_DATASET
    c.dataset_options = ml_collections.ConfigDict({"augment": "none"})
    c.epochs = epochs
    if width is not None:
        c.model_kwargs.width_multiplier = width
    return _quiet(c, True)


# --------------------------------------------------------------------- Associated Learning
def _al(model: str, dataset: str, method: str, scale: str) -> ml_collections.ConfigDict:
    cpu = scale == "cpu"
    c = al_cfg.get_config(f"{model},{dataset}" + (",cpu" if cpu else ""))
    c = al_cfg.as_bp(c) if method == "bp" else c
    c.rule = method
    if cpu:
        conv = model not in ("mlp", "sigmoid_mlp")
        _shrink(c, CPU_EPOCHS["conv" if conv else "mlp"])
        c.preprocessing = "mnist_code"  # digits: the code's MNIST preprocessing
        c.dataset_options = ml_collections.ConfigDict(dict(al_cfg.PREPROCESSING["mnist_code"]))
    return _quiet(c, cpu)


def _al_table(dataset: str, models_paper: tuple, models_cpu: tuple):
    def build(scale: str) -> list[Run]:
        models = models_cpu if scale == "cpu" else models_paper
        return [Run(f"{m}_{meth}", f"{DATA_NAMES[dataset]} / {MODEL_NAMES[m]}", meth.upper(),
                    config=_al(m, dataset, meth, scale))
                for m in models for meth in ("bp", "al")]
    return build


def _al_meta(scale: str) -> list[Run]:
    pairs = [(d, m) for d in ("cifar10", "cifar100") for m in ("mlp", "cnn")]
    if scale == "cpu":
        pairs = [("cifar10", "mlp"), ("cifar10", "cnn")]
    n = 1000 if scale == "cpu" else 2000
    return [Run(f"{m}_{d}", f"{DATA_NAMES[d]} / {MODEL_NAMES[m]}", "AL vs BP", kind="al_compare",
                config=_al(m, d, "al", scale),
                options={"num_examples": n, "tsne_layers": ["2", "4", "last"]})
            for d, m in pairs]


def _al_sigmoid(scale: str) -> list[Run]:
    return [Run(f"sigmoid_mlp_{meth}", "MNIST / sigmoid MLP (depth 8)", meth.upper(),
                config=_al("sigmoid_mlp", "mnist", meth, scale)) for meth in ("bp", "al")]


def _al_pipeline(scale: str) -> list[Run]:
    cpu = scale == "cpu"
    return [Run("al_sigmoid_mlp", "AL sigmoid MLP (depth 8), one stage per block", "pipeline",
                kind="pipeline",
                options={"model": "al_sigmoid_mlp", "width_multiplier": 0.25 if cpu else 1.0,
                         "micro_batch": 32, "micro_batches": 16 if cpu else 256,
                         "reps": 3 if cpu else 20})]


# ----------------------------------------------------------------- weight transport (ASAP)
def _wt(rule: str, model: str, dataset: str, scale: str, extra: str = "") -> Any:
    c = asap_cfg.get_config(f"{rule},{model},{dataset}" + (f",{extra}" if extra else ""))
    if scale == "cpu":
        if model == "resnet34":
            c.model = "resnet18"
        width = CPU_WIDTH["resnet" if model.startswith("resnet") else model]
        _shrink(c, CPU_EPOCHS["conv"], width)
    return _quiet(c, scale == "cpu")


def _row(model: str, dataset: str) -> str:
    return f"{DATA_NAMES[dataset]} / {MODEL_NAMES[model]}"


def _wt_grid(pairs_paper, pairs_cpu, rules, extra: Callable[[str], str] = lambda r: ""):
    def build(scale: str) -> list[Run]:
        pairs = pairs_cpu if scale == "cpu" else pairs_paper
        return [Run(f"{m}_{d}_{r}", _row(m, d), RULE_NAMES[r],
                    config=_wt(r, m, d, scale, extra(r)))
                for d, m in pairs for r in rules]
    return build


def _t52_pairs() -> list[tuple[str, str]]:
    from experiments.configs import wt
    return [(d, m) for d, ms in wt.PAIRS.items() if d != "mnist5k" for m in ms]


def _foa(scale: str) -> list[Run]:
    out = []
    for net, label in (("linear", "linear"), ("relu", "nonlinear")):
        for rule in ("foa", "bp"):
            c = foa_cfg.get_config(f"{rule},{net},mnist")
            if scale == "cpu":
                _shrink(c, CPU_FOA_EPOCHS)
            if rule == "foa":
                c.checkpoint_keep = int(c.epochs)  # every epoch's W for Fig. 3.2's angles
            out.append(Run(f"{net}_{rule}", f"MNIST / {label} 10-10-10", RULE_NAMES[rule],
                           kind="foa" if rule == "foa" else "train",
                           config=_quiet(c, scale == "cpu")))
    return out


def _match(scale: str) -> list[Run]:
    return [Run(f"alexnet_cifar10_match{m}", "CIFAR-10 / AlexNet", f"method {m}",
                config=_wt("asap", "alexnet", "cifar10", scale, f"match={m}")) for m in (1, 2, 3)]


def _wd(scale: str) -> list[Run]:
    out = []
    wds = ("0", "5e-4", "5e-3") if scale == "cpu" else ("0", "5e-6", "5e-5", "5e-4", "5e-3")
    for rule in ("bp", "asap"):
        for wd in wds:
            out.append(Run(f"resnet34_{rule}_wd{wd}", RULE_NAMES[rule], f"λ={wd}",
                           config=_wt(rule, "resnet34", "cifar10", scale, f"wd={wd}")))
    return out


def _k4(scale: str) -> list[Run]:
    data = ("cifar10",) if scale == "cpu" else ("cifar10", "cifar100")
    out = []
    for d in data:
        for rule, extra, col in (("bp", "", "BP"), ("kp", "", "KP"), ("fa", "", "FA"),
                                 ("dfa", "", "DFA"), ("asap", "k=2", "ASAP"),
                                 ("asap", "k=4", "ASAP k=4")):
            out.append(Run(f"resnet34_{d}_{rule}{extra.replace('=', '')}", _row("resnet34", d),
                           col, config=_wt(rule, "resnet34", d, scale, extra)))
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
    Table("al3.1", "AL thesis Table 3.1: MNIST, BP vs AL",
          _al_table("mnist", ("mlp", "cnn"), ("mlp", "cnn")),
          note="BP = the parameter-matched BP twin of each AL model (configs/al.py); the "
               "authors' MNIST baselines are the same nets. Paper scale: full 60k MNIST; "
               "cpu scale: mnist5k."),
    Table("al3.2", "AL thesis Table 3.2: CIFAR-10, BP vs AL",
          _al_table("cifar10", ("mlp", "cnn", "resnet20", "resnet32", "vgg"),
                    ("mlp", "cnn", "resnet20")),
          note="BP rows: the parameter-matched twins (the authors' BP VGG / ResNet were not "
               "parameter-matched; configs/al.py flag 'authors'). cpu scale: the CIFAR-10 "
               "configs (their lr and L2) on mnist5k with the code's MNIST preprocessing; "
               "the ResNet-32 and VGG rows are paper scale only."),
    Table("al3.3", "AL thesis Table 3.3: CIFAR-100, BP vs AL",
          _al_table("cifar100", ("mlp", "cnn", "resnet20", "resnet32", "vgg"), ("mlp",)),
          note="BP rows: the parameter-matched twins. cpu scale: only the MLP row (with the "
               "CIFAR-100 config's 3000-wide layers x0.25), on mnist5k's 10 classes."),
    Table("al3.4", "AL thesis Table 3.4 + Figs 3.6-3.9: metafeature distances, t-SNE",
          _al_meta, metric="metafeatures",
          note="Distances of the last prediction-path layer on the first num_examples test "
               "examples (all layers in each run's results.json); cpu scale: CIFAR-10 configs "
               "on mnist5k."),
    Table("al_sigmoid", "AL thesis claim: deep sigmoid nets train with AL", _al_sigmoid),
    Table("al_pipeline", "AL journal: pipelined AL schedule, O(n + L)", _al_pipeline,
          metric="pipeline",
          note="Block step costs are measured on one device; makespans are MODELLED "
               "(alearn.al.schedule; hand-over time not modelled). The real multi-device "
               "pipeline is alearn.al.Pipeline (tests/test_pipeline.py)."),
    Table("al_seq", "AL beyond the thesis: LSTM / Transformer blocks vs their BP twins", lambda s: __import__("experiments._tables_seq", fromlist=["al_seq"]).al_seq(s), note="BP = the parameter-matched twin (configs/al_seq.py). cpu scale: sequential Fashion-MNIST (28 rows), width 32, 2 epochs; paper scale: byte-token AG News, IMDB, SST-2."),  # noqa: E501 - one line: experiments/_tables_seq.py
    Table("wt3.1", "ASAP thesis Table 3.1 + Fig. 3.2: Forward Alignment vs BP (10-10-10)", _foa,
          note="Deviation (configs/asap_foa.py): the nonlinear net is ReLU without BatchNorm; "
               "SGD momentum 0.9 (the thesis names no optimizer)."),
    Table("wt5.1", "ASAP thesis Fig. 5.1: dimension matching methods (ASAP, AlexNet)", _match),
    Table("wt5.2", "ASAP thesis Table 5.2: BP / KP / FA / DFA / ASAP (k=2)",
          _wt_grid(_t52_pairs(), [("mnist", "alexnet"), ("cifar10", "resnet18")],
                   ("bp", "kp", "fa", "dfa", "asap")),
          note="cpu scale: two rows, MNIST / AlexNet and CIFAR-10 / ResNet-18 (both on "
               "mnist5k), Table 5.1's learning rates kept."),
    Table("wt5.3", "ASAP thesis Table 5.3: ASAP vs local learning (CIFAR-10)",
          _wt_grid(_R18_34, _R18, ("bp", "local_fixed", "predsim", "hsic", "asap")),
          note="cpu scale: the ResNet-18 row only."),
    Table("wt5.4", "ASAP thesis Table 5.4: weight decay sweep (ResNet-34, CIFAR-10)", _wd,
          note="cpu scale: ResNet-18 x0.0625 stands in for ResNet-34; λ ∈ {0, 5e-4, 5e-3}."),
    Table("wt5.5", "ASAP thesis Table 5.5: ASFP and ASFP + local classifier (CIFAR-10)",
          _wt_grid(_R18_34, _R18, ("bp", "asap", "asfp", "asfp_lc")),
          note="cpu scale: the ResNet-18 row only."),
    Table("wt_k4", "ASAP thesis Fig. 5.4 / Sec. 5.2.2: ASAP k=4 on ResNet-34", _k4,
          note="Paper numbers for BP/KP/FA/DFA/ASAP k=2 are Table 5.2's ResNet-34 rows. cpu "
               "scale: ResNet-18 x0.0625 stands in for ResNet-34, CIFAR-10 row only."),
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


def runs(table_id: str, scale: str) -> list[Run]:
    """The runs of ``table_id`` at ``scale``; errors name the valid ids / scales."""
    if table_id not in TABLES:
        raise ValueError(f"unknown table {table_id!r}; valid ids: {', '.join(TABLE_IDS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return TABLES[table_id].build(scale)
