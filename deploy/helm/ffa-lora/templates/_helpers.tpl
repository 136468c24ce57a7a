{{/* vim: set filetype=mustache: */}}
{{/*
Naming and labels. Component helpers take (dict "root" $ "component" C) where C is one of
"coordinator", "edge", "client" (the role names of the services and of their certificates).
*/}}

{{- define "ffa-lora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ffa-lora.fullname" -}}
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

{{- define "ffa-lora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "ffa-lora.labels" -}}
helm.sh/chart: {{ include "ffa-lora.chart" . }}
{{ include "ffa-lora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ffa-lora
ffa-lora.io/federation: {{ .Values.federation.name | quote }}
{{- with .Values.federation.site }}
ffa-lora.io/site: {{ . | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ffa-lora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* metadata.annotations content from commonAnnotations (may be empty). */}}
{{- define "ffa-lora.commonAnnotations" -}}
{{- with .Values.commonAnnotations }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{/* Values key of a component: coordinator -> cloudCoordinator, ... */}}
{{- define "ffa-lora.valuesKey" -}}
{{- get (dict "coordinator" "cloudCoordinator" "edge" "edgeAggregator" "client" "clientAgent" "keyholder" "keyHolder") .component -}}
{{- end -}}

{{/* app.kubernetes.io/component value of a component. */}}
{{- define "ffa-lora.componentName" -}}
{{- get (dict "coordinator" "cloud-coordinator" "edge" "edge-aggregator" "client" "client-agent" "keyholder" "key-holder") .component -}}
{{- end -}}

{{/* Resource name of a component: <fullname>-coordinator, <fullname>-edge-<region>, <fullname>-client-<id>. */}}
{{- define "ffa-lora.component.fullname" -}}
{{- $base := include "ffa-lora.fullname" .root -}}
{{- if eq .component "coordinator" -}}
{{- printf "%s-coordinator" $base | trunc 63 | trimSuffix "-" -}}
{{- else if eq .component "edge" -}}
{{- printf "%s-edge-%s" $base .root.Values.edgeAggregator.region | trunc 63 | trimSuffix "-" -}}
{{- else if eq .component "keyholder" -}}
{{- printf "%s-keyholder-%s" $base .root.Values.keyHolder.identity.id | lower | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-client-%s" $base .root.Values.clientAgent.identity.id | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ffa-lora.component.selectorLabels" -}}
{{ include "ffa-lora.selectorLabels" .root }}
app.kubernetes.io/component: {{ include "ffa-lora.componentName" . }}
{{- end -}}

{{/* Labels of a component's objects: common + component + role (+ region / client id). */}}
{{- define "ffa-lora.component.labels" -}}
{{ include "ffa-lora.labels" .root }}
app.kubernetes.io/component: {{ include "ffa-lora.componentName" . }}
ffa-lora.io/role: {{ .component }}
{{- if eq .component "edge" }}
ffa-lora.io/region: {{ .root.Values.edgeAggregator.region | quote }}
{{- else if eq .component "client" }}
ffa-lora.io/client-id: {{ .root.Values.clientAgent.identity.id | quote }}
{{- else if eq .component "keyholder" }}
ffa-lora.io/keyholder-id: {{ .root.Values.keyHolder.identity.id | quote }}
{{- end }}
{{- end -}}

{{/*
Identity (certificate id) of a component. For the edge this is the region's base id
(default edge-<region>): replica N is "<base>-N" (ffa-lora.edge.replicaId), and every replica's
certificate also carries the base's pinned name, which clients and probes verify.
*/}}
{{- define "ffa-lora.identity.id" -}}
{{- if eq .component "edge" -}}
{{- default (printf "edge-%s" .root.Values.edgeAggregator.region) .root.Values.edgeAggregator.identity.id -}}
{{- else -}}
{{- (index .root.Values (include "ffa-lora.valuesKey" .)).identity.id -}}
{{- end -}}
{{- end -}}

{{/* Certificate id of edge replica N: dict "root" $ "replica" N. */}}
{{- define "ffa-lora.edge.replicaId" -}}
{{- printf "%s-%d" (include "ffa-lora.identity.id" (dict "root" .root "component" "edge")) (int .replica) -}}
{{- end -}}

{{/*
The name a caller verifies in an edge replica's certificate (clients of this release, the
readiness probe, the helm test): never the host name it dials. With cert-manager every replica's
certificate carries the region's pinned identity name <base>.edge.<federation>.ffa-lora.invalid;
`ffa-lora certs issue` gives every edge certificate the role name edge.<federation>.ffa-lora.invalid
(and refuses --host names under ffa-lora.invalid), so with operator-made secrets it is that one.
*/}}
{{- define "ffa-lora.edge.serverName" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- include "ffa-lora.identity.dnsName" (dict "root" . "component" "edge") -}}
{{- else -}}
{{- include "ffa-lora.role.dnsName" (dict "root" . "component" "edge") -}}
{{- end -}}
{{- end -}}

{{/* Most edge replicas that can exist: the HPA's maxReplicas, else replicaCount (at least 1). */}}
{{- define "ffa-lora.edge.maxReplicas" -}}
{{- $v := .Values.edgeAggregator -}}
{{- max 1 (int ($v.autoscaling.enabled | ternary $v.autoscaling.maxReplicas $v.replicaCount)) -}}
{{- end -}}

{{/* spiffe://<federation>/<role>/<id>: the URI SAN that names the peer (services/common/certs.py). */}}
{{- define "ffa-lora.identity.spiffe" -}}
{{- printf "spiffe://%s/%s/%s" .root.Values.federation.name .component (include "ffa-lora.identity.id" .) -}}
{{- end -}}

{{/* <role>.<federation>.ffa-lora.invalid: the name every server certificate of a role carries
(services/common/certs.py role_dns_name); what a service pins when any server of that role will do. */}}
{{- define "ffa-lora.role.dnsName" -}}
{{- printf "%s.%s.ffa-lora.invalid" .component .root.Values.federation.name | lower -}}
{{- end -}}

{{/* <id>.<role>.<federation>.ffa-lora.invalid: the pinned server name every server certificate carries. */}}
{{- define "ffa-lora.identity.dnsName" -}}
{{- printf "%s.%s.%s.ffa-lora.invalid" (include "ffa-lora.identity.id" .) .component .root.Values.federation.name | lower -}}
{{- end -}}

{{/* image reference: dict "root" $ "image" .Values.x.image */}}
{{- define "ffa-lora.image" -}}
{{- $registry := default .image.registry .root.Values.global.imageRegistry -}}
{{- $repo := .image.repository -}}
{{- if $registry -}}{{- $repo = printf "%s/%s" $registry $repo -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "ffa-lora.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ (kindIs "map" .) | ternary .name . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.serviceAccountName" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
{{- if $v.serviceAccount.create -}}
{{- default (include "ffa-lora.component.fullname" .) $v.serviceAccount.name -}}
{{- else -}}
{{- default "default" $v.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Name of the secret holding ca.crt/tls.crt/tls.key of a component. Edge replicas each have
their own: pass "replica" N for <prefix>-N, where the prefix is tls.existingSecret or
<fullname>-edge-<region>-tls (the name cert-manager writes).
*/}}
{{- define "ffa-lora.tls.secretName" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
{{- $name := printf "%s-tls" (include "ffa-lora.component.fullname" .) -}}
{{- if not .root.Values.tls.certManager.enabled -}}
{{- $name = default $name $v.tls.existingSecret -}}
{{- end -}}
{{- if eq .component "edge" -}}
{{- printf "%s-%d" $name (int (default 0 .replica)) -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{- define "ffa-lora.tls.issuerName" -}}
{{- if .Values.tls.certManager.issuerRef.name -}}
{{- .Values.tls.certManager.issuerRef.name -}}
{{- else -}}
{{- printf "%s-ca" (include "ffa-lora.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Host:port of this release's coordinator / edge Service. */}}
{{- define "ffa-lora.coordinator.address" -}}
{{- printf "%s:%v" (include "ffa-lora.component.fullname" (dict "root" . "component" "coordinator")) .Values.cloudCoordinator.service.ports.grpc -}}
{{- end -}}

{{- define "ffa-lora.edge.address" -}}
{{- printf "%s:%v" (include "ffa-lora.component.fullname" (dict "root" . "component" "edge")) .Values.edgeAggregator.service.ports.grpc -}}
{{- end -}}

{{/* Fixed in-container paths. */}}
{{- define "ffa-lora.paths.config" -}}/etc/ffa-lora/config.yaml{{- end -}}
{{- define "ffa-lora.paths.tlsDir" -}}/etc/ffa-lora/tls{{- end -}}
{{- define "ffa-lora.paths.fernetKey" -}}/etc/ffa-lora/keys/fernet.key{{- end -}}
{{- define "ffa-lora.paths.deidSecret" -}}/etc/ffa-lora/deid/secret{{- end -}}
{{- define "ffa-lora.paths.clientState" -}}/var/lib/ffa-lora{{- end -}}
{{- define "ffa-lora.paths.thresholdDir" -}}/etc/ffa-lora/threshold{{- end -}}
{{- define "ffa-lora.paths.share" -}}/etc/ffa-lora/share/share{{- end -}}

{{/* Secrets of the threshold key: the coordinator's (parameters + sealed share) and a key holder's. */}}
{{- define "ffa-lora.threshold.secretName" -}}
{{- default (printf "%s-threshold" (include "ffa-lora.component.fullname" (dict "root" . "component" "coordinator"))) .Values.cloudCoordinator.threshold.existingSecret -}}
{{- end -}}

{{- define "ffa-lora.keyholder.shareSecretName" -}}
{{- default (printf "%s-share" (include "ffa-lora.component.fullname" (dict "root" . "component" "keyholder"))) .Values.keyHolder.share.existingSecret -}}
{{- end -}}

{{- define "ffa-lora.keyholder.fernetSecretName" -}}
{{- default (printf "%s-fernet" (include "ffa-lora.component.fullname" (dict "root" . "component" "keyholder"))) .Values.keyHolder.fernetKey.existingSecret -}}
{{- end -}}

{{/* The federation's name as the coordinator's config names it (what signed claims carry). */}}
{{- define "ffa-lora.federationConfigName" -}}
{{- $fed := get (default (dict) .Values.cloudCoordinator.config) "federation" -}}
{{- $name := (kindIs "map" $fed) | ternary (get (default (dict) $fed) "name") "" -}}
{{- default .Values.federation.name $name -}}
{{- end -}}

{{- define "ffa-lora.fernet.secretName" -}}
{{- default (printf "%s-fernet" (include "ffa-lora.component.fullname" (dict "root" . "component" "coordinator"))) .Values.cloudCoordinator.fernetKey.existingSecret -}}
{{- end -}}

{{- define "ffa-lora.deid.secretName" -}}
{{- default (printf "%s-deid" (include "ffa-lora.component.fullname" (dict "root" . "component" "client"))) .Values.clientAgent.deidSecret.existingSecret -}}
{{- end -}}

{{/*
Recursive merge: dict "dst" D "src" S. Keys of S replace those of D, except that two maps
are merged key by key. Unlike sprig's mergeOverwrite, false/0/"" in S do replace D's value.
D is modified in place; pass deep copies.
*/}}
{{- define "ffa-lora.deepMerge" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- include "ffa-lora.deepMerge" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
config.yaml of a component (services/common/config.py ServiceConfig): service, tls, metrics,
log_level and the role block = chart defaults <- <component>.config <- values the chart must
control (ports, mount paths). Defaults: the coordinator's federation.name is federation.name;
an edge (client) in the same release as the coordinator (edge) gets its address and pins its
identity name (<id>.<role>.<federation>.ffa-lora.invalid) as coordinator_server_name
(edge_server_name).
*/}}
{{- define "ffa-lora.configYaml" -}}
{{- $root := .root -}}
{{- $c := .component -}}
{{- $v := index $root.Values (include "ffa-lora.valuesKey" .) -}}
{{- $defaults := dict -}}
{{- $forced := dict -}}
{{- if eq $c "coordinator" -}}
{{- $_ := set $forced "listen" (printf "0.0.0.0:%v" $v.containerPorts.grpc) -}}
{{- $_ := set $forced "state_dir" $v.persistence.mountPath -}}
{{- $_ := set $forced "fernet_key_file" (include "ffa-lora.paths.fernetKey" $root) -}}
{{- $_ := set $defaults "federation" (dict "name" $root.Values.federation.name) -}}
{{- $th := $v.threshold -}}
{{- $dir := include "ffa-lora.paths.thresholdDir" $root -}}
{{- $_ := set $defaults "threshold" (dict "holders" $th.holders "t" $th.t) -}}
{{- $_ := set $forced "threshold" (dict "params_file" (printf "%s/threshold.params" $dir) "share_file" (printf "%s/share" $dir)) -}}
{{- else if eq $c "keyholder" -}}
{{- $_ := set $defaults "federation" (include "ffa-lora.federationConfigName" $root) -}}
{{- if $root.Values.cloudCoordinator.enabled -}}
{{- $_ := set $defaults "coordinator_address" (include "ffa-lora.coordinator.address" $root) -}}
{{- $_ := set $defaults "coordinator_server_name" (include "ffa-lora.identity.dnsName" (dict "root" $root "component" "coordinator")) -}}
{{- end -}}
{{- $_ := set $forced "share_file" (include "ffa-lora.paths.share" $root) -}}
{{- $_ := set $forced "fernet_key_file" (include "ffa-lora.paths.fernetKey" $root) -}}
{{- $_ := set $forced "state_dir" $v.persistence.mountPath -}}
{{- else if eq $c "edge" -}}
{{- if $root.Values.cloudCoordinator.enabled -}}
{{- $_ := set $defaults "coordinator_address" (include "ffa-lora.coordinator.address" $root) -}}
{{- $_ := set $defaults "coordinator_server_name" (include "ffa-lora.identity.dnsName" (dict "root" $root "component" "coordinator")) -}}
{{- end -}}
{{- $_ := set $forced "listen" (printf "0.0.0.0:%v" $v.containerPorts.grpc) -}}
{{- $_ := set $forced "region" $v.region -}}
{{- else -}}
{{- if $root.Values.edgeAggregator.enabled -}}
{{- $_ := set $defaults "edges" (list (include "ffa-lora.edge.address" $root)) -}}
{{- $_ := set $defaults "edge_server_name" (include "ffa-lora.edge.serverName" $root) -}}
{{- end -}}
{{- $_ := set $defaults "device" ($v.gpu.enabled | ternary "cuda" "cpu") -}}
{{- $_ := set $forced "deid" (dict "secret_file" (include "ffa-lora.paths.deidSecret" $root)) -}}
{{- $_ := set $forced "state_dir" (include "ffa-lora.paths.clientState" $root) -}}
{{- end -}}
{{- include "ffa-lora.deepMerge" (dict "dst" $defaults "src" (deepCopy (default (dict) $v.config))) -}}
{{- include "ffa-lora.deepMerge" (dict "dst" $defaults "src" $forced) -}}
{{- $cfg := dict "service" $c -}}
{{- $dir := include "ffa-lora.paths.tlsDir" $root -}}
{{- $_ := set $cfg "tls" (dict "ca" (printf "%s/ca.crt" $dir) "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir)) -}}
{{- $_ := set $cfg "metrics" (dict "host" "0.0.0.0" "port" ($v.metrics.enabled | ternary $v.containerPorts.metrics nil)) -}}
{{- $_ := set $cfg "log_level" $root.Values.logLevel -}}
{{- $_ := set $cfg $c $defaults -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* DP mode configured for the coordinator ("" when unset). */}}
{{- define "ffa-lora.privacyMode" -}}
{{- $fed := get (default (dict) .Values.cloudCoordinator.config) "federation" -}}
{{- $priv := (kindIs "map" $fed) | ternary (get (default (dict) $fed) "privacy") "" -}}
{{- (kindIs "map" $priv) | ternary (get (default (dict) $priv) "mode") "" | toString -}}
{{- end -}}

{{/* "true" when ServiceMonitors are rendered. */}}
{{- define "ffa-lora.serviceMonitor.enabled" -}}
{{- $mode := .Values.monitoring.serviceMonitor.mode -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{- define "ffa-lora.prometheusRule.enabled" -}}
{{- $mode := .Values.monitoring.prometheusRule.mode -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/* Pod annotations of a component: checksum of its config, scrape annotations, user's. */}}
{{- define "ffa-lora.podAnnotations" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
checksum/config: {{ include "ffa-lora.configYaml" . | sha256sum }}
{{- if and $v.metrics.enabled (not (include "ffa-lora.serviceMonitor.enabled" .root)) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $v.containerPorts.metrics | quote }}
prometheus.io/path: {{ $v.metrics.path | quote }}
{{- end }}
{{- with $v.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Volumes shared by every component: config, tls, tmp. The edge's tls volume holds the
certificate of every replica, each under its pod name (<statefulset>-<ordinal>/); each
container mounts only its own directory (subPathExpr, see commonVolumeMounts).
*/}}
{{- define "ffa-lora.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "ffa-lora.component.fullname" . }}-config
- name: tls
{{- if eq .component "edge" }}
  projected:
    defaultMode: 0440
    sources:
    {{- $sts := include "ffa-lora.component.fullname" . }}
    {{- range $i := until (int (include "ffa-lora.edge.maxReplicas" .root)) }}
      - secret:
          name: {{ include "ffa-lora.tls.secretName" (dict "root" $.root "component" "edge" "replica" $i) }}
          items:
            - {key: ca.crt, path: {{ printf "%s-%d/ca.crt" $sts $i }}}
            - {key: tls.crt, path: {{ printf "%s-%d/tls.crt" $sts $i }}}
            - {key: tls.key, path: {{ printf "%s-%d/tls.key" $sts $i }}}
    {{- end }}
{{- else }}
  secret:
    secretName: {{ include "ffa-lora.tls.secretName" . }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "ffa-lora.commonVolumeMounts" -}}
- name: config
  mountPath: {{ include "ffa-lora.paths.config" .root }}
  subPath: config.yaml
  readOnly: true
- name: tls
  mountPath: {{ include "ffa-lora.paths.tlsDir" .root }}
  {{- if eq .component "edge" }}
  subPathExpr: $(POD_NAME)
  {{- end }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Environment of every container: caches go to /tmp (the root filesystem is read-only). */}}
{{- define "ffa-lora.commonEnv" -}}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /tmp/hf
- name: HF_HUB_OFFLINE
  value: "1"
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: PYTHONUNBUFFERED
  value: "1"
{{- end -}}

{{/* `ffa-lora health` argv for a server component: dict "root" "component" "address". */}}
{{- define "ffa-lora.healthCommand" -}}
- ffa-lora
- health
- --address
- {{ .address | quote }}
{{- $dir := include "ffa-lora.paths.tlsDir" .root }}
- --ca
- {{ printf "%s/ca.crt" $dir }}
- --cert
- {{ printf "%s/tls.crt" $dir }}
- --key
- {{ printf "%s/tls.key" $dir }}
- --server-name
{{- if eq .component "edge" }}
- {{ include "ffa-lora.edge.serverName" .root | quote }}
{{- else }}
- {{ include "ffa-lora.identity.dnsName" . | quote }}
{{- end }}
{{- end -}}

{{/* Probe timings from a values probe block (without `enabled`). */}}
{{- define "ffa-lora.probeTimings" -}}
{{- toYaml (omit . "enabled") -}}
{{- end -}}

{{/* Ports (unique, as ints) named by "host:port" addresses: dict "addresses" L "fallback" P. */}}
{{- define "ffa-lora.addressPorts" -}}
{{- $ports := list (int .fallback) -}}
{{- range .addresses -}}
{{- $m := regexFind ":[0-9]+$" (toString .) -}}
{{- if $m -}}{{- $ports = append $ports (int (trimPrefix ":" $m)) -}}{{- end -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* NetworkPolicy rule allowing DNS lookups. */}}
{{- define "ffa-lora.networkPolicy.dnsEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* NetworkPolicy ingress rule for Prometheus on the metrics port of a component. */}}
{{- define "ffa-lora.networkPolicy.metricsIngress" -}}
{{- $v := index .root.Values (include "ffa-lora.valuesKey" .) -}}
{{- if $v.metrics.enabled }}
- from:
    - namespaceSelector: {{- toYaml .root.Values.monitoring.prometheusNamespaceSelector | nindent 8 }}
      {{- with .root.Values.monitoring.prometheusPodSelector }}
      podSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    - {port: {{ $v.containerPorts.metrics }}, protocol: TCP}
{{- end }}
{{- end -}}

{{/* Pod selector of this federation's peers of a role in any namespace of the cluster. */}}
{{- define "ffa-lora.networkPolicy.peer" -}}
- namespaceSelector: {}
  podSelector:
    matchLabels:
      ffa-lora.io/role: {{ .role }}
      ffa-lora.io/federation: {{ .root.Values.federation.name | quote }}
{{- end -}}

{{/* The helm test pods of this release. */}}
{{- define "ffa-lora.networkPolicy.testPeer" -}}
- podSelector:
    matchLabels:
      {{- include "ffa-lora.selectorLabels" .root | nindent 6 }}
      app.kubernetes.io/component: helm-test
{{- end -}}

{{/* A generated secret value, kept across upgrades: dict "root" "name" "key" "generate" V. */}}
{{- define "ffa-lora.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (hasKey (default (dict) $existing.data) .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- .generate | b64enc -}}
{{- end -}}
{{- end -}}
