"""spec.gang of a multi-node FineTuneJob: how long its ranks may take to all start (the
operator's gang.py admits them as one where the cluster allows it)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from kubetune_api.base import ApiModel

GANG_TIMEOUT_SECONDS = 600


class GangScheduling(ApiModel):
    """How the pods of a multi-node job start: every rank, or none (docs/finetunejob.md, multi-node)."""

    timeout_seconds: int = Field(
        GANG_TIMEOUT_SECONDS, ge=15, le=24 * 3600,
        description=f"Seconds every rank's pod has to start after the attempt's first pod was created (once Kueue admitted it, where it queues); past them the attempt's Jobs are deleted, so its pods hold no GPUs and no quota, and it fails with RanksNotScheduled, retried under backoffLimit like an eviction. Image pulls count: leave room for them.")



class MultiNode(ApiModel):
    """FineTuneJobSpec's multi-node fields (a base of it, before Placement and TrainingConfig,
    whose resources.nodes it checks against)."""

    gang: Optional[GangScheduling] = Field(None, description=f"Multi-node jobs (resources.nodes > 1): how long the ranks may take to all start before the attempt lets go of what it holds (unset: {GANG_TIMEOUT_SECONDS} s). All ranks are admitted as one (one Indexed Job, one Kueue Workload; a PodGroup under a coscheduling scheduler) where the cluster allows it.")

    @model_validator(mode="after")
    def _gang_is_multi_node(self) -> "MultiNode":
        if self.gang is not None and getattr(self, "resources").nodes < 2:
            raise ValueError("gang: applies to multi-node jobs only (resources.nodes > 1)")
        return self
