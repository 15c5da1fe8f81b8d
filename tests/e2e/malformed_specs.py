"""Generated malformed FineTuneJob and EvalJob specs, by category, for test_malformed_specs.py.

Every case starts from a valid spec (gpu 0, 4 steps on the tiny model) and breaks one thing:
a type, a bound, a required field, a rule between fields, a hostile string or a placement the
cluster cannot honour. `expect` says what may happen besides a refusal at apply:
  "no-pod":  Failed by the operator without any pod (its spec checks, or the API server
             refusing the Job or the pod);
  "check":   one pod at most, whose check phase (CPU only, before any model loads) fails the
             job with one of `reasons` (template bombs and data errors need the data to find),
             or its method setup right after the model loads (what needs the model's depth).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

DELETE = object()  # a mutation that removes the field
TEN_KB = 10 * 1024
NO_POD = "no-pod"
CHECK = "check"
DATA = frozenset({"InvalidDataset"})
MODEL = frozenset({"InvalidModel"})
CONFIG = frozenset({"InvalidConfig"})
# A NUL byte in a path: any named check reason is a verdict (which one depends on where it breaks).
ANY_CHECK = frozenset({"InvalidDataset", "InvalidModel", "InvalidConfig", "InvalidSpec"})


@dataclass
class Case:
    category: str
    what: str
    kind: str  # FineTuneJob or EvalJob
    spec: Any
    expect: str = NO_POD
    reasons: frozenset = frozenset()
    name: str = ""  # set by generate() unless the case is about the name itself
    metadata: dict = field(default_factory=dict)

    def body(self, namespace: str) -> dict[str, Any]:
        meta = {"name": self.name, "namespace": namespace, **self.metadata}
        obj = {"apiVersion": "kubetune.io/v1alpha1", "kind": self.kind, "metadata": meta}
        if self.spec is not DELETE:
            obj["spec"] = self.spec
        return obj


def base_finetunejob(model: str, rows: str, output: str) -> dict[str, Any]:
    return {
        "model": {"path": model},
        "dataset": {"path": rows, "promptTemplate": "Shout {{ word }}:", "completionField": "upper",
                    "validationRatio": 0.2, "testRatio": 0.2, "maxLength": 32},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01},
        "output": {"path": output},
        "resources": {"gpu": 0},
    }


def base_evaljob(model: str, rows: str, output: str) -> dict[str, Any]:
    return {
        "models": [{"name": "base", "path": model}],
        "dataset": {"path": rows, "promptTemplate": "Shout {{ word }}:", "referenceFields": ["upper"]},
        "metrics": ["exact_match"], "generation": {"maxNewTokens": 2},
        "output": {"path": output}, "resources": {"gpu": 0},
    }


def evaluation_block(rows: str) -> dict[str, Any]:
    return {"dataset": {"path": rows, "promptTemplate": "Shout {{ word }}:", "referenceFields": ["upper"]},
            "metrics": ["exact_match"]}


def mutate(spec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of spec with each dotted path ("lora.r", "volumes.0.name") set, or removed (DELETE)."""
    spec = copy.deepcopy(spec)
    for path, value in changes.items():
        node, keys = spec, path.split(".")
        for key in keys[:-1]:
            key = int(key) if key.isdigit() and isinstance(node, list) else key
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
        last = int(keys[-1]) if keys[-1].isdigit() and isinstance(node, list) else keys[-1]
        if value is DELETE:
            node.pop(last, None) if isinstance(node, dict) else node.pop(last)
        else:
            node[last] = value
    return spec


class Specs:
    """The valid starting points, and shorthands for a broken copy of each."""

    def __init__(self, model: str, rows: str, output: str):
        self.model, self.rows, self.output = model, rows, output
        self.ftj = base_finetunejob(model, rows, output)
        self.evj = base_evaljob(model, rows, output)

    def f(self, category: str, what: str, changes: dict[str, Any], **kw: Any) -> Case:
        return Case(category, what, "FineTuneJob", mutate(self.ftj, changes), **kw)

    def e(self, category: str, what: str, changes: dict[str, Any], **kw: Any) -> Case:
        return Case(category, what, "EvalJob", mutate(self.evj, changes), **kw)


