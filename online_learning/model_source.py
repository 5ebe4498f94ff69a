"""Which model a scorer serves: the learner's newest checkpoint of the champion, else the champion.

The registry names the champion; the learner keeps training it and checkpoints it every few
seconds. A checkpoint is served only if it trains the CURRENT champion and was written after the
champion's promotion: right after a promotion, scorers serve the registry's blob until the
learner has swapped and checkpointed. ``ModelSource`` polls both (two small indexed queries)
every ``poll_s`` seconds and loads a blob only when the choice changed: no restart needed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from online_learning.checkpoints import CheckpointRef, CheckpointStore
from online_learning.model import OnlineModel
from online_learning.registry import ChampionRef, ModelRegistry

__all__ = ["ModelSource", "ServedModel", "choose_source"]

log = logging.getLogger(__name__)


def choose_source(champion: ChampionRef, checkpoint: CheckpointRef | None) -> int | None:
    """The checkpoint id to serve, or None to serve the champion's registry blob."""
    if (
        checkpoint is not None
        and checkpoint.model_version == champion.version
        and checkpoint.created_at >= champion.promoted_at
    ):
        return checkpoint.checkpoint_id
    return None


@dataclass(frozen=True)
class ServedModel:
    model: OnlineModel
    served_from: str  # "checkpoint:<id>" or "registry"


class ModelSource:
    """The model to score with, refreshed from Postgres at most every ``poll_s`` seconds."""

    def __init__(
        self,
        registry: ModelRegistry,
        checkpoints: CheckpointStore,
        spec: str,
        poll_s: float = 5.0,
    ) -> None:
        self.registry = registry
        self.checkpoints = checkpoints
        self.spec = spec
        self.poll_s = poll_s
        self._choice: tuple[str, object, int | None] | None = None
        self._served: ServedModel | None = None
        self._next_poll = 0.0

    @property
    def last(self) -> ServedModel | None:
        """The model served so far (None before the first successful poll): what a scorer keeps
        serving while Postgres cannot be polled."""
        return self._served

    def current(self) -> ServedModel:
        if self._served is None or time.monotonic() >= self._next_poll:
            self.refresh()
        assert self._served is not None  # noqa: S101 - refresh always sets it
        return self._served

    def refresh(self) -> bool:
        """Poll; load a new model if the choice changed. True when the served model changed."""
        self._next_poll = time.monotonic() + self.poll_s
        champion = self.registry.ensure_champion(self.spec)
        checkpoint_id = choose_source(champion, self.checkpoints.latest_ref())
        choice = (champion.version, champion.promoted_at, checkpoint_id)
        if choice == self._choice and self._served is not None:
            return False
        if checkpoint_id is None:
            served = ServedModel(self.registry.load(champion.version), "registry")
        else:
            served = ServedModel(
                self.checkpoints.load_model(checkpoint_id), f"checkpoint:{checkpoint_id}"
            )
        self._choice, self._served = choice, served
        log.info(
            "serving model version=%s from=%s learned=%d",
            served.model.version,
            served.served_from,
            served.model.n_learned,
        )
        return True
