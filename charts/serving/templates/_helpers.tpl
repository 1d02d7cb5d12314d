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
{{ .Values.runtime.name | default (include "serving.fullname" .) }}
{{- end }}
{{- define "serving.knativeRuntimeName" -}}
{{ include "serving.runtimeName" . | trunc 55 | trimSuffix "-" }}-knative
{{- end }}

{{/* The KServe version as plain major.minor.patch ("v" and any pre-release dropped, so that
     0.20.0-rc1 compares as 0.20.0). */}}
{{- define "serving.kserveVersion" -}}
{{- regexReplaceAll "-.*$" (trimPrefix "v" (toString .Values.kserve.version)) "" }}
{{- end }}

{{/* Pod settings a model may override; the release-wide value applies otherwise. */}}
{{- define "serving.podKeys" -}}
serviceAccountName imagePullSecrets nodeSelector tolerations affinity topologySpreadConstraints priorityClassName podAnnotations
{{- end }}

{{/* One model entry merged over modelDefaults and the release-wide pod settings, with what
     will really run worked out once for every template; call with (dict "root" $ "model" $m).
     Returns YAML with, besides the model's own fields:
       mode:           knative | standard
       kserveClass:    the serving.kserve.io/autoscalerClass annotation (standard mode)
       scaler:         kpa | hpa | keda-kserve | keda-chart | pinned
       podsMin/podsMax the pod range KServe/Knative/KEDA will keep */}}
{{- define "serving.model" -}}
{{- $v := .root.Values }}
{{- $m := mergeOverwrite (deepCopy $v.modelDefaults) (deepCopy .model) }}
{{- range $key := splitList " " (include "serving.podKeys" .root) }}
{{- if not (hasKey $m $key) }}{{ $_ := set $m $key (get $v $key) }}{{ end }}
{{- end }}
{{- $class := $m.autoscaler.class }}
{{- $defaults := get $v.autoscaling $class | default dict }}
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
{{- $ver := include "serving.kserveVersion" .root }}
{{- $min := int $m.minReplicas }}
{{- $max := int $m.maxReplicas }}
{{- $_ := set $m "mode" (ternary "knative" "standard" (eq $class "knative")) }}
{{- /* The deploymentMode annotation: Knative/Standard from 0.16.0 (constants.go). Older releases
       know only Serverless/RawDeployment; 0.16.0 still accepts those but validates a
       RawDeployment object's autoscaling with Knative's rules (it rewrites the old names only
       from 0.17.0), refusing scaleMetric: cpu. */}}
{{- $new := semverCompare ">=0.16.0" $ver }}
{{- $_ := set $m "deploymentMode" (ternary (ternary "Knative" "Standard" (eq $class "knative")) (ternary "Serverless" "RawDeployment" (eq $class "knative")) $new) }}
{{- if eq $class "knative" }}
{{- $_ := set $m "scaler" "kpa" }}
{{- else if eq $class "hpa" }}
{{- /* KServe's HPA never goes below 1 pod (hpa_reconciler.go). */}}
{{- $min = max $min 1 | int }}
{{- $_ := set $m "kserveClass" "hpa" }}
{{- $_ := set $m "scaler" "hpa" }}
{{- else if eq $class "none" }}
{{- $max = $min }}
{{- $_ := set $m "scaler" "pinned" }}
{{- /* deployment_reconciler.go pins spec.replicas to minReplicas for class none from 0.15.1, for
       class external in 0.15.0 only; before 0.15.0 neither exists: an HPA with min = max holds
       the count (it cannot go below 1). */}}
{{- if semverCompare ">=0.15.1" $ver }}
{{- $_ := set $m "kserveClass" "none" }}
{{- else if semverCompare ">=0.15.0" $ver }}
{{- $_ := set $m "kserveClass" "external" }}
{{- else }}
{{- $min = max $min 1 | int }}{{ $max = $min }}
{{- $_ := set $m "kserveClass" "hpa" }}
{{- end }}
{{- else if eq $class "keda" }}
{{- if lt $min 1 }}
{{- fail (printf "models[%s]: autoscaler keda needs minReplicas >= 1: its metric comes from the model's own pods, so from zero pods it could never scale up" $m.name) }}
{{- end }}
{{- $owner := $v.keda.owner }}
{{- if eq $owner "auto" }}{{ $owner = ternary "kserve" "chart" (semverCompare ">=0.15.0" $ver) }}{{ end }}
{{- if and (eq $owner "kserve") (not (semverCompare ">=0.15.0" $ver)) }}
{{- fail (printf "models[%s]: keda.owner kserve needs KServe >= 0.15.0 (kserve.version is %s): use keda.owner chart" $m.name $ver) }}
{{- end }}
{{- if and (eq $owner "chart") (semverCompare ">=0.15.0, <0.15.1" $ver) }}
{{- fail (printf "models[%s]: keda.owner chart needs autoscalerClass external, which KServe 0.15.0 pins to minReplicas (fighting KEDA): use keda.owner kserve" $m.name) }}
{{- end }}
{{- $_ := set $m "kserveClass" (ternary "keda" "external" (eq $owner "kserve")) }}
{{- $_ := set $m "scaler" (printf "keda-%s" $owner) }}
{{- if eq $owner "chart" }}
{{- $fallback := $m.autoscaler.fallbackReplicas | default $v.keda.fallback.replicas | default $max }}
{{- $_ := set $m.autoscaler "fallbackReplicas" (int $fallback) }}
{{- end }}
{{- end }}
{{- $_ := set $m "podsMin" $min }}
{{- $_ := set $m "podsMax" $max }}
{{- toYaml $m }}
{{- end }}

