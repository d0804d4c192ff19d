"""Example zeroflow plugin: the LOZO optimizer, the SimpleCIL method and the ``digits-folder``
dataset, registered on import (zeroflow imports it through the ``zeroflow.plugins`` entry point
of this package, or when a config names it: ``plugins=zeroflow_examples``)."""

from zeroflow.methods import register_method
from zeroflow.optim import register_optimizer
from zeroflow_examples import folder  # noqa: F401 - registers digits-folder
from zeroflow_examples.lozo import LOZO
from zeroflow_examples.simplecil import SimpleCIL

__version__ = "0.1.0"

# rank and ν are the paper's kind of setting, fixed here; the trial's lr, mu, q, seed and
# weight_decay are passed through
register_optimizer("lozo", LOZO, accepts=("lr", "mu", "q", "seed", "weight_decay"),
                   fixed={"rank": 2, "nu": 50}, family="SGD", strategy="Low-rank")
register_method("simplecil", SimpleCIL)
