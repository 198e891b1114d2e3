"""The papers' reported numbers, transcribed from /work/shared/ALGORITHMS.md (and the thesis
texts in /work/shared/papers/ where ALGORITHMS.md quotes them only in prose).

``PAPER[table_id][(row, column)] = value``. Accuracies are test accuracy in percent; Table 3.4
(AL) holds inter-class distance, intra-class distance and their ratio. Figures without
printed numbers (ASAP Fig. 5.1 dimension matching, Fig. 6.1 memory access, the AL sigmoid
claim) have no entries: their claims are in ``CLAIMS`` and the report checks the ordering.
"""

from __future__ import annotations

# --- Associated Learning thesis (Kao 2019), Tables 3.1-3.3: (data / model, method) ---------
_AL_MODELS = ("MLP", "CNN", "ResNet-20", "ResNet-32", "VGG")
_AL_C10 = {"BP": (61.6, 85.4, 90.6, 91.9, 93.1), "AL": (64.2, 86.0, 89.3, 88.8, 92.6)}
_AL_C100 = {"BP": (26.9, 51.0, 63.8, 63.8, 70.8), "AL": (31.2, 52.4, 60.2, 60.5, 67.5)}


def _al_rows(data: str, table: dict) -> dict:
    return {(f"{data} / {m}", method): vals[i]
            for method, vals in table.items() for i, m in enumerate(_AL_MODELS)}


# --- ASAP thesis (Woo 2023), Table 5.2: BP / KP / FA / DFA / ASAP (k=2) --------------------
_T52_RULES = ("BP", "KP", "FA", "DFA", "ASAP")
_T52 = {
    "MNIST / AlexNet": (99.59, 99.55, 99.14, 99.28, 99.32),
    "SVHN / AlexNet": (94.64, 93.3, 82.21, 87.42, 88.04),
    "SVHN / ResNet-18 nsc": (96.14, 95.84, 84.91, 85.64, 93.17),
    "SVHN / ResNet-18": (96.29, 96.13, 85.08, 85.56, 94.86),
    "CIFAR-10 / AlexNet": (90.58, 79.23, 67.92, 73.85, 78.25),
    "CIFAR-10 / ResNet-18 nsc": (94.70, 94.65, 71.38, 75.46, 83.44),
    "CIFAR-10 / ResNet-18": (94.93, 94.76, 72.47, 76.0, 92.19),
    "CIFAR-10 / ResNet-34": (95.18, 94.54, 66.99, 73.02, 93.97),
    "CIFAR-100 / AlexNet": (63.61, 47.43, 33.32, 35.38, 46.99),
    "CIFAR-100 / ResNet-18 nsc": (77.34, 74.98, 37.11, 37.48, 51.72),
    "CIFAR-100 / ResNet-18": (77.74, 74.51, 38.15, 38.51, 68.86),
    "CIFAR-100 / ResNet-34": (78.41, 75.0, 33.01, 35.6, 72.81),
    "Tiny ImageNet / ResNet-18": (60.13, 58.14, 20.54, 24.07, 48.46),
    "Tiny ImageNet / ResNet-34": (62.63, 59.45, 16.86, 21.1, 52.25),
}
_WD = ("0", "5e-6", "5e-5", "5e-4", "5e-3")

