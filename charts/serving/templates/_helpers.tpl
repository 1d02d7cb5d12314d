{{/* Chart name and fullname, truncated to fit Kubernetes name limits. */}}
{{- define "serving.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "serving.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Standard labels; call with (dict "root" $ "component" "runtime"). */}}
{{- define "serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "serving.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: serving
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "serving.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Runtime names: the main one (HTTP + gRPC ports) and the Knative one (HTTP only). */}}
{{- define "serving.runtimeName" -}}
{{ include "serving.fullname" . }}
{{- end }}
{{- define "serving.knativeRuntimeName" -}}
{{ include "serving.fullname" . | trunc 55 | trimSuffix "-" }}-knative
{{- end }}

{{/* One model entry merged over modelDefaults; call with (dict "root" $ "model" $m). Returns YAML. */}}
{{- define "serving.model" -}}
{{- $m := mergeOverwrite (deepCopy .root.Values.modelDefaults) (deepCopy .model) }}
{{- $class := $m.autoscaler.class }}
{{- $defaults := get .root.Values.autoscaling $class | default dict }}
{{- if not (hasKey $m.autoscaler "target") }}{{- $_ := set $m.autoscaler "target" $defaults.target }}{{- end }}
{{- if and (eq $class "knative") (not (hasKey $m.autoscaler "containerConcurrency")) }}
{{- $_ := set $m.autoscaler "containerConcurrency" $defaults.containerConcurrency }}
{{- end }}
{{- if and (hasKey $m "canaryTrafficPercent") (ne $class "knative") }}
{{- fail (printf "models[%s]: canaryTrafficPercent needs autoscaler.class knative (KServe canaries run on Knative revisions); use inPodTraffic in Standard mode" $m.name) }}
{{- end }}
{{- range $m.env }}
{{- if and (eq .name "SERVING_ADMIN_TOKEN") (hasKey . "value") }}
{{- fail (printf "models[%s]: env SERVING_ADMIN_TOKEN has a plain value; keep the token in a Secret and set adminToken.secretName (docs/security.md)" $m.name) }}
{{- else if and (eq .name "SERVING_ADMIN_TOKEN") (or $m.adminToken $m.inPodTraffic) }}
{{- fail (printf "models[%s]: SERVING_ADMIN_TOKEN is set both in env and by adminToken/inPodTraffic; keep one" $m.name) }}
{{- end }}
{{- end }}
{{- if gt (int $m.minReplicas) (int $m.maxReplicas) }}
{{- fail (printf "models[%s]: minReplicas (%v) is greater than maxReplicas (%v)" $m.name $m.minReplicas $m.maxReplicas) }}
{{- end }}
{{- toYaml $m }}
{{- end }}

{{/* The kserve-container spec shared by both runtimes; call with (dict "root" $ "grpc" true). */}}
{{- define "serving.container" -}}
{{- $v := .root.Values }}
name: kserve-container
image: {{ include "serving.image" .root }}
imagePullPolicy: {{ $v.image.pullPolicy }}
# Appended to the image's ENTRYPOINT (serving serve --model-repo /mnt/models); KServe replaces
# {{ "{{.Name}}" }} with the InferenceService name.
args:
  - --model-name={{ "{{.Name}}" }}
  - --model-repo=/mnt/models
  - --http-port=8080
  - --grpc-port=8081
env:
  - name: SERVING_WORKERS
    value: {{ $v.runtime.workers | quote }}
  - name: SERVING_PREDICT_THREADS
    value: {{ $v.runtime.predictThreads | quote }}
  - name: SERVING_LOG_LEVEL
    value: {{ $v.runtime.logLevel | quote }}
  # On SIGTERM: not-ready at once, keep serving 5 s while endpoints are removed, then up to
  # 20 s for in-flight requests: 25 s stays inside Kubernetes' default 30 s termination grace.
  - name: SERVING_DRAIN_DELAY_SECONDS
    value: "5"
  - name: SERVING_DRAIN_GRACE_SECONDS
    value: "20"
  {{- if include "serving.trafficPolicyOn" .root }}
  # Fleet traffic policy (docs/canary.md): the release's ConfigMap, mounted as a directory.
  - name: SERVING_TRAFFIC_POLICY_DIR
    value: /etc/serving/traffic
  - name: SERVING_TRAFFIC_POLICY_POLL_SECONDS
    value: {{ $v.trafficPolicy.pollSeconds | quote }}
  {{- end }}
  {{- if $v.admin.port }}
  - name: SERVING_ADMIN_PORT
    value: {{ $v.admin.port | quote }}
  {{- end }}
  {{- with $v.runtime.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: http1
    containerPort: 8080
    protocol: TCP
  {{- if .grpc }}
  - name: h2c
    containerPort: 8081
    protocol: TCP
  {{- with $v.admin.port }}
  - name: admin
    containerPort: {{ . }}
    protocol: TCP
  {{- end }}
  {{- end }}
readinessProbe:
  httpGet:
    path: /v2/health/ready
    port: 8080
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /v2/health/live
    port: 8080
  periodSeconds: 10
  failureThreshold: 3
startupProbe:
  httpGet:
    path: /v2/health/live
    port: 8080
  periodSeconds: 2
  failureThreshold: 60
resources:
  {{- toYaml $v.runtime.resources | nindent 2 }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 0
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if include "serving.trafficPolicyOn" .root }}
  # The whole ConfigMap as a directory, never subPath: the kubelet updates it in place by
  # swapping a ..data link, which subPath mounts never see.
  - name: traffic-policy
    mountPath: /etc/serving/traffic
    readOnly: true
  {{- end }}
{{- end }}

{{/* A runtime spec; call with (dict "root" $ "grpc" bool "autoSelect" bool). */}}
{{- define "serving.runtimeSpec" -}}
annotations:
  prometheus.kserve.io/port: "8080"
  prometheus.kserve.io/path: /metrics
supportedModelFormats:
  - name: onnx
    version: "1"
    autoSelect: {{ .autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
  - name: xgboost
    version: "2"
    autoSelect: {{ .autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
  - name: lightgbm
    version: "4"
    autoSelect: {{ .autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
protocolVersions:
  - v2
  - v1
  {{- if .grpc }}
  - grpc-v2
  {{- end }}
multiModel: false
containers:
  - {{ include "serving.container" . | indent 4 | trim }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if include "serving.trafficPolicyOn" .root }}
  - name: traffic-policy
    configMap:
      name: {{ include "serving.trafficPolicyName" .root }}
  {{- end }}
{{- end }}

{{/* "true" when the fleet traffic-policy ConfigMap is on: trafficPolicy.enabled, or any
model uses the in-pod canary (inPodTraffic). */}}
{{- define "serving.trafficPolicyOn" -}}
{{- $on := .Values.trafficPolicy.enabled }}
{{- range .Values.models }}{{ if .inPodTraffic }}{{ $on = true }}{{ end }}{{ end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/* The release's traffic-policy ConfigMap (one key <model>.yaml per model). */}}
{{- define "serving.trafficPolicyName" -}}
{{ include "serving.fullname" . | trunc 55 | trimSuffix "-" }}-traffic
{{- end }}
