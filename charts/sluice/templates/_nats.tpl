{{/*
How the Sluice roles reach NATS: the interface between the NATS part of the chart
(templates/nats/, this file) and the role Deployments. Each Deployment includes

  env:           {{ include "sluice.nats.env" (dict "root" $ "role" "ingress") }}
  volumes:       {{ include "sluice.nats.volumes" (dict "root" $ "role" "ingress") }}
  volumeMounts:  {{ include "sluice.nats.volumeMounts" (dict "root" $ "role" "ingress") }}

with role one of ingress, worker, operator. Each renders YAML list items (possibly
nothing at all) indented by the caller with nindent.

Two modes: nats.url empty, the chart runs its own JetStream cluster (templates/nats/) and
each role connects as its own user, with the password from the chart's Secret; nats.url
set, the roles connect there with the credentials of nats.existing.
*/}}

{{/* The NATS URL the roles connect to. */}}
{{- define "sluice.nats.url" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{- printf "nats://%s:4222" (include "sluice.componentName" (dict "root" . "component" "nats")) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the NATS passwords of the chart's own NATS. */}}
{{- define "sluice.nats.authSecret" -}}
{{- .Values.nats.auth.existingSecret | default (include "sluice.componentName" (dict "root" . "component" "nats-auth")) -}}
{{- end -}}

{{/* Replicas of the streams and buckets the roles create. */}}
{{- define "sluice.nats.streamReplicas" -}}
{{- if .Values.nats.url -}}{{ .Values.nats.streamReplicas }}{{- else -}}{{ .Values.nats.replicas }}{{- end -}}
{{- end -}}

{{/* A role's reply subjects: its user may subscribe to "<prefix>.>" and nothing else. */}}
{{- define "sluice.nats.inboxPrefix" -}}_INBOX_{{ . }}{{- end -}}

{{/* Where a role's credential and CA files are mounted (mode 2). */}}
{{- define "sluice.nats.filesDir" -}}/etc/sluice/nats{{- end -}}

{{/* Environment of one role: SLUICE_NATS_* variables. */}}
{{- define "sluice.nats.env" -}}
{{- $root := .root -}}
{{- $nats := $root.Values.nats -}}
{{- $dir := include "sluice.nats.filesDir" . -}}
- name: SLUICE_NATS_URL
  value: {{ include "sluice.nats.url" $root | quote }}
- name: SLUICE_NATS_REPLICAS
  value: {{ include "sluice.nats.streamReplicas" $root | quote }}
- name: SLUICE_NATS_INBOX_PREFIX
  value: {{ include "sluice.nats.inboxPrefix" .role | quote }}
{{- if not $nats.url }}
- name: SLUICE_NATS_USER
  value: {{ .role | quote }}
- name: SLUICE_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.nats.authSecret" $root }}
      key: {{ printf "%s-password" .role }}
{{- else }}
{{- $c := index $nats.existing.credentials .role | default dict }}
{{- if $c.user }}
- name: SLUICE_NATS_USER
  value: {{ $c.user | quote }}
{{- else if $c.userKey }}
- name: SLUICE_NATS_USER
  valueFrom:
    secretKeyRef: { name: {{ $c.secretName }}, key: {{ $c.userKey }} }
{{- end }}
{{- if $c.passwordKey }}
- name: SLUICE_NATS_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ $c.secretName }}, key: {{ $c.passwordKey }} }
{{- end }}
{{- if $c.tokenKey }}
- name: SLUICE_NATS_TOKEN
  valueFrom:
    secretKeyRef: { name: {{ $c.secretName }}, key: {{ $c.tokenKey }} }
{{- end }}
{{- if $c.credsKey }}
- name: SLUICE_NATS_CREDS_FILE
  value: {{ printf "%s/credentials/user.creds" $dir }}
{{- end }}
{{- if $c.nkeyKey }}
- name: SLUICE_NATS_NKEY_FILE
  value: {{ printf "%s/credentials/user.nk" $dir }}
{{- end }}
{{- if $nats.existing.tls.ca.secretName }}
- name: SLUICE_NATS_CA_FILE
  value: {{ printf "%s/ca/ca.crt" $dir }}
{{- end }}
{{- if $nats.existing.tls.clientCertSecretName }}
- name: SLUICE_NATS_CERT_FILE
  value: {{ printf "%s/client/tls.crt" $dir }}
