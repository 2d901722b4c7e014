{{/*
What the three role Deployments share: the relay's name, the Secrets they mount, the
security context every container runs with, and how pods spread. The role templates
(ingress.yaml, worker.yaml, operator.yaml) put these together.
*/}}

{{/* The relay's name in greetings, Received headers and HELO (values.yaml: hostname). */}}
{{- define "sluice.hostname" -}}
{{- if .Values.hostname -}}
{{- .Values.hostname -}}
{{- else if and .Values.tls.certManager.enabled .Values.tls.certManager.dnsNames -}}
{{- first .Values.tls.certManager.dnsNames -}}
{{- else -}}
{{- printf "%s.%s.svc.cluster.local" (include "sluice.componentName" (dict "root" . "component" "ingress")) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Whether the ingress has a certificate: the submission listeners need one. */}}
{{- define "sluice.tls.enabled" -}}
{{- if or .Values.tls.secretName .Values.tls.certManager.enabled .Values.tls.selfSigned -}}true{{- end -}}
{{- end -}}

{{/* Whether the chart makes a self-signed certificate: asked for, and none given. */}}
{{- define "sluice.tls.selfSigned" -}}
{{- if and .Values.tls.selfSigned (not .Values.tls.secretName) (not .Values.tls.certManager.enabled) -}}true{{- end -}}
{{- end -}}

{{- define "sluice.tls.secretName" -}}
{{- default (include "sluice.componentName" (dict "root" . "component" "tls")) .Values.tls.secretName -}}
{{- end -}}

{{/* The listeners the ingress runs: name, kind, container port, Service port. */}}
{{- define "sluice.listeners" -}}
{{- $l := .Values.ingress.listeners -}}
{{- $tls := include "sluice.tls.enabled" . -}}
{{- if $l.smtp.enabled }}
- {name: smtp, kind: relay, containerPort: 2525, port: {{ $l.smtp.port }}}
{{- end }}
{{- if and $tls $l.submission.enabled }}
- {name: submission, kind: submission, containerPort: 2587, port: {{ $l.submission.port }}}
{{- end }}
{{- if and $tls $l.submissions.enabled }}
- {name: submissions, kind: submissions, containerPort: 2465, port: {{ $l.submissions.port }}}
{{- end }}
{{- end -}}

{{- define "sluice.adminToken.secretName" -}}
{{- default (include "sluice.componentName" (dict "root" . "component" "admin-token")) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "sluice.secretsKey.secretName" -}}
{{- default (include "sluice.componentName" (dict "root" . "component" "secrets-key")) .Values.secretsKey.existingSecret -}}
{{- end -}}

{{/* The in-cluster names of the admin Service, which the queue API accepts in Host. */}}
{{- define "sluice.admin.hosts" -}}
{{- $svc := include "sluice.componentName" (dict "root" . "component" "admin") -}}
{{- $ns := .Release.Namespace -}}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
- {{ $name | quote }}
- {{ printf "%s:9090" $name | quote }}
{{- end }}
{{- end -}}

{{/* Settings every role's configuration file starts with. */}}
{{- define "sluice.config.common" -}}
hostname: {{ include "sluice.hostname" . | quote }}
log: {{ .Values.log }}
admin: "0.0.0.0:9090"
adminTokenFile: /run/sluice/admin/token
adminAllowedHosts:
{{- include "sluice.admin.hosts" . }}
{{- end -}}

{{/* The limits ingress and workers share (one value feeds both). */}}
{{- define "sluice.config.limits" -}}
maxMessageSize: {{ .Values.limits.maxMessageSize | quote }}
maxRecipients: {{ .Values.limits.maxRecipients }}
shutdownGrace: {{ printf "%ds" (int .Values.limits.shutdownGraceSeconds) }}
drainDelay: {{ printf "%ds" (int .Values.limits.drainDelaySeconds) }}
{{- end -}}

{{/* How long the kubelet waits after SIGTERM: the drain delay, the grace, a margin. */}}
{{- define "sluice.terminationGracePeriodSeconds" -}}
{{- add .Values.limits.drainDelaySeconds .Values.limits.shutdownGraceSeconds .Values.limits.terminationMarginSeconds -}}
{{- end -}}

{{/* Pod-level security: a numeric non-root user, RuntimeDefault seccomp. */}}
{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: nothing to escalate to, nothing to write but volumes. */}}
{{- define "sluice.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Spread a role's pods over zones and nodes, preferring but not requiring it. */}}
{{- define "sluice.topologySpread" -}}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "sluice.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The admin port and its probes: (dict "root" $ "component" "ingress"). */}}
{{- define "sluice.probes" -}}
startupProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* checkov skips that hold for every role's Deployment, with their reasons. */}}
{{- define "sluice.checkovSkips" -}}
{{- if not .Values.image.digest }}
checkov.io/skip1: "CKV_K8S_43=the image is pinned by tag (image.tag, default the chart's appVersion); set image.digest to pin by digest"
{{- end }}
{{- if ne .Values.image.pullPolicy "Always" }}
checkov.io/skip2: "CKV_K8S_15=IfNotPresent: a release tag is immutable, and Always would make every start depend on the registry"
{{- end }}
{{- end -}}
