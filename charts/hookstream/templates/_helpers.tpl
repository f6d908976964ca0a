{{/*
Names, labels and the pieces every component shares. A component is one of
ingest, evaluator, timer, dispatcher (distributed mode) or all (all-in-one);
the same string is the target, the template folder and the `component` label.
*/}}

{{- define "hookstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookstream.fullname" -}}
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

{{/* The name of a component's objects; the all-in-one's is the full name. Call with (dict "ctx" $ "component" NAME). */}}
{{- define "hookstream.resourceName" -}}
{{- if eq .component "all" }}
{{- include "hookstream.fullname" .ctx }}
{{- else }}
{{- printf "%s-%s" (include "hookstream.fullname" .ctx | trunc 52 | trimSuffix "-") .component }}
{{- end }}
{{- end }}

{{- define "hookstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; with a component, its label too. Call with (dict "ctx" $ "component" NAME) or (dict "ctx" $). */}}
{{- define "hookstream.labels" -}}
helm.sh/chart: {{ include "hookstream.chart" .ctx }}
{{ include "hookstream.selectorLabels" . }}
app.kubernetes.io/version: {{ include "hookstream.imageTag" .ctx | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: hookstream
{{- end }}

{{- define "hookstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "hookstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookstream.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "hookstream.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repo = printf "%s/%s" . $repo }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (include "hookstream.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "hookstream.configName" -}}
{{- printf "%s-config" (include "hookstream.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* Where the pods find things. */}}
{{- define "hookstream.configPath" -}}/etc/hookstream/config.yaml{{- end }}
{{- define "hookstream.dataPath" -}}/var/lib/hookstream{{- end }}
{{- define "hookstream.kafkaTLSPath" -}}/var/run/secrets/kafka-tls{{- end }}

{{/*
The environment variables that carry secrets into the config file, by
component. The config file names them as ${NAME}; their values come from
Secrets only, so no secret value is ever rendered into a ConfigMap.
*/}}
{{- define "hookstream.env.kafkaPassword" -}}KAFKA_SASL_PASSWORD{{- end }}
{{- define "hookstream.env.redisPassword" -}}REDIS_PASSWORD{{- end }}
{{- define "hookstream.env.ingestTokens" -}}HOOKSTREAM_INGEST_TOKENS{{- end }}
{{- define "hookstream.env.adminTokens" -}}HOOKSTREAM_ADMIN_TOKENS{{- end }}

{{/* Whether a component serves the HTTP API, talks to Redis, sends webhooks, keeps state. */}}
{{- define "hookstream.servesAPI" -}}{{ if has .component (list "ingest" "all") }}true{{ end }}{{- end }}
{{- define "hookstream.usesRedis" -}}{{ if has .component (list "ingest" "dispatcher" "all") }}true{{ end }}{{- end }}
{{- define "hookstream.sendsWebhooks" -}}{{ if has .component (list "dispatcher" "all") }}true{{ end }}{{- end }}
{{- define "hookstream.stateful" -}}{{ if has .component (list "evaluator" "timer" "all") }}true{{ end }}{{- end }}

{{/* The checksum of the config file, as a pod annotation, so that a config change rolls the pods. */}}
{{- define "hookstream.configChecksum" -}}
{{- include "hookstream.config" . | sha256sum }}
{{- end }}
