{{/* Chart name. */}}
{{- define "pimbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "pimbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pimbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pimbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pimbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pimbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pimbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pimbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pimbridge.secretName" -}}
{{- default (include "pimbridge.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "pimbridge.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Environment that points pimbridge at the mounted secret files. */}}
{{- define "pimbridge.secretEnv" -}}
- name: PIMBRIDGE_CONFIG
  value: /etc/pimbridge/config.toml
- name: PIMBRIDGE_DATABASE__URL_FILE
  value: /var/run/secrets/pimbridge/database-url
{{- if or .Values.secrets.existingSecret .Values.secrets.hmacSecret }}
- name: PIMBRIDGE_INTAKE__HMAC_SECRET_FILE
  value: /var/run/secrets/pimbridge/hmac-secret
{{- end }}
{{- if .Values.config.graph }}
- name: PIMBRIDGE_GRAPH__CLIENT_SECRET_FILE
  value: /var/run/secrets/pimbridge/graph-client-secret
- name: PIMBRIDGE_GRAPH__CLIENT_STATE_FILE
  value: /var/run/secrets/pimbridge/graph-client-state
{{- end }}
{{- if .Values.adminApi.enabled }}
- name: PIMBRIDGE_ADMIN__TOKEN_FILE
  value: /var/run/secrets/pimbridge/admin-token
{{- end }}
{{- range $name, $app := .Values.config.applications }}
- name: PIMBRIDGE_APPLICATIONS__{{ $name | upper }}__SCIM_TOKEN_FILE
  value: /var/run/secrets/pimbridge/scim-token-{{ $name }}
{{- end }}
{{- end }}

{{/* Volumes for the configuration and the secrets. */}}
{{- define "pimbridge.volumes" -}}
- name: config
  configMap:
    name: {{ include "pimbridge.fullname" . }}
- name: secrets
  secret:
    secretName: {{ include "pimbridge.secretName" . }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "pimbridge.volumeMounts" -}}
- name: config
  mountPath: /etc/pimbridge
  readOnly: true
- name: secrets
  mountPath: /var/run/secrets/pimbridge
  readOnly: true
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
