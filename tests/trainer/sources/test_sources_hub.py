"""hf:// sources against a real Hub cache and a local test mirror of the Hub (HF_ENDPOINT):
cache hits need no network, a miss downloads once, and every failure has its own reason."""
from __future__ import annotations

import pytest
from sources_fixtures import HubMirror, build_hub_cache, closed_port, read_files, repo_folder

from kubetune_api.errors import Reason, SourceError
from kubetune_trainer.data import readers
from kubetune_trainer import sources
from kubetune_trainer.reporting.lineage import dataset_lineage, model_lineage
from kubetune_trainer.model.location import locate_model

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
URI = f"hf://{REPO}"


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset, the shared cache empty, and a Hub that refuses every connection."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    sources.forget()
    yield tmp_path / "model-cache"
    sources.forget()


@pytest.fixture(scope="module")
def model_files(tiny_model_dir) -> dict[str, bytes]:
    return read_files(tiny_model_dir)


def failure(uri: str, fetch=sources.fetch_model) -> SourceError:
    with pytest.raises(SourceError) as caught:
        fetch(uri)
    return caught.value


def test_a_cached_revision_resolves_from_the_cache_with_the_hub_unreachable(hub_env, model_files):
    commit = build_hub_cache(hub_env, REPO, model_files)
    got = sources.fetch_model(URI)
    assert got.cache_hit is True and got.commit == commit and got.revision == "main"
    assert got.local == repo_folder(hub_env, REPO) / "snapshots" / commit
    assert locate_model(URI) == got.local  # model.path resolves to the snapshot: a checkpoint directory
    lineage = model_lineage(URI)
    assert (lineage.commit, lineage.cache_hit, lineage.revision, lineage.uri) == (commit, True, "main", URI)
    assert lineage.files == len(model_files)


def test_a_commit_sha_revision_resolves_from_the_cache(hub_env, model_files):
    commit = build_hub_cache(hub_env, REPO, model_files)
    assert sources.fetch_model(f"{URI}@{commit}").local.name == commit


def test_a_miss_downloads_once_with_progress_and_the_next_resolution_is_a_cache_hit(hub_env, model_files, monkeypatch):
    with HubMirror() as mirror:
        commit = mirror.add(REPO, model_files)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        seen = []
        first = sources.fetch_model(URI, sink=seen.append)
        assert (first.cache_hit, first.commit) == (False, commit)
        assert sorted(p.split(f"/resolve/{commit}/")[-1] for p in mirror.downloads()) == sorted(model_files)
        assert read_files(first.local) == model_files
        total = sum(len(content) for content in model_files.values())
        assert seen[-1].done and seen[-1].source == URI and seen[-1].bytes == total == seen[-1].total_bytes
        assert all(not report.done for report in seen[:-1]) and seen[-1].bytes_per_second > 0

        sources.forget()  # a second job on the same revision: no request at all
        requests = len(mirror.requests)
        second = sources.fetch_model(URI)
        assert (second.cache_hit, second.commit, second.local) == (True, commit, first.local)
        assert len(mirror.requests) == requests


def test_a_missing_repo_is_source_not_found_naming_uri_and_field(monkeypatch):
    with HubMirror() as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        error = failure("hf://nobody/no-such-model")
    assert error.reason == Reason.SourceNotFound.value
    assert "model.path 'hf://nobody/no-such-model'" in str(error)


def test_a_missing_revision_is_revision_not_found(model_files, monkeypatch):
    with HubMirror() as mirror:
        mirror.add(REPO, model_files)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        error = failure(f"{URI}@v9.9")
    assert error.reason == Reason.RevisionNotFound.value and "'v9.9'" in str(error) and URI in str(error)


def test_a_refused_token_is_source_unauthorized_and_the_right_one_is_sent(model_files, monkeypatch):
    with HubMirror(token="hf_runtime_secret") as mirror:
        mirror.add(REPO, model_files)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        error = failure(URI)
        assert error.reason == Reason.SourceUnauthorized.value and "HF_TOKEN" in str(error)
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        assert failure(URI).reason == Reason.SourceUnauthorized.value

        monkeypatch.setenv("HF_TOKEN", "hf_runtime_secret")
        mirror.requests.clear()
        assert sources.fetch_model(URI).cache_hit is False
        hub_requests = [r for r in mirror.requests if "/agent-harnesses" not in r[1]]
        assert hub_requests and all(auth == "Bearer hf_runtime_secret" for _, _, auth in hub_requests)


