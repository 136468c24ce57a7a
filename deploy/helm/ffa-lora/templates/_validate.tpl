{{/*
ffa-lora.validateValues: fail the render on combinations of values that the schema cannot
express. Each message names the values, what is wrong and how to fix it; all problems are
reported at once. Included from templates/validate.yaml (and so from every install, upgrade,
template and lint).
*/}}
{{- define "ffa-lora.validateValues" -}}
{{- $msgs := list -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.components" . | trim) -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.tls" . | trim) -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.coordinator" . | trim) -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.edge" . | trim) -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.client" . | trim) -}}
{{- $msgs = append $msgs (include "ffa-lora.validateValues.keyholder" . | trim) -}}
{{- $text := without $msgs "" | join "\n" | trim -}}
{{- if $text -}}
{{- printf "\nVALUES VALIDATION:\n%s" $text | fail -}}
{{- end -}}
{{- end -}}

{{- define "ffa-lora.validateValues.components" -}}
{{- if not (or .Values.cloudCoordinator.enabled .Values.edgeAggregator.enabled .Values.clientAgent.enabled .Values.keyHolder.enabled) }}
ffa-lora: no component enabled: set at least one of cloudCoordinator.enabled, edgeAggregator.enabled, clientAgent.enabled, keyHolder.enabled to true.
{{- end }}
{{- end -}}

