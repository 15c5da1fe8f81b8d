import yaml

from kubetune_operator import api, builders
from kubetune_trainer.config import TrainingConfig


def _spec(spec_dict, **extra):
    return api.FineTuneJobSpec.model_validate({**spec_dict, **extra})


def test_children_are_owned_and_named_deterministically(meta, spec_dict):
    objs = builders.children(meta, _spec(spec_dict))
    assert [o["kind"] for o in objs] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]
    for obj in objs:
        assert obj["metadata"]["name"] == "demo-train"
        assert obj["metadata"]["namespace"] == "team-a"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "demo",
                         "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["labels"][builders.LABEL_JOB] == "demo"


def test_config_map_holds_exactly_the_training_config(meta, spec_dict):
    spec = _spec(spec_dict, image="example/trainer:1", resources={"gpu": 2})
    data = yaml.safe_load(builders.config_map(meta, spec)["data"][builders.CONFIG_FILE])
    assert "image" not in data and "resources" not in data
    assert TrainingConfig.model_validate(data) == spec.training_config()


def test_role_lets_the_pod_patch_only_its_own_status(meta):
    (rule,) = builders.role(meta)["rules"]
    assert rule == {"apiGroups": ["kubetune.io"], "resources": ["finetunejobs/status"],
                    "resourceNames": ["demo"], "verbs": ["get", "patch"]}
    binding = builders.role_binding(meta)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "demo-train", "namespace": "team-a"}]
    assert binding["roleRef"]["name"] == "demo-train"


def test_job_runs_the_trainer_with_placement(meta, spec_dict):
    spec = _spec(spec_dict, image="example/trainer:1", resources={"gpu": 2, "memory": "16Gi"},
                 nodeSelector={"gpu": "a100"}, tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 volumes=[{"name": "data", "claimName": "datasets", "mountPath": "/data", "readOnly": True}],
                 queueName="team-a", backoffLimit=2, activeDeadlineSeconds=3600)
    job = builders.job(meta, spec)
    assert job["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team-a"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "demo-train"
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    assert container["image"] == "example/trainer:1"
    assert container["command"] == ["kubetune-train", "--config", "/etc/kubetune/config.yaml"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "16Gi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/kubetune", "/data"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}} in pod["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_JOB_NAME"]["value"] == "demo"
    assert env["KUBETUNE_JOB_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["KUBETUNE_TERMINATION_LOG"]["value"] == container["terminationMessagePath"]


def test_cpu_only_job_requests_no_gpu(meta, spec_dict):
    container = builders.job(meta, _spec(spec_dict, resources={"gpu": 0}))["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {}
