import yaml

import kubetune_api as api
from kubetune_operator import builders
from kubetune_api.training import TrainingConfig


def _spec(spec_dict, **extra):
    return api.FineTuneJobSpec.model_validate({**spec_dict, **extra})


def test_children_are_owned_and_named_deterministically(meta, spec_dict):
    objs = builders.children(meta, builders.FINETUNE, spec := _spec(spec_dict), spec.training_config())
    assert [o["kind"] for o in objs] == ["ConfigMap", "Job"]  # no ServiceAccount, Role or RoleBinding: no API access
    for obj in objs:
        assert obj["metadata"]["name"] == "demo-train"
        assert obj["metadata"]["namespace"] == "team-a"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "demo",
                         "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["labels"][builders.FINETUNE.label] == "demo"


def test_config_map_holds_exactly_the_training_config(meta, spec_dict):
    spec = _spec(spec_dict, image="example/trainer:1", resources={"gpu": 2})
    data = yaml.safe_load(builders.config_map(meta, builders.FINETUNE, spec.training_config())["data"][builders.CONFIG_FILE])
    assert "image" not in data and "resources" not in data
    assert TrainingConfig.model_validate(data) == spec.training_config()


def test_job_runs_the_trainer_with_placement(meta, spec_dict):
    spec = _spec(spec_dict, image="example/trainer:1", resources={"gpu": 2, "memory": "16Gi"},
                 nodeSelector={"gpu": "a100"}, tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 volumes=[{"name": "data", "claimName": "datasets", "mountPath": "/data", "readOnly": True}],
                 queueName="team-a", backoffLimit=2, activeDeadlineSeconds=3600)
    job = builders.job(meta, builders.FINETUNE, spec)
    assert job["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team-a"
    # Retries are the operator's (one Job per attempt): the Job itself never retries.
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    # No API credentials in the pod: it reports through its log and termination message.
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    assert container["image"] == "example/trainer:1"
    assert container["command"][:5] == ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "16Gi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    # The root filesystem is read-only: /tmp, the caches and the working directory are emptyDirs.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/kubetune", "/data", "/tmp", "/home/kubetune/.cache", "/workspace"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}} in pod["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_TERMINATION_LOG"]["value"] == container["terminationMessagePath"]


def test_several_gpus_run_one_process_each(meta, spec_dict):
    container = builders.job(meta, builders.FINETUNE, _spec(spec_dict, resources={"gpu": 4}))["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["accelerate", "launch", "--multi_gpu", "--num_processes", "4", "-m", "kubetune_trainer.cli",
                                    "--config", "/etc/kubetune/config.yaml"]


def test_evaljob_pod_runs_the_evaluator_without_api_access(meta, spec_dict):
    spec = _spec(spec_dict, resources={"gpu": 4})
    job = builders.job(meta, builders.EVAL, spec)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["metadata"]["name"] == "demo-eval" and container["name"] == "evaluator"
    assert container["command"] == ["kubetune-eval", "--config", "/etc/kubetune/config.yaml"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_evaluation_block_becomes_owned_evaljobs(meta, spec_dict, tmp_path):
    evaluation = {"dataset": {"path": str(tmp_path / "test.jsonl"), "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
                  "metrics": ["rouge"], "retention": {"path": str(tmp_path / "other.jsonl"), "promptTemplate": "{{ text }}", "textField": "text"}}
    spec = _spec(spec_dict, evaluation=evaluation, resources={"gpu": 2}, nodeSelector={"gpu": "a100"})
    scores, retention = builders.evaluation_jobs(meta, spec)
    assert scores["metadata"]["name"] == "demo-eval" and retention["metadata"]["name"] == "demo-retention"
    for evaljob in (scores, retention):
        assert evaljob["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
        assert evaljob["metadata"]["labels"][builders.FINETUNE.label] == "demo"
        parsed = api.EvalJobSpec.model_validate(evaljob["spec"])  # what the API server will be given
        assert [m.name for m in parsed.models] == ["base", "tuned"]
        assert parsed.models[0].path == spec.model.path and parsed.models[1].fine_tune_job == "demo"
        assert parsed.resources.gpu == 1 and parsed.node_selector == {"gpu": "a100"}
    assert scores["spec"]["metrics"] == ["rouge"] and "retention" not in scores["spec"]
    assert retention["spec"]["task"] == "perplexity" and retention["spec"]["dataset"]["textField"] == "text"
    assert scores["spec"]["output"]["path"].endswith("/out/eval")


def test_cpu_only_job_requests_no_gpu(meta, spec_dict):
    container = builders.job(meta, builders.FINETUNE, _spec(spec_dict, resources={"gpu": 0}))["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {}
    assert container["command"] == ["kubetune-train", "--config", "/etc/kubetune/config.yaml"]


def test_pod_image_comes_from_the_spec_or_the_operator_setting(meta, spec_dict):
    spec = _spec(spec_dict)
    assert spec.image is None  # the CRD has no default: the operator's setting decides
    container = builders.job(meta, builders.FINETUNE, spec, "registry.local/trainer:2")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/trainer:2"
    pinned = _spec(spec_dict, image="example/trainer:1")
    assert builders.job(meta, builders.FINETUNE, pinned, "registry.local/trainer:2")["spec"]["template"]["spec"]["containers"][0]["image"] == "example/trainer:1"