# Wrong values for each JSON type the schema expects.
WRONG = {
    "string": [42, True, ["x"]],
    "enum": [3, "nosuch"],
    "integer": ["4", 2.5, True],
    "number": ["0.1", False],
    "boolean": ["yes", 1],
    "list": ["q_proj", [1], {"a": "b"}],
    "object": ["x", ["x"]],
    "objects": ["x", {"key": "x"}],
}
FTJ_FIELDS = {
    "string": ["model.path", "dataset.path", "dataset.promptTemplate", "dataset.completionField", "output.path",
               "priorityClassName", "queueName", "image"],
    "enum": ["model.dtype", "method", "dataset.format", "dataset.lengthPolicy", "imagePullPolicy"],
    "integer": ["dataset.maxLength", "lora.r", "lora.alpha", "training.maxSteps", "training.batchSize",
                "training.checkpointEverySteps", "resources.gpu", "resources.nodes", "backoffLimit",
                "ttlSecondsAfterFinished", "activeDeadlineSeconds", "securityContext.runAsUser", "training.seed"],
    "number": ["dataset.validationRatio", "dataset.testRatio", "training.learningRate", "training.epochs", "lora.dropout"],
    "boolean": ["suspend", "training.gradientCheckpointing", "lora.mergeOnSave", "dataset.chatTemplate"],
    "list": ["lora.targetModules"],
    "object": ["model", "dataset", "training", "lora", "output", "resources", "nodeSelector", "evaluation",
               "securityContext"],
    "objects": ["tolerations", "volumes", "dataset.tasks"],
}
EVJ_FIELDS = {
    "string": ["models.0.name", "models.0.path", "dataset.promptTemplate"],
    "enum": ["task"],
    "integer": ["generation.maxNewTokens", "samples", "dataset.maxExamples"],
    "number": ["generation.temperature"],
    "boolean": ["dataset.shuffle"],
    "list": ["metrics", "dataset.referenceFields"],
    "object": ["generation", "dataset"],
    "objects": ["models"],
}


def wrong_types(s: Specs) -> Iterator[Case]:
    for kind, fields, make in (("FineTuneJob", FTJ_FIELDS, s.f), ("EvalJob", EVJ_FIELDS, s.e)):
        for json_type, paths in fields.items():
            for path in paths:
                for value in WRONG[json_type]:
                    yield make("wrong-type", f"{kind} {path} = {value!r} ({json_type} expected)", {path: value})
    yield Case("wrong-type", "spec is a string", "FineTuneJob", "lora please")
    yield Case("wrong-type", "spec is a list", "EvalJob", [s.evj])


FTJ_BOUNDS = [
    ("lora.r", [0, -1, 1025]), ("lora.alpha", [0, 5000]), ("lora.dropout", [1.0, -0.1]),
    ("training.maxSteps", [0, 10**7 + 1, 2**63, 10**30]), ("training.batchSize", [0, -4, 4097]),
    ("training.learningRate", [0, -0.001, 1.5, 1e308]), ("training.epochs", [0, 1001]),
    ("training.warmupSteps", [-1]), ("training.seed", [-1, 2**32]), ("training.checkpointsToKeep", [0, 101]),
    ("training.gradientAccumulationSteps", [0]), ("training.predictionRows", [1001]), ("training.weightDecay", [2]),
    ("training.logEverySteps", [0]), ("dataset.validationRatio", [1.0, -0.1]), ("dataset.testRatio", [1.5]),
    ("dataset.maxLength", [0, 7, 131073]), ("resources.gpu", [-1, 65]), ("resources.nodes", [0, 65]),
    ("backoffLimit", [-1, 21]), ("activeDeadlineSeconds", [0, 10**9]), ("ttlSecondsAfterFinished", [-1, 10**9]),
    ("securityContext.runAsUser", [0, -5, 2**31]), ("securityContext.fsGroup", [0]),
    ("lora.targetModules", [[], [f"m{i}" for i in range(300)]]), ("dataset.tasks", [[]]),
    ("nodeSelector", [{f"k{i}": "v" for i in range(65)}]),
]
EVJ_BOUNDS = [
    ("generation.maxNewTokens", [0, 8193]), ("generation.temperature", [0, 11]), ("generation.topP", [1.5]),
    ("generation.batchSize", [0]), ("samples", [51, -1]), ("models", [[]]), ("dataset.maxExamples", [0]),
    ("metrics", [[], [f"m{i}" for i in range(33)]]), ("dataset.fewShot", [{"k": 0, "path": "x.jsonl"}, {"k": 33, "path": "x.jsonl"}]),
]


