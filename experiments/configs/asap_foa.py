"""Forward Alignment vs BP on 10-10-10 networks on MNIST (ASAP thesis Table 3.1, Fig. 3.2).

  python -m experiments.train --config=experiments/configs/asap_foa.py:foa,linear \
      --workdir=/tmp/foa_linear

Argument ``rule,net[,dataset][,epochs=<n>]``: rule foa or bp; net ``linear`` (identity
activations) or ``relu``. The network is 784-10-10-10 (the thesis' "10-10-10": its two
10x10 layers are layers 2 and 3). Setup (Sec. 3.3): 200 epochs, lr 1e-4, batch 50; the
thesis gives no optimizer for this experiment: SGD momentum 0.9 here (our choice).
Deviation: the thesis' nonlinear net has BatchNorm + ReLU; alearn's MLP has no BatchNorm
option, so ``relu`` is ReLU only. The FoA W-vs-C angle per layer (Fig. 3.2) is
``alearn.rules.foa.alignment_angles(variables)``; the trainer's alignment log records the
update-vs-BP angles.

Runtime here: ~1 s per mnist5k epoch; the cpu-scale Table 3.1 (4 runs of 10 mnist5k epochs)
took 49 s in all and ended at test accuracy linear FoA 0.622 / BP 0.651, nonlinear 0.317 /
0.317 (docs/results/README.md, wt3.1: at lr 1e-4 the nets barely move in 10 epochs). The full
200-epoch MNIST run (15x the data) needs the TFDS MNIST data; not measured here. Expected (Table 3.1): linear FoA 90.93 / BP 92.39;
nonlinear FoA 93.03 / BP 95.01.
"""

import ml_collections

from experiments.configs import default

NETS = {"linear": "identity", "relu": "relu"}


def get_config(arg: str = "foa,linear,mnist") -> ml_collections.ConfigDict:
    """Table 3.1 configuration for ``arg`` = 'rule,net[,dataset][,epochs=<n>]'."""
    parts = [p.strip().lower() for p in str(arg).split(",")]
    epochs = 200
    if parts and parts[-1].startswith("epochs="):
        epochs = int(parts.pop()[len("epochs="):])
    if len(parts) not in (2, 3) or parts[0] not in ("foa", "bp") or parts[1] not in NETS:
        raise ValueError(f"config argument {arg!r} must be 'rule,net[,dataset][,epochs=n]' "
                         f"with rule foa|bp and net one of: {', '.join(NETS)}")
    c = default.get_config(parts[0])
    c.model = "mlp"
    c.model_kwargs = ml_collections.ConfigDict({"widths": (10, 10),
                                                "activation": NETS[parts[1]]})
    c.dataset = parts[2] if len(parts) == 3 else "mnist"
    c.optimizer, c.momentum, c.learning_rate = "sgd", 0.9, 1e-4
    c.batch_size, c.epochs, c.schedule = 50, epochs, "constant"
    c.alignment = True
    return c