{{/* Name of the stable predictor Deployment in Standard mode (KServe's PredictorServiceName
     with no predictor name, constants.go); the chart never names the predictor. */}}
{{- define "serving.predictorName" -}}
{{ . }}-predictor
{{- end }}

{{/* PromQL: average requests in flight over the window across the STABLE predictor's pods of one
     Standard-mode model, from the request-time counter (Little's law: time spent per second =
     requests in flight). The pod regexp matches only the Deployment <isvc>-predictor's pods
     (<deployment>-<replicaset hash>-<suffix>), not a canary's <isvc>-<canary>-predictor-...
     pods, whose requests would otherwise be divided over the stable replica count. Call with
     (dict "root" $ "model" $m). */}}
{{- define "serving.kedaQuery" -}}
sum(rate(serving_request_duration_seconds_sum{namespace="{{ .root.Release.Namespace }}", model="{{ .model.name }}", pod=~"{{ include "serving.predictorName" .model.name }}-[a-z0-9]+-[a-z0-9]+"}[{{ .root.Values.keda.window }}]))
{{- end }}

{{/* Labels every PodMonitor / PrometheusRule carries so that Prometheus selects it; call with
     (dict "root" $ "labels" <the object's own extra labels>). */}}
{{- define "serving.monitoringLabels" -}}
{{- include "serving.labels" (dict "root" .root "component" "monitoring") }}
{{- with merge (deepCopy (.labels | default dict)) (deepCopy (.root.Values.monitoring.selectorLabels | default dict)) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The kserve-container spec shared by both runtimes; call with (dict "root" $ "knative" bool).
     The Knative variant lists one port (Knative routes exactly one) and only a readiness probe:
     Knative before 1.15 rejects startupProbe, and on later releases a startup probe turns off
     the queue-proxy's fast start-up probing. Without periodSeconds the queue-proxy probes every
     50 ms until the server is ready (readiness/probe.go), so a pod joins as soon as its models
     are loaded; start-up time is bounded by Knative's progress deadline (config-deployment,
     600 s by default), and with no liveness probe a slow model load is never killed for it. */}}
{{- define "serving.container" -}}
{{- $v := .root.Values }}
name: kserve-container
image: {{ include "serving.image" .root }}
imagePullPolicy: {{ $v.image.pullPolicy }}
# Appended to the image's ENTRYPOINT (serving serve --model-repo /mnt/models); KServe replaces
# {{ "{{.Name}}" }} with the InferenceService name. With modelRepository.uri the server reads
# that repository itself (its own model of it) instead of KServe's /mnt/models.
args:
  - --model-name={{ "{{.Name}}" }}
  - --model-repo={{ $v.modelRepository.uri | default "/mnt/models" }}
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
  {{- with $v.observability.tracing }}
  {{- if .enabled }}
  {{- if not .otlpEndpoint }}
  {{- fail "observability.tracing.enabled needs observability.tracing.otlpEndpoint (the collector's OTLP/HTTP endpoint, e.g. http://otel-collector.observability:4318)" }}
  {{- end }}
  # OpenTelemetry traces over OTLP/HTTP; callers' sampling decisions are honoured (docs/observability.md).
  - name: SERVING_TRACING
    value: "true"
  - name: OTEL_EXPORTER_OTLP_ENDPOINT
    value: {{ .otlpEndpoint | quote }}
  - name: OTEL_TRACES_SAMPLER
    value: parentbased_traceidratio
  - name: OTEL_TRACES_SAMPLER_ARG
    value: {{ .sampleRatio | quote }}
  {{- end }}
  {{- end }}
  {{- with $v.observability.payloadLogging }}
  {{- if .url }}
  # Sampled inputs and outputs as CloudEvents, as KServe's logger sends them (docs/observability.md).
  - name: SERVING_PAYLOAD_LOG_URL
    value: {{ .url | quote }}
  - name: SERVING_PAYLOAD_LOG_SAMPLE_RATE
    value: {{ .sampleRate | quote }}
  - name: SERVING_PAYLOAD_LOG_BY
    value: {{ .by | quote }}
  {{- end }}
  {{- end }}
  {{- with $v.modelRepository }}
  {{- if .uri }}
  # The remote repository's verified cache (docs/guides/object-storage.md), on its own volume.
  - name: SERVING_MODEL_CACHE_DIR
    value: /var/cache/serving/models
  - name: SERVING_REPOSITORY_POLL_SECONDS
    value: {{ .pollSeconds | quote }}
  {{- if .cache.maxBytes }}
  - name: SERVING_MODEL_CACHE_MAX_BYTES
    value: {{ .cache.maxBytes | int64 | quote }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- with $v.runtime.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if and $v.modelRepository.uri $v.modelRepository.credentialsSecret }}
