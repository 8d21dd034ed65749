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
{{- if .Values.evaluation.enabled }}
- name: EVALUATION_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pimbridge.fullname" . }}-postgres
      key: password
- name: PIMBRIDGE_DATABASE__URL
  value: {{ include "pimbridge.evaluationDatabaseUrl" . | quote }}
{{- else }}
- name: PIMBRIDGE_DATABASE__URL_FILE
  value: /var/run/secrets/pimbridge/database-url
{{- end }}
{{- if or .Values.secrets.existingSecret .Values.secrets.hmacSecret .Values.evaluation.enabled }}
- name: PIMBRIDGE_INTAKE__HMAC_SECRET_FILE
  value: /var/run/secrets/pimbridge/hmac-secret
{{- end }}
{{- if .Values.config.graph }}
{{- if include "pimbridge.graphNeedsClientSecret" . }}
- name: PIMBRIDGE_GRAPH__CLIENT_SECRET_FILE
  value: /var/run/secrets/pimbridge/graph-client-secret
{{- end }}
- name: PIMBRIDGE_GRAPH__CLIENT_STATE_FILE
  value: /var/run/secrets/pimbridge/graph-client-state
{{- end }}
{{- if .Values.adminApi.enabled }}
- name: PIMBRIDGE_ADMIN__TOKEN_FILE
  value: /var/run/secrets/pimbridge/admin-token
{{- end }}
{{- range $name, $app := (include "pimbridge.config" . | fromYaml).applications }}
- name: PIMBRIDGE_APPLICATIONS__{{ $name | upper }}__SCIM_TOKEN_FILE
  value: /var/run/secrets/pimbridge/scim-token-{{ $name }}
{{- end }}
{{- end }}

{{/* "true" when Graph signs in with the client secret from the Secret: config.graph names no
     other credential (a certificate, a federated token or a secret file of its own). */}}
{{- define "pimbridge.graphNeedsClientSecret" -}}
{{- $graph := .Values.config.graph | default dict }}
{{- if not (or $graph.client_secret_file $graph.client_certificate_file $graph.federated_token_file) }}true{{ end }}
{{- end }}

{{/* The configuration rendered into config.toml: config, plus the evaluation's `demo`
     application (pointing at the emulator) when evaluation.enabled. */}}
{{- define "pimbridge.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.evaluation.enabled }}
{{- $apps := $config.applications | default dict }}
{{- if not (hasKey $apps "demo") }}
{{- $_ := set $apps "demo" (dict "scim_url" (printf "http://%s-scim-emulator:9080/%s/scim/v2" (include "pimbridge.fullname" .) .Values.evaluation.scimEmulator.tenantId) "groups" .Values.evaluation.demoGroups) }}
{{- end }}
{{- $_ := set $config "applications" $apps }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The evaluation Postgres's URL; the password comes from the environment ($(…) expansion). */}}
{{- define "pimbridge.evaluationDatabaseUrl" -}}
{{- $pg := .Values.evaluation.postgres -}}
postgres://{{ $pg.user }}:$(EVALUATION_POSTGRES_PASSWORD)@{{ include "pimbridge.fullname" . }}-postgres:5432/{{ $pg.database }}?sslmode=disable
{{- end }}

{{/* A secret value: the one already in the named Secret (so upgrades keep it), else a new random
     one. Arguments: root context, Secret name, key. */}}
{{- define "pimbridge.generatedSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $value := dig "data" .key "" ($existing | default dict) }}
{{- if $value }}{{ $value | b64dec }}{{ else }}{{ randAlphaNum 32 }}{{ end }}
{{- end }}

{{/* The port of a listen address such as "0.0.0.0:8080" or "[::]:8080". */}}
{{- define "pimbridge.port" -}}
{{- regexFind "[0-9]+$" . | int }}
{{- end }}

{{/* Labels of an evaluation component (never matched by pimbridge's own selectors). */}}
{{- define "pimbridge.evaluationSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pimbridge.name" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: evaluation
{{- end }}

{{- define "pimbridge.evaluationLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "pimbridge.evaluationSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Hardening shared by every container the chart runs. */}}
{{- define "pimbridge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
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
{{/* The keys of the chart's Secret (and of the migration hook's copy). */}}
{{- define "pimbridge.secretData" -}}
{{- $name := include "pimbridge.fullname" . }}
{{- $config := include "pimbridge.config" . | fromYaml }}
{{- if not .Values.evaluation.enabled }}
database-url: {{ required "secrets.databaseUrl is required (or set secrets.existingSecret)" .Values.secrets.databaseUrl | quote }}
{{- end }}
{{- if .Values.secrets.hmacSecret }}
hmac-secret: {{ .Values.secrets.hmacSecret | quote }}
{{- else if .Values.evaluation.enabled }}
hmac-secret: {{ include "pimbridge.generatedSecret" (dict "root" . "name" $name "key" "hmac-secret") | quote }}
{{- end }}
{{- if .Values.config.graph }}
{{- if include "pimbridge.graphNeedsClientSecret" . }}
graph-client-secret: {{ required "secrets.graphClientSecret is required when config.graph is set (or name a certificate or federated token file in config.graph)" .Values.secrets.graphClientSecret | quote }}
{{- end }}
graph-client-state: {{ required "secrets.graphClientState is required when config.graph is set" .Values.secrets.graphClientState | quote }}
{{- end }}
{{- if .Values.adminApi.enabled }}
admin-token: {{ required "secrets.adminToken is required when adminApi.enabled (or set secrets.existingSecret)" .Values.secrets.adminToken | quote }}
{{- end }}
{{- range $app, $_ := $config.applications }}
{{- if and $.Values.evaluation.enabled (eq $app "demo") (not (hasKey $.Values.config.applications "demo")) }}
scim-token-demo: {{ index $.Values.secrets.scimTokens "demo" | default (include "pimbridge.generatedSecret" (dict "root" $ "name" $name "key" "scim-token-demo")) | quote }}
{{- else }}
scim-token-{{ $app }}: {{ required (printf "secrets.scimTokens.%s is required" $app) (index $.Values.secrets.scimTokens $app) | quote }}
{{- end }}
{{- end }}
{{- end }}
