"""The paper's training recipe as a library (Zeiler & Fergus 2014, Sec. 3).

- :mod:`introspect.training.recipe`: the hyper-parameters, :class:`TrainConfig`, the initialization,
  the filter renormalization, the learning-rate schedule and :func:`build_model`;
- :mod:`introspect.training.data`: data sets (Fashion-MNIST IDX files, image folders), splits,
  channel statistics and the crops and flips of :class:`BatchTransform`;
- :mod:`introspect.training.loop`: :func:`train_model`, the epoch loop writing a checkpoint per epoch;
- :mod:`introspect.training.run`: :func:`train` (``introspect.train``), a whole run from a data
  folder, with the checks a resumed run needs.
"""
from __future__ import annotations

from introspect.training.data import (
    IDX_FILES,
    BatchTransform,
    TensorImageDataset,
    channel_stats,
    fashion_mnist,
    image_folder,
    is_idx_folder,
    load_data,
    split,
)
from introspect.training.loop import TrainResult, evaluate, filter_grid, read_training_checkpoint, train_model
from introspect.training.recipe import (
    PAPER_BATCH_SIZE,
    PAPER_FILTER_RADIUS,
    PAPER_INIT_STD,
    PAPER_LR,
    PAPER_MOMENTUM,
    LRSchedule,
    TrainConfig,
    build_model,
    init_paper,
    renormalize_filters,
    tie_input_channels,
)
from introspect.training.run import train

__all__ = [
    "PAPER_LR", "PAPER_MOMENTUM", "PAPER_BATCH_SIZE", "PAPER_INIT_STD", "PAPER_FILTER_RADIUS", "IDX_FILES",
    "renormalize_filters", "init_paper", "tie_input_channels", "LRSchedule", "TrainConfig", "build_model",
    "TensorImageDataset", "is_idx_folder", "fashion_mnist", "image_folder", "split", "load_data", "channel_stats",
    "BatchTransform", "TrainResult", "evaluate", "filter_grid", "train_model", "read_training_checkpoint", "train",
]
