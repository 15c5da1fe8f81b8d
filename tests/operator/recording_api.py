"""A stand-in for kube's writes in the operator's unit tests: the status patches it receives
land on one FineTuneJob, the objects it is asked to create are recorded (the cluster tests in
tests/e2e run the same code against a real API server)."""
from __future__ import annotations

import copy


class RecordingApi:
    def __init__(self, ftj, **extra):
        self.ftj, self.created, self.events = ftj, [], []
        self.__dict__.update(extra)

    def patch_status(self, plural, namespace, name, status):
        self.ftj["status"] = {**self.ftj.get("status", {}), **copy.deepcopy(status)}

    def ensure(self, obj):
        self.created.append(obj)
        return True
