"""Activation-sharing rules on the ASAP thesis' model/dataset pairs (Tables 5.2-5.5, Fig. 5.1).

Select ``rule,model,dataset[,key=value...]`` after a colon, e.g.

  python -m experiments.train --config=experiments/configs/asap.py:asap,resnet18,cifar10 \
      --workdir=/tmp/asap_resnet18_cifar10

Rules: asap (Table 5.2's ASAP column), asfp and asfp_lc (Table 5.5), as (sharing with weight
transport), local_fixed, predsim and hsic (Table 5.3 local learning), and bp, fa, dfa, kp as
references (set up as ``wt.py`` does; their Table 5.1 rates are in ``wt.py``).
Pairs as Table 5.2 (``experiments/configs/wt.py``), plus alexnet on mnist5k (the CPU run of
docs/notes/rules_as.md). Extra ``key=value`` items:

- ``k=4``: ASAP block size 4 (Sec. 5.2.2, Fig. 5.4; ResNet-34);
- ``match=1|2|3``: dimension-matching method (Fig. 5.1: AlexNet on CIFAR-10);
- ``wd=<λ>``: weight decay (Table 5.4 sweep, ResNet-34 on CIFAR-10: 0, 5e-6, 5e-5, 5e-4, 5e-3);
- ``width=<m>``: model width multiplier (CPU runs); ``epochs=<n>``; ``lr=<rate>``;
- ``decay=authors|kernels``: what the sharing rules' λ decays (below; default ``authors``);
- ``output_bn=1|0``: BatchNorm on a ResNet's logits (default 1, the authors' code).

Any rule field is also a flag, e.g. ``--config.rule_hparams.dense=own_input`` (dense
layers keep their own input and get ASAP's update instead of plain FA).

Setup (Sec. 5.1.4): SGD momentum 0.9, λ = 5e-4, cosine annealing, batch 128, 200 epochs,
Kaiming init. Learning rates (Table 5.1, ASAP column): 1e-4 AlexNet, 3e-3 ResNet-18 nsc,
3e-2 ResNet-18/34 except 3e-3 for ResNet-18 on SVHN; ASFP/ASFP+LC/AS/local rules use ASAP's.
The sharing rules use the authors' code's grouping and dense-FA layers by default
(``grouping``/``dense`` rule fields, docs/notes/rules_as.md), e.g.
``--config.rule_hparams.grouping=block_input --config.rule_hparams.dense=shared`` for
alearn's first reading.

Weight decay and logit BatchNorm follow the authors' code, which produced the tables
(issue 28): its ``torch.optim.SGD(net.parameters(), momentum=0.9, weight_decay=5e-4)``
decays every parameter that receives a gradient — kernels, biases, BatchNorm scale/shift
and ASAP's learned B, for every rule including AS (``--wt``) — but not the detached stem
nor the fixed feedback; and every ResNet there (BP/FA/DFA ``resnet`` and ``resnet_asap``)
ends in ``BatchNorm1d`` on the logits, as the AlexNet does. So: for the sharing rules λ is
the rule's ``decay`` with ``decay_scope="all"`` (AS included) and the base optimizer's
weight decay is 0, so the untrained first layer stays exactly unchanged; bp, fa, dfa, kp
and the local rules use the base optimizer's decay on every forward parameter
(``weight_decay_mask="params"``); ResNets get ``model_kwargs.output_bn=True``. Options:
``decay=kernels`` gives the sharing rules Algorithm 1's scope, W and B only (the default
before issue 28; AS then has no decay; other rules unchanged), ``output_bn=0`` the plain
linear classifier.

Runtime here: a 200-epoch CIFAR run is GPU work (not measured); on this 2-core CPU only
small runs such as ``asap,alexnet,mnist5k,width=0.25,epochs=3,lr=0.01`` are practical: test
accuracy bp 0.961, fa 0.904, dfa 0.933, kp 0.940, asap k=2 0.894 (docs/notes/rules_as.md,
"Accuracy on mnist5k"; the cpu-scale tables' per-run wall times, 1-6 min per AlexNet or
ResNet-18 epoch on the loaded 2-core machine, are in docs/results/README.md). Expected at
full size: Table 5.2/5.5 accuracies (e.g. ASAP ResNet-18 CIFAR-10 92.19).
"""

import ml_collections

from experiments.configs import default, wt

RULES = ("bp", "fa", "dfa", "kp", "as", "asap", "asfp", "asfp_lc", "local_fixed", "predsim",
         "hsic")
SHARING = ("as", "asap", "asfp", "asfp_lc")
PAIRS = {**wt.PAIRS, "mnist5k": ("alexnet", "mlp")}
# Table 5.1, ASAP column (and BP's for bp).
LEARNING_RATES = {"alexnet": 1e-4, "resnet18_nsc": 3e-3, "resnet18": 3e-2, "resnet34": 3e-2,
                  "mlp": 3e-2}
