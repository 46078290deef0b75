"""introspect_train: the paper's training recipe as a command (Zeiler & Fergus 2014, Sec. 3).

``introspect train --arch zfnet DATA`` trains on an image folder (one subfolder per class) or on a
folder of Fashion-MNIST IDX files (read through ``torchvision.datasets.FashionMNIST``), with SGD,
momentum 0.9, mini-batches of 128, learning rate 1e-2 lowered by hand (``--lr-steps``, or ``--lr``
when resuming) or on a plateau (``--plateau``), dropout 0.5 in the fully connected layers, weights
from N(0, ``--init-std``) and zero biases, filter RMS renormalization to ``--filter-radius`` after each
step, random crops and horizontal flips. One introspect checkpoint per epoch; ``--resume`` continues
from one with the same optimizer state. The paper's Table 3 ablations are options: ``--widths``,
``--fc``, ``--no-lrn``, ``--drop-layers``.

Python API: ``introspect.train(arch, data, *, out=..., epochs=..., resume=...)`` (registered through
``register_methods``), the whole run the command makes; the recipe's pieces are in
:mod:`introspect.training`.
"""
from __future__ import annotations

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("train", "introspect.plugin:train",
             "Train a network with the paper's recipe, a checkpoint per epoch (Sec. 3)")


@hookimpl
def register_commands(cli):
    from introspect_train.command import train_command

    cli.add_command(train_command)


__all__ = ["register_methods", "register_commands"]
