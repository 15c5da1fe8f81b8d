{{/* Base name of the operator's objects: <release>-operator (kubetune-operator for release kubetune). */}}
{{- define "kubetune.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pod. */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetune.labels" -}}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{- end -}}

{{/* Labels of the CRDs, which every release in the cluster shares. */}}
{{- define "kubetune.crdLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The namespaced permissions of the operator: a ClusterRole's or each watched namespace's Role's rules. */}}
{{- define "kubetune.namespacedRules" -}}
# delete: ttlSecondsAfterFinished.
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
# EvalJobs: watched, and created for a FineTuneJob's evaluation block.
- apiGroups: ["kubetune.io"]
  resources: ["evaljobs"]
  verbs: ["get", "list", "watch", "patch", "update", "create", "delete"]
# The operator alone writes status (the status webhook refuses everyone else).
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs/status", "evaljobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kubetune.io"]
  resources: ["finetunejobs/finalizers", "evaljobs/finalizers"]
  verbs: ["update"]
# A namespace's TrainingRuntimes, read on each admission and launch of a job naming one.
- apiGroups: ["kubetune.io"]
  resources: ["trainingruntimes"]
  verbs: ["get"]
# patch: an attempt that failed is stopped (parallelism 0); delete: spec.suspend stops the running attempt.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# What a pod reports: its `kubetune-report` log lines (pods hold no API credentials).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create"]
# A multi-node attempt's NetworkPolicy (its workers reach each other only).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create"]
# A multi-node job's headless Service: its ranks find rank 0 by DNS (one Indexed Job per attempt).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
# scheduler-plugins' PodGroup of a coscheduled multi-node attempt (all ranks bound, or none).
- apiGroups: ["scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["get", "create"]
# list: the Job controller's FailedCreate events say why a Job has no pod.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
# Kueue's Workload of a queued Job: why Kueue has not admitted it yet (status.message).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]
# KServe's InferenceService of a promotion's serve block: created, updated (a kept one a later job
# names again), read for its readiness; owned ones go by garbage collection (no delete).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "create", "patch"]
{{- end -}}

{{/* The Secret (kubernetes.io/tls) with the webhook's serving certificate, key and CA. */}}
{{- define "kubetune.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "kubetune.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's username as the API server names it: the status webhook's one writer. */}}
{{- define "kubetune.operatorUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "kubetune.serviceAccountName" .) -}}
{{- end -}}