- name: SLUICE_NATS_KEY_FILE
  value: {{ printf "%s/client/tls.key" $dir }}
{{- end }}
{{- if $nats.existing.tls.required }}
- name: SLUICE_NATS_TLS_REQUIRED
  value: "true"
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of one role: its credential files and the CA (mode 2 only). */}}
{{- define "sluice.nats.volumes" -}}
{{- $nats := .root.Values.nats -}}
{{- if $nats.url -}}
{{- $c := index $nats.existing.credentials .role | default dict -}}
{{- if or $c.credsKey $c.nkeyKey }}
- name: nats-credentials
  secret:
    secretName: {{ $c.secretName }}
    defaultMode: 0440
    items:
      {{- if $c.credsKey }}
      - { key: {{ $c.credsKey }}, path: user.creds }
      {{- end }}
      {{- if $c.nkeyKey }}
      - { key: {{ $c.nkeyKey }}, path: user.nk }
      {{- end }}
{{- end }}
{{- if $nats.existing.tls.ca.secretName }}
- name: nats-ca
  secret:
    secretName: {{ $nats.existing.tls.ca.secretName }}
    defaultMode: 0444
    items:
      - { key: {{ $nats.existing.tls.ca.key }}, path: ca.crt }
{{- end }}
{{- if $nats.existing.tls.clientCertSecretName }}
- name: nats-client-cert
  secret:
    secretName: {{ $nats.existing.tls.clientCertSecretName }}
    defaultMode: 0440
    items:
      - { key: tls.crt, path: tls.crt }
      - { key: tls.key, path: tls.key }
{{- end }}
{{- end -}}
{{- end -}}

{{- define "sluice.nats.volumeMounts" -}}
{{- $nats := .root.Values.nats -}}
{{- $dir := include "sluice.nats.filesDir" . -}}
{{- if $nats.url -}}
{{- $c := index $nats.existing.credentials .role | default dict -}}
{{- if or $c.credsKey $c.nkeyKey }}
- { name: nats-credentials, mountPath: {{ printf "%s/credentials" $dir }}, readOnly: true }
{{- end }}
{{- if $nats.existing.tls.ca.secretName }}
- { name: nats-ca, mountPath: {{ printf "%s/ca" $dir }}, readOnly: true }
{{- end }}
{{- if $nats.existing.tls.clientCertSecretName }}
- { name: nats-client-cert, mountPath: {{ printf "%s/client" $dir }}, readOnly: true }
{{- end }}
{{- end -}}
{{- end -}}