def out_of_bounds(s: Specs) -> Iterator[Case]:
    for kind, bounds, make in (("FineTuneJob", FTJ_BOUNDS, s.f), ("EvalJob", EVJ_BOUNDS, s.e)):
        for path, values in bounds:
            for value in values:
                shown = f"{len(value)} entries" if isinstance(value, (list, dict)) and len(value) > 3 else repr(value)
                yield make("out-of-bounds", f"{kind} {path} = {shown}", {path: value})
    # The schema's bound on any model's depth; the model's own depth is the trainer's (_check_phase_cases).
    yield s.f("out-of-bounds", "selective.lastLayers 1024 (at most 256)", {"method": "selective", "lora": DELETE, "selective": {"lastLayers": 1024}})
    many = [{"name": f"m{i}", "path": s.model} for i in range(17)]
    yield s.e("out-of-bounds", "17 models (at most 16)", {"models": many})
    yield s.f("out-of-bounds", "tolerationSeconds -1", {"tolerations": [{"key": "gpu", "effect": "NoExecute", "tolerationSeconds": -1}]})


def missing_required(s: Specs) -> Iterator[Case]:
    ftj = ["model", "dataset", "output", "model.path", "output.path", "dataset.path", "dataset.promptTemplate",
           "dataset.completionField"]
    for path in ftj:
        yield s.f("missing-required", f"FineTuneJob without {path}", {path: DELETE})
    task = {"name": "t", "path": s.rows, "promptTemplate": "{{ word }}", "completionField": "upper"}
    single = {k: DELETE for k in ("dataset.path", "dataset.promptTemplate", "dataset.completionField")}
    for key in ("name", "path", "promptTemplate", "completionField"):
        broken = {k: v for k, v in task.items() if k != key}
        yield s.f("missing-required", f"dataset.tasks[0] without {key}", {**single, "dataset.tasks": [broken]})
    for key in ("dataset", "dataset.promptTemplate", "dataset.path", "dataset.referenceFields"):
        yield s.f("missing-required", f"evaluation without {key}", {"evaluation": mutate(evaluation_block(s.rows), {key: DELETE})})
    yield s.f("missing-required", "volume without claimName", {"volumes": [{"name": "data", "mountPath": "/data"}]})
    yield s.f("missing-required", "volume without mountPath", {"volumes": [{"name": "data", "claimName": "data"}]})
    yield s.f("missing-required", "promotion without destination", {"evaluation": evaluation_block(s.rows), "promotion": {"rules": []}})
    for path in ("models", "output", "dataset", "models.0.name", "models.0.path", "dataset.path",
                 "dataset.promptTemplate", "dataset.referenceFields"):
        yield s.e("missing-required", f"EvalJob without {path}", {path: DELETE})
    yield s.e("missing-required", "multiple-choice without choicesField/answerField", {"task": "multiple-choice", "metrics": ["accuracy"], "dataset.referenceFields": DELETE})
    yield s.e("missing-required", "perplexity without textField", {"task": "perplexity", "metrics": ["perplexity"], "dataset.referenceFields": DELETE})
    yield s.e("missing-required", "suite task without dataset", {"dataset": DELETE, "tasks": [{"name": "t"}]})
    yield Case("missing-required", "FineTuneJob with no spec at all", "FineTuneJob", DELETE)
    yield Case("missing-required", "EvalJob with an empty spec", "EvalJob", {})


