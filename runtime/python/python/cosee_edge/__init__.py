"""cosee-edge: early-exit BERT text classification on small CPUs.

A model package (a directory written by ``cosee-tools export``, such as ``models/sst2-minilm-l6``) is loaded once
into an :class:`Engine`; each call classifies one input layer by layer and stops at the first exit whose signal
meets the threshold τ, so the layers after it are never computed::

    from cosee_edge import Engine
    e = Engine("models/sst2-minilm-l6")
    a = e.classify("a tender, funny film")
    a["label"], a["probs"], a["exit_layer"]

Answers are plain dicts with the keys of ``cosee-edge classify --json`` (the same serializer makes both). The engine
is the Rust runtime's; it releases the GIL while it computes, so threads sharing one engine run in parallel.
"""

from __future__ import annotations


class CoseeError(Exception):
    """Base class of every error the runtime raises; the message is the runtime's own."""


class PackageError(CoseeError):
    """The model package cannot be loaded: a missing, truncated or altered file, a bad manifest, a bad graph."""


class InputError(CoseeError, ValueError):
    """An input the model cannot take: empty, whitespace only, a pair for a single-text model or the reverse."""


class SettingError(CoseeError, ValueError):
    """A setting out of range (threshold, signal, budget_ms, percentile), named as the keyword argument."""


from ._native import Engine, __version__, _register_errors  # noqa: E402

_register_errors(CoseeError, PackageError, InputError, SettingError)
del _register_errors

__all__ = ["Engine", "CoseeError", "PackageError", "InputError", "SettingError", "__version__"]
