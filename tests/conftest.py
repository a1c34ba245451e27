"""Shared fixtures: the store kinds the conformance suite runs over."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .redis_servers import RedisCluster, RedisServer, redis_available


def require_redis() -> None:
    """Skip without ``redis-server`` locally; in CI (``CI=true``) that is a failure."""
    if not redis_available():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server/redis-cli are not installed (.ci/run installs them)")
        pytest.skip("redis-server is not installed")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throw-away redis-server on a free loopback port, for the whole test session."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A throw-away 3-master Redis Cluster on free loopback ports."""
    require_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()