# Table 5.1 rows that differ from the model's rate: (dataset, model) -> ASAP rate.
DATASET_LEARNING_RATES = {("svhn_cropped", "resnet18"): 3e-3}
WEIGHT_DECAY = 5e-4
_KEYS = {"k": int, "match": int, "wd": float, "width": float, "epochs": int, "lr": float,
         "decay": str, "output_bn": int}
# ``decay=`` item -> the sharing rules' decay_scope
DECAY_SCOPES = {"authors": "all", "kernels": "kernels"}


def _parse(arg: str) -> tuple[str, str, str, dict]:
    parts = [p.strip().lower() for p in str(arg).split(",")]
    if len(parts) < 3:
        raise ValueError(f"config argument {arg!r} must be 'rule,model,dataset[,key=value...]', "
                         "e.g. 'asap,resnet18,cifar10,k=4'")
    rule, model, dataset = parts[:3]
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")
    if dataset not in wt.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: "
                         f"{', '.join(wt.DATASETS)}")
    dataset = wt.DATASETS[dataset]
    if model not in PAIRS[dataset]:
        raise ValueError(f"model {model!r} is not paired with {dataset!r}; choose one of: "
                         f"{', '.join(PAIRS[dataset])}")
    extra = {}
    for item in parts[3:]:
        key, _, value = item.partition("=")
        if key not in _KEYS or not value:
            raise ValueError(f"bad item {item!r}; use key=value with key one of: "
                             f"{', '.join(_KEYS)}")
        extra[key] = _KEYS[key](value)
    if extra.get("decay", "authors") not in DECAY_SCOPES:
        raise ValueError(f"bad item 'decay={extra['decay']}'; choose one of: "
                         f"{', '.join(DECAY_SCOPES)}")
    if extra.get("output_bn", 1) not in (0, 1):
        raise ValueError(f"bad item 'output_bn={extra['output_bn']}'; use 1 or 0")
    if "output_bn" in extra and not model.startswith("resnet"):
        raise ValueError(f"output_bn applies to the ResNets, not {model!r} (the AlexNet always "
                         "has BatchNorm on its logits, as the authors' code)")
    return rule, model, dataset, extra


def get_config(arg: str = "asap,alexnet,mnist5k,width=0.25,epochs=3") -> ml_collections.ConfigDict:
    """The configuration for ``arg`` = 'rule,model,dataset[,key=value...]' (module doc)."""
    rule, model, dataset, extra = _parse(arg)
    c = default.get_config(rule)
    c.model = model
    c.model_kwargs = ml_collections.ConfigDict({"widths": (1024, 1024)} if model == "mlp"
                                               else {})
    if "width" in extra:
        c.model_kwargs.width_multiplier = extra["width"]
    if model.startswith("resnet"):  # the authors' ResNets: BatchNorm1d on the logits
        c.model_kwargs.output_bn = bool(extra.get("output_bn", 1))
    c.dataset = dataset
    c.optimizer, c.momentum, c.schedule, c.batch_size = "sgd", 0.9, "cosine", 128
    family = "resnet" if model.startswith("resnet") else model
    c.learning_rate = extra.get("lr", wt.LEARNING_RATES[family][rule] if rule in wt.RULES
                                else DATASET_LEARNING_RATES.get((dataset, model),
                                                                LEARNING_RATES[model]))
    c.epochs = extra.get("epochs", 200)
    wd = extra.get("wd", WEIGHT_DECAY)
    scope = DECAY_SCOPES[extra.get("decay", "authors")]
    if rule in SHARING:
        c.weight_decay = 0.0  # the rule decays: the frozen first layer stays unchanged
        c.rule_hparams.decay_scope = scope
        # AS decays only under the authors' scope (Algorithm 1 is ASAP's; AS had none)
        c.rule_hparams.decay = wd if (rule != "as" or scope == "all") else 0.0
        for key in ("k", "match"):
            if key in extra:
                c.rule_hparams[key] = extra[key]
    else:
        c.weight_decay = wd
        c.weight_decay_mask = "params"  # every forward parameter (the authors' SGD)
        if rule == "kp":
            c.rule_hparams.weight_decay = wd
            c.rule_hparams.decay_kernel = False  # the base optimizer already decays W by λ
        if "k" in extra or "match" in extra:
            raise ValueError(f"k/match apply to the sharing rules {SHARING}, not {rule!r}")

    c.alignment = rule in ("asap", "asfp", "asfp_lc")  # B-vs-W and update-vs-BP angles
    return c
