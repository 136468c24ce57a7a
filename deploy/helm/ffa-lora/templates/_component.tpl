{{/*
Resources of the same shape for every component, rendered from templates/<component>/*.yaml
with (dict "root" $ "component" C). Component-specific resources (workloads, network
policies, HPA, PDB, secrets) live in those folders.
*/}}

{{- define "ffa-lora.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace | quote }}
labels:
  {{- include "ffa-lora.component.labels" .ctx | nindent 2 }}
  {{- with .extraLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (default (dict) .annotations) (default (dict) .root.Values.commonAnnotations) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.tpl.serviceAccount" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
{{- if $v.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "ffa-lora.metadata" (dict "root" .root "ctx" . "name" (include "ffa-lora.serviceAccountName" .) "annotations" $v.serviceAccount.annotations) | nindent 2 }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.tpl.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  {{- include "ffa-lora.metadata" (dict "root" .root "ctx" . "name" (printf "%s-config" (include "ffa-lora.component.fullname" .))) | nindent 2 }}
data:
  config.yaml: |
    {{- include "ffa-lora.configYaml" . | nindent 4 }}
{{- end -}}

{{/* Main Service: gRPC (servers) + metrics. */}}
{{- define "ffa-lora.tpl.service" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
{{- $isServer := not (has .component (list "client" "keyholder")) -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "ffa-lora.metadata" (dict "root" .root "ctx" . "name" (include "ffa-lora.component.fullname" .) "annotations" $v.service.annotations "extraLabels" (dict "ffa-lora.io/service" "main")) | nindent 2 }}
spec:
  type: {{ $v.service.type }}
  {{- if and $isServer (has $v.service.type (list "LoadBalancer" "NodePort")) }}
  externalTrafficPolicy: {{ $v.service.externalTrafficPolicy }}
  {{- end }}
  {{- if and $isServer (eq $v.service.type "LoadBalancer") $v.service.loadBalancerSourceRanges }}
  loadBalancerSourceRanges: {{- toYaml $v.service.loadBalancerSourceRanges | nindent 4 }}
  {{- end }}
  selector:
    {{- include "ffa-lora.component.selectorLabels" . | nindent 4 }}
  ports:
    {{- if $isServer }}
    - name: grpc
      port: {{ $v.service.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
      {{- if and (has $v.service.type (list "LoadBalancer" "NodePort")) $v.service.nodePorts.grpc }}
      nodePort: {{ $v.service.nodePorts.grpc }}
      {{- end }}
    {{- end }}
    {{- if $v.metrics.enabled }}
    - name: metrics
      port: {{ $v.service.ports.metrics }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end -}}

{{/*
cert-manager Certificate of a component: dict "root" $ "component" C, plus "replica" N for
edge replica N (identity <base>-N, secret <prefix>-N; its DNS names add the replica's own pinned
name and its stable pod name under the headless Service).
*/}}
{{- define "ffa-lora.tpl.certificate" -}}
{{- $root := .root -}}
{{- $cm := $root.Values.tls.certManager -}}
{{- $svc := include "ffa-lora.component.fullname" . -}}
{{- $name := $svc -}}
{{- $id := include "ffa-lora.identity.id" . -}}
{{- $uri := include "ffa-lora.identity.spiffe" . -}}
{{- $ns := $root.Release.Namespace -}}
{{- $isServer := not (has .component (list "client" "keyholder")) -}}
{{- $dnsNames := list (include "ffa-lora.identity.dnsName" .) (include "ffa-lora.role.dnsName" .) -}}
{{- if eq .component "edge" -}}
{{- $name = printf "%s-%d" $svc (int .replica) -}}
{{- $id = include "ffa-lora.edge.replicaId" . -}}
{{- $uri = printf "spiffe://%s/edge/%s" $root.Values.federation.name $id -}}
{{- $dnsNames = prepend $dnsNames (printf "%s.edge.%s.ffa-lora.invalid" $id $root.Values.federation.name | lower) -}}
{{- end -}}
{{- range $host := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $dnsNames = append $dnsNames $host -}}
{{- end -}}
{{- if eq .component "edge" -}}
{{- $dnsNames = append $dnsNames (printf "%s.%s-headless.%s.svc" $name $svc $ns) -}}
{{- $dnsNames = append $dnsNames (printf "%s.%s-headless.%s.svc.cluster.local" $name $svc $ns) -}}
{{- end -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  {{- include "ffa-lora.metadata" (dict "root" $root "ctx" . "name" $name) | nindent 2 }}
spec:
  secretName: {{ include "ffa-lora.tls.secretName" . }}
  secretTemplate:
    labels:
      {{- include "ffa-lora.component.labels" . | nindent 6 }}
  commonName: {{ $id | quote }}
  subject:
    organizations: [{{ $root.Values.federation.name | quote }}]
    organizationalUnits: [{{ .component | quote }}]
  uris:
    - {{ $uri | quote }}
  {{- if $isServer }}
  dnsNames:
    {{- range $dnsNames }}
    - {{ . | quote }}
    {{- end }}
    {{- range $cm.extraDnsNames }}
    - {{ . | quote }}
    {{- end }}
  {{- end }}
  duration: {{ $cm.duration }}
  renewBefore: {{ $cm.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    encoding: PKCS8
    rotationPolicy: Always
  usages:
    - digital signature
    {{- if $isServer }}
    - server auth
    {{- end }}
    - client auth
  issuerRef:
    name: {{ include "ffa-lora.tls.issuerName" $root }}
    kind: {{ $cm.issuerRef.kind }}
    group: {{ $cm.issuerRef.group }}
{{- end -}}

{{/*
honorLabels: the services export their own `service` label (coordinator|edge|client), which
the Prometheus Operator would otherwise rename to exported_service when it adds the
Kubernetes Service name as `service`.
*/}}
{{- define "ffa-lora.tpl.serviceMonitor" -}}
{{- $root := .root -}}
{{- $v := index $root.Values (include "ffa-lora.valuesKey" .) -}}
{{- $sm := $root.Values.monitoring.serviceMonitor -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  {{- include "ffa-lora.metadata" (dict "root" $root "ctx" . "name" (include "ffa-lora.component.fullname" .) "extraLabels" $sm.labels) | nindent 2 }}
spec:
  jobLabel: app.kubernetes.io/component
  selector:
    matchLabels:
      {{- include "ffa-lora.component.selectorLabels" . | nindent 6 }}
      ffa-lora.io/service: main
  namespaceSelector:
    matchNames: [{{ $root.Release.Namespace | quote }}]
  endpoints:
    - port: metrics
      path: {{ $v.metrics.path }}
      scheme: http
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      honorLabels: true
{{- end -}}

{{/* Container security context, env, mounts and resources shared by every workload. */}}
{{- define "ffa-lora.tpl.podSpecCommon" -}}
{{- $root := .root -}}
{{- $v := index $root.Values (include "ffa-lora.valuesKey" .) -}}
serviceAccountName: {{ include "ffa-lora.serviceAccountName" . }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
{{- include "ffa-lora.imagePullSecrets" $root }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext: {{- toYaml $v.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- with $v.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
