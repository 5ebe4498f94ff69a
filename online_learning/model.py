"""A River classifier behind a small, typed face: build from a spec, score, learn, persist signed.

Spec format: a pipe of steps, each a River dotted path with keyword parameters. Accepted as
``"river.preprocessing.StandardScaler | river.linear_model.LogisticRegression"`` or as a list of
``{"path": "...", "params": {...}}`` (or bare path strings). A parameter value that is itself a
``{"path": ..., "params": ...}`` mapping is built first, e.g. an optimizer. Paths must start with
``river.``: a spec is configuration, not a way to import arbitrary code. Several steps are piped
with ``river.compose.Pipeline``; the result must be a classifier.

Persistence: ``to_bytes`` writes a signed blob (see ``online_learning.signing``) whose header
records the spec, the model version and the River version; ``from_bytes`` checks the signature
before anything else and refuses another River version unless told to warn.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from river import base, compose

from online_learning.exceptions import ModelSpecError
from online_learning.signing import VersionPolicy, dumps_signed, loads_signed

__all__ = ["DEFAULT_SPEC", "ModelSpec", "OnlineModel", "StepSpec", "build_estimator", "parse_spec"]

_BLOB_KIND = "freshloop.model"


@dataclass(frozen=True)
class StepSpec:
    """One pipeline step: a ``river.`` dotted class path and its keyword parameters."""

    path: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "params": dict(self.params)}


ModelSpec = tuple[StepSpec, ...]

DEFAULT_SPEC: ModelSpec = (
    StepSpec("river.preprocessing.StandardScaler"),
    StepSpec("river.linear_model.LogisticRegression"),
)

SpecLike = str | Sequence[StepSpec | Mapping[str, Any] | str]


def _step(item: StepSpec | Mapping[str, Any] | str) -> StepSpec:
    if isinstance(item, StepSpec):
        return item
    if isinstance(item, str):
        return StepSpec(item.strip())
    if not isinstance(item, Mapping) or not isinstance(item.get("path"), str):
        msg = f"a model step must be a path or a mapping with a 'path' string, got {item!r}"
        raise ModelSpecError(msg)
    unknown = set(item) - {"path", "params"}
    if unknown:
        msg = f"model step {item['path']!r} has unknown keys {sorted(unknown)}; use path, params"
        raise ModelSpecError(msg)
    params = item.get("params") or {}
    if not isinstance(params, Mapping):
        msg = f"params of model step {item['path']!r} must be a mapping, got {params!r}"
        raise ModelSpecError(msg)
    return StepSpec(item["path"], dict(params))


def parse_spec(spec: SpecLike) -> ModelSpec:
    """A model spec in its canonical form (a tuple of ``StepSpec``)."""
    items: Sequence[StepSpec | Mapping[str, Any] | str] = (
        spec.split("|") if isinstance(spec, str) else spec
    )
    steps = tuple(_step(item) for item in items)
    if not steps:
        msg = "a model spec needs at least one step, e.g. river.linear_model.LogisticRegression"
        raise ModelSpecError(msg)
    return steps


def _import(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not path.startswith("river.") or not module_name:
        msg = f"model step path {path!r} must be a dotted path inside river, e.g. river.tree.X"
        raise ModelSpecError(msg)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        msg = f"cannot import {path!r}: {exc}; check the spelling against the River docs"
        raise ModelSpecError(msg) from exc


def _value(value: Any) -> Any:
    if isinstance(value, Mapping) and "path" in value:
        return _instantiate(_step(value))
    return value


def _instantiate(step: StepSpec) -> Any:
    cls = _import(step.path)
    params = {name: _value(v) for name, v in step.params.items()}
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        msg = f"cannot build {step.path} with params {dict(step.params)!r}: {exc}"
        raise ModelSpecError(msg) from exc


def build_estimator(spec: SpecLike) -> Any:
    """A fresh, untrained River classifier for ``spec``."""
    steps = [_instantiate(step) for step in parse_spec(spec)]
    estimator = steps[0] if len(steps) == 1 else compose.Pipeline(*steps)
    if not isinstance(estimator, base.Classifier):
        msg = f"model spec must end in a River classifier; {type(estimator).__name__} is not one"
        raise ModelSpecError(msg)
    return estimator


def _spec_json(spec: ModelSpec) -> list[dict[str, Any]]:
    return [step.to_dict() for step in spec]


def default_version(spec: ModelSpec) -> str:
    """A stable name for an untrained model of ``spec``: last class name and a spec digest."""
    canonical = json.dumps(_spec_json(spec), sort_keys=True, default=repr).encode()
    name = spec[-1].path.rpartition(".")[2].lower()
    return f"{name}-{hashlib.sha256(canonical).hexdigest()[:10]}"


class OnlineModel:
    """A River binary classifier scoring fraud probability; learns one example at a time."""

    def __init__(
        self,
        spec: SpecLike = DEFAULT_SPEC,
        version: str | None = None,
        *,
        _estimator: Any = None,
        _n_learned: int = 0,
    ) -> None:
        self.spec: ModelSpec = parse_spec(spec)
        self._estimator = build_estimator(self.spec) if _estimator is None else _estimator
        self._version = version or default_version(self.spec)
        self.n_learned = _n_learned

    @property
    def version(self) -> str:
        """The name predictions are logged under; fixed for the life of this model object."""
        return self._version

    def predict_proba(self, x: Mapping[str, float]) -> float:
        """Probability that the payment is fraud, in [0, 1].

        A model with no opinion yet (River returns ``{}``, e.g. an untrained tree) or a
        non-finite output gives 0.5; a model that has only seen one class gives 0.0 or 1.0.
        """
        proba = self._estimator.predict_proba_one(dict(x))
        if not proba:
            return 0.5
        p = float(proba.get(True, 0.0))
        if not math.isfinite(p):
            return 0.5
        return min(1.0, max(0.0, p))

    def learn(self, x: Mapping[str, float], y: bool) -> None:
        """Update the model with one labelled example."""
        self._estimator.learn_one(dict(x), bool(y))
        self.n_learned += 1

    def fresh(self, version: str | None = None) -> OnlineModel:
        """An untrained model of the same spec (for a retrain to fill)."""
        return OnlineModel(self.spec, version)

    def to_bytes(self, key: bytes) -> bytes:
        """A signed blob holding the estimator, its spec, version and the River version."""
        meta = {
            "spec": _spec_json(self.spec),
            "version": self._version,
            "n_learned": self.n_learned,
        }
        return dumps_signed(self._estimator, key, _BLOB_KIND, meta)

    @classmethod
    def from_bytes(
        cls, blob: bytes, key: bytes, on_version_mismatch: VersionPolicy = "refuse"
    ) -> OnlineModel:
        """The model in a signed blob; the signature is verified before anything is unpickled."""
        estimator, header = loads_signed(blob, key, _BLOB_KIND, on_version_mismatch)
        if not isinstance(estimator, base.Classifier):
            msg = f"signed model blob holds a {type(estimator).__name__}, not a River classifier"
            raise ModelSpecError(msg)
        meta = header["meta"]
        return cls(
            meta["spec"],
            meta["version"],
            _estimator=estimator,
            _n_learned=int(meta.get("n_learned", 0)),
        )

    def __repr__(self) -> str:
        return f"OnlineModel(version={self._version!r}, n_learned={self.n_learned})"
