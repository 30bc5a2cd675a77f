{{/* The app.kubernetes.io/name label; the webhook skips pods with this label in its namespace. */}}
{{- define "rotor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every resource name: "rotor" for a release named rotor. */}}
{{- define "rotor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rotor.controller.fullname" -}}{{ include "rotor.fullname" . }}-controller{{- end -}}
{{- define "rotor.webhook.fullname" -}}{{ include "rotor.fullname" . }}-webhook{{- end -}}
{{- define "rotor.auditReceiver.fullname" -}}{{ include "rotor.fullname" . }}-audit-receiver{{- end -}}
{{/* The MutatingWebhookConfiguration (cluster-scoped) and the webhook Service share this name. */}}
{{- define "rotor.webhookConfigName" -}}{{ include "rotor.fullname" . }}-webhook{{- end -}}
{{- define "rotor.certSecret" -}}{{ default (printf "%s-webhook-tls" (include "rotor.fullname" .)) .Values.certs.secretName }}{{- end -}}

{{- define "rotor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rotor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rotor
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "rotor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotor.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rotor.image" -}}
{{- if not .image.repository -}}
{{- fail (printf "%s is not set: no registry publishes Rotor's images yet. Build them with `make images IMAGE_PREFIX=REGISTRY/` (docs/install.md, \"Building the images\"), push them, and install with --set image.repository=REGISTRY/rotor-controller --set agent.image.repository=REGISTRY/rotor-agent" .field) -}}
{{- end -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Pod security context shared by the controller and webhook pods. */}}
{{- define "rotor.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rotor.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Whether the webhook uses a CEL matchCondition on pod annotations. */}}
{{- define "rotor.useMatchConditions" -}}
{{- $mode := .Values.webhook.matchConditions -}}
{{- if eq $mode "always" -}}true
{{- else if and (eq $mode "auto") (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) -}}true
{{- end -}}
{{- end -}}

{{/* Checks that the schema cannot express with a clear message. */}}
{{- define "rotor.validate" -}}
{{- if and (eq .Values.acl.backend "canister") (not .Values.acl.canister.id) -}}
{{- fail "acl.canister.id is required when acl.backend is canister: set --set acl.canister.id=<canister id>" -}}
{{- end -}}
{{- if and (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection) -}}
{{- fail "controller.leaderElection must stay true when controller.replicas is above 1 (two active controllers would both rotate): set controller.leaderElection=true or controller.replicas=1" -}}
{{- end -}}
{{- end -}}

{{/* The webhook container; used by the webhook Deployment and, when combined, the controller's. */}}
{{- define "rotor.webhookContainer" -}}
- name: webhook
  image: {{ include "rotor.image" (dict "image" .Values.image "ctx" . "field" "image.repository") }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [rotor-webhook]
  env:
    - {name: ROTOR_WEBHOOK_PORT, value: {{ .Values.webhook.port | quote }}}
    - {name: ROTOR_WEBHOOK_METRICS_PORT, value: {{ .Values.webhook.metricsPort | quote }}}
    - {name: ROTOR_WEBHOOK_CERT_FILE, value: /etc/rotor/tls/tls.crt}
    - {name: ROTOR_WEBHOOK_KEY_FILE, value: /etc/rotor/tls/tls.key}
    - {name: ROTOR_AGENT_IMAGE, value: {{ include "rotor.image" (dict "image" .Values.agent.image "ctx" . "field" "agent.image.repository") | quote }}}
    - {name: ROTOR_AGENT_PULL_POLICY, value: {{ .Values.agent.image.pullPolicy | quote }}}
    - {name: ROTOR_AGENT_CPU_REQUEST, value: {{ .Values.agent.resources.requests.cpu | default "" | toString | quote }}}
    - {name: ROTOR_AGENT_MEMORY_REQUEST, value: {{ .Values.agent.resources.requests.memory | default "" | toString | quote }}}
    - {name: ROTOR_AGENT_CPU_LIMIT, value: {{ .Values.agent.resources.limits.cpu | default "" | toString | quote }}}
    - {name: ROTOR_AGENT_MEMORY_LIMIT, value: {{ .Values.agent.resources.limits.memory | default "" | toString | quote }}}
    - {name: ROTOR_SIDECAR_MODE, value: {{ .Values.webhook.sidecarMode | quote }}}
    - {name: ROTOR_NAMESPACE, value: {{ .Release.Namespace | quote }}}
    - {name: ROTOR_APP_LABEL, value: {{ include "rotor.name" . | quote }}}
    - {name: ROTOR_LOG_LEVEL, value: {{ .Values.logLevel | quote }}}
  ports:
    - {name: https, containerPort: {{ .Values.webhook.port }}, protocol: TCP}
    - {name: webhook-metrics, containerPort: {{ .Values.webhook.metricsPort }}, protocol: TCP}
  readinessProbe:
    httpGet: {path: /healthz, port: https, scheme: HTTPS}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /healthz, port: https, scheme: HTTPS}
    initialDelaySeconds: 10
    periodSeconds: 20
  resources:
    {{- toYaml .Values.webhook.resources | nindent 4 }}
  securityContext:
    {{- include "rotor.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - {name: tls, mountPath: /etc/rotor/tls, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/*
The webhook's certificate volume. In its own pod it is not optional: the pod starts once the
Secret exists. In the combined pod it must be optional, since the controller in that same pod
writes the Secret: the webhook container restarts until the kubelet has filled the volume.
*/}}
{{- define "rotor.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ include "rotor.certSecret" . }}
    defaultMode: 0440
    {{- if .Values.combined }}
    optional: true
    {{- end }}
{{- end -}}
