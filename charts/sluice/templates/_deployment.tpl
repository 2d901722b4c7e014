{{/*
The Deployment of one role, the same for ingress, worker and operator but for what the
caller passes:
  (dict "root" $ "component" "worker" "values" .Values.worker "replicas" true|false
        "args" (list ...) "env" YAML "ports" (list of {name, containerPort})
        "mounts" YAML "volumes" YAML "serviceAccount" "" | NAME)
Without a serviceAccount the pod mounts no API token at all.
*/}}
{{- define "sluice.deployment" -}}
{{- $root := .root -}}
{{- $c := dict "root" .root "component" .component -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sluice.componentName" $c }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sluice.labels" $c | nindent 4 }}
  {{- $skips := include "sluice.checkovSkips" $root }}
  {{- if .serviceAccount }}
  {{- $skips = printf "%s\ncheckov.io/skip3: %s" $skips ("CKV_K8S_38=the operator watches RelayPolicies and Secrets and holds a Lease: it needs its token" | quote) }}
  {{- end }}
  {{- if contains "secretKeyRef" (include "sluice.nats.env" (dict "root" $root "role" .component)) }}
  {{- $skips = printf "%s\ncheckov.io/skip4: %s" $skips ("CKV_K8S_35=the NATS password or token reaches sluice as SLUICE_NATS_* from a secretKeyRef: sluice reads NATS credentials from its flags and environment, files only for creds, NKey and TLS" | quote) }}
  {{- end }}
  {{- with $skips }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- if .replicas }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "sluice.selectorLabels" $c | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate: { maxUnavailable: 0, maxSurge: 1 }
  template:
    metadata:
      labels:
        {{- include "sluice.labels" $c | nindent 8 }}
        # The admin Service and the admin NetworkPolicy select the Sluice pods by this.
        sluice.dev/admin: "true"
      annotations:
        # A changed configuration rolls the pods.
        checksum/config: {{ include (printf "sluice.config.%s" .component) $root | sha256sum | trunc 16 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if .serviceAccount }}
      serviceAccountName: {{ .serviceAccount }}
      automountServiceAccountToken: true
      {{- else }}
      # This role never talks to the Kubernetes API: no token in the pod.
      automountServiceAccountToken: false
      {{- end }}
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ include "sluice.terminationGracePeriodSeconds" $root }}
      securityContext:
        {{- include "sluice.podSecurityContext" $root | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      topologySpreadConstraints:
        {{- include "sluice.topologySpread" $c | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "sluice.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          {{- $env := trim (printf "%s\n%s" (default "" .env) (include "sluice.nats.env" (dict "root" $root "role" .component))) }}
          {{- with $env }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: 9090
              protocol: TCP
          {{- include "sluice.probes" $c | nindent 10 }}
          securityContext:
            {{- include "sluice.containerSecurityContext" $root | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            # Separate directories, none inside another: a read-only volume cannot hold
            # the mount point of the next.
            - { name: config, mountPath: /etc/sluice, readOnly: true }
            - { name: admin-token, mountPath: /run/sluice/admin, readOnly: true }
            - { name: tmp, mountPath: /tmp }
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- include "sluice.nats.volumeMounts" (dict "root" $root "role" .component) | nindent 12 }}
      volumes:
        - name: config
          configMap: { name: {{ include "sluice.componentName" $c }} }
        - name: admin-token
          secret: { secretName: {{ include "sluice.adminToken.secretName" $root }}, defaultMode: 0440 }
        - name: tmp
          emptyDir: { sizeLimit: 64Mi }
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- include "sluice.nats.volumes" (dict "root" $root "role" .component) | nindent 8 }}
{{- end -}}

{{/* The ConfigMap of one role: (dict "root" $ "component" "worker"). */}}
{{- define "sluice.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "sluice.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "sluice.labels" . | nindent 4 }}
data:
  sluice.yaml: |
    {{- include (printf "sluice.config.%s" .component) .root | nindent 4 }}
{{- end -}}
