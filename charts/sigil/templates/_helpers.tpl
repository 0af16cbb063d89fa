{{/* The name every object of the release shares. */}}
{{- define "sigil.fullname" -}}
{{- if contains "sigil" .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sigil-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sigil.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sigil.selectorLabels" -}}
app.kubernetes.io/name: sigil-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sigil.labels" -}}
{{ include "sigil.selectorLabels" . }}
app.kubernetes.io/part-of: sigil
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The operator names its webhook configuration after the namespace it watches (see
WebhookConfig::configuration_name in operator/src/webhook/mod.rs); its certificate Secret is
this name with -webhook-tls. */ -}}
{{- define "sigil.webhookConfigurationName" -}}
{{- if .Values.watchNamespace -}}
{{- printf "sigil-operator-%s" .Values.watchNamespace -}}
{{- else -}}
sigil-operator
{{- end -}}
{{- end -}}
