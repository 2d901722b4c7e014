{{/*
The process configuration of each role (src/config.rs, camelCase YAML), rendered into
its ConfigMap and hashed into its pod template so that a change rolls the pods.
*/}}

{{- define "sluice.config.ingress" -}}
{{- $tls := include "sluice.tls.enabled" . -}}
{{ include "sluice.config.common" . }}
listeners:
{{- range (include "sluice.listeners" . | fromYamlArray) }}
  - name: {{ .name }}
    address: "0.0.0.0:{{ .containerPort }}"
    kind: {{ .kind }}
    {{- if $.Values.ingress.proxyProtocol.enabled }}
    proxyProtocol: true
    trustedProxies: {{ toJson $.Values.ingress.proxyProtocol.trustedProxies }}
    {{- end }}
{{- end }}
{{- if $tls }}
tls:
  certFile: /run/sluice/tls/tls.crt
  keyFile: /run/sluice/tls/tls.key
{{- end }}
limits:
  {{- include "sluice.config.limits" . | nindent 2 }}
  # The root filesystem is read-only: message content past the spill threshold goes to
  # an emptyDir.
  spillDirectory: /var/lib/sluice/spill
{{- end -}}

{{- define "sluice.config.worker" -}}
{{ include "sluice.config.common" . }}
limits:
  {{- include "sluice.config.limits" . | nindent 2 }}
delivery:
  concurrency: {{ .Values.worker.concurrency }}
  # Never deliver by MX to addresses inside the cluster's networks.
  allowPrivateDestinations: false
  secretsKeyFile: /run/sluice/secrets-key/key
{{- end -}}

{{- define "sluice.config.operator" -}}
{{ include "sluice.config.common" . }}
{{- end -}}
