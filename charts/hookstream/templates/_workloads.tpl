{{/*
The objects every component has, parameterised by component. Each component's
folder includes the ones it needs. Call each with (dict "ctx" $ "component" NAME).
*/}}

{{/* A Deployment (ingest, dispatcher): no local state. */}}
{{- define "hookstream.deployment" -}}
{{- $c := index .ctx.Values .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "hookstream.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "hookstream.labels" . | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "hookstream.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    {{- include "hookstream.podTemplate" . | nindent 4 }}
{{- end }}

{{/*
A StatefulSet (evaluator, timer, all): a volume per pod for Pebble, and the pod
name as the consumer-group instance id. Pods start and stop in parallel (they
do not depend on each other); a rolling update still replaces one at a time.
*/}}
{{- define "hookstream.statefulset" -}}
{{- $c := ternary .ctx.Values.allInOne (index .ctx.Values .component) (eq .component "all") }}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "hookstream.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "hookstream.labels" . | nindent 4 }}
spec:
  replicas: {{ $c.replicas }}
  revisionHistoryLimit: 5
  serviceName: {{ include "hookstream.resourceName" . }}
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  selector:
    matchLabels:
      {{- include "hookstream.selectorLabels" . | nindent 6 }}
  template:
    {{- include "hookstream.podTemplate" . | nindent 4 }}
  {{- include "hookstream.volumeClaimTemplates" . | nindent 2 }}
{{- end }}

{{/*
The Service of a component: the HTTP port (API on ingest and all-in-one,
/metrics everywhere). Evaluator and timer get a headless one, which also
governs their StatefulSet.
*/}}
{{- define "hookstream.service" -}}
{{- $c := ternary .ctx.Values.allInOne (index .ctx.Values .component) (eq .component "all") }}
{{- $svc := $c.service | default dict }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "hookstream.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "hookstream.labels" . | nindent 4 }}
  {{- with $svc.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if has .component (list "evaluator" "timer") }}
  clusterIP: None
  publishNotReadyAddresses: true
  {{- else }}
  type: {{ $svc.type | default "ClusterIP" }}
  {{- end }}
  ports:
    - name: http
      port: {{ $svc.port | default 8080 }}
      targetPort: http
      protocol: TCP
  selector:
    {{- include "hookstream.selectorLabels" . | nindent 4 }}
{{- end }}

{{/* A PodDisruptionBudget: drains take one pod of a component at a time by default. */}}
{{- define "hookstream.pdb" -}}
{{- $c := ternary .ctx.Values.allInOne (index .ctx.Values .component) (eq .component "all") }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "hookstream.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "hookstream.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $c.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "hookstream.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* A HorizontalPodAutoscaler (ingest, dispatcher) when autoscaling is on. */}}
{{- define "hookstream.hpa" -}}
{{- $a := (index .ctx.Values .component).autoscaling }}
{{- if $a.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "hookstream.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "hookstream.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "hookstream.resourceName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
{{- end }}
{{- end }}