{{- define "ffa-lora.validateValues.tls" -}}
{{- if not .Values.tls.enabled }}
ffa-lora: tls.enabled=false is not supported: every ffa-lora service requires mutual TLS under the federation CA (a peer's role and id come from its certificate) and has no plaintext mode. Remove tls.enabled=false and give each component a certificate: <component>.tls.existingSecret (made with `ffa-lora certs issue`) or tls.certManager.enabled=true.
{{- end }}
{{- if .Values.tls.certManager.enabled }}
{{- $cm := .Values.tls.certManager }}
{{- if and (not $cm.issuerRef.name) (not $cm.createCAIssuer.enabled) }}
ffa-lora: tls.certManager.enabled=true needs an issuer: set tls.certManager.issuerRef.name to an Issuer/ClusterIssuer that signs with the federation CA, or set tls.certManager.createCAIssuer.enabled=true with createCAIssuer.caSecretName.
{{- end }}
{{- if and $cm.createCAIssuer.enabled .Values.cloudCoordinator.enabled (not $cm.createCAIssuer.allowWithCoordinator) }}
ffa-lora: tls.certManager.createCAIssuer.enabled=true in a release that runs the coordinator puts the federation CA key in the coordinator's namespace: whoever runs the coordinator could mint edge and client identities (and so, for example, pose as an edge to its clients). Issue the coordinator's certificate offline (`ffa-lora certs issue --role coordinator`, cloudCoordinator.tls.existingSecret) and keep ca.key offline; in a throw-away test cluster set tls.certManager.createCAIssuer.allowWithCoordinator=true.
{{- end }}
{{- if and $cm.createCAIssuer.enabled (not $cm.createCAIssuer.caSecretName) }}
ffa-lora: tls.certManager.createCAIssuer.enabled=true needs tls.certManager.createCAIssuer.caSecretName: a kubernetes.io/tls secret with the federation CA (kubectl create secret tls NAME --cert=ca.crt --key=ca.key, files from `ffa-lora certs init`).
{{- end }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.validateValues.coordinator" -}}
{{- $v := .Values.cloudCoordinator -}}
{{- if $v.enabled }}
{{- if gt (int $v.replicaCount) 1 }}
ffa-lora: cloudCoordinator.replicaCount={{ $v.replicaCount }}: the coordinator is a singleton (one Paillier private key, one round state, one privacy ledger{{ if not $v.persistence.enabled }}; with persistence disabled every replica would also keep its own in-memory state{{ end }}). Set cloudCoordinator.replicaCount=1.
{{- end }}
{{- if and (not $v.persistence.enabled) (not $v.persistence.allowEphemeral) }}
ffa-lora: cloudCoordinator.persistence.enabled=false keeps the encrypted private key, round state and privacy ledger on an emptyDir: a restart loses them and the spent epsilon is forgotten. Keep persistence enabled, or set cloudCoordinator.persistence.allowEphemeral=true for a throw-away test.
{{- end }}
{{- $mode := include "ffa-lora.privacyMode" . }}
{{- if and $mode (not (has $mode (list "off" "central" "distributed"))) }}
ffa-lora: cloudCoordinator.config.federation.privacy.mode={{ $mode | quote }} is not a DP mode: use "central" (coordinator adds noise), "distributed" (clients add noise shares) or "off".
{{- end }}
{{- if and $v.fernetKey.existingSecret $v.fernetKey.csi.secretProviderClass }}
ffa-lora: cloudCoordinator.fernetKey: both existingSecret and csi.secretProviderClass are set; the Fernet key comes from one place: keep csi.secretProviderClass (an external store) or existingSecret, not both.
{{- end }}
{{- $th := $v.threshold }}
{{- $keyholders := 0 }}
{{- range $th.holders }}{{- if hasPrefix "keyholder/" . }}{{- $keyholders = add1 $keyholders }}{{- end }}{{- end }}
{{- if lt (int $th.t) 2 }}
ffa-lora: cloudCoordinator.threshold.t={{ $th.t }}: at least 2 shares must be needed to decrypt, or the coordinator (or one key holder) could decrypt any partial sum alone. Set t >= 2 and rerun the ceremony with it.
{{- end }}
{{- if gt (int $th.t) (len $th.holders) }}
ffa-lora: cloudCoordinator.threshold.t={{ $th.t }} but only {{ len $th.holders }} holders are listed: no round could ever be decrypted. List every holder of the ceremony (coordinator/<id>, keyholder/<id>).
{{- end }}
{{- if and (lt $keyholders 2) (not $th.testMode) }}
ffa-lora: cloudCoordinator.threshold.holders lists {{ $keyholders }} key holder(s) besides the coordinator: with fewer than 2 the coordinator and that one holder together hold every share (and no holder may be offline). Run the ceremony with at least two keyholder/<id> holders and list them, or set cloudCoordinator.threshold.testMode=true for a throw-away test.
{{- end }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.validateValues.keyholder" -}}
{{- $v := .Values.keyHolder -}}
{{- if $v.enabled }}
{{- if not $v.identity.id }}
ffa-lora: keyHolder.identity.id is empty: set it to the id the ceremony named this holder with (keyholder/<id>); its certificate must be issued for role keyholder and that id.
{{- end }}
{{- if and (not .Values.cloudCoordinator.enabled) (not (get (default (dict) $v.config) "coordinator_address")) }}
ffa-lora: keyHolder.config.coordinator_address is not set and no coordinator is enabled in this release: set it to the coordinator's host:port (and keyHolder.config.coordinator_server_name to its pinned name).
{{- end }}
{{- if and $v.share.existingSecret $v.fernetKey.existingSecret (eq $v.share.existingSecret $v.fernetKey.existingSecret) }}
ffa-lora: keyHolder.share.existingSecret and keyHolder.fernetKey.existingSecret are the same secret: keep the Fernet key apart from the share it seals (two secrets, ideally managed separately).
{{- end }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.validateValues.edge" -}}
{{- $v := .Values.edgeAggregator -}}
{{- if $v.enabled }}
{{- $a := $v.autoscaling }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
ffa-lora: edgeAggregator.autoscaling.minReplicas={{ $a.minReplicas }} is greater than maxReplicas={{ $a.maxReplicas }}: set minReplicas <= maxReplicas.
{{- end }}
{{- if and $a.enabled (not $a.targetCPUUtilizationPercentage) (not $a.targetMemoryUtilizationPercentage) (not $a.metrics) }}
ffa-lora: edgeAggregator.autoscaling.enabled=true without a metric: set targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or autoscaling.metrics.
{{- end }}
{{- if and $v.pdb.create (toString $v.pdb.minAvailable) (toString $v.pdb.maxUnavailable) }}
ffa-lora: edgeAggregator.pdb: set either minAvailable or maxUnavailable, not both (set the other to "").
{{- end }}
{{- $sts := include "ffa-lora.component.fullname" (dict "root" . "component" "edge") }}
{{- if gt (len $sts) 52 }}
ffa-lora: the edge StatefulSet name {{ $sts }} has {{ len $sts }} characters; Kubernetes allows 52 (its pods' controller-revision-hash label must fit 63): use a shorter release name, fullnameOverride or edgeAggregator.region.
{{- end }}
{{- if gt (len (include "ffa-lora.edge.replicaId" (dict "root" . "replica" (sub (int (include "ffa-lora.edge.maxReplicas" .)) 1)))) 64 }}
ffa-lora: edgeAggregator.identity.id plus the replica suffix -<ordinal> exceeds the 64 characters a certificate id may have: use a shorter edgeAggregator.identity.id or region.
{{- end }}
{{- $cfg := include "ffa-lora.configYaml" (dict "root" . "component" "edge") | fromYaml }}
{{- if not $cfg.edge.coordinator_address }}
ffa-lora: edgeAggregator.config.coordinator_address is not set and this release has no coordinator (cloudCoordinator.enabled=false): set it to the coordinator's host:port, e.g. coordinator.example.org:50051.
{{- end }}
{{- end }}
{{- end -}}

{{- define "ffa-lora.validateValues.client" -}}
{{- $v := .Values.clientAgent -}}
{{- if $v.enabled }}
{{- if gt (int $v.replicaCount) 1 }}
ffa-lora: clientAgent.replicaCount={{ $v.replicaCount }}: one client agent is one federation participant with one identity; two pods would submit twice under one id. Set replicaCount to 1 (or 0) and install the chart again with another clientAgent.identity.id for another participant.
{{- end }}
{{- if not $v.identity.id }}
ffa-lora: clientAgent.identity.id is empty: set it to this site's client id (the id in its certificate), e.g. hospital-a.
{{- end }}
{{- $cfg := include "ffa-lora.configYaml" (dict "root" . "component" "client") | fromYaml }}
{{- if not $cfg.client.edges }}
ffa-lora: clientAgent.config.edges is empty and this release has no edge (edgeAggregator.enabled=false): list the edge addresses, e.g. --set 'clientAgent.config.edges={edge-eu-west.example.org:50052}'.
{{- end }}
{{- if $v.gpu.enabled }}
{{- $nodeAffinity := and (kindIs "map" $v.affinity) (hasKey $v.affinity "nodeAffinity") }}
{{- if and (not $v.nodeSelector) (not $nodeAffinity) }}
ffa-lora: clientAgent.gpu.enabled=true but no node pool is selected: set clientAgent.nodeSelector (e.g. cloud.google.com/gke-accelerator: nvidia-tesla-t4, or nvidia.com/gpu.product: Tesla-T4 with GPU feature discovery) or clientAgent.affinity.nodeAffinity, so the agent lands on the T4 pool.
{{- end }}
{{- if eq (toString $cfg.client.device) "cpu" }}
ffa-lora: clientAgent.gpu.enabled=true with clientAgent.config.device=cpu would reserve a GPU and not use it: set device to cuda or auto, or gpu.enabled=false.
{{- end }}
{{- else if eq (toString $cfg.client.device) "cuda" }}
ffa-lora: clientAgent.config.device=cuda but clientAgent.gpu.enabled=false, so no GPU is requested: set clientAgent.gpu.enabled=true (with a T4 nodeSelector) or device to cpu.
{{- end }}
{{- $deid := get (default (dict) $v.config) "deid" }}
{{- if and (kindIs "map" $deid) (get $deid "enabled") (not $v.deidSecret.existingSecret) (not $v.deidSecret.create) }}
ffa-lora: clientAgent.config.deid.enabled=true needs its pseudonymisation key: set clientAgent.deidSecret.existingSecret, or clientAgent.deidSecret.create=true.
{{- end }}
{{- end }}
{{- end -}}