def contradictory(s: Specs) -> Iterator[Case]:
    f, e = s.f, s.e
    task = {"name": "t", "path": s.rows, "promptTemplate": "{{ word }}", "completionField": "upper"}
    yield f("contradictory", "completionField and completionTemplate", {"dataset.completionTemplate": "{{ upper }}"})
    yield f("contradictory", "dataset.path with tasks", {"dataset.promptTemplate": DELETE, "dataset.completionField": DELETE, "dataset.tasks": [task]})
    yield f("contradictory", "tasks with a top-level completionField", {"dataset.path": DELETE, "dataset.promptTemplate": DELETE, "dataset.tasks": [task]})
    yield f("contradictory", "duplicate task names", {**{k: DELETE for k in ("dataset.path", "dataset.promptTemplate", "dataset.completionField")}, "dataset.tasks": [task, task]})
    yield f("contradictory", "a task with completionField and completionTemplate", {**{k: DELETE for k in ("dataset.path", "dataset.promptTemplate", "dataset.completionField")}, "dataset.tasks": [{**task, "completionTemplate": "x"}]})
    yield f("contradictory", "mixtureSize without tasks", {"dataset.mixtureSize": 10})
    for val, test in ((0.5, 0.5), (0.6, 0.5), (0.99, 0.01), (0.9, 0.3)):
        yield f("contradictory", f"validationRatio {val} + testRatio {test} >= 1", {"dataset.validationRatio": val, "dataset.testRatio": test})
    blocks = [("ia3", {}, "lora"), ("selective", {"patterns": ["norm"]}, "full"), ("promptTuning", {}, "lora"),
              ("prefixTuning", {}, "ia3"), ("ia3", {}, "full"), ("promptTuning", {"numVirtualTokens": 4}, "prefix-tuning"),
              ("selective", {"lastLayers": 1}, "lora"), ("prefixTuning", {}, "selective")]
    for block, value, method in blocks:
        yield f("contradictory", f"{block} block with method {method}", {block: value, "method": method})
    yield f("contradictory", "non-default lora with method full", {"method": "full", "lora.r": 16})
    yield f("contradictory", "non-default lora with method prompt-tuning", {"method": "prompt-tuning", "lora.alpha": 32})
    yield f("contradictory", "method selective without its block", {"method": "selective"})
    yield f("contradictory", "selective with neither patterns nor lastLayers", {"method": "selective", "selective": {"patterns": []}})
    yield f("contradictory", "driftPenalty with method lora", {"training.driftPenalty": 0.5})
    yield f("contradictory", "ia3 feedforwardModules not in targetModules", {"method": "ia3", "ia3": {"targetModules": ["k_proj"], "feedforwardModules": ["down_proj"]}})
    evaluation = evaluation_block(s.rows)
    yield f("contradictory", "promotion without evaluation", {"promotion": {"destination": "promoted"}})
    yield f("contradictory", "promotion.maxForgetting without retention", {"evaluation": evaluation, "promotion": {"destination": "p", "maxForgetting": {"perplexity": 1.0}}})
    yield f("contradictory", "promotion.mergeAdapter with method full", {"method": "full", "evaluation": evaluation, "promotion": {"destination": "p", "mergeAdapter": True}})
    yield f("contradictory", "promotion.mergeAdapter with lora.mergeOnSave", {"lora.mergeOnSave": True, "evaluation": evaluation, "promotion": {"destination": "p", "mergeAdapter": True}})
    for metric, task, extra in (("accuracy", "generation", {}), ("perplexity", "generation", {}),
                                ("rouge", "perplexity", {"textField": "word"}), ("bleu", "multiple-choice", {"choicesField": "c", "answerField": "a"})):
        dataset = {**evaluation["dataset"], **extra}
        if task != "generation":
            dataset.pop("referenceFields")
        yield f("contradictory", f"evaluation metric {metric} for task {task}", {"evaluation": {**evaluation, "task": task, "metrics": [metric], "dataset": dataset}})
    yield f("contradictory", "evaluation metric no_such_metric (not built in: its EvalJob would fail after training)",
            {"evaluation": {**evaluation, "metrics": ["exact_match", "no_such_metric"]}})
    for epochs in (1e-300, 2):  # maxSteps 4 in the base spec: epochs would be ignored
        yield f("contradictory", f"training.epochs {epochs:g} with maxSteps", {"training.epochs": epochs})
    yield f("contradictory", "evaluation task perplexity with referenceFields", {"evaluation": {**evaluation, "task": "perplexity", "metrics": ["perplexity"]}})
    yield f("contradictory", "evaluation retention without textField", {"evaluation": {**evaluation, "retention": {"path": s.rows, "promptTemplate": "{{ word }}"}}})
    yield f("contradictory", "duplicate volume names", {"volumes": [{"name": "d", "claimName": "a", "mountPath": "/a"}, {"name": "d", "claimName": "b", "mountPath": "/b"}]})
    yield f("contradictory", "a volume on the config mount path", {"volumes": [{"name": "d", "claimName": "a", "mountPath": "/etc/kubetune"}]})
    yield f("contradictory", "a volume named like the operator's", {"volumes": [{"name": "config", "claimName": "a", "mountPath": "/a"}]})
    yield from _contradictory_evaljobs(s)


