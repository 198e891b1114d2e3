"""The PyTorch peers of the conv-net benchmark (``bench_convnets``): the same ResNet-18 and
ASAP AlexNet as ``alearn.models`` writes them, in ``torch.nn``, trained by plain autograd
(BP) or converted by BioTorch (``biotorch.module.biomodule.BioModule``) to FA or DFA.

Only benchmarks import this; PyTorch is the ``bench`` extra and BioTorch is installed
without its dependencies (``pip install --no-deps biotorch==0.0.16``: it asks for
torchvision, which it does not use for these layers). Each builder returns ``None`` when
its framework is missing.

Shapes follow ``alearn/models/resnet.py`` and ``alearn/models/alexnet.py`` exactly
(channels scaled by ``width``, rounded as ``alearn.models._common.scaled``): ResNet-18 with
a conv3x3 stride-1 stem, no max-pool, post-activation basic blocks, projection shortcuts
where the shape changes, global average pool, linear classifier; the AlexNet with 5x5
stride-1 padding-2 convs, BN + ReLU + 2x2 ceil-mode max-pool after each, FC-BN-ReLU twice,
a bias-free classifier with BN on the logits. The convolutions have no bias where a BN
follows, as in alearn.
"""

from __future__ import annotations

import os

import numpy as np


def _scaled(width: int, multiplier: float) -> int:
    from alearn.models._common import scaled  # pylint: disable=import-outside-toplevel
    return scaled(width, multiplier)


def resnet18(torch, width: float, num_classes: int = 10):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(h)) + self.short(x))

    widths = [_scaled(w, width) for w in (64, 128, 256, 512)]
    layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for s, w in enumerate(widths):
        for b in range(2):
            layers.append(Block(cin, w, 2 if (s > 0 and b == 0) else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def alexnet(torch, width: float, num_classes: int = 10, side: int = 32):
    nn = torch.nn
    layers, cin = [], 3
    for w in (64, 128, 256):
        w = _scaled(w, width)
        layers += [nn.Conv2d(cin, w, 5, 1, 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                   nn.MaxPool2d(2, 2, ceil_mode=True)]
        cin, side = w, -(-side // 2)
    layers.append(nn.Flatten())
    cin = cin * side * side
    for w in (1024, 1024):
        w = _scaled(w, width)
        layers += [nn.Linear(cin, w, bias=False), nn.BatchNorm1d(w), nn.ReLU()]
        cin = w
    layers += [nn.Linear(cin, num_classes, bias=False), nn.BatchNorm1d(num_classes)]
    return nn.Sequential(*layers)


def step_case(kind: str, width: float, mode: str, images: np.ndarray, labels: np.ndarray):
    """``run(n)``: n SGD (lr 0.01, momentum 0.9) training steps of the PyTorch ``kind``
    (``resnet18`` / ``alexnet``) on one batch (NHWC numpy ``images``), by ``mode``: ``bp``
    (plain autograd) or BioTorch's ``fa`` / ``dfa``. None when torch (or, for fa/dfa,
    biotorch) is not installed."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    net = {"resnet18": resnet18, "alexnet": alexnet}[kind](torch, width)
    if mode != "bp":
        try:
            from biotorch.module.biomodule import BioModule  # pylint: disable=import-outside-toplevel
        except ImportError:
            return None
        net = BioModule(net, mode=mode, output_dim=10 if mode == "dfa" else None)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    ty = torch.from_numpy(labels).long()
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            out = net(tx, targets=ty, loss_function=loss_fn) if mode == "dfa" else net(tx)
            loss = loss_fn(out, ty)
            loss.backward()
            opt.step()
        float(loss.detach())

    run.params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return run


def ratios(t: dict, models, rules) -> dict:
    """Same-round ratios from one round's per-step times ``t`` (seconds), keyed as
    ``bench_convnets`` names its cases (``<model>_<rule>``, ``<model>_torch_<mode>``):
    ``<model>_<rule>_vs_pytorch|biotorch`` = peer time / alearn time (> 1: alearn faster),
    ``<model>_<rule>_time_vs_bp`` = alearn rule time / alearn BP time."""
    out = {}
    for m in models:
        for r in ("bp", "fa", "dfa"):
            a, p = f"{m}_{r}", f"{m}_torch_{r}"
            if a in t and p in t:
                out[f"{m}_{r}_vs_{'pytorch' if r == 'bp' else 'biotorch'}"] = t[p] / t[a]
        for r in rules:
            if r != "bp" and f"{m}_{r}" in t and f"{m}_bp" in t:
                out[f"{m}_{r}_time_vs_bp"] = t[f"{m}_{r}"] / t[f"{m}_bp"]
    return out
