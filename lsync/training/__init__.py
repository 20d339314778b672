"""The training machinery every lsync trainer shares (SyncNet now, the U-Net next).

* :mod:`lsync.training.loop` - :class:`~lsync.training.loop.Trainer` (the loop) and
  :class:`~lsync.training.loop.LoopConfig` (the ``train:`` section of every preset);
* :mod:`lsync.training.sampling` - real, index-driven epochs split across processes, resumable mid-epoch;
* :mod:`lsync.training.checkpointing` - ``checkpoints/step-NNNNNN/`` directories that resume exactly;
* :mod:`lsync.training.metrics` - ``metrics.jsonl``, the PNG chart, optional TensorBoard;
* :mod:`lsync.training.seeding` - seeds, per-sample generators, RNG state capture and restore;
* :mod:`lsync.training.accelerate_setup` - one ``accelerate.Accelerator`` per run, mixed precision choice.
"""
