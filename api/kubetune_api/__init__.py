"""kubetune's contract: what the operator and the pods both import (pydantic only).

- `resources`: FineTuneJob and EvalJob (spec and status), the source of the CRDs;
- `training`, `evaluation`: the configs the trainer and evaluator pods read;
- `reports`: the status fields the pods own;
- `catalog`: methods and evaluation tasks, and what each produces or needs;
- `errors`: condition reasons and the errors pods report;
- `wire`: group, plurals, env-var names, file paths, condition types;
- `paths`: where pods may write;
- `promotion`: promotion gates, usage accounting and the promotion pod's config.

`import kubetune_api as api` gives the names the operator uses most.
"""
from kubetune_api.catalog import EvalTask, Method
from kubetune_api.errors import Reason
from kubetune_api.resources import (Condition, EvalJob, EvalJobSpec, EvalJobStatus, EvalModelRef, FineTuneEvaluation,
                                    FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, JobStatus, Phase, Placement)
from kubetune_api.wire import (API_VERSION, CONDITION_EVALUATED, CONDITION_PROMOTED, CONDITION_SERVING, CONDITION_SUCCEEDED, CONDITION_SUSPENDED, DEFAULT_IMAGE, EVALJOB_KIND,
                               EVALJOB_PLURAL, FINETUNEJOB_KIND, FINETUNEJOB_PLURAL, GROUP, MAX_NAME_LENGTH, VERSION)

__all__ = [
    "API_VERSION", "CONDITION_EVALUATED", "CONDITION_PROMOTED", "CONDITION_SERVING", "CONDITION_SUCCEEDED", "CONDITION_SUSPENDED", "DEFAULT_IMAGE", "EVALJOB_KIND", "EVALJOB_PLURAL",
    "FINETUNEJOB_KIND", "FINETUNEJOB_PLURAL", "GROUP", "MAX_NAME_LENGTH", "VERSION", "Condition", "EvalJob",
    "EvalJobSpec", "EvalJobStatus", "EvalModelRef", "EvalTask", "FineTuneEvaluation", "FineTuneJob", "FineTuneJobSpec",
    "FineTuneJobStatus", "JobStatus", "Method", "Phase", "Placement", "Reason",
]
