{{/* Names and labels. */}}
{{- define "fastslow.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fastslow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fastslow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "fastslow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "fastslow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fastslow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fastslow.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fastslow.trainImage" -}}
{{- printf "%s:%s" .Values.trainImage.repository (.Values.trainImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fastslow.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "fastslow.fullname" .)) -}}
{{- end -}}

{{- define "fastslow.claimName" -}}
{{- .Values.storage.existingClaim | default (printf "%s-data" (include "fastslow.fullname" .)) -}}
{{- end -}}

{{- define "fastslow.engineUrl" -}}
{{- if .Values.vllm.enabled -}}
{{- printf "http://%s-vllm:8000" (include "fastslow.fullname" .) -}}
{{- else -}}
{{- required "vllm.externalUrl is required when vllm.enabled is false" .Values.vllm.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* What every fastslow container shares: settings from the ConfigMap and the Secret. */}}
{{- define "fastslow.envFrom" -}}
- configMapRef:
    name: {{ include "fastslow.fullname" . }}-config
- secretRef:
    name: {{ include "fastslow.secretName" . }}
{{- end -}}

{{- define "fastslow.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "fastslow.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "fastslow.claimName" . }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "fastslow.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
{{- end -}}
