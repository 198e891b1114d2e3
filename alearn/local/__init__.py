"""Local-learning baselines of ASAP thesis Table 5.3, as learning rules.

- ``local_fixed`` (:class:`LocalFixed`): fixed random local classifiers, Mostafa et al. 2018.
- ``predsim`` (:class:`PredSim`): prediction + similarity-matching losses, Nøkland & Eidnes
  2019.
- ``hsic`` (:class:`HSIC`): HSIC-bottleneck losses, Pogodin & Latham 2020.

All are registered in :data:`alearn.rules.RULES`; mechanics in :mod:`alearn.local.base`.
"""

from alearn.local.base import LocalRule
from alearn.local.hsic import HSIC
from alearn.local.mostafa import LocalFixed
from alearn.local.predsim import PredSim

__all__ = ["HSIC", "LocalFixed", "LocalRule", "PredSim"]
