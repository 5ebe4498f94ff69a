"""Online learning: score payments with served features, learn from delayed labels exactly once.

Pure core (``OnlineLearner``, ``LabelJoin``, metrics, ``build_vector``) and its I/O shells:
``Scorer`` (the feature pipeline's ``on_applied`` hook), ``LearnerService`` (the one learner of a
namespace), ``ModelRegistry`` and ``CheckpointStore`` (Postgres).
"""

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
