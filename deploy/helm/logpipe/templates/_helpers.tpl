{{/* Names: the release's, with "logpipe" once. */}}
{{- define "logpipe.fullname" -}}
{{- if contains "logpipe" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-logpipe" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "logpipe.labels" -}}
app.kubernetes.io/name: logpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector LABELS for one component: include "logpipe.selector" (list . "collector") */}}
{{- define "logpipe.selector" -}}
app.kubernetes.io/name: logpipe
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "logpipe.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "logpipe.kafkaHeadless" -}}
{{ include "logpipe.fullname" . }}-kafka-headless
{{- end -}}

{{/* Every broker by its stable name: POD.HEADLESS.NAMESPACE.svc:PORT,… */}}
{{- define "logpipe.kafkaAddresses" -}}
{{- $root := index . 0 -}}
{{- $port := index . 1 -}}
{{- $name := include "logpipe.fullname" $root -}}
{{- $headless := include "logpipe.kafkaHeadless" $root -}}
{{- $out := list -}}
{{- range $i := until (int $root.Values.kafka.replicas) -}}
{{- $out = append $out (printf "%s-kafka-%d.%s.%s.svc:%d" $name $i $headless $root.Release.Namespace (int $port)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/*
What the seeds got wrong, refused when rendering instead of found in a
CrashLoopBackOff (docs/deployment.md "Kubernetes").
*/}}
{{- define "logpipe.checks" -}}
{{- $v := .Values -}}
{{- if not (has $v.profile (list "small" "cluster")) -}}
{{- fail (printf "profile is %q: use small or cluster" $v.profile) -}}
{{- end -}}
{{- if and (not $v.auth.allowUnauthenticated) (not $v.auth.tokens) -}}
{{- fail "logpipe refuses to serve a pod's address without API tokens: set auth.tokens (logpipe token prints one) or auth.allowUnauthenticated=true" -}}
{{- end -}}
{{- range $url := list $v.lake.root $v.lake.s3.endpoint -}}
{{- if or (contains "localhost" $url) (contains "127.0.0.1" $url) -}}
{{- fail (printf "%q points at the pod itself: inside a pod localhost is that pod; use the service's name (NAME.NAMESPACE.svc)" $url) -}}
{{- end -}}
{{- end -}}
{{- if eq $v.profile "cluster" -}}
{{- if not (or (hasPrefix "s3://" $v.lake.root) (hasPrefix "hdfs://" $v.lake.root)) -}}
{{- fail (printf "lake.root is %q: the cluster profile's pods share no disk, so the lake must be on s3://BUCKET/PREFIX or hdfs://HOST:PORT/PATH" $v.lake.root) -}}
{{- end -}}
{{- if lt (int $v.kafka.replicas) 1 -}}
{{- fail "kafka.replicas must be at least 1" -}}
{{- end -}}
{{- if gt (int $v.kafka.replicationFactor) (int $v.kafka.replicas) -}}
{{- fail (printf "kafka.replicationFactor is %d but kafka.replicas is %d: a topic cannot have more replicas than there are brokers (the seed's InvalidReplicationFactor)" (int $v.kafka.replicationFactor) (int $v.kafka.replicas)) -}}
{{- end -}}
{{- if gt (int $v.kafka.minInsyncReplicas) (int $v.kafka.replicationFactor) -}}
{{- fail (printf "kafka.minInsyncReplicas is %d but kafka.replicationFactor is %d: every write would be refused" (int $v.kafka.minInsyncReplicas) (int $v.kafka.replicationFactor)) -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]{22}$" $v.kafka.clusterId) -}}
{{- fail "kafka.clusterId must be a 22-character base64url id (kafka-storage.sh random-uuid)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The settings every logpipe container shares, as LOGPIPE__ variables. */}}
{{- define "logpipe.env" -}}
- name: LOGPIPE__DATA_DIR
  value: /data
- name: LOGPIPE__AUTH__ALLOW_UNAUTHENTICATED
  value: {{ .Values.auth.allowUnauthenticated | quote }}
{{- if eq .Values.profile "cluster" }}
- name: LOGPIPE__BUS__KIND
  value: kafka
- name: LOGPIPE__BUS__KAFKA__BROKERS
  value: {{ include "logpipe.kafkaAddresses" (list . 9092) | quote }}
- name: LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: LOGPIPE__BUS__KAFKA__MIN_INSYNC_REPLICAS
  value: {{ .Values.kafka.minInsyncReplicas | quote }}
- name: LOGPIPE__LAKE__ROOT
  value: {{ .Values.lake.root | quote }}
{{- if .Values.lake.s3.endpoint }}
- name: LOGPIPE__LAKE__S3__ENDPOINT
  value: {{ .Values.lake.s3.endpoint | quote }}
{{- end }}
- name: LOGPIPE__LAKE__S3__REGION
  value: {{ .Values.lake.s3.region | quote }}
{{- if .Values.lake.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.lake.s3.credentialsSecret | quote }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.lake.s3.credentialsSecret | quote }}, key: AWS_SECRET_ACCESS_KEY}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod settings every logpipe pod shares. */}}
{{- define "logpipe.podSpec" -}}
# Kubernetes would otherwise inject SERVICE_PORT=tcp://… variables for every
# Service, which collide with settings read from the environment (the
# seed's SPARK_MASTER_PORT).
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
{{- end -}}

{{- define "logpipe.configVolume" -}}
- name: config
  configMap:
    name: {{ include "logpipe.fullname" . }}-config
{{- end -}}

{{- define "logpipe.probes" -}}
{{- $port := index . 0 -}}
readinessProbe:
  httpGet: {path: /ready, port: {{ $port }}}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet: {path: /health, port: {{ $port }}}
  initialDelaySeconds: 30
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}
