{{/* Names and labels: every resource takes them from here. */}}

{{- define "modelreuse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource-name prefix. Release "modelreuse" gives "modelreuse", so the objects are named as in
manifests/ (modelreuse-operator, modelreuse-alert-token). Kept short enough for the suffixes below.
*/}}
{{- define "modelreuse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelreuse.operatorName" -}}
{{- printf "%s-operator" (include "modelreuse.fullname" .) }}
{{- end }}

{{- define "modelreuse.serviceAccountName" -}}
{{- default (include "modelreuse.operatorName" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "modelreuse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: what the Deployment, Service and ServiceMonitor select the operator pod by. */}}
{{- define "modelreuse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelreuse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelreuse.labels" -}}
helm.sh/chart: {{ include "modelreuse.chart" . }}
{{ include "modelreuse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modelreuse.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}

{{/* The alert token Secret the operator reads (key "token"), or "" when the webhook is off. */}}
{{- define "modelreuse.webhookSecretName" -}}
{{- if .Values.webhook.enabled }}
{{- if .Values.webhook.existingSecret }}
{{- .Values.webhook.existingSecret }}
{{- else }}
{{- default (printf "%s-alert-token" (include "modelreuse.fullname" .)) .Values.webhook.tokenSecretName }}
{{- end }}
{{- end }}
{{- end }}

{{/* Container port names: one "http" listener when the webhook shares the metrics port (the default). */}}
{{- define "modelreuse.metricsPortName" -}}
{{- if eq (int .Values.webhook.port) (int .Values.metrics.port) }}http{{ else }}metrics{{ end }}
{{- end }}

{{- define "modelreuse.webhookPortName" -}}
{{- if eq (int .Values.webhook.port) (int .Values.metrics.port) }}http{{ else }}webhook{{ end }}
{{- end }}

{{/*
The operator's access, the same rules as manifests/rbac/operator.yaml (tests/integration/test_chart.py
compares them). Namespaced rules: in a ClusterRole when watching all namespaces, else in a Role per
watched namespace.
*/}}
{{- define "modelreuse.namespacedRules" -}}
# Watch the objects (kopf lists then watches), read one fresh after a child changes, and record a
# retraining request as an annotation (alert webhook, Prometheus poller).
- apiGroups: [modelreuse.io]
  resources: [modelreuses]
  verbs: [get, list, watch, patch]
# Write the observed state; only through the status subresource.
- apiGroups: [modelreuse.io]
  resources: [modelreuses/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which needs update on the owner's finalizers
# wherever the OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: [modelreuse.io]
  resources: [modelreuses/finalizers]
  verbs: [update]
# Evaluation, adaptation and retraining Jobs: created once, never changed, deleted by the garbage collector.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create]
# Results are read from the Job pods' termination messages.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The inference Deployment, server-side applied (patch; create when it is new).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create]
# A Kubernetes Event for every transition.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-scoped in any case: CustomResourceDefinitions cannot be granted by a Role. */}}
{{- define "modelreuse.clusterRules" -}}
# kopf watches CRDs to notice when the ModelReuse CRD is (re)installed and to start or stop its watches.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}

{{- define "modelreuse.secretRules" -}}
# The alert webhook's bearer token: one named Secret in the operator's namespace, nothing else.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ include "modelreuse.webhookSecretName" . | quote }}]
  verbs: [get]
{{- end }}
