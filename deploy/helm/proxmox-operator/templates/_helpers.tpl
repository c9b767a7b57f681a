{{/* The release's full name: the release name, or "<release>-proxmox-operator" if it does not contain the chart name. */}}
{{- define "proxmox-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "proxmox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* hack/manifests.py drops helm.sh/chart and managed-by from the plain manifests: they are not Helm's there. */}}
{{- define "proxmox-operator.labels" -}}
{{ include "proxmox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: proxmox-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "proxmox-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "proxmox-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The watched namespaces, checked: exact names only, since RBAC Roles cannot follow a glob. */}}
{{- define "proxmox-operator.watchNamespaces" -}}
{{- range .Values.watchNamespaces -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) -}}
{{- fail (printf "watchNamespaces: %q is not a namespace name; globs are not supported by the chart (it creates a Role in each watched namespace); leave watchNamespaces empty to watch all namespaces" .) -}}
{{- end -}}
{{- end -}}
{{- uniq .Values.watchNamespaces | toJson -}}
{{- end -}}

{{/* The rules for ProxmoxClusters, Secrets, ConfigMaps and Events: in a ClusterRole or in each watched namespace's Role. */}}
{{- define "proxmox-operator.namespacedRules" -}}
# Watch ProxmoxClusters; patch them only to add/remove the operator's finalizer.
- apiGroups: ["proxmox-operator.dev"]
  resources: ["proxmoxclusters"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written through the status subresource only.
- apiGroups: ["proxmox-operator.dev"]
  resources: ["proxmoxclusters/status"]
  verbs: ["get", "patch"]
# Read the referenced credentials and CA bundles, and notice when they change. Never written. The Secret watch
# is label-selected (proxmox-operator.dev/credentials: "true"); for a Secret not in its cache the operator makes
# a LIST selected by name and label and a metadata-only GET.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get", "list", "watch"]
# The audit trail: Registered, AuthenticationFailed, Recovered, Deregistered, ...
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Cluster-scoped reads that kopf needs in either mode. */}}
{{- define "proxmox-operator.clusterRules" -}}
# kopf watches CRDs and namespaces, so the operator may start before its CRD is installed (GitOps sync
# order) and --namespace globs follow namespaces as they come and go. Read-only.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{- define "proxmox-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{/* The metrics port, checked: a port number, and not the health port. */}}
{{- define "proxmox-operator.metricsPort" -}}
{{- $port := int (.Values.metrics.port | default 9090) -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "metrics.port must be a port number, not %v" .Values.metrics.port) -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq $port (int (.Values.healthPort | default 8080))) -}}
{{- fail (printf "metrics.port and healthPort must differ (both are %d)" $port) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* The labels of the metrics Service, which the ServiceMonitor selects. */}}
{{- define "proxmox-operator.metricsLabels" -}}
{{ include "proxmox-operator.labels" . }}
app.kubernetes.io/component: metrics
{{- end -}}

{{/* The Deployments to render, as a JSON list of {name, selector}: one per shard, or one unnamed for all objects. */}}
{{- define "proxmox-operator.shards" -}}
{{- $seen := dict -}}
{{- range .Values.shards -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$" (toString .name)) -}}
{{- fail (printf "shards: name %q must be a DNS label of at most 20 characters (it names a Deployment and a Lease)" (toString .name)) -}}
{{- end -}}
{{- if not .selector -}}
{{- fail (printf "shards: shard %q needs a selector, e.g. shard=%s" .name .name) -}}
{{- end -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "shards: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- if .Values.shards -}}
{{- .Values.shards | toJson -}}
{{- else -}}
{{- list (dict "name" "" "selector" "") | toJson -}}
{{- end -}}
{{- end -}}

{{/* The label that tells the Pods of one shard's Deployment from another's (none without shards). */}}
{{- define "proxmox-operator.shardLabel" -}}
{{- with .name -}}
proxmox-operator.dev/shard: {{ . | quote }}
{{- end -}}
{{- end -}}
