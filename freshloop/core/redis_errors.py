"""What "Redis is unavailable for now" looks like to a client, in either Redis layout.

One Redis: a refused or broken connection, or a timeout. A Redis Cluster adds its own: no node
answers (``RedisClusterUnreachableError``, which is not a ``ConnectionError``), a slot whose
primary is gone (``CLUSTERDOWN``), a slot being moved (``TRYAGAIN``). Every stage that waits
for Redis to come back (the pipeline's loss guard, the learner, the drift checks, the API's
503) catches this one tuple, so a cluster's outage takes the same path as one Redis's.
"""

from __future__ import annotations

import redis
from redis.exceptions import ClusterDownError, RedisClusterUnreachableError, TryAgainError

__all__ = ["REDIS_DOWN"]

REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    RedisClusterUnreachableError,
    ClusterDownError,
    TryAgainError,
)
