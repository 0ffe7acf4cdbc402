"""A real Spark standalone cluster for tests: a master and two 1-core workers started from the
installed PySpark's launchers (``bin/spark-class``), not ``local[*]``.

The workers start their executors with a PATH whose ``python3`` does not have the project
installed: a job whose Python workers import ``srgnn`` only runs when the driver tells the
executors which Python to start. ``conftest.py`` exposes one cluster per test session as the
fixture ``standalone_cluster``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "2g"
# Not the project's venv: what a cluster node without the project has.
WORKER_PATH = "/usr/local/bin:/usr/bin:/bin"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now: all are held open together while they are chosen,
    so that no two launches of one cluster are handed the same port."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class StandaloneCluster:
    master: str  # spark://127.0.0.1:<port>
    ui_port: int
    spark_home: str
    logs: Path
    processes: list = field(default_factory=list)

    def state(self) -> dict:
        """The master's JSON status (workers, active and completed applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.load(response)

    def completed_apps(self, prefix: str = "") -> list[dict]:
        return [app for app in self.state()["completedapps"] if app["name"].startswith(prefix)]

    def env(self, **extra: str) -> dict:
        """An environment for a command run against the cluster: the master set, and no
        PYSPARK_PYTHON (srgnn must tell the executors itself)."""
        env = {**os.environ, "SRGNN_SPARK_MASTER": self.master, **extra}
        env.pop("PYSPARK_PYTHON", None)
        return env

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def start_cluster(logs: Path, workers: int = WORKERS, timeout: float = 120,
                  memory: str = WORKER_MEMORY) -> StandaloneCluster:
    """Start a master and ``workers`` workers (one core and ``memory`` each); return once all
    are registered. Raises RuntimeError with the launchers' log tails when they do not come
    up."""
    import pyspark

    spark_home = os.path.dirname(pyspark.__file__)
    spark_class = os.path.join(spark_home, "bin", "spark-class")
    if not os.path.exists(spark_class):
        raise FileNotFoundError(spark_class)
    port, ui_port, *worker_ui_ports = free_ports(2 + workers)
    cluster = StandaloneCluster(f"spark://127.0.0.1:{port}", ui_port, spark_home, logs)
    env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOG_DIR": str(logs),
           "SPARK_WORKER_DIR": str(logs / "work"), "PATH": WORKER_PATH}
    env.pop("PYSPARK_PYTHON", None)
    launches = [("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                            "--port", str(port), "--webui-port", str(ui_port)])]
    for index in range(workers):
        launches.append((f"worker{index}", [
            "org.apache.spark.deploy.worker.Worker", cluster.master, "--host", "127.0.0.1",
            "--cores", str(WORKER_CORES), "--memory", memory,
            "--webui-port", str(worker_ui_ports[index])]))
    for name, args in launches:
        with open(logs / f"{name}.log", "w") as log:
            cluster.processes.append(subprocess.Popen(
                [spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if sum(w["state"] == "ALIVE" for w in cluster.state()["workers"]) >= workers:
                    return cluster
            except (OSError, ValueError):  # not listening yet, or not the master's JSON yet
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in cluster.processes):
                tail = "".join(f"--- {n}\n" + (logs / f"{n}.log").read_text()[-1500:]
                               for n, _ in launches)
                raise RuntimeError(f"the standalone cluster did not come up:\n{tail}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()  # never leave a half-started cluster behind
        raise