# The store's credentials, as its standard environment variables (the Secret's keys).
envFrom:
  - secretRef:
      name: {{ $v.modelRepository.credentialsSecret }}
{{- end }}
ports:
  - name: http1
    containerPort: 8080
    protocol: TCP
  {{- if not .knative }}
  - name: h2c
    containerPort: 8081
    protocol: TCP
  {{- with $v.admin.port }}
  - name: admin
    containerPort: {{ . }}
    protocol: TCP
  {{- end }}
  {{- end }}
{{- if .knative }}
readinessProbe:
  httpGet:
    path: /v2/health/ready
    port: 8080
  successThreshold: 1
{{- else }}
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
# The server listens only once its models are loaded: up to 2 s x 60 = 120 s before liveness
# starts counting.
startupProbe:
  httpGet:
    path: /v2/health/live
    port: 8080
  periodSeconds: 2
  failureThreshold: 60
{{- end }}
resources:
  {{- toYaml $v.runtime.resources | nindent 2 }}
securityContext:
  runAsNonRoot: true
  {{- range $key := list "runAsUser" "runAsGroup" }}
  {{- /* Helm drops keys whose value is null; 0 is a valid GID. */}}
  {{- if and (hasKey $v.runtime.securityContext $key) (not (kindIs "invalid" (index $v.runtime.securityContext $key))) }}
  {{ $key }}: {{ index $v.runtime.securityContext $key | int64 }}
  {{- end }}
  {{- end }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if $v.modelRepository.uri }}
  - name: model-cache
    mountPath: /var/cache/serving/models
  {{- end }}
  {{- if include "serving.trafficPolicyOn" .root }}
  # The whole ConfigMap as a directory, never subPath: the kubelet updates it in place by
  # swapping a ..data link, which subPath mounts never see.
  - name: traffic-policy
    mountPath: /etc/serving/traffic
    readOnly: true
  {{- end }}
{{- end }}

{{/* A runtime spec; call with (dict "root" $ "knative" bool). The Knative variant is never
     auto-selected: Knative-mode InferenceServices name it. */}}
{{- define "serving.runtimeSpec" -}}
{{- $autoSelect := and .root.Values.runtime.autoSelect (not .knative) }}
annotations:
  prometheus.kserve.io/port: "8080"
  prometheus.kserve.io/path: /metrics
supportedModelFormats:
  - name: onnx
    version: "1"
    autoSelect: {{ $autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
  - name: xgboost
    version: "2"
    autoSelect: {{ $autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
  - name: lightgbm
    version: "4"
    autoSelect: {{ $autoSelect }}
    priority: {{ .root.Values.runtime.priority }}
protocolVersions:
  - v2
  - v1
  {{- if not .knative }}
  - grpc-v2
  {{- end }}
multiModel: false
containers:
  - {{ include "serving.container" . | indent 4 | trim }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- with .root.Values.modelRepository }}
  {{- if .uri }}
  - name: model-cache
    {{- if .cache.volume }}
    {{- toYaml .cache.volume | nindent 4 }}
    {{- else }}
    emptyDir:
      {{- with .cache.sizeLimit }}
      sizeLimit: {{ . }}
      {{- end }}
    {{- end }}
  {{- end }}
  {{- end }}
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
