{{/*
How the Sluice roles reach NATS: the interface between the NATS part of the chart
(templates/nats/, this file) and the role Deployments. Each Deployment includes

  env:           {{ include "sluice.nats.env" (dict "root" $ "role" "ingress") }}
  volumes:       {{ include "sluice.nats.volumes" (dict "root" $ "role" "ingress") }}
  volumeMounts:  {{ include "sluice.nats.volumeMounts" (dict "root" $ "role" "ingress") }}

with role one of ingress, worker, operator. Each renders a YAML list (possibly empty,
as "[]"-free nothing) indented by the caller with nindent.
*/}}

{{/* The NATS URL the roles connect to. */}}
{{- define "sluice.nats.url" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{- printf "nats://%s:4222" (include "sluice.componentName" (dict "root" . "component" "nats")) -}}
{{- end -}}
{{- end -}}

{{/* Environment of one role (SLUICE_NATS_* variables). Stub until templates/nats/ exists. */}}
{{- define "sluice.nats.env" -}}
- name: SLUICE_NATS_URL
  value: {{ include "sluice.nats.url" .root | quote }}
{{- end -}}

{{- define "sluice.nats.volumes" -}}
{{- end -}}

{{- define "sluice.nats.volumeMounts" -}}
{{- end -}}