{{/*
What each role's NATS user may publish (the JetStream API calls included) and subscribe
to: rendered into the chart's own nats-server configuration, and the list to give each
role's user on an existing NATS. Found by reading src/queue/jetstream, src/events,
src/policy/bucket.rs and objects.rs, and by tracing the roles against nats-server -DV;
tests/chart_nats.rs proves the lists suffice and that what must be refused is.

Only the operator writes the policy bucket (and its object store for large snapshots),
and only the operator creates or updates streams: a stream's configuration can copy
what a user may publish onto any subject (republish, sources), the policy key's
included, so STREAM.CREATE and STREAM.UPDATE are as good as writing the policy. The
operator provisions the queue's streams, consumer and bodies bucket at start
(src/queue/jetstream/provision.rs); the ingress and worker look them up. The quarantine
bucket (held originals, issue 11): the ingress adds to it, the worker (whose admin
listener serves `sluice quarantine`) reads, releases and deletes. The ingress may publish
metadata under any name there, so a compromised one could mark a held message deleted
(its chunks stay until the worker purges them); it cannot read held content or purge the
bucket, and cannot reach the policy through it. The worker may
still write its durable consumer (CONSUMER.CREATE on sluice-workers: its ack_wait), which
cannot copy messages anywhere: the server refuses to make a pull consumer a push one. Its
lookups of delivery events create consumers on SLUICE_EVENTS, and a consumer created
there may be a push consumer with any deliver subject (the API subject does not show
it); the server delivers only where someone subscribes, and no user here may subscribe
outside its own inbox. The roles test checks that nothing reaches the policy bucket.

Replies come back on each role's own inbox prefix, "_INBOX_<role>" (SLUICE_NATS_INBOX_PREFIX,
"sluice.nats.env"), and each user may subscribe to its own alone: no user sees the
replies meant for another (message bodies fetched by workers, the policy read).
*/}}
{{- define "sluice.nats.permissions" -}}
{{- $readPolicy := list
  "$JS.API.INFO"
  "$JS.API.STREAM.INFO.KV_sluice-policy"
  "$JS.API.STREAM.INFO.OBJ_sluice-policy-objects"
  "$JS.API.CONSUMER.CREATE.KV_sluice-policy"
  "$JS.API.CONSUMER.CREATE.KV_sluice-policy.>"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-policy-objects"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-policy-objects.>"
  "$JS.API.DIRECT.GET.KV_sluice-policy.>"
  "$JS.API.DIRECT.GET.OBJ_sluice-policy-objects.>"
  "$JS.API.STREAM.MSG.GET.KV_sluice-policy"
  "$JS.API.STREAM.MSG.GET.OBJ_sluice-policy-objects"
  "$JS.FC.KV_sluice-policy.>"
  "$JS.FC.OBJ_sluice-policy-objects.>" -}}
{{- /* Looking up the queue's streams, consumer and bodies bucket. */ -}}
{{- $lookUpQueue := list
  "$JS.API.STREAM.INFO.SLUICE_MESSAGES"
  "$JS.API.CONSUMER.INFO.SLUICE_MESSAGES.sluice-workers"
  "$JS.API.STREAM.INFO.OBJ_sluice-bodies"
  "$JS.API.STREAM.INFO.OBJ_sluice-quarantine"
  "$JS.API.STREAM.INFO.SLUICE_EVENTS" -}}
{{- /* Both roles look them up and publish messages, bodies and events. */ -}}
{{- $useQueue := concat $lookUpQueue (list
  "sluice.msg.>"
  "sluice.events.>"
  "$O.sluice-bodies.C.>"
  "$O.sluice-bodies.M.>"
  "$JS.API.DIRECT.GET.OBJ_sluice-bodies.>") -}}
{{- /* Holding an original in the quarantine bucket (the ingress's filter): its chunks
and its metadata, and the put's look at what is held under that name. Metadata only: the
ingress may not read held content back, nor purge the bucket. */ -}}
{{- $holdQuarantine := list
  "$O.sluice-quarantine.C.>"
  "$O.sluice-quarantine.M.>"
  "$JS.API.DIRECT.GET.OBJ_sluice-quarantine.$O.sluice-quarantine.M.>" -}}
{{- /* Managing held messages (sluice quarantine, served by the worker): listing and
reading them, and deleting them (a metadata marker, then a purge of the chunks). */ -}}
{{- $manageQuarantine := list
  "$O.sluice-quarantine.M.>"
  "$JS.API.DIRECT.GET.OBJ_sluice-quarantine.>"
  "$JS.API.STREAM.MSG.GET.OBJ_sluice-quarantine"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-quarantine"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-quarantine.>"
  "$JS.FC.OBJ_sluice-quarantine.>"
  "$JS.API.STREAM.PURGE.OBJ_sluice-quarantine" -}}
{{- /* The workers' durable consumer: its ack_wait is the worker's setting. */ -}}
{{- $writeConsumer := list
  "$JS.API.CONSUMER.CREATE.SLUICE_MESSAGES.sluice-workers.>"
  "$JS.API.CONSUMER.DURABLE.CREATE.SLUICE_MESSAGES.sluice-workers" -}}
{{- /* Taking, settling and managing queued messages, reading bodies and delivery events. */ -}}
{{- $work := list
  "$JS.API.CONSUMER.MSG.NEXT.SLUICE_MESSAGES.sluice-workers"
  "$JS.ACK.SLUICE_MESSAGES.sluice-workers.>"
  "$JS.API.STREAM.MSG.GET.SLUICE_MESSAGES"
  "$JS.API.STREAM.MSG.DELETE.SLUICE_MESSAGES"
  "$JS.API.STREAM.PURGE.SLUICE_MESSAGES"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-bodies"
  "$JS.API.CONSUMER.CREATE.OBJ_sluice-bodies.>"
  "$JS.API.STREAM.MSG.GET.OBJ_sluice-bodies"
  "$JS.API.STREAM.PURGE.OBJ_sluice-bodies"
  "$JS.FC.OBJ_sluice-bodies.>"
  "$JS.API.CONSUMER.CREATE.SLUICE_EVENTS"
  "$JS.API.CONSUMER.CREATE.SLUICE_EVENTS.>"
  "$JS.API.CONSUMER.INFO.SLUICE_EVENTS.>"
  "$JS.API.CONSUMER.MSG.NEXT.SLUICE_EVENTS.>"
  "$JS.API.CONSUMER.DELETE.SLUICE_EVENTS.>" -}}
{{- /* The operator's: creating and updating the queue's streams, consumer and bucket. */ -}}
{{- $provision := list
  "$JS.API.STREAM.CREATE.SLUICE_MESSAGES"
  "$JS.API.STREAM.UPDATE.SLUICE_MESSAGES"
  "$JS.API.STREAM.CREATE.OBJ_sluice-bodies"
  "$JS.API.STREAM.CREATE.OBJ_sluice-quarantine"
  "$JS.API.STREAM.CREATE.SLUICE_EVENTS"
  "$JS.API.STREAM.UPDATE.SLUICE_EVENTS" -}}
{{- $writePolicy := list
  "$JS.API.STREAM.CREATE.KV_sluice-policy"
  "$KV.sluice-policy.>"
  "$JS.API.STREAM.CREATE.OBJ_sluice-policy-objects"
  "$O.sluice-policy-objects.>"
  "$JS.API.STREAM.PURGE.OBJ_sluice-policy-objects" -}}
ingress:
  publish: {{ concat $readPolicy $useQueue $holdQuarantine | toJson }}
  subscribe: {{ list (printf "%s.>" (include "sluice.nats.inboxPrefix" "ingress")) | toJson }}
worker:
  publish: {{ concat $readPolicy $useQueue $writeConsumer $work $manageQuarantine | toJson }}
  subscribe: {{ list (printf "%s.>" (include "sluice.nats.inboxPrefix" "worker")) | toJson }}
operator:
  publish: {{ concat $readPolicy $writePolicy $lookUpQueue $writeConsumer $provision | toJson }}
  subscribe: {{ list (printf "%s.>" (include "sluice.nats.inboxPrefix" "operator")) | toJson }}
{{- end -}}

{{/* Labels of the NATS servers' pods and objects. */}}
{{- define "sluice.nats.labels" -}}
{{ include "sluice.labels" (dict "root" . "component" "nats") }}
{{- end -}}

{{- define "sluice.nats.selectorLabels" -}}
{{ include "sluice.selectorLabels" (dict "root" . "component" "nats") }}
{{- end -}}

{{/* The nats image reference: a digest wins over the tag. */}}
{{- define "sluice.nats.image" -}}
{{- $image := .Values.nats.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}
