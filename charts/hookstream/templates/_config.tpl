{{/*
The YAML configuration file of every pod (services/hookstream/internal/process
Config). The target is given on the command line (`hookstream serve TARGET`),
which wins over the file, so that one file serves every component. Secrets are
${NAME} references that the process expands from its environment at start.
*/}}
{{- define "hookstream.config" -}}
{{- $v := .Values }}
{{- $kafka := dict "brokers" $v.kafka.brokers "topic_prefix" $v.kafka.topicPrefix "group_prefix" $v.kafka.groupPrefix "partitions" $v.kafka.partitions "replication_factor" $v.kafka.replicationFactor "create_topics" $v.kafka.createTopics "session_timeout" $v.kafka.sessionTimeout "static_session_timeout" $v.kafka.staticSessionTimeout "heartbeat_interval" $v.kafka.heartbeatInterval "rebalance_timeout" $v.kafka.rebalanceTimeout }}
{{- if $v.kafka.tls.enabled }}
{{- $tls := dict "enabled" true }}
{{- if $v.kafka.tls.existingSecret }}
{{- $_ := set $tls "ca_file" (printf "%s/ca.crt" (include "hookstream.kafkaTLSPath" .)) }}
{{- if $v.kafka.tls.clientCertificate }}
{{- $_ := set $tls "cert_file" (printf "%s/tls.crt" (include "hookstream.kafkaTLSPath" .)) }}
{{- $_ := set $tls "key_file" (printf "%s/tls.key" (include "hookstream.kafkaTLSPath" .)) }}
{{- end }}
{{- end }}
{{- with $v.kafka.tls.serverName }}{{ $_ := set $tls "server_name" . }}{{ end }}
{{- if $v.kafka.tls.insecureSkipVerify }}{{ $_ := set $tls "insecure_skip_verify" true }}{{ end }}
{{- $_ := set $kafka "tls" $tls }}
{{- end }}
{{- if $v.kafka.sasl.mechanism }}
{{- $_ := set $kafka "sasl" (dict "mechanism" $v.kafka.sasl.mechanism "username" $v.kafka.sasl.username "password" (printf "${%s}" (include "hookstream.env.kafkaPassword" .))) }}
{{- end }}
{{- $redis := dict "addr" $v.redis.addr "db" $v.redis.db }}
{{- with $v.redis.username }}{{ $_ := set $redis "username" . }}{{ end }}
{{- if $v.redis.existingSecret }}
{{- /* Only the pods that use Redis get the variable; the others expand it to "". */}}
{{- $_ := set $redis "password" (printf "${%s:-}" (include "hookstream.env.redisPassword" .)) }}
{{- end }}
{{- $ingest := dict }}
{{- if $v.auth.existingSecret }}
{{- /* Only the pods that serve the API get the variables, from required Secret keys: an ingest pod never starts without its tokens. */}}
{{- $_ := set $ingest "tokens" (printf "${%s:-}" (include "hookstream.env.ingestTokens" .)) }}
{{- $_ := set $ingest "admin_tokens" (printf "${%s:-}" (include "hookstream.env.adminTokens" .)) }}
{{- end }}
{{- /* Without tokens, ingest refuses to serve beyond loopback unless told to. */}}
{{- if $v.auth.allowUnauthenticated }}{{ $_ := set $ingest "allow_unauthenticated" true }}{{ end }}
{{- $server := dict "listen_address" ":8080" }}
{{- if $v.pprof.enabled }}{{ $_ := set $server "pprof" true }}{{ end }}
{{- $cfg := dict
  "target" "all"
  "log" (dict "level" $v.log.level "format" $v.log.format)
  "server" $server
  "kafka" $kafka
  "redis" $redis
  "ingest" $ingest
  "evaluator" (dict "data_dir" (printf "%s/evaluator" (include "hookstream.dataPath" .)))
  "timer" (dict "data_dir" (printf "%s/timer" (include "hookstream.dataPath" .)))
}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $v.structuredConfig) }}
{{- include "hookstream.checkNoSecrets" $cfg }}
{{- /* Quote the ${NAME} references, so that an expanded value is one YAML string whatever its characters (but a single quote). */}}
{{- regexReplaceAll "(?m)^(\\s*(?:- |[a-z_]+: ))(\\$\\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\\})$" (toYaml $cfg) "${1}'${2}'" }}
{{- end }}

{{/*
Refuses secret values in the configuration (it is rendered into a ConfigMap):
the secret fields may only hold ${NAME} references.
*/}}
{{- define "hookstream.checkNoSecrets" -}}
{{- $ref := "^\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-)?\\}$" }}
{{- $fields := dict }}
{{- with .kafka }}{{ with .sasl }}{{ $_ := set $fields "kafka.sasl.password" .password }}{{ end }}{{ end }}
{{- with .redis }}{{ $_ := set $fields "redis.password" .password }}{{ end }}
{{- with .ingest }}{{ $_ := set $fields "ingest.tokens" .tokens }}{{ $_ := set $fields "ingest.admin_tokens" .admin_tokens }}{{ end }}
{{- range $path, $val := $fields }}
{{- if $val }}
{{- $items := $val }}
{{- if kindIs "string" $val }}{{ $items = list $val }}{{ end }}
{{- range $items }}
{{- if not (regexMatch $ref (toString .)) }}
{{- fail (printf "structuredConfig: %s holds a secret value, which would be rendered into a ConfigMap; reference a variable instead (${NAME}, set with extraEnv from a Secret), or use the chart's existingSecret values" $path) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