def _contradictory_evaljobs(s: Specs) -> Iterator[Case]:
    e = s.e
    for metric, task, dataset in (("accuracy", "generation", {}), ("perplexity", "generation", {}),
                                  ("rouge", "multiple-choice", {"choicesField": "c", "answerField": "a", "referenceFields": DELETE}),
                                  ("exact_match", "multiple-choice", {"choicesField": "c", "answerField": "a", "referenceFields": DELETE}),
                                  ("bleu", "perplexity", {"textField": "word", "referenceFields": DELETE}),
                                  ("accuracy", "perplexity", {"textField": "word", "referenceFields": DELETE})):
        changes = {"task": task, "metrics": [metric], **{f"dataset.{k}": v for k, v in dataset.items()}}
        yield e("contradictory", f"EvalJob metric {metric} for task {task}", changes)
    suite = [{"name": "a", "dataset": s.evj["dataset"], "metrics": ["exact_match"]}]
    yield e("contradictory", "EvalJob with dataset and tasks", {"tasks": suite})
    yield e("contradictory", "EvalJob suite with a top-level task", {"dataset": DELETE, "tasks": suite, "task": "perplexity"})
    yield e("contradictory", "EvalJob suite with duplicate task names", {"dataset": DELETE, "tasks": suite * 2})
    yield e("contradictory", "EvalJob suite task with a metric for another task", {"dataset": DELETE, "tasks": [{**suite[0], "metrics": ["accuracy"]}]})
    yield e("contradictory", "a model with path and fineTuneJob", {"models.0.fineTuneJob": "other"})
    yield e("contradictory", "a model with adapter and fineTuneJob", {"models.0.path": DELETE, "models.0.fineTuneJob": "other", "models.0.adapter": "x"})
    yield e("contradictory", "duplicate model names", {"models": [s.evj["models"][0]] * 2})
    yield e("contradictory", "EvalJob on two nodes", {"resources.nodes": 2})
    yield e("contradictory", "choicesField on a generation task", {"dataset.choicesField": "c"})
    yield e("contradictory", "textField on a generation task", {"dataset.textField": "word"})
    yield e("contradictory", "fewShot with perplexity", {"task": "perplexity", "metrics": ["perplexity"], "dataset.referenceFields": DELETE,
                                                          "dataset.textField": "word", "dataset.fewShot": {"k": 1, "path": s.rows}})
    yield e("contradictory", "a FineTuneJob reference that does not exist", {"models": [s.evj["models"][0], {"name": "tuned", "fineTuneJob": "nosuch"}]})


