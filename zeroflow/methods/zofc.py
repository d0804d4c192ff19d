"""ZO-FC (arXiv 2510.21019): a forward-pass-trained adapter under a first-order classifier.

One adapter set, shared by all tasks, is trained with the trial's (forward-pass) optimizer; a
linear classifier over all seen classes is trained with FO-SGD on the same batch in the same
step. The adapter's tensors do not require grad, so the classifier's backward stops at the
features: the memory of backpropagation is that of one linear layer. The logits of earlier
tasks' classes are masked out of the training loss by default (the paper's text says "as in
the reference code", which is not public); ``mask_old_logits: false`` keeps them, and
finetune takes the same option, so a comparison can change the head's optimizer alone.
"""

from __future__ import annotations

from zeroflow.methods.base import ParamGroup
from zeroflow.methods.finetune import Finetune


class ZOFC(Finetune):
    """Finetune's structure (one adapter set, a growing linear head) with the adapter and the
    classifier in separate groups, and earlier tasks' logits masked in the loss by default."""

    def masks_old_by_default(self) -> bool:
        return True

    def param_groups(self) -> list[ParamGroup]:
        return [
            ParamGroup("adapter", list(self.model.adapter_sets[0].parameters())),
            ParamGroup("classifier", list(self.head.parameters()), optimizer="fo-sgd",
                       lr=self.config.fc_lr),
        ]

    def loss(self, x, y):
        return self.masked_loss(self.head(self.model.features(x, 0)), y)