PAPER: dict[str, dict[tuple[str, str], float]] = {
    "al3.1": {("MNIST / MLP", "BP"): 98.6, ("MNIST / MLP", "AL"): 98.7,
              ("MNIST / CNN", "BP"): 99.4, ("MNIST / CNN", "AL"): 99.5},
    "al3.2": _al_rows("CIFAR-10", _AL_C10),
    "al3.3": _al_rows("CIFAR-100", _AL_C100),
    "al3.4": {  # thesis Table 3.4 (the "26, 87" typo of the text read as 26.87)
        ("CIFAR-10 / MLP", "BP inter"): 39.36, ("CIFAR-10 / MLP", "BP intra"): 67.97,
        ("CIFAR-10 / MLP", "BP ratio"): 0.58, ("CIFAR-10 / MLP", "AL inter"): 0.73,
        ("CIFAR-10 / MLP", "AL intra"): 0.66, ("CIFAR-10 / MLP", "AL ratio"): 1.11,
        ("CIFAR-10 / CNN", "BP inter"): 41.82, ("CIFAR-10 / CNN", "BP intra"): 26.87,
        ("CIFAR-10 / CNN", "BP ratio"): 1.56, ("CIFAR-10 / CNN", "AL inter"): 1.17,
        ("CIFAR-10 / CNN", "AL intra"): 0.36, ("CIFAR-10 / CNN", "AL ratio"): 3.25,
        ("CIFAR-100 / MLP", "BP inter"): 114.42, ("CIFAR-100 / MLP", "BP intra"): 342.65,
        ("CIFAR-100 / MLP", "BP ratio"): 0.33, ("CIFAR-100 / MLP", "AL inter"): 0.23,
        ("CIFAR-100 / MLP", "AL intra"): 0.28, ("CIFAR-100 / MLP", "AL ratio"): 0.82,
        ("CIFAR-100 / CNN", "BP inter"): 114.71, ("CIFAR-100 / CNN", "BP intra"): 163.43,
        ("CIFAR-100 / CNN", "BP ratio"): 0.70, ("CIFAR-100 / CNN", "AL inter"): 0.55,
        ("CIFAR-100 / CNN", "AL intra"): 0.51, ("CIFAR-100 / CNN", "AL ratio"): 1.08,
    },
    "al_sigmoid": {},
    "al_pipeline": {},
    "al_seq": {},
    "wt3.1": {("MNIST / linear 10-10-10", "FoA"): 90.93, ("MNIST / linear 10-10-10", "BP"): 92.39,
              ("MNIST / nonlinear 10-10-10", "FoA"): 93.03,
              ("MNIST / nonlinear 10-10-10", "BP"): 95.01},
    "wt5.1": {},
    "wt5.2": {(row, r): v for row, vals in _T52.items() for r, v in zip(_T52_RULES, vals)},
    "wt5.3": {("CIFAR-10 / ResNet-18", "BP"): 94.93, ("CIFAR-10 / ResNet-18", "Mostafa LC"): 71.41,
              ("CIFAR-10 / ResNet-18", "PredSim"): 88.12, ("CIFAR-10 / ResNet-18", "HSIC"): 80.76,
              ("CIFAR-10 / ResNet-18", "ASAP"): 92.19,
              ("CIFAR-10 / ResNet-34", "BP"): 95.18, ("CIFAR-10 / ResNet-34", "Mostafa LC"): 69.8,
              ("CIFAR-10 / ResNet-34", "PredSim"): 87.57, ("CIFAR-10 / ResNet-34", "HSIC"): 77.2,
              ("CIFAR-10 / ResNet-34", "ASAP"): 93.97},
    "wt5.4": {**{("BP", f"λ={w}"): v for w, v in zip(_WD, (93.56, 93.76, 93.82, 95.18, 95.12))},
              **{("ASAP", f"λ={w}"): v for w, v in zip(_WD, (89.77, 89.85, 91.63, 93.97, 91.54))}},
    "wt5.5": {("CIFAR-10 / ResNet-18", "BP"): 94.93, ("CIFAR-10 / ResNet-18", "ASAP"): 92.19,
              ("CIFAR-10 / ResNet-18", "ASFP"): 61.45, ("CIFAR-10 / ResNet-18", "ASFP+LC"): 88.46,
              ("CIFAR-10 / ResNet-34", "BP"): 95.18, ("CIFAR-10 / ResNet-34", "ASAP"): 93.97,
              ("CIFAR-10 / ResNet-34", "ASFP"): 31.7, ("CIFAR-10 / ResNet-34", "ASFP+LC"): 89.28},
    "wt_k4": {**{("CIFAR-10 / ResNet-34", r): v for r, v in
                 zip(_T52_RULES, _T52["CIFAR-10 / ResNet-34"])},
              **{("CIFAR-100 / ResNet-34", r): v for r, v in
                 zip(_T52_RULES, _T52["CIFAR-100 / ResNet-34"])},
              ("CIFAR-10 / ResNet-34", "ASAP k=4"): 93.9,
              ("CIFAR-100 / ResNet-34", "ASAP k=4"): 71.93},
    "wt6.1": {},
}
# Claims without printed numbers (checked as orderings by the report).
CLAIMS: dict[str, str] = {
    "al_sigmoid": "AL still trains a deep sigmoid network where BP suffers vanishing gradients "
                  "(thesis abstract; no numbers printed).",
    "al_pipeline": "Pipelined AL trains n micro-batches in O(n + L) block steps instead of "
                   "O(nL) (journal abstract; no numbers printed).",
    "wt5.1": "Dimension matching method 1 (tile + max-pool) gives the best accuracy on "
             "AlexNet / CIFAR-10 (Fig. 5.1; values only in the figure).",
    "wt6.1": "External memory accesses: BP > ASAP k=2 > ASAP k=4, the gap growing with depth "
             "(Fig. 6.1; values only in the figure).",
    "al3.4": "AL's inter:intra ratio beats BP's on CIFAR MLP and CNN.",
    "al_seq": "AL LSTMs and Transformers classify text (AG News, DBpedia, IMDB, SST-2) at about "
              "BP's accuracy (the AL follow-up work; its numbers are not in the stored papers).",
}