def test_an_unreachable_hub_with_nothing_cached_is_source_unavailable():
    error = failure(URI)
    assert error.reason == Reason.SourceUnavailable.value and "cannot reach" in str(error)


def test_offline_mode_with_nothing_cached_fails_without_a_request(model_files, monkeypatch):
    with HubMirror() as mirror:
        mirror.add(REPO, model_files)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        error = failure(URI)
        assert error.reason == Reason.SourceUnavailable.value and "HF_HUB_OFFLINE" in str(error)
        assert mirror.requests == []


def test_a_dataset_file_is_fetched_read_and_in_the_lineage(monkeypatch):
    rows = b'{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n'
    uri = "hf://acme/qa-pairs/data/train.jsonl"
    with HubMirror() as mirror:
        commit = mirror.add("acme/qa-pairs", {"data/train.jsonl": rows, "README.md": b"# qa"}, repo_type="dataset")
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        assert [values for _, values in readers.records(uri)] == [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]
        assert len(mirror.downloads()) == 1  # the one file, not the repo
        lineage = dataset_lineage("train", uri)
    assert (lineage.commit, lineage.cache_hit, lineage.rows, lineage.bytes) == (commit, False, 2, len(rows))


def test_a_missing_dataset_file_is_source_not_found(monkeypatch):
    with HubMirror() as mirror:
        mirror.add("acme/qa-pairs", {"train.jsonl": b"{}\n"}, repo_type="dataset")
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        error = failure("hf://acme/qa-pairs/test.jsonl", sources.fetch_data)
    assert error.reason == Reason.SourceNotFound.value and "'test.jsonl'" in str(error)


def test_an_evaluation_resolves_hub_models_and_rows_in_its_check(hub_env, model_files, monkeypatch, tmp_path):
    from kubetune_api.evaluation import EvalConfig
    from kubetune_trainer.checks import check_evaluation
    from kubetune_trainer.reporting.lineage import evaluation_lineage

    commit = build_hub_cache(hub_env, REPO, model_files)
    rows = b'{"q": "Which animal is red?", "a": "cat"}\n'
    with HubMirror() as mirror:
        data_commit = mirror.add("acme/qa", {"test.jsonl": rows}, repo_type="dataset")
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        config = EvalConfig.model_validate({
            "models": [{"name": "base", "path": URI}],
            "dataset": {"path": "hf://acme/qa/test.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
            "output": {"path": str(tmp_path / "eval")}})
        seen = []
        checked = check_evaluation(config, sink=seen.append)
        assert checked.models == (repo_folder(hub_env, REPO) / "snapshots" / commit,) and checked.rows == 1
        assert [s.source for s in seen if s.done] == ["hf://acme/qa/test.jsonl"]  # the model was a cache hit
        lineage = evaluation_lineage(config, {})
    assert (lineage.models[0].commit, lineage.models[0].cache_hit) == (commit, True)
    assert (lineage.datasets[0].commit, lineage.datasets[0].cache_hit) == (data_commit, False)


RESOLVE = "import sys; from kubetune_trainer import sources; print(sources.fetch_model(sys.argv[1]).local)"


def test_two_pods_on_one_cache_volume_download_each_file_once(hub_env, model_files, monkeypatch):
    """Two processes resolving the same revision at once into one cache: huggingface_hub's file
    locks let one fetch each blob and the other find it, whichever comes first."""
    import os
    import subprocess
    import sys

    with HubMirror() as mirror:
        commit = mirror.add(REPO, model_files)
        env = {**os.environ, "HF_ENDPOINT": mirror.url, "KUBETUNE_MODEL_CACHE": str(hub_env)}
        env.pop("HF_HUB_OFFLINE", None)
        pods = [subprocess.Popen([sys.executable, "-c", RESOLVE, URI], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        outputs = [pod.communicate()[0].strip() for pod in pods]
        assert [pod.returncode for pod in pods] == [0, 0]
        assert outputs == [str(repo_folder(hub_env, REPO) / "snapshots" / commit)] * 2
        fetched = sorted(p.rsplit("/", 1)[-1] for p in mirror.downloads())
    assert fetched == sorted(name.rsplit("/", 1)[-1] for name in model_files)
