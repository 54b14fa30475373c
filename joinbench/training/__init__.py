"""The training wing: what every training (GAN priors, encoders, the U-Net) shares.

GPU time comes in short windows, so every training must make each minute count, stop on
time with a checkpoint, resume exactly, and continue shipped weights. That machinery lives
here once, each module with one job:

* :mod:`~joinbench.training.data`: the device-resident :class:`DataPool` of rendered training
  images (drawn without host syncs, re-rendered a fraction at a time, resumable from seeds),
  the plain ``TrainStream``, ``create_training_dataset``, ``encode_batch``;
* :mod:`~joinbench.training.clock`: ``TrainClock`` (images, steps, wall time, ``--minutes``,
  Ctrl-C, log and snapshot intervals, ``log.jsonl``, the progress bar);
* :mod:`~joinbench.training.checkpoint`: checkpoints with sha256, atomic swaps, resume checks;
* :mod:`~joinbench.training.sidecar`: ``--init-from`` and the sidecar fields every export
  shares (cumulative images seen and wall time, the per-run ``history``);
* :mod:`~joinbench.training.graphs`: Adam as a function of given gradients and CUDA-graph
  capture of step functions;
* :mod:`~joinbench.training.loop`: the ``Trainer`` protocol and the one training loop;
* :mod:`~joinbench.training.cli`: ``joinbench train prior|encoder|unet``.

A family (``gan.train``, ``join.encoder``, ``baselines.unet``) builds its ``Trainer`` (data,
checkpoint units, one iteration, losses) and runs it with ``TrainingRun.train``.
"""
