"""A real MLflow tracking server for the tracking tests: `mlflow server` from the services venv
(its own resolution, run as a separate process), with a SQLite backend store and a local
artifact root it serves itself (the client uploads artifacts through the server)."""
from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from sources_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = ROOT / ".venv-services" / "bin" / "mlflow"


class MlflowServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "server.log", "wb")
        self.process = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
             "--artifacts-destination", str(self.directory / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(1200):  # readiness, not timing: the server answers once its database is made
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited at start: {(self.directory / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mlflow server did not start listening")

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            import os
            import signal

            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: gunicorn/uvicorn workers too
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def dead_url() -> str:
    """A tracking URI where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
