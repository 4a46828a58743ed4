"""How Ray actors (or any worker) should reach the driver's study: per-trial cost of the one
trial loop on each way, zero-cost evaluator, one worker, the default digits space (43 genes).

* ``journal file``: the run's ``OUT/study.log`` (buffered) with its file lock: what local
  workers and Ray actors on one machine use;
* ``sqlite URL``: ``sqlite:///OUT/study.db`` with its file lock;
* ``postgresql URL`` (with ``--postgres URL``): the server with its advisory lock, what workers
  on several machines use;
* ``gRPC proxy -> sqlite`` / ``-> postgresql``: Optuna's ``GrpcStorageProxy`` talking to
  ``run_grpc_proxy_server`` in another process (as a driver would serve its study). The proxy
  has no lock, so these rows run without one: they could not keep "exactly N" and "no archid
  trained twice" across actors at all, and Optuna's server cannot serve a journal file.

Needs ``grpcio`` (``pip install -e '.[bench]'``). Run:
``.venv/bin/python benchmarks/search_storage.py [--trials 40] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake evaluator

_SERVER = (
    "import sys; from optuna.storages import get_storage, run_grpc_proxy_server; "
    "run_grpc_proxy_server(get_storage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))"
)


def _loop(
    storage: optuna.storages.BaseStorage, lock: object, trials: int, study_name: str
) -> float:
    from pikenas.search.config import load_config
    from pikenas.search.lock import NoLock
    from pikenas.search.loop import work
    from pikenas.search.study import open_search_study
    from tests.search_tests.fakes import FakeEvaluator

    config = load_config().model_copy(update={"baselines": ()})
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = open_search_study(config, storage, study_name, sampler)
    start = time.perf_counter()
    work(study, config.space, FakeEvaluator(), trials, ask_lock=lock or NoLock())
    return (time.perf_counter() - start) / trials


def _direct(target: str, trials: int) -> float:
    from pikenas.results.storage import open_storage
    from pikenas.search._journal import buffered
    from pikenas.search.lock import ask_lock

    lock = ask_lock(target, "direct")
    try:
        return _loop(buffered(open_storage(target, create=True)), lock, trials, "direct")
    finally:
        lock.close()


def _grpc(url: str, trials: int) -> float:
    from optuna.storages import GrpcStorageProxy

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", _SERVER, url, str(port)])
    try:
        proxy = GrpcStorageProxy(host="127.0.0.1", port=port)
        proxy.wait_server_ready(timeout=60)
        return _loop(proxy, None, trials, "proxied")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--postgres", help="URL of an empty PostgreSQL database")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import pikenas.search.loop  # noqa: F401 - imports out of the timings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows.append(("journal file + file lock", _direct(str(folder / "study.log"), args.trials)))
        rows.append(("sqlite URL + file lock", _direct(f"sqlite:///{folder}/a.db", args.trials)))
        if args.postgres:
            rows.append(("postgresql URL + advisory lock", _direct(args.postgres, args.trials)))
        proxied = _grpc(f"sqlite:///{folder}/b.db", args.trials)
        rows.append(("gRPC proxy -> sqlite, no lock", proxied))
        if args.postgres:
            rows.append(("gRPC proxy -> postgresql, no lock", _grpc(args.postgres, args.trials)))
    print(f"per-trial cost of the trial loop, zero-cost evaluator, {args.trials} trials, 1 worker")
    for label, seconds in rows:
        print(f"  {label:36s} {seconds * 1000:8.1f} ms/trial")


if __name__ == "__main__":
    main()
