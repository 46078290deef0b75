"""The hooks a plugin can implement.

A plugin is a module (or object) with functions decorated by ``@introspect.hookimpl``, found through
the entry-point group ``introspect``::

    [project.entry-points.introspect]
    myplugin = "my_introspect_plugin"

The bundled plugins (``introspect_deconv``, ``introspect_occlusion``...) load through the same group.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("introspect")
hookimpl = pluggy.HookimplMarker("introspect")


@hookspec
def register_methods(register):
    """Contribute analysis methods to the Python API.

    :param register: ``register(name, func, description="")``; call it once per method. ``func`` is
        a plain function ``func(model, images_or_dataset, *, ...)`` (options keyword-only; the
        bundled ``feature_evolution`` takes checkpoints first, the documented exception) returning a
        result with ``to_dict()`` and ``save(out) -> list[Path]`` (:class:`introspect.plugin.Result`);
        it becomes ``introspect.methods()[name]`` and ``introspect.<name>``. A name of the core
        (``load_model``, ``images``, ...) or one another plugin registered first is refused.
        ``func`` may also be an import path ``"package.module:name"`` (then ``description`` is
        required): the module is imported when the method is first used, so listing plugins and
        building the help import no torch.
    :return: nothing; plugins call ``register`` instead of returning lists.
    """


@hookspec
def register_commands(cli):
    """Contribute CLI commands.

    :param cli: the ``click.Group`` of ``introspect``; add commands with ``cli.add_command(cmd)``.
        Use ``model_options`` / ``output_options`` from :mod:`introspect.plugin` for the shared options.
    :return: nothing.
    """


@hookspec
def register_architectures(register):
    """Contribute model architectures usable with ``--arch`` and in checkpoints.

    :param register: ``register(name, builder, description="", input_size=(3, 224, 224),
        mean=IMAGENET_MEAN, std=IMAGENET_STD)``; ``builder(**kwargs)`` returns an ``nn.Module``.
        Register a builder that imports torch when called, not a module-level import.
        ``register.listing`` is True when introspect only lists what plugins register
        (``introspect plugins``, which imports no torch): a plugin may then skip registrations that
        need heavy imports to enumerate.
    :return: nothing.
    """


@hookspec(firstresult=True)
def load_model_file(path, arch, trust_pickle, arch_kwargs):
    """Read a model file of a format this plugin knows.

    :param path: ``pathlib.Path`` of an existing, non-empty file.
    :param arch: the ``--arch`` name given by the user, or None.
    :param trust_pickle: True only when the user allowed unpickling (``--trust-pickle``).
    :param arch_kwargs: builder arguments given by the user (``--arch-arg KEY=VALUE``), a dict.
    :return: ``(nn.Module, ModelMeta | None)`` or an ``nn.Module`` if this plugin read the file,
        ``None`` to let the next plugin try. The first non-None result wins; the built-in reader runs
        last.
    """


@hookspec(firstresult=True)
def find_architecture(name):
    """Find an architecture that is not registered by name, such as a whole family (``timm/<model>``).

    :param name: the ``--arch`` name, not among the registered architectures.
    :return: an :class:`introspect.models.ArchSpec` if this plugin knows ``name``; ``None`` to let
        the next plugin try. Raise :class:`IntrospectError` for a name in this plugin's family that
        does not exist (with the closest names).
    """


@hookspec(firstresult=True)
def load_pretrained(arch, weights, arch_kwargs):
    """Build architecture ``arch`` with its pretrained weights called ``weights`` (``--weights``).

    :param arch: the architecture name (``resnet50``, ``timm/resnet18``).
    :param weights: the weights name as the user gave it (``DEFAULT``, ``IMAGENET1K_V2``...).
    :param arch_kwargs: extra builder arguments (``--arch-arg``), a dict.
    :return: ``(nn.Module, ModelMeta)`` with the class names and preprocessing of the weights, or
        ``None`` when ``arch`` is not this plugin's. The built-in torchvision loader runs last.
    """


__all__ = [
    "hookspec", "hookimpl", "register_methods", "register_commands", "register_architectures", "load_model_file",
    "find_architecture", "load_pretrained",
]
