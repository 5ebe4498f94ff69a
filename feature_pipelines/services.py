"""Feature services: the named set of features one model reads, declared once (pure).

A ``FeatureService`` (as Feast's FeatureService) names the served features of a ``FeatureSet``
a model takes as inputs, in the order its vector lists them. Everything that needs a model's
contract asks its service instead of keeping a list of its own: the vector, the scorer, the
learner, the drift checks, retrains and point-in-time training sets. A pipeline still computes
its whole feature set; a service only chooses among what is computed, so two services can share
one namespace.

Example:
    >>> from feature_pipelines.catalog import SAMPLE_FEATURES
    >>> svc = FeatureService("small", ("payment_count_1h",), SAMPLE_FEATURES)
    >>> svc.tables()
    ('payments',)
    >>> [f.name for f in svc.definitions()]
    ['payment_count_1h']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import DefinitionError, UnknownServiceError
from feature_pipelines.spec import Feature

__all__ = ["FeatureService", "resolve_service", "services_using"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class FeatureService:
    """A model's inputs: ``features`` (names of ``source``'s features), in vector order."""

    name: str
    features: tuple[str, ...]
    source: FeatureSet
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            msg = f"feature service name {self.name!r} must match [a-z][a-z0-9_]*"
            raise DefinitionError(msg)
        if not self.features:
            msg = f"feature service {self.name} names no feature: list at least one"
            raise DefinitionError(msg)
        dupes = sorted({n for n in self.features if self.features.count(n) > 1})
        if dupes:
            msg = f"feature service {self.name} lists {', '.join(dupes)} twice"
            raise DefinitionError(msg)
        known = {f.name for f in self.source}
        unknown = [n for n in self.features if n not in known]
        if unknown:
            msg = (
                f"feature service {self.name} names {', '.join(unknown)}, not in its feature set "
                f"(which has {', '.join(sorted(known))}): declare the feature in the set first"
            )
            raise DefinitionError(msg)

    def definitions(self) -> tuple[Feature, ...]:
        """The service's feature definitions, in the service's order."""
        return tuple(self.source.by_name(n) for n in self.features)

    def tables(self) -> tuple[str, ...]:
        """Tables the service's features read (sources and lookup providers), sorted."""
        out = {f.table for f in self.definitions()}
        out |= {f.lookup.table for f in self.definitions() if f.lookup}
        return tuple(sorted(out))

    def uses(self, feature: str) -> bool:
        return feature in self.features


def resolve_service(services: Mapping[str, FeatureService], name: str) -> FeatureService:
    """The service called ``name``, or ``UnknownServiceError`` naming the choices."""
    try:
        return services[name]
    except KeyError:
        msg = (
            f"no feature service named {name!r}; choose one of {', '.join(sorted(services))} "
            "(FRESHLOOP_FEATURE_SERVICE, or --service; 'freshloop features list' shows them)"
        )
        raise UnknownServiceError(msg) from None


def services_using(services: Iterable[FeatureService], feature: str) -> tuple[str, ...]:
    """Names of the services whose model reads ``feature``, sorted."""
    return tuple(sorted(s.name for s in services if s.uses(feature)))
