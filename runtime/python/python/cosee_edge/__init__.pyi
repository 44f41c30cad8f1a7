"""Type stubs of cosee_edge (the Engine class is compiled; see __init__.py for the module's documentation)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union

__version__: str

Signal = Literal["energy", "entropy", "max_softmax", "patience"]
Text = Union[str, Tuple[str, str]]

class Answer(TypedDict):
    """One classification: the keys of ``cosee-edge classify --json`` (without ``input``)."""

    label: str
    """The predicted label's name."""
    label_index: int
    """Index of ``label`` in ``Engine.labels`` (and in ``probs``)."""
    probs: List[float]
    """softmax of the answering exit's logits, in ``Engine.labels`` order."""
    exit_layer: int
    """The layer at which computation stopped, 1-based; ``num_layers`` when no earlier exit met τ."""
    num_layers: int
    signal: str
    """The exit signal the decision used."""
    threshold: float
    """The τ the decision used."""
    signals: List[Optional[float]]
    """The signal at every executed layer (``None`` for an exit whose logits were not finite)."""
    skipped_exits: List[int]
    """Exits whose logits were NaN or infinite."""
    stage_ms: Dict[str, float]
    """Milliseconds per stage: ``tokenize``, ``embeddings``, ``layer_01``, ``exit_01``, …"""
    total_ms: float
    tokens: int
    """Tokens fed to the model, special tokens included."""
    truncated: bool
    """The input was cut to the package's ``max_seq_len`` tokens."""

class ControllerState(TypedDict):
    """Where the threshold controller stands (``Engine.controller`` with ``budget_ms``)."""

    signal: str
    threshold: float
    """The τ of the next call."""
    rung: int
    """Index of ``threshold`` in ``rungs`` (0 = the most accurate)."""
    rungs: List[float]
    mode: Literal["mains", "battery", "saver"]
    budget_ms: Optional[float]
    percentile: float
    observed_ms: Optional[float]
    """The ``percentile`` of the latencies recorded at the current τ (``None`` before the first)."""

class CoseeError(Exception):
    """Base class of every error the runtime raises; the message is the runtime's own."""

class PackageError(CoseeError):
    """The model package cannot be loaded: a missing, truncated or altered file, a bad manifest, a bad graph."""

class InputError(CoseeError, ValueError):
    """An input the model cannot take: empty, whitespace only, a pair for a single-text model or the reverse."""

class SettingError(CoseeError, ValueError):
    """A setting out of range (threshold, signal, budget_ms, percentile), named as the keyword argument."""

class Engine:
    """A loaded model package: every stage ready to run, built once; share one across threads.

    ``Engine(model)`` answers at the package's default τ. ``threshold`` and ``signal`` fix another policy for
    every call (as ``cosee-edge classify --threshold/--signal``; another signal than the package's needs its own
    threshold). ``budget_ms`` (with an optional ``percentile``, default 95) runs the threshold controller of
    ``cosee-edge serve`` instead: τ moves along the package's calibration table so that the percentile of the
    latencies stays within the budget, and towards faster τ on a low battery or a hot device.

    Raises :class:`PackageError` if the package cannot be loaded, :class:`SettingError` for a setting out of
    range. Loading releases the GIL.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike[str]],
        *,
        threshold: Optional[float] = None,
        signal: Optional[Signal] = None,
        budget_ms: Optional[float] = None,
        percentile: Optional[float] = None,
    ) -> None: ...
    def classify(
        self,
        text: str,
        pair: Optional[str] = None,
        *,
        threshold: Optional[float] = None,
        signal: Optional[Signal] = None,
    ) -> Answer:
        """Classifies one text (or the pair ``text``, ``pair`` for a pair task) with early exit.

        ``threshold``/``signal`` override the engine's policy for this call only (outside the controller).
        Raises :class:`InputError` for an input the model cannot take, :class:`SettingError` for a setting out of
        range. Releases the GIL while it computes.
        """
    def classify_many(
        self,
        texts: Sequence[Text],
        *,
        threshold: Optional[float] = None,
        signal: Optional[Signal] = None,
    ) -> List[Answer]:
        """Classifies every input in order (a str, or a tuple of two str for a pair): one answer each.

        Every input is checked before any runs; the first bad one raises :class:`InputError` naming it
        (``input 3: empty input: nothing to classify``). Releases the GIL for the whole batch.
        """
    @property
    def manifest(self) -> Dict[str, Any]:
        """The package's ``manifest.json``: task, labels, sizes, signal, default τ, calibration table, files."""
    @property
    def path(self) -> str:
        """The package directory."""
    @property
    def labels(self) -> List[str]:
        """The label names, in ``probs`` order."""
    @property
    def num_layers(self) -> int: ...
    @property
    def signal(self) -> str:
        """The exit signal of the next call without overrides."""
    @property
    def threshold(self) -> float:
        """The τ of the next call without overrides (the controller's current one with ``budget_ms``)."""
    @property
    def controller(self) -> Optional[ControllerState]:
        """The threshold controller's state, or ``None`` without ``budget_ms``."""

__all__: List[str]
