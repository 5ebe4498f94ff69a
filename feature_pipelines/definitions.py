"""The feature set in use: ``module:ATTRIBUTE`` (``FRESHLOOP_FEATURE_DEFINITIONS``, or a
command's ``--definitions``), imported and checked, and the tables it makes Freshloop capture.

    >>> sorted(load_feature_set("feature_pipelines.catalog:SAMPLE_FEATURES").tables())
    ['payment_outcomes', 'payments']

A bad name stops a command at start-up with a ``DefinitionError`` that says what to fix (the
command line turns it into one line and exit code 2).
"""

from __future__ import annotations

import importlib
import os
import sys

from connectors import captured_tables
from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import DefinitionError
from freshloop.core.settings import Settings

__all__ = ["EXAMPLE", "feature_set", "load_feature_set", "tables_to_capture"]

EXAMPLE = "feature_pipelines.catalog:SCORING_FEATURES"  # the setting's default


def load_feature_set(spec: str, *, given_as: str = "feature definitions") -> FeatureSet:
    """The ``FeatureSet`` that ``spec`` (``module:ATTRIBUTE``) names; ``given_as`` (an option,
    a setting) says in an error where the name came from."""
    module_name, sep, attribute = (part.strip() for part in spec.partition(":"))
    if not sep or not module_name or not attribute:
        msg = (
            f"{given_as} {spec!r} is not module:ATTRIBUTE: name the module, a colon and the "
            f"FeatureSet, e.g. {EXAMPLE}"
        )
        raise DefinitionError(msg)
    here = os.getcwd()  # a module of the working directory, as 'python -m' would find it
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)  # (after the installed packages: it shadows none of them)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (
            module_name == exc.name or module_name.startswith(f"{exc.name}.")
        ):
            raise  # the module is there but imports something missing: its own bug, shown whole
        msg = (
            f"{given_as} {spec!r}: there is no module {exc.name}: check the spelling, or make "
            "it importable (run from the directory that holds it, or set PYTHONPATH, or "
            "install it)"
        )
        raise DefinitionError(msg) from exc
    if not hasattr(module, attribute):
        sets = sorted(n for n, v in vars(module).items() if isinstance(v, FeatureSet))
        known = f"its FeatureSets: {', '.join(sets)}" if sets else "it holds no FeatureSet"
        msg = f"{given_as} {spec!r}: module {module_name} has no {attribute} ({known})"
        raise DefinitionError(msg)
    found = getattr(module, attribute)
    if not isinstance(found, FeatureSet):
        msg = (
            f"{given_as} {spec!r} is of type {type(found).__name__}, not a FeatureSet: name "
            "one made with FeatureSet.of([...])"
        )
        raise DefinitionError(msg)
    return found


def feature_set(settings: Settings, definitions: str | None = None) -> FeatureSet:
    """The set a command uses: its ``--definitions`` when given, else the setting's."""
    if definitions is not None:
        return load_feature_set(definitions, given_as="--definitions")
    return load_feature_set(settings.feature_definitions, given_as="FRESHLOOP_FEATURE_DEFINITIONS")


def tables_to_capture(settings: Settings, definitions: str | None = None) -> tuple[str, ...]:
    """What ``connectors apply`` captures and ``db init`` publishes and grants: the tables of
    the set in use and those the learning loop reads (``connectors.captured_tables``)."""
    return captured_tables(feature_set(settings, definitions).tables())
