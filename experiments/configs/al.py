"""Associated Learning thesis, Tables 3.1–3.3 (and the sigmoid experiment): AL vs matched BP.

``--config=experiments/configs/al.py:<model>,<dataset>[,cpu]`` with model one of
``mlp, cnn, vgg, resnet20, resnet32, sigmoid_mlp`` and dataset one of ``mnist, mnist5k,
cifar10, cifar100``; ``cpu`` selects CPU-sized widths (width_multiplier 0.25) and 20 epochs.
``--config.rule=al`` (default) trains the AL network ``al_<model>``; ``--config.rule=bp`` (or
any other rule) trains its parameter-matched BP twin (same ``model``), same data and epochs.

Commands (figures and the other runs in docs/notes/al.md):
  python -m experiments.train --config=experiments/configs/al.py:mlp,mnist5k,cpu \
      --config.learning_rate=1e-3 --workdir=/tmp/al_mlp_al
  python -m experiments.train --config=experiments/configs/al.py:mlp,mnist5k,cpu \
      --config.learning_rate=1e-3 --config.rule=bp --workdir=/tmp/al_mlp_bp
  # device pipeline, one block per device (docs/notes/pipeline.md; al_cnn has 4 blocks):
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m experiments.train \
      --config=experiments/configs/al.py:cnn,mnist5k,cpu --config.pipeline_stages=4 \
      --workdir=/tmp/al_cnn_pipe
Measured here (20 epochs, 2 shared CPU cores): AL 0.953 / BP 0.945 test accuracy at lr 1e-3
(AL 245 s, BP 107 s wall); at the thesis lr 1e-4 AL 0.933 / BP 0.958 (94 s / 35 s) — AL
starts slowly at 1e-4 and 20 epochs are 2,500 steps. Sigmoid experiment
(``sigmoid_mlp,mnist5k,cpu``, lr 1e-3): AL 0.947, BP (17 sigmoid layers) 0.100 (73 s / 61 s).
``experiments.al_compare`` runs both and adds the Sec. 3.3 distances and a t-SNE PNG.

Thesis settings (Ch. 3): 200 epochs, batch 32, Adam, lr 1e-4 (ResNet 1e-3) reduced at
epochs 80, 120, 160, 180 (the factor is not stated; 0.1 here), He-normal init; MNIST
without augmentation or regularisation; CIFAR with 2-pixel jitter and L2 5e-4 (VGG) /
1e-4 (ResNet); CIFAR-100 MLP with 3000-wide layers (the seed code's "more neurons").
Expected (thesis, full size): MNIST MLP BP 98.6 / AL 98.7, CNN 99.4 / 99.5; CIFAR-10
MLP 61.6/64.2, CNN 85.4/86.0, ResNet-20 90.6/89.3, ResNet-32 91.9/88.8, VGG 93.1/92.6;
CIFAR-100 MLP 26.9/31.2, CNN 51.0/52.4, ResNet-20 63.8/60.2, ResNet-32 63.8/60.5, VGG
70.8/67.5. Runtime: days per full-size CIFAR run on 2 CPU cores; see docs/notes/al.md for the
CPU-sized runs.
"""

import ml_collections

from experiments.configs import default

MODELS = ("mlp", "cnn", "vgg", "resnet20", "resnet32", "sigmoid_mlp")
DATASETS = ("mnist", "mnist5k", "cifar10", "cifar100")


def get_config(arg: str = "mlp,mnist5k") -> ml_collections.ConfigDict:
    """AL (or its BP twin) for ``arg`` = "<model>,<dataset>[,cpu]"."""
    parts = [p.strip().lower() for p in arg.split(",") if p.strip()]
    model, dataset = (parts + ["mnist5k"])[:2] if parts else ("mlp", "mnist5k")
    cpu = "cpu" in parts[2:]
    if model not in MODELS:
        raise ValueError(f"unknown AL model {model!r}; choose one of: {', '.join(MODELS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    c = default.get_config("bp")
    c.rule = "al"
    c.rule_hparams = ml_collections.ConfigDict()  # AL's own knobs live in al_hparams
    c.al_hparams = ml_collections.ConfigDict(
        {"ae_lr_mult": 2.0, "assoc_trains_g": False, "assoc_reduction": "sum"})
    c.model = f"al_{model}"
    kwargs = {"width_multiplier": 0.25 if cpu else 1.0}
    if model == "mlp" and dataset == "cifar100":
        kwargs["width"] = 3000
    if model == "sigmoid_mlp":
        kwargs.update(depth=4, width=256, layers_per_block=3)
    c.model_kwargs = ml_collections.ConfigDict(kwargs)
    c.dataset = dataset
    cifar = dataset.startswith("cifar")
    c.dataset_options = ml_collections.ConfigDict({"augment": "jitter2" if cifar else "none"})
    c.epochs = 20 if cpu else 200
    c.batch_size = 32
    c.optimizer = "adam"
    c.learning_rate = 1e-3 if model.startswith("resnet") else 1e-4
    c.schedule = "step"
    c.decay_epochs = (80, 120, 160, 180)
    c.decay_factor = 0.1
    c.weight_decay = {"vgg": 5e-4, "resnet20": 1e-4, "resnet32": 1e-4}.get(model, 0.0) \
        if cifar else 0.0
    c.eval_train = True
    # AL device pipeline (alearn.al.pipeline): N stages, one block group per device;
    # on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N. 0 = one device.
    c.pipeline_stages = 0
    c.pipeline_data = 1
    return c
