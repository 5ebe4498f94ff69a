"""Online learning: score payments with served features, learn from delayed labels exactly once.

Pure core (``OnlineLearner``, ``LabelJoin``, metrics, ``build_vector``) and its I/O shells:
``Scorer`` (the feature pipeline's ``on_applied`` hook), ``LearnerService`` (the one learner of a
namespace), ``ModelRegistry`` and ``CheckpointStore`` (Postgres).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freshloop.core.lazy import lazy_names

if TYPE_CHECKING:
    from online_learning.checkpoints import CheckpointStore
    from online_learning.features import SCORING_FEATURES
    from online_learning.join import JoinConfig
    from online_learning.learner import OnlineLearner
    from online_learning.learner_process import LearnerService, learner_status, run_learner
    from online_learning.model import OnlineModel
    from online_learning.records import LabelledExample, Payment, Prediction
    from online_learning.registry import ModelRegistry
    from online_learning.scoring_hook import Scorer, get_prediction
    from online_learning.vector import build_vector

# the public names, each imported from its module when first used: a command of another stage
# (``freshloop features run``) does not pay for this stage's heavy imports
_HOME = {
    "CheckpointStore": "online_learning.checkpoints",
    "JoinConfig": "online_learning.join",
    "LabelledExample": "online_learning.records",
    "LearnerService": "online_learning.learner_process",
    "ModelRegistry": "online_learning.registry",
    "OnlineLearner": "online_learning.learner",
    "OnlineModel": "online_learning.model",
    "Payment": "online_learning.records",
    "Prediction": "online_learning.records",
    "SCORING_FEATURES": "online_learning.features",
    "Scorer": "online_learning.scoring_hook",
    "build_vector": "online_learning.vector",
    "get_prediction": "online_learning.scoring_hook",
    "learner_status": "online_learning.learner_process",
    "run_learner": "online_learning.learner_process",
}


__getattr__ = lazy_names(__name__, _HOME)

__all__ = [
    "SCORING_FEATURES",
    "CheckpointStore",
    "JoinConfig",
    "LabelledExample",
    "LearnerService",
    "ModelRegistry",
    "OnlineLearner",
    "OnlineModel",
    "Payment",
    "Prediction",
    "Scorer",
    "build_vector",
    "get_prediction",
    "learner_status",
    "run_learner",
]
