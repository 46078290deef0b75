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
     "note", "PhaseBars", "emit_result", "model_and_inputs", "model_settings", "parse_arch_args")
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


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    pass
