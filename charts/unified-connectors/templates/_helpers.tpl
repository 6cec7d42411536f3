{{/* Chart name, overridable. */}}
{{- define "uc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the operator's objects: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "uc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Recommended labels on every object of the release. */}}
{{- define "uc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "uc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: unified-connectors
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects the operator pods only; collectors (component=collector) never match. */}}
{{- define "uc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "uc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Selects the collector pods the operator creates in this namespace. */}}
{{- define "uc.collectorSelectorLabels" -}}
app.kubernetes.io/part-of: unified-connectors
app.kubernetes.io/component: collector
{{- end }}

{{- define "uc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "uc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The collector ServiceAccount name is fixed: the operator puts it into every collector Deployment. */}}
{{- define "uc.collectorServiceAccountName" -}}
unified-connectors-collector
{{- end }}

{{- define "uc.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Refuse combinations the schema cannot express, with a message saying what to change. */}}
{{- define "uc.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without it every replica would reconcile at once" }}
{{- end }}
{{- end }}

{{/* The collector pod settings file (YAML), empty when nothing is set: collector.pod without its empty
values; imagePullSecrets default to the chart's. */}}
{{- define "uc.collectorPodSettings" -}}
{{- $pod := dict }}
{{- range $k, $v := .Values.collector.pod }}
{{- if $v }}
{{- $_ := set $pod $k $v }}
{{- end }}
{{- end }}
{{- if and (not $pod.imagePullSecrets) .Values.imagePullSecrets }}
{{- $_ := set $pod "imagePullSecrets" .Values.imagePullSecrets }}
{{- end }}
{{- if $pod }}
{{- toYaml $pod }}
{{- end }}
{{- end }}

{{/* Where the operator container mounts the collector pod settings. */}}
{{- define "uc.collectorPodSettingsDir" -}}
/etc/unified-connectors/collector-pod
{{- end }}