BOMBS = [
    ("string multiplication", "{{ 'a' * 10**9 }}{{ word }}"),
    ("a billion loop iterations", "{% for i in range(10**9) %}x{% endfor %}{{ word }}"),
    ("nested loops", "{% for a in range(10**5) %}{% for b in range(10**5) %}.{% endfor %}{% endfor %}{{ word }}"),
    ("an attribute walk to object's subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ word }}"),
    ("os through a global's __globals__", "{{ cycler.__init__.__globals__.os.popen('id').read() }}{{ word }}"),
    ("a recursive macro", "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}{{ word }}"),
]


def hostile_strings(s: Specs) -> Iterator[Case]:
    f, e = s.f, s.e
    long = "a" * TEN_KB
    yield Case("hostile", "a 10 kB name", "FineTuneJob", s.ftj, name=long)
    yield Case("hostile", "a 10 kB EvalJob name", "EvalJob", s.evj, name="b" * TEN_KB)
    yield Case("hostile", "a unicode name", "FineTuneJob", s.ftj, name="名前-ü")
    yield Case("hostile", "a path in the name", "FineTuneJob", s.ftj, name="../../etc")
    yield Case("hostile", "a 60-character name (children's names need <= 52)", "FineTuneJob", s.ftj, name="n" * 60)
    for path in ("model.path", "dataset.path", "output.path", "dataset.completionField", "lora.targetModules.0",
                 "image", "priorityClassName", "nodeSelector.gpu", "queueName"):
        yield f("hostile", f"a 10 kB {path}", {path: long})
    yield f("hostile", "a 70 kB promptTemplate", {"dataset.promptTemplate": "{{ word }}" + "x" * 70_000})
    yield e("hostile", "a 10 kB metric name", {"metrics": [long]})
    yield e("hostile", "a 10 kB model name", {"models.0.name": long})
    yield e("hostile", "a model name with a newline", {"models.0.name": "base\nrm -rf"})
    for path in ("../../etc", "/etc", "/", "runs/../../../../tmp/x", "/workspace/../etc"):
        yield f("hostile", f"output.path {path}", {"output.path": path})
        yield e("hostile", f"EvalJob output.path {path}", {"output.path": path})
    yield f("hostile", "promotion.destination /etc/passwd", {"evaluation": evaluation_block(s.rows), "promotion": {"destination": "/etc/passwd"}})
    yield f("hostile", "promotion.destination ../../x", {"evaluation": evaluation_block(s.rows), "promotion": {"destination": "../../x"}})
    yield f("hostile", "a volume mounted on a relative path", {"volumes": [{"name": "d", "claimName": "a", "mountPath": "etc"}]})
    yield f("hostile", "a volume claim named ../x", {"volumes": [{"name": "d", "claimName": "../x", "mountPath": "/d"}]})
    yield from _check_phase_cases(s)


