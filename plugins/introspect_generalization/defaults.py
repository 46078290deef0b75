"""Plain values shared by the method and the command (torch-free: ``introspect generalization --help``
imports no torch)."""

#: The classifiers, by name.
CLASSIFIERS = ("softmax", "svm")

__all__ = ["CLASSIFIERS"]
