{{/* Names and labels shared by every template. */}}

{{- define "hpscan-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hpscan-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects carry the release namespace too: two releases of one name never collide. */}}
{{- define "hpscan-operator.clusterName" -}}
{{- printf "%s-%s" (include "hpscan-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hpscan-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hpscan-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hpscan-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hpscan-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hpscan
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hpscan-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hpscan-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hpscan-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret names the operator may read: rbac.secretNames, the tokenSecrets of defaults.sites and the
key pair of defaults.artifactStore (read to prune a finished scan's models and upload HTCondor's). */}}
{{- define "hpscan-operator.secretNames" -}}
{{- $names := list -}}
{{- range .Values.rbac.secretNames -}}
{{- $names = append $names . -}}
{{- end -}}
{{- range .Values.defaults.sites -}}
{{- if and .htcondor .htcondor.tokenSecret -}}
{{- $names = append $names .htcondor.tokenSecret.name -}}
{{- end -}}
{{- end -}}
{{- with .Values.defaults.artifactStore -}}
{{- if and .s3 .s3.secretRef -}}
{{- $names = append $names .s3.secretRef.name -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
The rules the operator needs, in the watched namespaces (README.md, "RBAC", says why each is there).
Granting the per-scan payload Role (get/patch on named ConfigMaps) needs the operator to hold those verbs
itself: RBAC refuses to create a Role with rights its creator lacks.
*/}}
{{- define "hpscan-operator.rules" -}}
- apiGroups: [hpscan.io]
  resources: [hpscans]
  verbs: [list, watch, patch]
- apiGroups: [hpscan.io]
  resources: [hpscans/status]
  verbs: [patch]
- apiGroups: [hpscan.io]
  resources: [hpscans/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
{{- if .Values.rbac.readAllSecrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- else }}
{{- $secrets := include "hpscan-operator.secretNames" . | fromJsonArray }}
{{- if $secrets }}
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson $secrets }}
  verbs: [get]
{{- end }}
{{- end }}
{{- end -}}

{{/* The operator's arguments after its command. */}}
{{- define "hpscan-operator.args" -}}
{{- $args := list -}}
{{- range .Values.watchNamespaces -}}
{{- $args = append $args (printf "--namespace=%s" .) -}}
{{- end -}}
{{- $args = append $args (printf "--health-port=%d" (int .Values.operator.healthPort)) -}}
{{- $args = append $args (printf "--metrics-port=%d" (int .Values.metrics.port)) -}}
{{- /* kopf would list/watch CRDs and namespaces cluster-wide; the chart grants neither. */ -}}
{{- $args = append $args "--no-scanning" -}}
{{- range .Values.operator.extraArgs -}}
{{- $args = append $args . -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* The dashboard (dashboard.yaml) is an app of its own: the operator's selectors never match its pods. */}}
{{- define "hpscan-operator.dashboardName" -}}
{{- printf "%s-dashboard" (include "hpscan-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hpscan-operator.dashboardSelectorLabels" -}}
app.kubernetes.io/name: hpscan-dashboard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hpscan-operator.dashboardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hpscan-operator.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: dashboard
app.kubernetes.io/part-of: hpscan
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What the dashboard reads (README.md, "Dashboard"): scans, and their record pages and inboxes. */}}
{{- define "hpscan-operator.dashboardRules" -}}
- apiGroups: [hpscan.io]
  resources: [hpscans]
  verbs: [get, list]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list]
{{- end -}}

{{- define "hpscan-operator.dashboardArgs" -}}
{{- $args := list "--address=0.0.0.0" (printf "--port=%d" (int .Values.dashboard.port)) -}}
{{- range .Values.watchNamespaces -}}
{{- $args = append $args (printf "--namespace=%s" .) -}}
{{- end -}}
{{- range .Values.dashboard.allowedHosts -}}
{{- $args = append $args (printf "--allow-host=%s" .) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}
