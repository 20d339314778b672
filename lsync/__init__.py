"""lsync: audio-driven lip-sync in the LatentSync style.

Four stages, each reading one manifest directory and writing one:
``preprocess`` -> ``train syncnet`` -> ``train unet`` -> ``infer``.
"""

__version__ = "0.1.0"
