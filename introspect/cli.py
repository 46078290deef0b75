"""The ``introspect`` command line: a click group whose analysis commands come from plugins.

Shared options for every analysis command: ``--arch``, ``--device``, ``--trust-pickle``
(:func:`model_options`) and ``--out``, ``--json`` (:func:`output_options`). Errors a user can fix
(:class:`~introspect.errors.IntrospectError`) print as one line with exit code 1, no traceback.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from introspect import __version__
from introspect.errors import IntrospectError, IntrospectWarning, Terminated, os_error_text, raise_terminated

if TYPE_CHECKING:
    import torch

#: Exit code of an unexpected error (a bug to report), distinct from user errors (1) and usage (2).
EXIT_UNEXPECTED = 70


class UnexpectedError(click.ClickException):
    """The last line of defence: an exception no check foresaw, shown as one line."""

    exit_code = EXIT_UNEXPECTED


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _debugging(ctx) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("INTROSPECT_DEBUG", "") not in ("", "0")


class IntrospectGroup(click.Group):
    """A group that turns every error into one clean line (``Error: ...``): user errors exit 1,
    unexpected ones :data:`EXIT_UNEXPECTED` (``--debug`` or ``INTROSPECT_DEBUG=1`` shows the
    traceback instead); SIGTERM/SIGHUP exit ``128 + signal`` after cleaning up."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning  # introspect's warnings as one "note:" line
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Terminated as exc:
            note(f"Aborted: {exc}")
            ctx.exit(128 + exc.signum)
        except IntrospectError as exc:
            raise click.ClickException(str(exc)) from None
        except MemoryError:
            raise click.ClickException("out of memory; use a smaller --batch-size or a smaller input") from None
        except OSError as exc:
            if _debugging(ctx):
                raise
            what, fix = os_error_text(exc)
            raise click.ClickException(f"{what}; {fix or 'check the path and try again'}") from None
        except Exception as exc:
            if _is_gpu_out_of_memory(exc):
                raise click.ClickException(
                    "the GPU ran out of memory; use a smaller --batch-size or --device cpu"
                ) from None
            if _debugging(ctx):
                raise
            raise UnexpectedError(
                f"unexpected {type(exc).__name__}: {_first_line(exc)}; run with --debug (or INTROSPECT_DEBUG=1) "
                "for the traceback, and report it"
            ) from None


