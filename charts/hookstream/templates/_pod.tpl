{{/*
The pod template of a component, shared by the Deployments and StatefulSets so
that every pod gets the same probes, security context, config and secrets.
Call with (dict "ctx" $ "component" NAME) where NAME is ingest, evaluator,
timer, dispatcher or all.
*/}}
{{- define "hookstream.podTemplate" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $c := ternary .ctx.Values.allInOne (index .ctx.Values .component) (eq .component "all") }}
{{- $stateful := include "hookstream.stateful" . -}}
metadata:
  labels:
    {{- include "hookstream.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/version: {{ include "hookstream.imageTag" $ctx | quote }}
    app.kubernetes.io/part-of: hookstream
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $c.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "hookstream.configChecksum" $ctx }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $c.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "hookstream.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  enableServiceLinks: false
  {{- with $c.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
  containers:
    - name: {{ ternary "hookstream" .component (eq .component "all") }}
      image: {{ include "hookstream.image" $ctx }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - serve
        - {{ .component }}
        - -config.file={{ include "hookstream.configPath" $ctx }}
        {{- /* A stable member id per pod (static group membership): a restart within the session timeout keeps the pod's partitions without a rebalance. */}}
        {{- if has .component (list "evaluator" "all") }}
        - -evaluator.instance-id=$(POD_NAME)
        {{- end }}
        {{- if has .component (list "timer" "all") }}
        - -timer.instance-id=$(POD_NAME)
        {{- end }}
        {{- with $c.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if $v.kafka.sasl.mechanism }}
        - name: {{ include "hookstream.env.kafkaPassword" $ctx }}
          valueFrom:
            secretKeyRef:
              name: {{ $v.kafka.sasl.existingSecret }}
              key: {{ $v.kafka.sasl.passwordKey }}
        {{- end }}
        {{- if and (include "hookstream.usesRedis" .) $v.redis.existingSecret }}
        - name: {{ include "hookstream.env.redisPassword" $ctx }}
          valueFrom:
            secretKeyRef:
              name: {{ $v.redis.existingSecret }}
              key: {{ $v.redis.passwordKey }}
        {{- end }}
        {{- if and (include "hookstream.servesAPI" .) $v.auth.existingSecret }}
        - name: {{ include "hookstream.env.ingestTokens" $ctx }}
          valueFrom:
            secretKeyRef:
              name: {{ $v.auth.existingSecret }}
              key: {{ $v.auth.tokensKey }}
        - name: {{ include "hookstream.env.adminTokens" $ctx }}
          valueFrom:
            secretKeyRef:
              name: {{ $v.auth.existingSecret }}
              key: {{ $v.auth.adminTokensKey }}
        {{- end }}
        {{- with $v.tracing.otlpEndpoint }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ . | quote }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $c.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $webhookEnv := and (include "hookstream.sendsWebhooks" .) $v.webhookCredentials.existingSecret $v.webhookCredentials.env }}
      {{- if or $webhookEnv $v.extraEnvFrom $c.extraEnvFrom }}
      envFrom:
        {{- if $webhookEnv }}
        - secretRef:
            name: {{ $v.webhookCredentials.existingSecret }}
        {{- end }}
        {{- with $v.extraEnvFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $c.extraEnvFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      readinessProbe:
        {{- toYaml $v.readinessProbe | nindent 8 }}
      livenessProbe:
        {{- toYaml $v.livenessProbe | nindent 8 }}
      {{- with $c.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: {{ dir (include "hookstream.configPath" $ctx) }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if $stateful }}
        - name: data
          mountPath: {{ include "hookstream.dataPath" $ctx }}
        {{- end }}
        {{- if and $v.kafka.tls.enabled $v.kafka.tls.existingSecret }}
        - name: kafka-tls
          mountPath: {{ include "hookstream.kafkaTLSPath" $ctx }}
          readOnly: true
        {{- end }}
        {{- if and (include "hookstream.sendsWebhooks" .) $v.webhookCredentials.existingSecret $v.webhookCredentials.mountPath }}
        - name: webhook-credentials
          mountPath: {{ $v.webhookCredentials.mountPath }}
          readOnly: true
        {{- end }}
        {{- with $c.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "hookstream.configName" $ctx }}
    - name: tmp
      emptyDir: {}
    {{- if and $stateful (not $c.persistence.enabled) }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if and $v.kafka.tls.enabled $v.kafka.tls.existingSecret }}
    - name: kafka-tls
      secret:
        secretName: {{ $v.kafka.tls.existingSecret }}
    {{- end }}
    {{- if and (include "hookstream.sendsWebhooks" .) $v.webhookCredentials.existingSecret $v.webhookCredentials.mountPath }}
    - name: webhook-credentials
      secret:
        secretName: {{ $v.webhookCredentials.existingSecret }}
    {{- end }}
    {{- with $c.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.affinity }}
  affinity:
    {{- tpl (toYaml .) $ctx | nindent 4 }}
  {{- end }}
  {{- with $c.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- tpl (toYaml .) $ctx | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The volumeClaimTemplates of a stateful component with persistence on.
Call with (dict "ctx" $ "component" NAME).
*/}}
{{- define "hookstream.volumeClaimTemplates" -}}
{{- $c := ternary .ctx.Values.allInOne (index .ctx.Values .component) (eq .component "all") }}
{{- $p := $c.persistence }}
{{- if $p.enabled -}}
persistentVolumeClaimRetentionPolicy:
  {{- toYaml $p.retentionPolicy | nindent 2 }}
volumeClaimTemplates:
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata:
      name: data
      labels:
        {{- include "hookstream.selectorLabels" . | nindent 8 }}
      {{- with $p.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      accessModes:
        {{- toYaml $p.accessModes | nindent 8 }}
      {{- if $p.storageClass }}
      storageClassName: {{ if eq "-" $p.storageClass }}""{{ else }}{{ $p.storageClass }}{{ end }}
      {{- end }}
      resources:
        requests:
          storage: {{ $p.size | quote }}
{{- end }}
{{- end }}
