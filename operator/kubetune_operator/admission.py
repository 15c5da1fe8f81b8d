"""The validating admission webhook: `kubectl apply` of a FineTuneJob or EvalJob is refused
at once, with the field and the reason, when the spec alone decides it can never work.

The checks are preflight's and runtimes.resolve's (the same the operator runs before launching:
the pydantic models, the admin's policy, the job's runtime, read through the API): this module
writes no rule of its own except immutability. An
EvalJob's FineTuneJob references are not looked up here: whether they exist or succeeded is
the operator's to wait for. On UPDATE only `spec.suspend` may change; metadata may, and the
status subresource (written by the operator and the pods) is never sent here.

Imported by main.py only when the webhook is on (kopf refuses handlers without a server).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import kopf
from kubernetes.client.rest import ApiException

import kubetune_api as api
from kubetune_operator import kube, preflight, runtimes, shared, webhook
from kubetune_operator.settings import OperatorSettings

FTJ = (api.GROUP, api.VERSION, api.FINETUNEJOB_PLURAL)
EVJ = (api.GROUP, api.VERSION, api.EVALJOB_PLURAL)
# The handler ids are the webhook URL paths (/validate-finetunejob).
HANDLER_IDS = {api.FINETUNEJOB_PLURAL: "validate-finetunejob", api.EVALJOB_PLURAL: "validate-evaljob"}
UNPROCESSABLE = 422


def check_spec(kind: str, name: str, spec: dict[str, Any]) -> None:
    """preflight's spec-only checks; raises kopf.AdmissionError naming the reason and field."""
    try:
        if kind == api.EVALJOB_KIND:
            preflight.validate_eval_spec(name, spec, shared.config.settings.allowed_evaluate_metrics)
        else:
            preflight.validate(name, spec)
    except preflight.Invalid as invalid:
        reason = getattr(invalid.reason, "value", invalid.reason)  # a Reason member or a plain string
        raise kopf.AdmissionError(f"{reason}: {invalid}", code=UNPROCESSABLE) from None


def check_update(kind: str, old_spec: dict[str, Any], new_spec: dict[str, Any]) -> None:
    changes = preflight.immutable_changes(old_spec, new_spec)
    if changes:
        mutable = ", ".join(f"spec.{field}" for field in preflight.MUTABLE)
        raise kopf.AdmissionError(
            f"SpecImmutable: {', '.join(changes)} changed; only {mutable} may change after creation "
            f"(delete and re-create the {kind} to change the rest)", code=UNPROCESSABLE)


def review(kind: str, body: dict[str, Any], old: Optional[dict[str, Any]], operation: str) -> None:
    """The whole decision for one admission request; raises kopf.AdmissionError to refuse."""
    spec = dict(body.get("spec") or {})
    if operation == "UPDATE" and old is not None:
        check_update(kind, dict(old.get("spec") or {}), spec)
    elif operation == "CREATE":
        check_spec(kind, (body.get("metadata") or {}).get("name") or "", spec)


SPECS = {api.FINETUNEJOB_KIND: api.FineTuneJobSpec, api.EVALJOB_KIND: api.EvalJobSpec}
# Runtime and namespace reads: blocking calls, kept off the event loop and off kopf's worker pool
# (whose threads may be the very ones waiting on this webhook, see below).
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kubetune-admission-lookup")


def check_runtime(kind: str, namespace: str, spec: dict[str, Any], read_runtime: runtimes.ReadRuntime,
                  namespace_labels: runtimes.NamespaceLabels) -> None:
    """The policy and the job's runtime (found, allowing the namespace, not overridden by the
    spec, its limits kept): raises kopf.AdmissionError naming the rule and field."""
    placement = SPECS[kind].model_validate(spec)  # check_spec parsed it already
    try:
        runtimes.resolve(placement, namespace, shared.config.settings.policy, read_runtime, namespace_labels,
                         eval_job=kind == api.EVALJOB_KIND)
    except preflight.Invalid as invalid:
        raise kopf.AdmissionError(f"{getattr(invalid.reason, 'value', invalid.reason)}: {invalid}", code=UNPROCESSABLE) from None
    except ApiException as exc:  # refused rather than admitted unchecked
        raise kopf.AdmissionError(f"RuntimeNotFound: spec.runtime could not be read by the operator: {exc.status} {exc.reason}",
                                  code=UNPROCESSABLE) from None


async def review_with_runtime(kind: str, body: dict[str, Any], old: Optional[dict[str, Any]], operation: str) -> None:
    review(kind, body, old, operation)
    if operation == "CREATE":
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        await asyncio.get_running_loop().run_in_executor(
            _LOOKUPS, check_runtime, kind, namespace, dict(body.get("spec") or {}), kube.read_runtime, kube.namespace_labels)


@kopf.on.validate(*FTJ, id=HANDLER_IDS[api.FINETUNEJOB_PLURAL], operations=["CREATE", "UPDATE"])
async def validate_finetunejob(body: kopf.Body, old: Optional[kopf.Body], operation: str, subresource: Optional[str],
                         **_: Any) -> None:
    if not subresource:  # status writes are never refused here
        await review_with_runtime(api.FINETUNEJOB_KIND, dict(body), dict(old) if old is not None else None, operation)


@kopf.on.validate(*EVJ, id=HANDLER_IDS[api.EVALJOB_PLURAL], operations=["CREATE", "UPDATE"])
async def validate_evaljob(body: kopf.Body, old: Optional[kopf.Body], operation: str, subresource: Optional[str],
                     **_: Any) -> None:
    if not subresource:
        await review_with_runtime(api.EVALJOB_KIND, dict(body), dict(old) if old is not None else None, operation)


STATUS_HANDLER_ID = webhook.STATUS_HANDLER_ID
# The handlers are coroutines: kopf runs them on its event loop, not in the worker threads. A
# worker patching a status waits on the API server, which waits on this webhook; answered from
# the same threads, a full pool would wait on itself until the webhook's timeout.
FORBIDDEN = 403


def check_status_writer(username: str, operator: str, old_status: Any, new_status: Any) -> None:
    """Only the operator writes a job's status: everything it decides from (attempts, retries,
    the pod ledger and usage, the evaluation it mirrors, promotion) lives there. Pods hold no
    credentials; any other subject, a tenant with `*` on kubetune.io included, is refused."""
    if username and username == operator:
        return
    if (old_status or {}) == (new_status or {}):
        return  # nothing changes (e.g. a patch of the same values)
    who = f"the operator ({operator})" if operator else "the operator (whose username this webhook was not told)"
    raise kopf.AdmissionError(f"Forbidden: the status of kubetune jobs is written by {who} alone; "
                              f"{username or 'this user'} may not change it", code=FORBIDDEN)


@kopf.on.validate(*FTJ, id=STATUS_HANDLER_ID, operations=["UPDATE"], subresource="status")
@kopf.on.validate(*EVJ, id=STATUS_HANDLER_ID, operations=["UPDATE"], subresource="status")
async def validate_status(body: kopf.Body, old: Optional[kopf.Body], userinfo: dict[str, Any], memo: kopf.Memo,
                    **_: Any) -> None:
    check_status_writer(str((userinfo or {}).get("username") or ""), memo.config.operator_username,
                        dict((old or {}).get("status") or {}), dict(body.get("status") or {}))


def server(config: OperatorSettings) -> kopf.WebhookServer:
    return webhook.server(config, HANDLER_IDS, STATUS_HANDLER_ID)


@kopf.on.startup()
def serve_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.admission.server = server(memo.config)
    settings.admission.managed = None  # webhook.py keeps the configuration (failurePolicy, timeout)