def _is_gpu_out_of_memory(exc: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError``, checked without importing torch (start-up speed): when torch
    was never imported, no torch error can have been raised."""
    torch = sys.modules.get("torch")
    error = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return isinstance(error, type) and isinstance(exc, error)


# --------------------------------------------------------------------------------------------------
# shared options and helpers for commands (plugins use these)
# --------------------------------------------------------------------------------------------------
_MODEL_KEY = "introspect.model"


def _remember(ctx: click.Context, param: click.Parameter, value):
    """Keep ``--weights`` / ``--arch-arg`` in the context for :func:`open_model` (commands need no
    parameters for them)."""
    if param.name == "arch_args":
        value = parse_arch_args(value)
    ctx.meta.setdefault(_MODEL_KEY, {})[param.name] = value
    return value


def parse_arch_args(pairs) -> dict:
    """``("aux_logits=true", "num_classes=10")`` -> ``{"aux_logits": True, "num_classes": 10}`` (values
    read as JSON, else kept as text)."""
    import json as _json

    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--arch-arg")
        try:
            out[key.strip()] = _json.loads(value)
        except _json.JSONDecodeError:
            out[key.strip()] = value
    return out


def model_settings() -> dict:
    """``{"weights": NAME | None, "arch_args": dict}`` given to the running command."""
    ctx = click.get_current_context(silent=True)
    found = dict(ctx.meta.get(_MODEL_KEY, {})) if ctx is not None else {}
    return {"weights": found.get("weights"), "arch_args": dict(found.get("arch_args") or {})}


def model_options(f):
    """``--arch``, ``--weights``, ``--arch-arg``, ``--device``, ``--trust-pickle`` (passed as ``arch``,
    ``device``, ``trust_pickle``; ``--weights`` and ``--arch-arg`` reach :func:`open_model` through the
    context, see :func:`model_settings`)."""
    f = click.option("--arch-arg", "arch_args", multiple=True, metavar="KEY=VALUE", expose_value=False,
                     callback=_remember,
                     help="Builder argument of --arch, value as JSON (repeatable), e.g. --arch-arg aux_logits=true.")(f)
    f = click.option("--weights", default=None, metavar="NAME", expose_value=False, callback=_remember,
                     help="Pretrained weights of --arch: DEFAULT, a name such as IMAGENET1K_V2, or the full "
                          "ResNet50_Weights.IMAGENET1K_V2 (see `introspect models`). Class names and preprocessing "
                          "come with them; the positional arguments are then images.")(f)
    f = click.option("--trust-pickle", is_flag=True,
                     help="Allow loading a pickled whole model; unpickling runs code, so only for files you trust.")(f)
    f = click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
                     help="Where to run: auto picks CUDA when available.")(f)
    f = click.option("--arch", default=None, metavar="NAME",
                     help="Architecture of a plain state dict / safetensors file (see `introspect models`), "
                          "or, without MODEL, build it with random weights.")(f)
    return f


def output_options(default_out: str):
    """``--out DIR`` (default ``default_out``) and ``--json`` (print the result as JSON on stdout)."""
    def decorate(f):
        f = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)
        f = click.option("--out", type=click.Path(path_type=Path), default=Path(default_out), show_default=True,
                         help="Folder for the PNG, .npy and JSON outputs (created if needed).")(f)
        return f
    return decorate


def bundled_image_dir() -> Path:
    return Path(__file__).resolve().parent / "data" / "images"


def bundled_image() -> Path:
    """The first bundled test image."""
    images = sorted(p for p in bundled_image_dir().glob("*.png"))
    if not images:
        raise IntrospectError("no IMAGE given and no bundled image installed; pass an IMAGE file")
    return images[0]


def note(message: str) -> None:
    """A message for the person at the terminal (stderr, so ``--json`` output stays clean)."""
    click.echo(message, err=True)


_MODEL_SUFFIXES = {".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".pkl", ".tar"}


def model_and_inputs(model_path, inputs=()):
    """Split a command's positional arguments: with ``--weights`` there is no model file, so MODEL is
    the first input (image, folder); a model file given with ``--weights`` is one line (they conflict).

    Returns:
        tuple: ``(model_path or None, [inputs...])``.
    """
    inputs = [p for p in inputs if p is not None]
    weights = model_settings()["weights"]
    if weights is None or model_path is None:
        return model_path, inputs
    if Path(model_path).suffix.lower() in _MODEL_SUFFIXES:
        raise IntrospectError(f"--weights {weights} and the model file {model_path} conflict: with --weights the "
                              "arguments are images; drop the model file or --weights")
    return None, [Path(model_path), *inputs]


def open_model(model_path, arch, device, trust_pickle, *, diverged_ok: bool = False) -> torch.nn.Module:
    """Load MODEL for a command; without MODEL and --arch, the bundled trained ZFNet (and say so). With
    ``--weights``, ``--arch`` built with those pretrained weights (``--arch-arg`` builder arguments).
    A model with NaN or infinite weights is refused in one line unless ``diverged_ok`` (listing
    layers needs no numbers)."""
    from introspect.images import IMAGE_EXTENSIONS
    from introspect.models import load_model
    from introspect.models.load import bundled_checkpoint

    settings = model_settings()
    weights, arch_args = settings["weights"], settings["arch_args"]
    if weights is not None:
        if model_path is not None:
            model_and_inputs(model_path)  # a model file: the conflict line
            raise IntrospectError(f"--weights {weights} and MODEL {model_path} conflict; give one or the other")
        if arch is None:
            raise IntrospectError(f"--weights {weights} needs --arch NAME (`introspect models` lists each "
                                  "architecture's weights)")
        note(f"using {arch} with pretrained weights {weights}")
        return load_model(None, arch, device=device, weights=weights, arch_kwargs=arch_args)
    if model_path is not None and Path(model_path).suffix.lower() in IMAGE_EXTENSIONS:
        raise IntrospectError(
            f"MODEL {model_path} looks like an image; give the model file first (introspect COMMAND MODEL IMAGE), "
            "or leave both out to use the bundled model and image"
        )
    if model_path is None and arch is None:
        note(f"no MODEL given: using the bundled ZFNet trained on Fashion-MNIST ({bundled_checkpoint().name})")
    elif model_path is None:
        note(f"no MODEL given: using architecture {arch!r} with random weights")
    from introspect.core.device import refuse_diverged

    net = load_model(model_path, arch, device=device, trust_pickle=trust_pickle, arch_kwargs=arch_args)
    if diverged_ok:
        return net
    refuse_diverged(net)  # NaN/inf weights: every number a command would print is NaN
    return net


def open_images(model: torch.nn.Module, paths) -> tuple[torch.Tensor, list[Path]]:
    """Read IMAGE files preprocessed for ``model`` (the bundled image when none is given)."""
    from introspect.core.device import model_device
    from introspect.images import Preprocess, load_images
    from introspect.models import meta_of

    paths = [Path(p) for p in paths] if paths else []
    if not paths:
        paths = [bundled_image()]
        note(f"no IMAGE given: using the bundled image {paths[0].name}")
    pre = Preprocess.from_meta(meta_of(model))
    device = model_device(model)
    return load_images(paths, pre).to(device), paths


def data_folder(folder) -> Path:
    """``--data FOLDER``, or the bundled images (with a note saying so) when it is not given."""
    if folder is not None:
        return Path(folder)
    folder = bundled_image_dir()
    note(f"no --data given: using the bundled images in {folder}")
    return folder


def open_dataset(model: torch.nn.Module, folder):
    """The images of ``folder`` (flat or one subfolder per class) as an ``ImageFolderDataset``
    preprocessed for ``model``; hidden files and folders introspect wrote are skipped."""
    from introspect.images import ImageFolderDataset, Preprocess
    from introspect.models import meta_of

    return ImageFolderDataset(folder, Preprocess.from_meta(meta_of(model)))


class PhaseBars:
    """Progress bars on stderr, one per phase of a long computation, for methods that report
    ``progress(phase, done, total)``: pass the object as ``progress`` and call :meth:`close` at the end.

    Args:
        label (callable | None): ``label(phase) -> str``, the text beside each bar; default the phase.

    It is the one place where progress becomes click bars: library functions only call their
    ``progress`` callback (:data:`introspect.core.results.Progress`). Used as a context manager, the
    last bar is closed on exit.

    Example:
        >>> with PhaseBars(lambda phase: f"{phase} conv5") as bars:
        ...     result = top_k(model, data, "conv5", progress=bars)
    """

    def __init__(self, label=None):
        self.label = label or str
        self.bar: Any = None
        self.phase: str | None = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase, self.done = phase, 0
            self.bar = click.progressbar(length=total, label=self.label(phase), file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def emit(obj, as_json: bool, text: str | None = None) -> None:
    """Print ``obj`` as JSON (``--json``) or ``text`` for a person."""
    if as_json:
        from introspect.output import jsonable

        click.echo(json.dumps(jsonable(obj), indent=2, default=_json_default, allow_nan=False))
    elif text is not None:
        click.echo(text)


def emit_result(result, out, as_json: bool, lines: Callable[[dict], list[str]] | None = None, *,
                extra: dict | None = None, files: list[Path] | None = None) -> dict:
    """Save a method's result (the :class:`~introspect.core.results.Result` protocol) and print it.

    ``result.save(out)`` writes the files into the ``--out`` folder (``files``: what an earlier
    ``result.save(od)`` into an ``OutputDir`` opened before the long work returned; then nothing
    is saved here). The summary is ``result.to_dict()`` with ``extra``, ``out`` and ``files``
    (paths relative to the folder). ``--json`` prints the summary; otherwise ``lines(summary)``
    and ``wrote N files to OUT``. Returns the summary.
    """
    folder = Path(out)
    if files is None:
        files = result.save(out)
    summary = result.to_dict() | (extra or {}) | {
        "out": str(folder), "files": sorted(str(Path(p).relative_to(folder)) for p in files)}
    text = (lines(summary) if lines is not None else []) + [f"wrote {len(files)} files to {folder}"]
    emit(summary, as_json, "\n".join(text))
    return summary


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# --------------------------------------------------------------------------------------------------
# core commands
# --------------------------------------------------------------------------------------------------
@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_command(as_json):
    """List installed plugins: name, version, distribution, what each registers, load errors."""
    from introspect.manager import get_plugin_manager

    pm = get_plugin_manager()
    pm.methods()
    pm.note_architectures()  # imports no torch: methods register by import path, torchvision's zoo is skipped
    rows = [info.to_dict() for info in pm.infos.values()]
    lines = []
    for r in rows:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(r["registers"].items())) or "-"
        status = f"ERROR {r['error']}" if r["error"] else f"inactive: {r['inactive']}" if r.get("inactive") else "ok"
        lines.append(f"{r['name']:<16} {r['distribution'] or '-'} {r['version'] or ''}  [{status}]\n    {what}")
    emit(rows, as_json, "\n".join(lines))


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_command(as_json):
    """List the registered architectures (usable with --arch) and, for each, its pretrained weights
    (usable with --weights) with their ImageNet top-1 accuracy and number of parameters."""
    from introspect.models import architectures
    from introspect.models.weights import list_weights

    archs = architectures()
    rows: list[dict[str, Any]] = [
        {"name": a.name, "description": a.description, "input_size": list(a.input_size), "plugin": a.plugin,
             "weights": list_weights(a.name) if a.plugin == "builtin_models" else []}
            for a in archs.values()]
    lines = []
    for r in rows:
        lines.append(f"{r['name']:<28} {r['description']}")
        for w in r["weights"]:
            acc = f"top-1 {w['acc@1']:.2f}%" if w["acc@1"] is not None else "top-1 -"
            params = f"{w['num_params'] / 1e6:.1f}M params" if w["num_params"] else ""
            lines.append(f"    --weights {w['name']:<24} {acc:<14} {params}{'  (DEFAULT)' if w['default'] else ''}")
    emit(rows, as_json, "\n".join(lines))


@click.command("layers")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def layers_command(model, arch, device, trust_pickle, as_json):
    """List every layer of MODEL: name, alias, type, output shape, receptive field size and stride.

    MODEL may be left out when --arch is given (random weights), e.g. `introspect layers --arch zfnet`.
    """
    from introspect.core.layers import layer_table
    from introspect.models import meta_of

    model, _ = model_and_inputs(model)
    net = open_model(model, arch, device, trust_pickle, diverged_ok=True)
    rows = layer_table(net, meta_of(net).input_size)
    if as_json:
        emit([r.to_dict() for r in rows], True)
        return
    header = f"{'layer':<22} {'alias':<7} {'type':<18} {'output':<16} {'rf':>9} {'stride':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r.output_shape)) if r.output_shape else "-"
        rf = "image" if r.is_global else (f"{r.rf_size[0]}x{r.rf_size[1]}" if r.rf_size else "-")
        stride = "-" if r.is_global or not r.rf_stride else str(r.rf_stride[0])
        lines.append(f"{r.name:<22} {r.alias or '':<7} {r.type:<18} {shape:<16} {rf:>9} {stride:>7}")
    click.echo("\n".join(lines))


def build_cli() -> click.Group:
    """The ``introspect`` group with the core commands and every plugin's commands."""
    from introspect.manager import get_plugin_manager

    @click.group(cls=IntrospectGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="introspect")
    @click.option("--debug", is_flag=True,
                  help="Show the full traceback of an unexpected error (also INTROSPECT_DEBUG=1).")
    def cli(debug):
        """Look inside trained convnets the way Zeiler & Fergus did (ECCV 2014)."""

    for cmd in (plugins_command, models_command, layers_command):
        cli.add_command(cmd)
    try:
        pm = get_plugin_manager()
    except IntrospectError as exc:
        note(f"warning: {exc}")
        return cli
    pm.add_commands(cli)
    for line in pm.load_errors():
        note(f"warning: {line}")
    return cli


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, IntrospectWarning):
        note(f"note: {message}")
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv=None) -> None:
    """Console-script entry point. SIGTERM and SIGHUP clean up like Ctrl-C (output folders, hooks)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, raise_terminated)
    cli = build_cli()
    cli.main(args=argv, prog_name="introspect")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])


__all__ = [
    "IntrospectGroup", "model_options", "output_options", "bundled_image_dir", "bundled_image", "note",
    "open_model", "open_images", "PhaseBars", "emit", "emit_result", "build_cli", "main", "model_and_inputs",
    "model_settings", "parse_arch_args", "data_folder", "open_dataset",
]
