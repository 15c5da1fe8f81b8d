"""kopf registrations, and nothing else: each handler hands its event to `reconcile`,
`followups` or `operations`, which decide and act."""
from __future__ import annotations

import logging
from typing import Any

import kopf

import kubetune_api as api
from kubetune_operator import followups, gang, kube, kueue, metrics, operations, preflight, reconcile, serving, shared
from kubetune_operator.builders import EVAL, FINETUNE, PROMOTE, Workload
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
FTJ = (api.GROUP, api.VERSION, api.FINETUNEJOB_PLURAL)
EVJ = (api.GROUP, api.VERSION, api.EVALJOB_PLURAL)
WORKLOADS = reconcile.WORKLOADS
# How often a finished job with a TTL checks its expiry, and a job without a pod its Job's events.
# (How often a running job's report is read is a setting: report_seconds.)
TTL_CHECK_SECONDS = 5.0
POD_CHECK_SECONDS = 15.0
# How often a promoted job's InferenceService (promotion.serve) is looked at until KServe reports it Ready.
SERVING_CHECK_SECONDS = 10.0
# How often a multi-node job whose ranks have not all started checks its gang timeout.
GANG_CHECK_SECONDS = 5.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_: Any) -> None:
    config: OperatorSettings = memo.config
    shared.config.settings = config
    kube.load_config()
    version = kube.server_version()
    shared.config.job_suspend = kueue.job_suspend_supported(version)
    shared.config.indexed_jobs = gang.indexed_jobs_supported(version)
    metrics.set_currency(config.currency if config.gpu_hour_price is not None else None)
    # Our own prefix for everything kopf stores on objects. No finalizer is needed:
    # children go by garbage collection, so deletion never waits on the operator.
    settings.persistence.finalizer = "kubetune.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io", key="last-handled-configuration")
    settings.posting.reporting_component = "kubetune-operator"
    settings.posting.level = logging.WARNING  # our own events say what happened; not kopf's log
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    logging.getLogger("kubetune").setLevel(logging.INFO)
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
        logger.info(f"serving Prometheus metrics on {config.metrics_address}:{config.metrics_port}/metrics")


