{{/*
What KEDA's nats-jetstream scaler reads: the NATS monitoring endpoint and the account
holding the stream.
*/}}

{{/* host:port of the NATS monitoring endpoint: the chart's headless NATS Service, port
8222, unless worker.keda.monitorEndpoint names another (an existing NATS). Headless,
because with a cluster the scaler asks the server that leads the consumer by its name,
as "<server name>.<endpoint>": the pods' own DNS names under the headless Service (the
chart's servers are named after their pods). */}}
{{- define "sluice.keda.monitorEndpoint" -}}
{{- if .Values.worker.keda.monitorEndpoint -}}
{{- .Values.worker.keda.monitorEndpoint -}}
{{- else -}}
{{- printf "%s.%s.svc.cluster.local:8222" (include "sluice.componentName" (dict "root" . "component" "nats-headless")) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The account of the stream: the chart's NATS users live in the global account "$G". */}}
{{- define "sluice.keda.account" -}}
{{- .Values.worker.keda.account -}}
{{- end -}}
