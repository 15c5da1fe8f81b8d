import pytest

UID = "0b7e5c1e-0000-4000-8000-000000000001"


@pytest.fixture
def meta():
    return {"name": "demo", "namespace": "team-a", "uid": UID}


@pytest.fixture
def spec_dict(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(f'{{"question": "q{i}", "answer": "a{i}"}}\n' for i in range(20)))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": "Q: {{ question }}\nA:", "completionField": "answer"},
        "output": {"path": "runs/out"},
    }
