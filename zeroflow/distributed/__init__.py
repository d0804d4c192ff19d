"""Query-parallel SPSA: K replicas of a trial evaluate its directions, exchanging seeds and
scalars only. ``replica`` is plain torch (runs in any process); ``pool`` puts replicas on Ray
actors (``QueryPool``), imported on first use so that ``replica`` needs no Ray."""


def __getattr__(name):
    if name == "QueryPool":
        from zeroflow.distributed.pool import QueryPool

        return QueryPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["QueryPool"]
