"""The surface a plugin may import: everything of introspect that is a plugin's business, in one place.

A plugin (bundled or third-party) imports from this module and from the public ``introspect``
package (``introspect.__all__``), nothing else of introspect, and never another plugin's modules;
``tests/test_plugin_surface.py`` walks ``plugins/`` and fails on any other import. A plugin that
uses another plugin's method asks for it by name (:func:`require_method`), so a missing plugin is a
one-line error, not an ``AttributeError``.

Names are loaded on first use, so importing this module (as every plugin's ``__init__`` does) costs
nothing until a command or method runs::

    from introspect.plugin import hookimpl, attach, resolve_layer, Result, Progress

Groups (see ``__all__``):

* **plugin hooks**: ``hookimpl``, ``IntrospectError``, ``closest`` (did-you-mean), ``require_method``;
  ``lazy_exports`` and ``lazy_function`` (names and builders imported on first use, so a plugin's
  ``__init__`` imports no torch);
* **layers**: ``resolve_layer``, ``layer_names``, ``aliases``, ``alias_of``, ``conv_layers``,
  ``last_conv_layer``, ``receptive_field``, ``Field``;
* **hooks on a model**: ``attach``, ``eval_mode``, ``apply_rule``, ``RULES``, ``Rule``, ``choice_note``,
  ``parse_activation_rules``;
* **the deconvnet projection primitive**: ``Deconvnet``, ``Frame``, ``project_map``, ``layer_field``,
  ``strongest``, ``cut_windows``, ``readable_errors``, ``PROJECTION_MODES``, ``PROJECTION_METHODS``;
* **occluder sweeps** (incremental inference): ``SweepRunner``, ``Sweep``, ``prepare_engine``,
  ``auto_batch_size``, ``AUTO_BATCH_BYTES``;
* **several processes** (``torchrun``): ``process_group`` (the group ``torchrun`` asked for),
  ``launched_world``, ``group_of``, ``Group`` (``rank``, ``world``, ``device``, ``lead``),
  ``check_ranks`` (one failing rank stops every rank with one line), ``all_gather_tensors``,
  ``share_object`` (rank 0's decision on every rank), ``DISTRIBUTED_TIMEOUT``;
* **models**: ``model_device``, ``model_dtype``, ``to_model``, ``refuse_diverged``, ``meta_of``, ``ModelMeta``,
  ``ArchSpec``, ``load_model``, ``get_arch``, ``resolve_device``, ``CHECKPOINT_FORMAT``;
* **images and occluders**: ``IMAGENET_MEAN``, ``IMAGENET_STD``, ``Preprocess``, ``ImageFolderDataset``, ``read_image``,
  ``IMAGE_EXTENSIONS``, ``image_batch``, ``FILLS``, ``fill_image``;
* **data sets** (one way to stream one): ``dataset_batches`` (a data set or an ``(N, C, H, W)`` tensor
  in batches: workers, ``limit``, ``indices``), ``dataset_size``, ``dataset_image``;
* **results and progress**: ``Result``, ``Progress``, ``report_progress``, ``counted``, ``output_folder``,
  ``written``; in notebooks: ``Shown`` (short repr, ``figure()``, ``_repr_png_``), ``drawn_once``, ``to_pil``,
  ``shape_text``, ``short_list``, ``notebook_progress``;
* **classes**: ``resolve_target``, ``resolve_targets`` (``--target`` by index or name, one resolver);
* **command line**: ``model_options`` (``--arch``, ``--weights``, ``--arch-arg``...), ``model_and_inputs``,
  ``model_settings``, ``parse_arch_args``, ``output_options``, ``open_model``, ``open_images``,
  ``open_dataset`` (a ``--data`` folder as a data set for the model), ``data_folder`` (``--data`` or
  the bundled images),
  ``bundled_image_dir``, ``emit``, ``emit_result``, ``note``, ``PhaseBars``;
* **pictures and output files**: ``OutputDir``, ``save_png``, ``jsonable``, ``csv_text``,
  ``check_output_folder``, ``check_run_folder``, ``is_output_folder``, ``read_manifest``, ``grid``,
  ``to_uint8``, ``colormap``, ``heatmap_overlay``, ``with_colorbar``, ``draw_boxes``, ``line_plot``,
  ``table_image``;
* **training** (the paper's recipe as a library): ``train`` (a whole run), ``TrainResult``,
  ``TrainConfig``, ``train_model``, ``build_model``, ``load_data``, ``init_paper``,
  ``tie_input_channels``, ``channel_stats``, ``split``, ``fashion_mnist``, ``image_folder``,
  ``is_idx_folder``, ``read_training_checkpoint``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name on this surface -> (module, name there)
_SOURCES: dict[str, tuple[str, str]] = {}


def _add(module: str, *names: str, **renamed: str) -> None:
    for name in names:
        _SOURCES[name] = (module, name)
    for name, original in renamed.items():
        _SOURCES[name] = (module, original)


_add("introspect.hookspecs", "hookimpl")
_add("introspect.errors", "IntrospectError", "closest")
_add("introspect.manager", "require_method")
_add("introspect.lazy", "lazy_exports", "lazy_function")
_add("introspect.core.layers", "resolve_layer", "layer_names", "aliases", "alias_of", "display_name", "check_channels",
     "conv_layers", "last_conv_layer", "receptive_field", "Field")
_add("introspect.core.attach", "attach", "eval_mode")
_add("introspect.core.rules", "apply_rule", "RULES", "Rule", "choice_note", "parse_activation_rules")
_add("introspect.core.deconvnet", "Deconvnet", "Frame", "project_map", "layer_field", "strongest", "cut_windows",
     "readable_errors")
_add("introspect.core.choices", PROJECTION_MODES="MODES", PROJECTION_METHODS="METHODS")
_add("introspect.core.sweep", "SweepRunner", "Sweep", "prepare_engine", "auto_batch_size", "AUTO_BATCH_BYTES")
_add("introspect.core.results", "Result", "Progress", "counted", "output_folder", "written", report_progress="report")
_add("introspect.core.display", "Shown", "drawn_once", "to_pil", "shape_text", "short_list", "notebook_progress")
_add("introspect.core.distributed", "Group", "launched_world", "group_of", "process_group", "check_ranks",
     "all_gather_tensors", "share_object", DISTRIBUTED_TIMEOUT="DEFAULT_TIMEOUT")
_add("introspect.core.device", "model_device", "model_dtype", "to_model", "refuse_diverged")
_add("introspect.models", "meta_of", "ModelMeta", "ArchSpec", "get_arch")
_add("introspect.models.load", "load_model", "resolve_device", CHECKPOINT_FORMAT="FORMAT")
_add("introspect.images", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "ImageFolderDataset", "read_image",
     "IMAGE_EXTENSIONS", "image_batch", "dataset_batches", "dataset_size", "dataset_image")
_add("introspect.occluders", "FILLS", "fill_image")
_add("introspect.cli", "model_options", "output_options", "open_model", "open_images", "bundled_image_dir", "emit",
     "note", "PhaseBars", "emit_result", "model_and_inputs", "model_settings", "parse_arch_args", "data_folder",
     "open_dataset")
_add("introspect.core.targets", "resolve_target", "resolve_targets")
_add("introspect.output", "OutputDir", "save_png", "jsonable", "csv_text", "check_run_folder", "is_output_folder",
     "read_manifest", "check_output_folder")
_add("introspect.render", "grid", "to_uint8", "colormap", "heatmap_overlay", "with_colorbar", "draw_boxes")
_add("introspect.plot", "line_plot", "table_image")
_add("introspect.training", "TrainConfig", "train_model", "init_paper", "tie_input_channels", "channel_stats",
     "split", "fashion_mnist", "image_folder", "is_idx_folder", "read_training_checkpoint", "train", "TrainResult",
     "build_model", "load_data")

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'introspect.plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(source[0]), source[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs (a test checks they match _SOURCES)
    from introspect.cli import PhaseBars as PhaseBars
    from introspect.cli import bundled_image_dir as bundled_image_dir
    from introspect.cli import data_folder as data_folder
    from introspect.cli import emit as emit
    from introspect.cli import emit_result as emit_result
    from introspect.cli import model_and_inputs as model_and_inputs
    from introspect.cli import model_options as model_options
    from introspect.cli import model_settings as model_settings
    from introspect.cli import note as note
    from introspect.cli import open_dataset as open_dataset
    from introspect.cli import open_images as open_images
    from introspect.cli import open_model as open_model
    from introspect.cli import output_options as output_options
    from introspect.cli import parse_arch_args as parse_arch_args
    from introspect.core.attach import attach as attach
    from introspect.core.attach import eval_mode as eval_mode
    from introspect.core.choices import METHODS as PROJECTION_METHODS  # noqa: F401  (in __all__)
    from introspect.core.choices import MODES as PROJECTION_MODES  # noqa: F401  (in __all__)
    from introspect.core.deconvnet import Deconvnet as Deconvnet
    from introspect.core.deconvnet import Frame as Frame
    from introspect.core.deconvnet import cut_windows as cut_windows
    from introspect.core.deconvnet import layer_field as layer_field
    from introspect.core.deconvnet import project_map as project_map
    from introspect.core.deconvnet import readable_errors as readable_errors
    from introspect.core.deconvnet import strongest as strongest
    from introspect.core.device import model_device as model_device
    from introspect.core.device import model_dtype as model_dtype
    from introspect.core.device import refuse_diverged as refuse_diverged
    from introspect.core.device import to_model as to_model
    from introspect.core.display import Shown as Shown
    from introspect.core.display import drawn_once as drawn_once
    from introspect.core.display import notebook_progress as notebook_progress
    from introspect.core.display import shape_text as shape_text
    from introspect.core.display import short_list as short_list
    from introspect.core.display import to_pil as to_pil
    from introspect.core.distributed import DEFAULT_TIMEOUT as DISTRIBUTED_TIMEOUT  # noqa: F401  (in __all__)
    from introspect.core.distributed import Group as Group
    from introspect.core.distributed import all_gather_tensors as all_gather_tensors
    from introspect.core.distributed import check_ranks as check_ranks
    from introspect.core.distributed import group_of as group_of
    from introspect.core.distributed import launched_world as launched_world
    from introspect.core.distributed import process_group as process_group
    from introspect.core.distributed import share_object as share_object
    from introspect.core.layers import Field as Field
    from introspect.core.layers import alias_of as alias_of
    from introspect.core.layers import aliases as aliases
    from introspect.core.layers import check_channels as check_channels
    from introspect.core.layers import conv_layers as conv_layers
    from introspect.core.layers import display_name as display_name
    from introspect.core.layers import last_conv_layer as last_conv_layer
    from introspect.core.layers import layer_names as layer_names
    from introspect.core.layers import receptive_field as receptive_field
    from introspect.core.layers import resolve_layer as resolve_layer
    from introspect.core.results import Progress as Progress
    from introspect.core.results import Result as Result
    from introspect.core.results import counted as counted
    from introspect.core.results import output_folder as output_folder
    from introspect.core.results import report as report_progress  # noqa: F401  (in __all__)
    from introspect.core.results import written as written
    from introspect.core.rules import RULES as RULES
    from introspect.core.rules import Rule as Rule
    from introspect.core.rules import apply_rule as apply_rule
    from introspect.core.rules import choice_note as choice_note
    from introspect.core.rules import parse_activation_rules as parse_activation_rules
    from introspect.core.sweep import AUTO_BATCH_BYTES as AUTO_BATCH_BYTES
    from introspect.core.sweep import Sweep as Sweep
    from introspect.core.sweep import SweepRunner as SweepRunner
    from introspect.core.sweep import auto_batch_size as auto_batch_size
    from introspect.core.sweep import prepare_engine as prepare_engine
    from introspect.core.targets import resolve_target as resolve_target
    from introspect.core.targets import resolve_targets as resolve_targets
    from introspect.errors import IntrospectError as IntrospectError
    from introspect.errors import closest as closest
    from introspect.hookspecs import hookimpl as hookimpl
    from introspect.images import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
    from introspect.images import IMAGENET_MEAN as IMAGENET_MEAN
    from introspect.images import IMAGENET_STD as IMAGENET_STD
    from introspect.images import ImageFolderDataset as ImageFolderDataset
    from introspect.images import Preprocess as Preprocess
    from introspect.images import dataset_batches as dataset_batches
    from introspect.images import dataset_image as dataset_image
    from introspect.images import dataset_size as dataset_size
    from introspect.images import image_batch as image_batch
    from introspect.images import read_image as read_image
    from introspect.lazy import lazy_exports as lazy_exports
    from introspect.lazy import lazy_function as lazy_function
    from introspect.manager import require_method as require_method
    from introspect.models import ArchSpec as ArchSpec
    from introspect.models import ModelMeta as ModelMeta
    from introspect.models import get_arch as get_arch
    from introspect.models import meta_of as meta_of
    from introspect.models.load import FORMAT as CHECKPOINT_FORMAT  # noqa: F401  (in __all__)
    from introspect.models.load import load_model as load_model
    from introspect.models.load import resolve_device as resolve_device
    from introspect.occluders import FILLS as FILLS
    from introspect.occluders import fill_image as fill_image
    from introspect.output import OutputDir as OutputDir
    from introspect.output import check_output_folder as check_output_folder
    from introspect.output import check_run_folder as check_run_folder
    from introspect.output import csv_text as csv_text
    from introspect.output import is_output_folder as is_output_folder
    from introspect.output import jsonable as jsonable
    from introspect.output import read_manifest as read_manifest
    from introspect.output import save_png as save_png
    from introspect.plot import line_plot as line_plot
    from introspect.plot import table_image as table_image
    from introspect.render import colormap as colormap
    from introspect.render import draw_boxes as draw_boxes
    from introspect.render import grid as grid
    from introspect.render import heatmap_overlay as heatmap_overlay
    from introspect.render import to_uint8 as to_uint8
    from introspect.render import with_colorbar as with_colorbar
    from introspect.training import TrainConfig as TrainConfig
    from introspect.training import TrainResult as TrainResult
    from introspect.training import build_model as build_model
    from introspect.training import channel_stats as channel_stats
    from introspect.training import fashion_mnist as fashion_mnist
    from introspect.training import image_folder as image_folder
    from introspect.training import init_paper as init_paper
    from introspect.training import is_idx_folder as is_idx_folder
    from introspect.training import load_data as load_data
    from introspect.training import read_training_checkpoint as read_training_checkpoint
    from introspect.training import split as split
    from introspect.training import tie_input_channels as tie_input_channels
    from introspect.training import train as train
    from introspect.training import train_model as train_model
