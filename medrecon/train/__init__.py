"""Training medrecon's networks (``medrecon train``).

* :mod:`.loop` - a generic loop (:func:`~.loop.fit`, :class:`~.loop.LoopConfig`)
  any network can use: AMP bf16, channels-last, compile, accumulation, DDP, resume.
* :mod:`.data` - datasets (phantoms, MSD, nnU-Net raw, plain pairs) on the model grid.
* :mod:`.sampler` - slice-stack and patch batches cut and augmented on the device.
* :mod:`.segtrain` - :func:`~.segtrain.train_segmenter` and :class:`~.segtrain.TrainConfig`.
"""

from medrecon.train.loop import LoopConfig, fit
from medrecon.train.segtrain import TrainConfig, train_segmenter

__all__ = ["LoopConfig", "TrainConfig", "fit", "train_segmenter"]
