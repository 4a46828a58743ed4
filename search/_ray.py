"""The Ray backend: Ray places N actors, each running :func:`search.worker.run_worker`.

This is the only module of pikenas that imports Ray. Ray only places processes: each actor
gets ``cpus_per_trial`` CPUs (and as many torch threads) and ``gpus_per_trial`` GPUs on any node
of the cluster, and runs the same loop as a local worker or ``pikenas worker`` against the
driver's study, with its :class:`~search.spec.WorkerSpec` sent once as JSON. The driver watches:
progress snapshots from the study, an actor that died is started again (at most
:data:`~search.local.MAX_RESTARTS` times in all), and the outcome comes from the workers'
reports in the study.

How actors reach the study: through its storage target itself, not Optuna's gRPC storage
proxy. On one machine (a local Ray, or a one-node cluster) that is the run's journal file or
SQLite database with its file lock; across machines a PostgreSQL URL with its advisory lock.
The proxy was measured (``benchmarks/search_storage.py``) and lost: it cannot serve a journal
file (Optuna's own limitation), it offers no lock, so "count, then ask" and archid claims could
not be atomic across actors, and each of a trial's ~60 storage calls becomes a round trip.

Actors die with the driver (Ray kills a dead owner's actors): their trials stay RUNNING until
the next run fails them (their processes are gone, or their heartbeat is stale) and retries
their genomes. Without an address a local Ray is started on 127.0.0.1 with no dashboard and no
usage statistics; with one, the driver joins that cluster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pikenas.results.storage import StorageTarget, open_study
from pikenas.search.local import MAX_RESTARTS, stopped_early
from pikenas.search.progress import Snapshot, snapshot
from pikenas.search.spec import RunRequest, threads_per_worker, worker_environment
from pikenas.space.errors import EvaluationError, PikeNASError, SearchConfigError

__all__ = ["ray_environment", "run_ray"]

logger = logging.getLogger(__name__)

_POLL_S = 1.0


def ray_environment() -> dict[str, str]:
    """Environment for a quiet, local-only Ray: no usage statistics, no auth token."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class _WorkerActor:
    """A Ray actor that runs one worker to the end and returns its report (JSON)."""

    def run(self, spec_json: str) -> str:
        from pikenas.search._logs import configure_logging
        from pikenas.search.spec import WorkerSpec
        from pikenas.search.worker import run_worker

        configure_logging()
        return run_worker(WorkerSpec.model_validate_json(spec_json)).model_dump_json()


def _actor_environment(threads: int) -> dict[str, str]:
    """What every actor's process needs from the driver's environment (its settings, import
    path and thread count; Ray starts actors from its own processes)."""
    forwarded = {key: value for key, value in os.environ.items() if key.startswith("PIKENAS_")}
    return {**ray_environment(), **forwarded, **worker_environment(threads)}


def _connect(address: str | None, num_cpus: int, env: dict[str, str]) -> bool:
    """Join the cluster at ``address``, or start a local Ray with ``num_cpus`` CPUs (GPUs are
    detected) bound to 127.0.0.1; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "runtime_env": {"env_vars": env},
    }
    if not address:
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **common)
        return True
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PikeNASError(
            f"cannot join the Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
            "start it with 'ray start --head --port 6379 --node-ip-address 127.0.0.1' "
            "or check the address"
        ) from None
    return True


def _check_reachable(storage: StorageTarget) -> None:
    """Refuse a file storage on a cluster of several machines (its actors cannot share it)."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1 and storage.is_file:
        raise SearchConfigError(
            f"the Ray cluster has {len(nodes)} nodes, which cannot share the file storage "
            f"{storage.display()}; pass --storage postgresql://USER:PASSWORD@HOST:PORT/DB"
        )


def run_ray(request: RunRequest, progress: Callable[[Snapshot], None] | None = None) -> None:
    """Place ``request.workers`` actors until the study holds N COMPLETE trials."""
    for key, value in ray_environment().items():
        os.environ.setdefault(key, value)
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    placement = request.ray
    threads = placement.cpus_per_trial or (
        1 if placement.address else threads_per_worker(request.workers)
    )
    started = _connect(placement.address, request.workers * threads, _actor_environment(threads))
    actors: dict[Any, tuple[int, Any]] = {}
    try:
        _check_reachable(request.worker.storage)
        actor_class = ray.remote(_WorkerActor).options(
            num_cpus=threads, num_gpus=placement.gpus_per_trial, max_restarts=0
        )
        specs = [request.worker.for_worker(index, threads) for index in range(request.workers)]

        def start(index: int) -> None:
            actor = actor_class.remote()
            actors[actor.run.remote(specs[index].model_dump_json())] = (index, actor)

        for index in range(request.workers):
            start(index)
        watcher = open_study(request.worker.storage, request.worker.study_name)
        restarts = 0
        while actors:
            done, _ = ray.wait(list(actors), num_returns=1, timeout=_POLL_S)
            for ref in done:
                index, _actor = actors.pop(ref)
                try:
                    ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    why = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    if restarts >= MAX_RESTARTS:
                        raise EvaluationError(
                            f"Ray worker {index} failed after {restarts} restarts: {why}"
                        ) from None
                    restarts += 1
                    logger.warning("Ray worker %d failed (%s); starting it again", index, why)
                    start(index)
            if progress is not None:
                progress(snapshot(watcher, request.n_trials))
    finally:
        for _index, actor in actors.values():
            ray.kill(actor)
        if started:
            ray.shutdown()
    final = snapshot(watcher, request.n_trials)
    if final.complete < request.n_trials:
        raise stopped_early(watcher, request, final)