@kopf.on.resume(*FTJ)
@kopf.on.create(*FTJ)
@metrics.timed("launch", kind=FINETUNE.kind)
def launch_finetunejob(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    """Validates the spec, then creates (or finds) the ConfigMap and the attempt's Job."""
    if status.get("phase") == api.Phase.Succeeded.value:
        followups.ensure_evaluation(dict(body))  # the operator may have stopped between training and evaluation
    if status.get("phase") in reconcile.FINAL:
        return
    try:
        parsed = preflight.validate(body["metadata"]["name"], dict(body["spec"]))
    except preflight.Invalid as invalid:
        reconcile.fail_without_launch(FINETUNE, dict(body), invalid.reason, str(invalid))
        return
    reconcile.launch(FINETUNE, dict(body), parsed, parsed.training_config())


@kopf.on.resume(*EVJ)
@kopf.on.create(*EVJ)
@metrics.timed("launch", kind=EVAL.kind)
def launch_evaljob(body: kopf.Body, status: kopf.Status, namespace: str, **_: Any) -> None:
    """Resolves FineTuneJob references (waiting for them to succeed), validates, launches."""
    if status.get("phase") in reconcile.FINAL:
        return
    try:
        parsed, config = preflight.validate_eval(
            body["metadata"]["name"], dict(body["spec"]),
            lookup=lambda name: kube.read_object(api.FINETUNEJOB_PLURAL, namespace, name),
            allowed_metrics=shared.config.settings.allowed_evaluate_metrics)
    except preflight.NotReady as waiting:
        reconcile.wait(EVAL, dict(body), waiting.reason, str(waiting))
        raise kopf.TemporaryError(str(waiting), delay=shared.config.settings.wait_seconds)
    except preflight.Invalid as invalid:
        reconcile.fail_without_launch(EVAL, dict(body), invalid.reason, str(invalid))
        return
    reconcile.launch(EVAL, dict(body), parsed, config)


def _watch_children(workload: Workload) -> None:
    owned = {workload.label: kopf.PRESENT}

    @kopf.on.event("batch", "v1", "jobs", labels=owned, id=f"{workload.plural}-jobs")
    def job_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
        reconcile.sync(workload, namespace, meta["labels"][workload.label])

    @kopf.on.event("", "v1", "pods", labels=owned, id=f"{workload.plural}-pods")
    def pod_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
        reconcile.sync(workload, namespace, meta["labels"][workload.label])


for _workload in (FINETUNE, EVAL):
    _watch_children(_workload)


@kopf.on.event("batch", "v1", "jobs", labels={PROMOTE.label: kopf.PRESENT}, id="promotion-jobs")
def promotion_job_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    followups.sync_promotion(namespace, meta["labels"][PROMOTE.label])


@kopf.on.event("", "v1", "pods", labels={PROMOTE.label: kopf.PRESENT}, id="promotion-pods")
def promotion_pod_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    followups.sync_promotion(namespace, meta["labels"][PROMOTE.label])


def _say_dropped(body: kopf.Body, dropped: int) -> None:
    if dropped:
        kopf.event(body, type="Warning", reason="MetricsCapped",
                   message=f"{dropped} score series are not exported to Prometheus: at most {metrics.MAX_SERIES_PER_JOB} "
                           "per job (the status keeps every score)")


@kopf.on.event(*FTJ)
def finetunejob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget(FINETUNE.kind, namespace, name)
    else:
        _say_dropped(body, metrics.observe_finetunejob(namespace, name, dict(status)))


@kopf.on.event(*EVJ)
def evaljob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget(EVAL.kind, namespace, name)
        return
    _say_dropped(body, metrics.observe_evaljob(namespace, name, dict(status)))
    # Its FineTuneJob is its controller (by uid): a label anyone can copy never names it.
    parent = next((ref.get("name") for ref in body["metadata"].get("ownerReferences") or []
                   if ref.get("kind") == FINETUNE.kind and ref.get("controller")), None)
    if parent:
        followups.mirror_evaluation(namespace, parent)
        followups.ensure_promotion(namespace, parent)


@kopf.on.field(*FTJ, field="spec.suspend")
@kopf.on.field(*EVJ, field="spec.suspend")
def suspend_changed(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    reconcile.sync(WORKLOADS[body["kind"]], namespace, name)


@kopf.on.update(*FTJ, field="spec")
@kopf.on.update(*EVJ, field="spec")
def spec_changed(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
    """The admission webhook refuses spec changes; without it, they are never applied, and said so."""
    fields = preflight.immutable_changes(dict(old or {}), dict(new or {}))
    if fields:
        kopf.event(body, type="Warning", reason="SpecImmutable",
                   message=f"spec changes after creation are not applied ({', '.join(fields)}); only spec.suspend may "
                           f"change: delete and re-create the {body['kind']} to change the rest")


def _running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == api.Phase.Running.value


@kopf.timer(*FTJ, interval=OperatorSettings().report_seconds, when=_running)
@kopf.timer(*EVJ, interval=OperatorSettings().report_seconds, when=_running)
def read_report(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """A pod's report lines change no object the operator watches: read them now and then."""
    reconcile.sync(WORKLOADS[body["kind"]], namespace, name)


def _expiring(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and operations.settled(dict(status), dict(spec))


@kopf.timer(*FTJ, interval=TTL_CHECK_SECONDS, when=_expiring)
@kopf.timer(*EVJ, interval=TTL_CHECK_SECONDS, when=_expiring)
def expire(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, namespace: str, name: str, **_: Any) -> None:
    """Deletes a settled job ttlSecondsAfterFinished after it finished; its children go by
    garbage collection, files on volumes stay."""
    due = operations.expires_at(dict(status), dict(spec))
    if due is not None and shared.parse_time(shared.now()) >= due:
        log.info(f"{body['kind']} {namespace}/{name}: deleting, {spec['ttlSecondsAfterFinished']} s after it finished")
        kube.delete_object(WORKLOADS[body["kind"]].plural, namespace, name)


def _awaiting_pod(status: kopf.Status, **_: Any) -> bool:
    return operations.awaiting_pod(dict(status))


@kopf.timer(*FTJ, interval=POD_CHECK_SECONDS, when=_awaiting_pod)
@kopf.timer(*EVJ, interval=POD_CHECK_SECONDS, when=_awaiting_pod)
def check_pod_creation(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """A Job whose pod is refused changes no object the operator watches: look again."""
    reconcile.sync(WORKLOADS[body["kind"]], namespace, name)


def _gathering(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return operations.gathering_ranks(dict(spec), dict(status))


@kopf.timer(*FTJ, interval=GANG_CHECK_SECONDS, when=_gathering)
def check_gang(namespace: str, name: str, **_: Any) -> None:
    """A rank that cannot be scheduled changes no object the operator watches: look again, so
    an attempt whose ranks have not all started is released at spec.gang.timeoutSeconds."""
    reconcile.sync(FINETUNE, namespace, name)


def _serving(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return serving.awaiting(dict(spec), dict(status))


@kopf.timer(*FTJ, interval=SERVING_CHECK_SECONDS, when=_serving)
def check_serving(namespace: str, name: str, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """KServe's InferenceService status changes no object the operator watches (and KServe may
    be installed after the job): look again until it is Ready; a stalled one less often."""
    if serving.looks.due(namespace, name, dict(status), memo.config.serving_stalled_seconds):
        serving.sync(namespace, name)
