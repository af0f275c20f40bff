{{/*
Names and labels, in the shape every Helm user expects (helm create, bitnami).
*/}}

{{- define "kubeskel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: release-chart, or just the release name when it already contains
the chart name. Truncated to 63 characters, the DNS label limit; metrics and
test objects append at most 8 characters, so the base is cut at 55.
*/}}
{{- define "kubeskel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubeskel.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeskel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: immutable in a Deployment, so only name and instance. */}}
{{- define "kubeskel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeskel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubeskel.labels" -}}
helm.sh/chart: {{ include "kubeskel.chart" . }}
{{ include "kubeskel.selectorLabels" . }}
app.kubernetes.io/version: {{ include "kubeskel.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "kubeskel.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kubeskel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeskel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubeskel.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* Image reference; a digest pins it and wins over the tag. */}}
{{- define "kubeskel.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "kubeskel.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/*
kubeskel.durationMs parses a Go duration string with the units h, m, s and ms
("5s", "1500ms", "1m30s", "0") and returns whole milliseconds, rounded up.
values.schema.json already rejects malformed durations; this check repeats it
for installs that skip schema validation, because a silently wrong number here
becomes a grace period that cuts requests.
*/}}
{{- define "kubeskel.durationMs" -}}
{{- $d := toString . | trim -}}
{{- if not (regexMatch "^(0|([0-9]+(\\.[0-9]+)?(ms|h|m|s))+)$" $d) -}}
{{- fail (printf "invalid duration %q: use a non-negative Go duration with units h, m, s or ms, e.g. 1m30s or 1500ms" $d) -}}
{{- end -}}
{{- $ms := 0.0 -}}
{{- $unitMs := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|h|m|s)" $d -1 -}}
{{- $unit := regexFind "(ms|h|m|s)$" . -}}
{{- $ms = addf $ms (mulf (float64 (trimSuffix $unit .)) (get $unitMs $unit)) -}}
{{- end -}}
{{- ceil $ms | int64 -}}
{{- end -}}

{{/* kubeskel.durationSeconds: the same, rounded up to whole seconds. */}}
{{- define "kubeskel.durationSeconds" -}}
{{- $ms := include "kubeskel.durationMs" . | int64 -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* Sidecar URLs: explicit values win over the preset. */}}
{{- define "kubeskel.sidecarReadyURL" -}}
{{- $presets := dict "istio" "http://127.0.0.1:15021/healthz/ready" "linkerd" "http://127.0.0.1:4191/ready" -}}
{{- default (get $presets .Values.sidecar.preset) .Values.sidecar.readyURL -}}
{{- end -}}

{{- define "kubeskel.sidecarQuitURL" -}}
{{- $presets := dict "istio" "http://127.0.0.1:15020/quitquitquit" "linkerd" "http://127.0.0.1:4191/shutdown" -}}
{{- default (get $presets .Values.sidecar.preset) .Values.sidecar.quitURL -}}
{{- end -}}

{{/* Seconds of the native preStop sleep; 0 when the in-process delay is used. */}}
{{- define "kubeskel.preStopSleepSeconds" -}}
{{- if .Values.lifecycle.preStopSleep.enabled -}}
{{- include "kubeskel.durationSeconds" .Values.lifecycle.preStopDelay -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{/* In-process APP_PRESTOP_DELAY: zero when the kubelet sleeps instead. */}}
{{- define "kubeskel.appPreStopDelay" -}}
{{- if .Values.lifecycle.preStopSleep.enabled -}}
0s
{{- else -}}
{{- .Values.lifecycle.preStopDelay -}}
{{- end -}}
{{- end -}}

{{/*
kubeskel.istioDrainSeconds is Envoy's drainDuration for the Istio preset: the
shortest time the app keeps accepting connections once termination starts,
in whole seconds rounded down. The proxy container has no preStop hook, so
Envoy starts its graceful drain (Connection: close, GOAWAY) at once; ending
it inside that window means every inbound client has been told to move
before the app stops accepting. The window is the preStop sleep when used,
else the in-process delay, or the quiet period when shorter (it may end the
delay early). Istio takes whole seconds, at least 1s, so a shorter window
is an error rather than a drain that outlasts it.
*/}}
{{- define "kubeskel.istioDrainSeconds" -}}
{{- $l := .Values.lifecycle -}}
{{- $ms := mul (include "kubeskel.preStopSleepSeconds" . | int64) 1000 -}}
{{- if not $l.preStopSleep.enabled -}}
{{- $ms = include "kubeskel.durationMs" $l.preStopDelay | int64 -}}
{{- $quiet := include "kubeskel.durationMs" $l.preStopQuietPeriod | int64 -}}
{{- if and (gt $quiet 0) (lt $quiet $ms) -}}
{{- $ms = $quiet -}}
{{- end -}}
{{- end -}}
{{- $s := div $ms 1000 -}}
{{- if lt $s 1 -}}
{{- fail (printf "sidecar.preset istio needs the app to keep accepting for at least 1s after termination starts (lifecycle.preStopDelay %q, preStopQuietPeriod %q): Envoy's drainDuration is whole seconds, at least 1s, and must end inside that window" (toString $l.preStopDelay) (toString $l.preStopQuietPeriod)) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{/*
kubeskel.drainMs is the longest a pod can take from the start of termination
to the app's exit: the preStop sleep (when used) or the in-process delay, the
HTTP shutdown, the telemetry flush, the quit POST when a quit URL is set, and
the admin server's stop (1s, config.AdminStopTimeout). It is term for term the
binary's ShutdownBudget: the chart passes the preStop sleep, which the kubelet
runs inside the same grace period before SIGTERM, as APP_PRESTOP_SLEEP, and
"kubeskel check-config" on the rendered env must accept the grace period
(test/deploy/budget_test.go).
*/}}
{{- define "kubeskel.drainMs" -}}
{{- $l := .Values.lifecycle -}}
{{- $ms := mul (include "kubeskel.preStopSleepSeconds" . | int64) 1000 -}}
{{- $ms = add $ms (include "kubeskel.durationMs" (include "kubeskel.appPreStopDelay" .)) -}}
{{- $ms = add $ms (include "kubeskel.durationMs" $l.shutdownTimeout) -}}
{{- $ms = add $ms (include "kubeskel.durationMs" $l.telemetryFlushTimeout) -}}
{{- if include "kubeskel.sidecarQuitURL" . -}}
{{- $ms = add $ms (include "kubeskel.durationMs" .Values.sidecar.quitTimeout) -}}
{{- end -}}
{{- $ms = add $ms 1000 -}}
{{- $ms -}}
{{- end -}}

{{/*
kubeskel.nativeSidecarShutdown: lifecycle.nativeSidecarShutdown when the pod
has native sidecars, else "" (no term). The kubelet sends native sidecars
SIGTERM only after the app has exited, within the same grace period, so
their shutdown follows the whole drain; the chart passes it to the binary as
APP_NATIVE_SIDECAR_SHUTDOWN, whose budget check adds it too.
*/}}
{{- define "kubeskel.nativeSidecarShutdown" -}}
{{- if .Values.nativeSidecars -}}
{{- .Values.lifecycle.nativeSidecarShutdown -}}
{{- end -}}
{{- end -}}

{{/*
kubeskel.terminationGracePeriodSeconds = ceil(drain + native sidecars'
shutdown (when any) + safetyMargin). The margin is at least one second, so
the grace period is always strictly longer than the budget, which is what
the binary's start-up check demands.
*/}}
{{- define "kubeskel.terminationGracePeriodSeconds" -}}
{{- $margin := include "kubeskel.durationMs" .Values.lifecycle.safetyMargin | int64 -}}
{{- if lt $margin 1000 -}}
{{- fail (printf "lifecycle.safetyMargin %q must be at least 1s" .Values.lifecycle.safetyMargin) -}}
{{- end -}}
{{- $ms := add (include "kubeskel.drainMs" . | int64) $margin -}}
{{- with include "kubeskel.nativeSidecarShutdown" . -}}
{{- $ms = add $ms (include "kubeskel.durationMs" .) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
kubeskel.container renders one user-supplied container as a one-item list.
It keeps the container's own securityContext and otherwise applies the chart's
restricted default, so sidecars added through values stay PSS-restricted;
restartPolicy (Always) turns an init container into a native sidecar.
*/}}
{{- define "kubeskel.container" -}}
{{- $c := deepCopy .container -}}
{{- if not $c.securityContext -}}
{{- $_ := set $c "securityContext" .root.Values.securityContext -}}
{{- end -}}
{{- if .restartPolicy -}}
{{- $_ := set $c "restartPolicy" .restartPolicy -}}
{{- end -}}
{{- toYaml (list $c) -}}
{{- end -}}

{{/*
Name of the Secret served on the traffic port: tls.secretName, or the one
the cert-manager Certificate writes; empty means cleartext.
*/}}
{{- define "kubeskel.tlsSecretName" -}}
{{- if .Values.tls.secretName -}}
{{- .Values.tls.secretName -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- include "kubeskel.fullname" . }}-tls
{{- end -}}
{{- end }}