def _check_phase_cases(s: Specs) -> Iterator[Case]:
    """What only the data, read by the pod, can tell: one pod, failed in its check phase."""
    f, e = s.f, s.e
    for what, template in BOMBS[:5]:
        yield f("template-bomb", f"promptTemplate: {what}", {"dataset.promptTemplate": template}, expect=CHECK, reasons=DATA)
    what, template = BOMBS[5]
    yield f("template-bomb", f"completionTemplate: {what}",
            {"dataset.completionField": DELETE, "dataset.completionTemplate": template}, expect=CHECK, reasons=DATA)
    for what, template in (BOMBS[0], BOMBS[3]):
        yield e("template-bomb", f"EvalJob promptTemplate: {what}", {"dataset.promptTemplate": template}, expect=CHECK, reasons=DATA)
    yield f("data-error", "dataset.path ../../etc/passwd", {"dataset.path": "../../etc/passwd"}, expect=CHECK, reasons=DATA)
    yield f("data-error", "dataset.path /etc/shadow", {"dataset.path": "/etc/shadow"}, expect=CHECK, reasons=DATA)
    yield f("data-error", "a unicode completionField no row has", {"dataset.completionField": "ü名前🙂"}, expect=CHECK, reasons=DATA)
    yield f("model-depth", "selective.lastLayers 200 on the 2-layer tiny model",
            {"method": "selective", "lora": DELETE, "selective": {"lastLayers": 200}}, expect=CHECK, reasons=CONFIG)
    yield f("data-error", "model.path ../../etc", {"model.path": "../../etc"}, expect=CHECK, reasons=MODEL)
    yield f("data-error", "a unicode model.path", {"model.path": "/モデル/ü"}, expect=CHECK, reasons=MODEL)
    yield f("nul-byte", "a NUL byte in model.path", {"model.path": s.model + "\x00/x"}, expect=CHECK, reasons=ANY_CHECK)
    yield f("nul-byte", "a NUL byte in dataset.path", {"dataset.path": s.rows + "\x00.jsonl"}, expect=CHECK, reasons=ANY_CHECK)
    yield f("nul-byte", "a NUL byte in output.path", {"output.path": s.output + "\x00x"}, expect=CHECK, reasons=ANY_CHECK)
    yield f("nul-byte", "a NUL byte in metadata.name", {}, name="nul\x00name")


def placement(s: Specs) -> Iterator[Case]:
    f = s.f
    yield f("placement", "priorityClassName nosuch", {"priorityClassName": "nosuch"})
    yield f("placement", "priorityClassName 'a b'", {"priorityClassName": "a b"})
    for cpu in ("-1", "0", "abc", "1.5.5", "1e999"):
        yield f("placement", f"cpu {cpu!r}", {"resources.cpu": cpu})
    for memory in ("-5Gi", "10XB", "Gi"):
        yield f("placement", f"memory {memory!r}", {"resources.memory": memory})
    yield f("placement", "queueName of 10k characters", {"queueName": "q" * 10_000})
    yield f("placement", "queueName 'a b/c'", {"queueName": "a b/c"})
    yield f("placement", "queueName in capitals", {"queueName": "Team-A"})
    yield f("placement", "a nodeSelector key Kubernetes refuses", {"nodeSelector": {"bad key!": "x"}})
    yield f("placement", "a nodeSelector value with a space", {"nodeSelector": {"gpu": "a b"}})
    yield f("placement", "a toleration key with a space", {"tolerations": [{"key": "a b", "operator": "Exists"}]})
    yield f("placement", "a toleration effect that does not exist", {"tolerations": [{"key": "a", "effect": "Sometimes"}]})
    yield f("placement", "operator Exists with a value", {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]})
    yield f("placement", "an empty image", {"image": ""})
    yield f("placement", "imagePullPolicy Sometimes", {"imagePullPolicy": "Sometimes"})
    yield f("placement", "runAsUser 0 (root)", {"securityContext": {"runAsUser": 0}})
    yield s.e("placement", "EvalJob priorityClassName nosuch", {"priorityClassName": "nosuch"})


CATEGORIES = (wrong_types, out_of_bounds, missing_required, contradictory, hostile_strings, placement)


def generate(model: str, rows: str, output_root: str) -> list[Case]:
    """Every case, each named (unless it is about its name) and writing under output_root."""
    cases = []
    for category in CATEGORIES:
        for case in category(Specs(model, rows, output_root)):
            index = len(cases)
            case.name = case.name or f"m{index:03d}"
            output = case.spec.get("output") if isinstance(case.spec, dict) else None
            if isinstance(output, dict) and output.get("path") == output_root:
                case.spec = mutate(case.spec, {"output.path": f"{output_root}/{index:03d}"})
            cases.append(case)
    return cases
