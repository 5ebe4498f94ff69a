"""Online learning: score payments with served features, learn from delayed labels exactly once.

Pure core; the Kafka/Redis shells live elsewhere and call ``OnlineLearner``.
"""

from online_learning.join import JoinConfig
from online_learning.learner import OnlineLearner
from online_learning.model import OnlineModel
from online_learning.records import LabelledExample, Payment, Prediction
from online_learning.vector import build_vector

__all__ = [
    "JoinConfig",
    "LabelledExample",
    "OnlineLearner",
    "OnlineModel",
    "Payment",
    "Prediction",
    "build_vector",
]
