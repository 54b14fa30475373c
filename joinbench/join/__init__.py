"""JoIN (Shah et al., "Joint GANs Inversion for Intrinsic Image Decomposition") inside joinbench.

* :mod:`joinbench.join.losses` -- per-image perceptual (LPIPS-VGG), pixel and noise terms.
* :mod:`joinbench.join.regularisers` -- latent regularisers (none, in-domain, kNN, kNN hinge)
  and the chunked nearest-neighbour search.
* :mod:`joinbench.join.stage1` -- batched joint inversion of the GAN bank (stage 1).

The registered methods (``join-s1`` and its ablations) live in :mod:`joinbench.methods.join`.
"""
from .stage1 import JointInverter, Stage1Config, Stage1Result, lr_ramp

__all__ = ["JointInverter", "Stage1Config", "Stage1Result", "lr_ramp"]
