package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MediaServiceSpec is what a cluster admin asks for: a fleet of WebRTC media
// pods, their networking, their limits and how they are watched.
// +kubebuilder:validation:XValidation:rule="!has(self.signaling) || !has(self.signaling.port) || !has(self.adminPort) || self.signaling.port != self.adminPort",message="signaling.port and adminPort must differ"
// +kubebuilder:validation:XValidation:rule="!has(self.ice) || !has(self.ice.portRange) || !has(self.limits) || !has(self.limits.maxSessionsPerPod) || self.ice.portRange.min > self.ice.portRange.max || self.ice.portRange.max - self.ice.portRange.min + 1 >= self.limits.maxSessionsPerPod",messageExpression="'ice.portRange has %d ports; limits.maxSessionsPerPod needs %d (one UDP port per session): widen the range or lower the limit'.format([self.ice.portRange.max - self.ice.portRange.min + 1, self.limits.maxSessionsPerPod])"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.replicas) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)",message="spec.replicas must lie within autoscaling.minReplicas..maxReplicas: with autoscaling the operator sets spec.replicas itself"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.limits) || !has(self.limits.maxSessionsPerPod) || self.autoscaling.targetSessionsPerPod <= self.limits.maxSessionsPerPod",message="autoscaling.targetSessionsPerPod cannot exceed limits.maxSessionsPerPod"
// +kubebuilder:validation:XValidation:rule="!has(self.ice) || !has(self.ice.publicAddress) || !has(self.ice.hostNetwork) || self.ice.publicAddress.source != 'PodIP' || !self.ice.hostNetwork",message="ice.publicAddress.source PodIP makes no sense with ice.hostNetwork; use NodeInternalIP or NodeExternalIP"
type MediaServiceSpec struct {
	// Replicas is the number of media pods. Scaled through the scale
	// subresource (kubectl scale msvc/NAME --replicas=N).
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image of the mediaserver. Empty means the operator's
	// --mediaserver-image flag.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the mediaserver container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources of the mediaserver container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitzero"`

	// Signaling configures the public port: WHIP/WHEP, WebSocket and the
	// demo page.
	// +kubebuilder:default={}
	// +optional
	Signaling SignalingSpec `json:"signaling,omitzero"`

	// AdminPort serves /metrics, /healthz, /readyz, /status and pprof. It is
	// never exposed by the public Service.
	// +kubebuilder:default=9090
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	AdminPort int32 `json:"adminPort,omitempty"`

	// ICE configures how media reaches the pods over UDP. Set at most one
	// port mode, portRange or udpMuxPort (they are mutually exclusive);
	// with neither (or no ice block at all) every session of a pod shares
	// UDP port 50000, so adding only stunServers or turnServers keeps it.
	// +kubebuilder:default={udpMuxPort: 50000}
	// +optional
	ICE ICESpec `json:"ice,omitzero"`

	// Limits protect each media pod.
	// +kubebuilder:default={}
	// +optional
	Limits LimitsSpec `json:"limits,omitzero"`

	// Rooms sets policies for rooms by name.
	// +optional
	Rooms RoomsSpec `json:"rooms,omitzero"`

	// LeakDetection configures the goroutine-leak detector of each pod.
	// +kubebuilder:default={}
	// +optional
	LeakDetection LeakDetectionSpec `json:"leakDetection,omitzero"`

	// Logging configures the mediaserver's structured logs.
	// +kubebuilder:default={}
	// +optional
	Logging LoggingSpec `json:"logging,omitzero"`

	// PodTemplate adds metadata and scheduling constraints to media pods.
	// +optional
	PodTemplate PodTemplateSpec `json:"podTemplate,omitzero"`

	// Monitoring configures what the operator generates for the Prometheus
	// Operator (PodMonitor, PrometheusRule) and Grafana (a dashboard
	// ConfigMap). Each piece can be switched off.
	// +kubebuilder:default={}
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitzero"`

	// NetworkPolicy the operator makes for the media pods: signalling and
	// ICE open to everyone, the admin port only to the operator, the
	// MediaService's own pods and the metricsFrom peers. On by default; it
	// takes effect where the cluster's network plugin enforces
	// NetworkPolicies (Calico, Cilium, ...), and never for hostNetwork pods.
	// +kubebuilder:default={}
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitzero"`

	// Autoscaling lets the operator set spec.replicas from the sessions the
	// pods report: ceil(sessions / targetSessionsPerPod) within
	// minReplicas..maxReplicas, never fewer than the pods that hold
	// sessions, scaling down only after the recommendation stayed lower for
	// scaleDownStabilization. The operator writes spec.replicas through the
	// scale subresource, as a HorizontalPodAutoscaler would: use either this
	// or an HPA on the scale subresource, never both. Unset means
	// spec.replicas is yours.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// TURN runs a TURN gateway for this MediaService (off by default): its
	// own Deployment and Service, relaying clients that cannot reach the
	// media pods directly (outside the cluster, behind NAT, or behind
	// firewalls that pass only TLS on 443) to the media pods, and only to
	// them. The media pods then hand clients short-lived credentials for
	// it.
	// +optional
	TURN *TURNSpec `json:"turn,omitempty"`
}

// TURNSpec configures the MediaService's TURN gateway.
// +kubebuilder:validation:XValidation:rule="!has(self.tls.enabled) || !self.tls.enabled || has(self.tls.secretRef)",message="turn.tls.enabled needs turn.tls.secretRef: a kubernetes.io/tls Secret holding the gateway's certificate"
// +kubebuilder:validation:XValidation:rule="(has(self.udp.enabled) && self.udp.enabled) || (has(self.tcp.enabled) && self.tcp.enabled) || (has(self.tls.enabled) && self.tls.enabled)",message="turn needs at least one listener: udp, tcp or tls"
// +kubebuilder:validation:XValidation:rule="!has(self.tcp.enabled) || !self.tcp.enabled || !has(self.tls.enabled) || !self.tls.enabled || self.tcp.port != self.tls.port",message="turn.tcp.port and turn.tls.port must differ (both are TCP)"
// +kubebuilder:validation:XValidation:rule="self.serviceType != 'NodePort' || has(self.publicAddress)",message="turn.serviceType NodePort needs turn.publicAddress: the address clients reach a node at"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || self.autoscaling.targetAllocationsPerPod <= self.maxAllocationsPerPod",message="turn.autoscaling.targetAllocationsPerPod cannot exceed turn.maxAllocationsPerPod"
type TURNSpec struct {
	// Enabled runs the gateway.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Replicas of the gateway.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// UDP is the plain TURN listener over UDP (on, port 3478 by default).
	// +kubebuilder:default={enabled: true, port: 3478}
	// +optional
	UDP TURNUDPListener `json:"udp,omitzero"`

	// TCP is the plain TURN listener over TCP (off by default).
	// +kubebuilder:default={enabled: false, port: 3478}
	// +optional
	TCP TURNListener `json:"tcp,omitzero"`

	// TLS is TURN over TLS (turns:), for networks that pass only TLS on
	// 443 (off by default; needs secretRef).
	// +kubebuilder:default={enabled: false, port: 443}
	// +optional
	TLS TURNTLSListener `json:"tls,omitzero"`

	// ServiceType of the gateway's Service. With NodePort, publicAddress
	// says where clients reach a node.
	// +kubebuilder:default=LoadBalancer
	// +optional
	ServiceType ServiceType `json:"serviceType,omitempty"`

	// PublicAddress is the IP address or DNS name clients are told to
	// use, when the Service's own address (its load balancer's, or its
	// cluster IP) is not what they reach.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$`
	// +optional
	PublicAddress string `json:"publicAddress,omitempty"`

	// CredentialTTL is how long the credentials a media pod hands a client
	// stay valid (default 1h).
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('24h'))",message="turn.credentialTTL must be between 1m and 24h"
	// +optional
	CredentialTTL metav1.Duration `json:"credentialTTL,omitzero"`

	// MaxAllocationsPerPod bounds one gateway pod's allocations (a
	// client's relay; about one per session and client).
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxAllocationsPerPod int32 `json:"maxAllocationsPerPod,omitempty"`

	// MaxAllocationsPerUser bounds the allocations of one username (one
	// session's credentials).
	// +kubebuilder:default=4
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	MaxAllocationsPerUser int32 `json:"maxAllocationsPerUser,omitempty"`

	// MaxKbpsPerAllocation bounds an allocation's bitrate in each
	// direction, in kbit/s (0: unbounded). Packets beyond it are dropped
	// and counted.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxKbpsPerAllocation int32 `json:"maxKbpsPerAllocation,omitempty"`

	// Autoscaling sets the gateway's replicas from its allocations (then
	// turn.replicas is only the starting point): ceil(allocations /
	// targetAllocationsPerPod) within minReplicas..maxReplicas, up at once,
	// down after scaleDownStabilization.
	// +optional
	Autoscaling *TURNAutoscalingSpec `json:"autoscaling,omitempty"`

	// Resources of the gateway container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitzero"`
}

// TURNAutoscalingSpec scales the TURN gateway on its allocations.
// +kubebuilder:validation:XValidation:rule="self.minReplicas <= self.maxReplicas",message="turn.autoscaling.minReplicas must be <= maxReplicas"
type TURNAutoscalingSpec struct {
	// MinReplicas of the gateway.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`
	// MaxReplicas of the gateway.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +required
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetAllocationsPerPod is the allocations one gateway pod should
	// hold (below turn.maxAllocationsPerPod, which refuses past it).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +required
	TargetAllocationsPerPod int32 `json:"targetAllocationsPerPod"`
	// ScaleDownStabilization: the highest recommendation within this
	// window holds (default 5m).
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	ScaleDownStabilization metav1.Duration `json:"scaleDownStabilization,omitzero"`
}

// TURNUDPListener is the UDP listener (on unless switched off).
type TURNUDPListener struct {
	// Enabled opens the listener (default true).
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Port on the Service.
	// +kubebuilder:default=3478
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
}

// On says whether the UDP listener is open (nil: the default, on).
func (l TURNUDPListener) On() bool { return l.Enabled == nil || *l.Enabled }

// TURNListener is one plain TURN listener: the Service's port.
type TURNListener struct {
	// Enabled opens the listener.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Port on the Service.
	// +kubebuilder:default=3478
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
}

// TURNTLSListener is the TURN-over-TLS listener.
type TURNTLSListener struct {
	// Enabled opens the listener.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Port on the Service.
	// +kubebuilder:default=443
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// SecretRef names a kubernetes.io/tls Secret (tls.crt, tls.key) with
	// the gateway's certificate; renewals are picked up without a
	// restart.
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`
}

// NetworkPolicySpec configures the generated NetworkPolicy.
type NetworkPolicySpec struct {
	// Enabled generates the NetworkPolicy.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// MetricsFrom are the peers allowed to scrape the admin port's
	// /metrics (Prometheus). Empty means pods labelled
	// app.kubernetes.io/name=prometheus in namespaces labelled
	// kubernetes.io/metadata.name=monitoring, as the Prometheus Operator's
	// kube-prometheus examples deploy it.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	MetricsFrom []networkingv1.NetworkPolicyPeer `json:"metricsFrom,omitempty"`
}

// MonitoringSpec configures the generated monitoring objects.
type MonitoringSpec struct {
	// PodMonitor scrapes every media pod's admin port.
	// +kubebuilder:default={}
	// +optional
	PodMonitor PodMonitorSpec `json:"podMonitor,omitzero"`
	// Rules is a PrometheusRule with the fleet's alerts.
	// +kubebuilder:default={}
	// +optional
	Rules RulesSpec `json:"rules,omitzero"`
	// Dashboard is a Grafana dashboard in a ConfigMap for the Grafana
	// sidecar.
	// +kubebuilder:default={}
	// +optional
	Dashboard DashboardSpec `json:"dashboard,omitzero"`
}

// PodMonitorSpec configures the generated PodMonitor.
type PodMonitorSpec struct {
	// Enabled generates the PodMonitor.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Interval between scrapes (Prometheus duration).
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Pattern=`^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$`
	// +kubebuilder:validation:MinLength=2
	// +optional
	Interval string `json:"interval,omitempty"`
	// Labels added to the PodMonitor, for the Prometheus podMonitorSelector.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// RulesSpec configures the generated PrometheusRule. Every alert is scoped
// to this MediaService's namespace and name.
type RulesSpec struct {
	// Enabled generates the PrometheusRule.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Labels added to the PrometheusRule, for the Prometheus ruleSelector.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// RunbookBaseURL prefixes each alert's runbook_url annotation (the
	// alert's name, lower-cased, is appended after "#runbook-"). The
	// default is the project's docs/runbooks.md.
	// +kubebuilder:default="https://github.com/mediafleet/mediafleet/blob/main/docs/runbooks.md"
	// +kubebuilder:validation:MaxLength=512
	// +optional
	RunbookBaseURL string `json:"runbookBaseURL,omitempty"`
	// GoroutineLeak fires while a pod reports a suspected goroutine leak.
	// +kubebuilder:default={for: "5m", severity: warning}
	// +optional
	GoroutineLeak AlertSpec `json:"goroutineLeak,omitzero"`
	// HighErrorRate fires when more than threshold percent of HTTP
	// requests fail with 5xx.
	// +kubebuilder:default={for: "2m", severity: critical, threshold: 5}
	// +optional
	HighErrorRate AlertSpec `json:"highErrorRate,omitzero"`
	// HighLatency fires when the p99 of signalling and admin requests
	// exceeds threshold milliseconds (WebSocket connections excluded).
	// +kubebuilder:default={for: "5m", severity: warning, threshold: 500}
	// +optional
	HighLatency AlertSpec `json:"highLatency,omitzero"`
	// SessionCapacity fires when the fleet's sessions exceed threshold
	// percent of its capacity.
	// +kubebuilder:default={for: "5m", severity: warning, threshold: 90}
	// +optional
	SessionCapacity AlertSpec `json:"sessionCapacity,omitzero"`
	// PodDown fires when a media pod cannot be scraped.
	// +kubebuilder:default={for: "2m", severity: critical}
	// +optional
	PodDown AlertSpec `json:"podDown,omitzero"`
	// PacketLoss fires when the median packet loss exceeds threshold
	// percent.
	// +kubebuilder:default={for: "5m", severity: warning, threshold: 5}
	// +optional
	PacketLoss AlertSpec `json:"packetLoss,omitzero"`
	// TURNAllocations fires when a TURN gateway pod's allocations exceed
	// threshold percent of turn.maxAllocationsPerPod (spec.turn only).
	// +kubebuilder:default={for: "5m", severity: warning, threshold: 80}
	// +optional
	TURNAllocations AlertSpec `json:"turnAllocations,omitzero"`
	// TURNGatewayDown fires when a TURN gateway pod cannot be scraped
	// (spec.turn only).
	// +kubebuilder:default={for: "2m", severity: critical}
	// +optional
	TURNGatewayDown AlertSpec `json:"turnGatewayDown,omitzero"`
}

// DefaultRunbookBaseURL is RunbookBaseURL's default (the marker above must
// say the same; a test checks the CRD against it).
const DefaultRunbookBaseURL = "https://github.com/mediafleet/mediafleet/blob/main/docs/runbooks.md"

// AlertSpec tunes one alert.
type AlertSpec struct {
	// Disabled drops this alert.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
	// For is how long the condition must hold (Prometheus duration).
	// +kubebuilder:validation:Pattern=`^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?$`
	// +kubebuilder:validation:MinLength=2
	// +optional
	For string `json:"for,omitempty"`
	// Severity label of the alert.
	// +kubebuilder:validation:Enum=info;warning;critical
	// +optional
	Severity string `json:"severity,omitempty"`
	// Threshold of the alert, in the unit its description gives (percent
	// or milliseconds).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	Threshold int32 `json:"threshold,omitempty"`
}

// DashboardSpec configures the generated Grafana dashboard ConfigMap.
type DashboardSpec struct {
	// Enabled generates the dashboard ConfigMap.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Labels of the ConfigMap that the Grafana sidecar looks for.
	// +kubebuilder:default={grafana_dashboard: "1"}
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// AutoscalingSpec sizes the fleet from reported sessions.
// +kubebuilder:validation:XValidation:rule="self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must be <= autoscaling.maxReplicas"
type AutoscalingSpec struct {
	// MinReplicas is the smallest fleet.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`
	// MaxReplicas is the largest fleet.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +required
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetSessionsPerPod is the load each pod should carry.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +required
	TargetSessionsPerPod int32 `json:"targetSessionsPerPod"`
	// ScaleDownStabilization is how long a lower recommendation must hold
	// before the fleet shrinks.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('0s') && duration(self) <= duration('24h'))",message="autoscaling.scaleDownStabilization must be between 0s and 24h"
	// +optional
	ScaleDownStabilization metav1.Duration `json:"scaleDownStabilization,omitzero"`
}

// ServiceType is how the signalling Service is exposed.
// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
type ServiceType string

const (
	ServiceTypeClusterIP    ServiceType = "ClusterIP"
	ServiceTypeNodePort     ServiceType = "NodePort"
	ServiceTypeLoadBalancer ServiceType = "LoadBalancer"
)

// SignalingSpec configures the public signalling port.
type SignalingSpec struct {
	// Port of WHIP/WHEP, WebSocket and the demo page, in the pod and on the
	// Service.
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// ServiceType of the signalling Service.
	// +kubebuilder:default=ClusterIP
	// +optional
	ServiceType ServiceType `json:"serviceType,omitempty"`

	// AllowedOrigins are the browser origins allowed to open a WebSocket or
	// make cross-origin WHIP/WHEP requests (scheme://host[:port], or "*").
	// Empty means same-origin only.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(o, o == '*' || o.matches('^https?://[^/?#]+$'))",message="each signaling.allowedOrigins entry must be \"*\" or scheme://host[:port] with scheme http or https and no path"
	// +listType=set
	// +optional
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`

	// TLS serves HTTPS and WSS on the signalling port with the certificate
	// of a kubernetes.io/tls Secret. Pods reload it when the Secret changes
	// (cert-manager renewals need no restart). Browsers give a page camera
	// access only in a secure context: HTTPS, or http://localhost.
	// +optional
	TLS *SignalingTLS `json:"tls,omitempty"`

	// TokenSecretRef names a key of a Secret in the MediaService's namespace
	// holding the bearer token required on WHIP, WHEP and WebSocket
	// requests. Unset means no token is required.
	// +optional
	TokenSecretRef *SecretKeyRef `json:"tokenSecretRef,omitempty"`
}

// SignalingTLS names the certificate of the signalling port.
type SignalingTLS struct {
	// SecretRef names a kubernetes.io/tls Secret (keys tls.crt and
	// tls.key) in the MediaService's namespace.
	// +required
	SecretRef corev1.LocalObjectReference `json:"secretRef"`
}

// SecretKeyRef selects one key of a Secret in the same namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
	// Key within the Secret.
	// +kubebuilder:default=token
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// ICESpec configures ICE. At most one port mode is set: portRange or
// udpMuxPort; with neither, every session shares UDP port 50000 (the same as
// udpMuxPort: 50000), so an ice block that only adds STUN or TURN servers
// keeps the default.
// +kubebuilder:validation:XValidation:rule="!(has(self.portRange) && has(self.udpMuxPort))",message="ice.portRange and ice.udpMuxPort are mutually exclusive: set one (with neither, udpMuxPort 50000 is used)"
type ICESpec struct {
	// PortRange gives every session its own UDP port from this range
	// (needs at least limits.maxSessionsPerPod ports). Mutually exclusive
	// with udpMuxPort.
	// +optional
	PortRange *PortRange `json:"portRange,omitempty"`

	// UDPMuxPort makes every session of a pod share this one UDP port.
	// Mutually exclusive with portRange; when neither is set, 50000.
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +optional
	UDPMuxPort *int32 `json:"udpMuxPort,omitempty"`

	// STUNServers are handed to the server's ICE agent and to clients.
	// Each is a stun: or stuns: URL. No STUN server is used by default.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(u, u.matches('^stuns?:[^\\\\s]+$'))",message="each ice.stunServers entry must be a stun: or stuns: URL"
	// +optional
	STUNServers []string `json:"stunServers,omitempty"`

	// TURNServers relay media for clients that cannot reach the pod
	// directly (the usual setup for pod-network fleets).
	// +kubebuilder:validation:MaxItems=4
	// +optional
	TURNServers []TURNServer `json:"turnServers,omitempty"`

	// HostNetwork runs media pods in the node's network namespace so that
	// clients reach ICE ports on the node's address. Two pods of one
	// MediaService never share a node then.
	// +optional
	HostNetwork bool `json:"hostNetwork,omitempty"`

	// PublicAddress is the address written into the server's ICE
	// candidates. Unset means the pod's own interface addresses.
	// +optional
	PublicAddress *PublicAddress `json:"publicAddress,omitempty"`
}

// PortRange is an inclusive range of UDP ports.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="ice.portRange.min must be <= ice.portRange.max"
type PortRange struct {
	// Min is the first port of the range.
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +required
	Min int32 `json:"min"`
	// Max is the last port of the range.
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +required
	Max int32 `json:"max"`
}

// TURNServer is one TURN server and the Secret holding its credentials:
// a fixed username and password, or (better) the server's shared secret,
// from which every session gets its own short-lived credentials (the TURN
// REST API scheme, as coturn's use-auth-secret and pion/turn's
// LongTermTURNRESTAuthHandler verify it), so no long-lived password ever
// reaches a client.
// +kubebuilder:validation:XValidation:rule="has(self.credentialsSecretRef) != has(self.sharedSecretRef)",message="each ice.turnServers entry needs exactly one of credentialsSecretRef (username and password) or sharedSecretRef (a shared secret for short-lived credentials)"
// +kubebuilder:validation:XValidation:rule="!has(self.credentialTTL) || has(self.sharedSecretRef)",message="ice.turnServers[].credentialTTL applies to sharedSecretRef only"
type TURNServer struct {
	// URLs of the server, each turn: or turns:.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(u, u.matches('^turns?:[^\\\\s]+$'))",message="each ice.turnServers[].urls entry must be a turn: or turns: URL"
	// +required
	URLs []string `json:"urls"`
	// CredentialsSecretRef names a Secret in the same namespace with the
	// keys username and password, handed to clients as they are.
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`
	// SharedSecretRef names the key of a Secret holding the TURN server's
	// shared secret (key "secret" by default). Each session then gets a
	// username "<expiry>:<session>" and password
	// base64(HMAC-SHA1(secret, username)), valid for credentialTTL.
	// +optional
	SharedSecretRef *SecretKeyRef `json:"sharedSecretRef,omitempty"`
	// CredentialTTL is how long minted credentials stay valid (default 1h).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('24h'))",message="ice.turnServers[].credentialTTL must be between 1m and 24h"
	// +optional
	CredentialTTL *metav1.Duration `json:"credentialTTL,omitempty"`
}

// PublicAddressSource says where the advertised address comes from.
// +kubebuilder:validation:Enum=NodeExternalIP;NodeInternalIP;PodIP;Static
type PublicAddressSource string

const (
	// PublicAddressNodeExternalIP advertises the node's ExternalIP address.
	PublicAddressNodeExternalIP PublicAddressSource = "NodeExternalIP"
	// PublicAddressNodeInternalIP advertises the node's address
	// (status.hostIP).
	PublicAddressNodeInternalIP PublicAddressSource = "NodeInternalIP"
	// PublicAddressPodIP advertises the pod's IP.
	PublicAddressPodIP PublicAddressSource = "PodIP"
	// PublicAddressStatic advertises the addresses listed in ips.
	PublicAddressStatic PublicAddressSource = "Static"
)

// PublicAddress is the address rewritten into ICE host candidates.
// +kubebuilder:validation:XValidation:rule="self.source == 'Static' ? (has(self.ips) && size(self.ips) > 0) : !has(self.ips)",message="ice.publicAddress.ips is required with source Static and allowed only with it"
type PublicAddress struct {
	// Source of the advertised address.
	// +required
	Source PublicAddressSource `json:"source"`
	// IPs advertised with source Static.
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="self.all(ip, isIP(ip))",message="each ice.publicAddress.ips entry must be an IP address"
	// +optional
	IPs []string `json:"ips,omitempty"`
}

// RoomsSpec sets policies for rooms by name.
type RoomsSpec struct {
	// Broadcast names the rooms whose WHEP viewers are served by relay
	// pods first (cascading: the owner keeps its capacity for publishers),
	// as a publisher's POST /whip/{room}?mode=broadcast does for its room:
	// exact names, or prefixes ending in '*' ("webinar-*"; "*" is every
	// room).
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=65
	// +kubebuilder:validation:items:Pattern=`^([A-Za-z0-9_.-]{1,64}\*?|\*)$`
	// +listType=set
	// +optional
	Broadcast []string `json:"broadcast,omitempty"`
}

// LimitsSpec protects each media pod.
type LimitsSpec struct {
	// MaxSessionsPerPod is the number of PeerConnections a pod accepts;
	// the next offer gets 503 with Retry-After.
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxSessionsPerPod int32 `json:"maxSessionsPerPod,omitempty"`

	// MaxICECandidatesPerSession caps the remote ICE candidates one session
	// may add.
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxICECandidatesPerSession int32 `json:"maxICECandidatesPerSession,omitempty"`

	// WebsocketSendBuffer is the outbound queue of each WebSocket, in
	// messages.
	// +kubebuilder:default=256
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +optional
	WebsocketSendBuffer int32 `json:"websocketSendBuffer,omitempty"`

	// WebsocketSendTimeout is how long a send may wait on a full queue
	// before the slow client is disconnected.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) > duration('0s') && duration(self) <= duration('1m'))",message="limits.websocketSendTimeout must be positive and at most 1m"
	// +optional
	WebsocketSendTimeout metav1.Duration `json:"websocketSendTimeout,omitzero"`

	// DrainTimeout is how long a terminating pod waits for its sessions to
	// end before closing them; terminationGracePeriodSeconds follows it.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))",message="limits.drainTimeout must be positive and at most 24h"
	// +optional
	DrainTimeout metav1.Duration `json:"drainTimeout,omitzero"`
}

// Remediation is what the operator does about a leaking pod.
// +kubebuilder:validation:Enum=None;RestartWhenIdle
type Remediation string

const (
	// RemediationNone only reports.
	RemediationNone Remediation = "None"
	// RemediationRestartWhenIdle deletes a leaking pod once it holds no
	// sessions.
	RemediationRestartWhenIdle Remediation = "RestartWhenIdle"
)

// LeakDetectionSpec configures the goroutine-leak detector.
type LeakDetectionSpec struct {
	// BaselineWindow is how long after start the detector learns the
	// goroutine baseline.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s'))",message="leakDetection.baselineWindow must be at least 1s"
	// +optional
	BaselineWindow metav1.Duration `json:"baselineWindow,omitzero"`

	// ThresholdRatio: a leak is suspected when goroutines not explained by
	// sessions exceed this multiple of the baseline.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=100
	// +optional
	ThresholdRatio int32 `json:"thresholdRatio,omitempty"`

	// Remediation of a suspected leak.
	// +kubebuilder:default=None
	// +optional
	Remediation Remediation `json:"remediation,omitempty"`
}

// LoggingSpec configures the mediaserver's logs.
type LoggingSpec struct {
	// Level of the logs.
	// +kubebuilder:validation:Enum=debug;info;warn;error
	// +kubebuilder:default=info
	// +optional
	Level string `json:"level,omitempty"`
	// Format of the logs.
	// +kubebuilder:validation:Enum=json;text
	// +kubebuilder:default=json
	// +optional
	Format string `json:"format,omitempty"`
}

// PodTemplateSpec adds metadata and scheduling constraints to media pods.
type PodTemplateSpec struct {
	// Labels added to media pods (the operator's own labels win).
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations added to media pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// NodeSelector of media pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of media pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity of media pods. With ice.hostNetwork the operator adds a
	// required pod anti-affinity on the node.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// PriorityClassName of media pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// Condition types of a MediaService.
const (
	// ConditionAvailable is True when enough media pods are ready to serve.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while a rollout or scale is under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when pods fail or the rollout is stuck.
	ConditionDegraded = "Degraded"
	// ConditionGoroutineLeak is True while any pod reports a suspected
	// goroutine leak.
	ConditionGoroutineLeak = "GoroutineLeak"
	// ConditionMonitoringReady is True when the monitoring objects are
	// applied (or all switched off), False when the Prometheus Operator's
	// CRDs are missing.
	ConditionMonitoringReady = "MonitoringReady"
)

// RoomSpread is one room as the fleet serves it.
type RoomSpread struct {
	// Name of the room.
	// +kubebuilder:validation:MaxLength=64
	Name string `json:"name"`
	// Owner is the pod that holds the room's publishers.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Owner string `json:"owner,omitempty"`
	// Pods serving the room: its owner and its relay pods.
	Pods int32 `json:"pods"`
	// Sessions of the room over those pods.
	Sessions int32 `json:"sessions"`
}

// MaxRoomSpreads bounds status.rooms.
const MaxRoomSpreads = 10

// MaxPodStatuses bounds status.pods for large fleets.
const MaxPodStatuses = 50

// SessionsStatus sums what the pods report.
type SessionsStatus struct {
	// Active sessions over the fleet.
	Active int32 `json:"active"`
	// Capacity is the sum of the reporting pods' session limits.
	Capacity int32 `json:"capacity"`
	// ReportingPods is how many pods answered the last observation.
	ReportingPods int32 `json:"reportingPods"`
}

// PodStatus is one media pod as last observed through its /status.
type PodStatus struct {
	Name string `json:"name"`
	// Reachable is false when the pod's /status could not be read.
	Reachable     bool  `json:"reachable"`
	Ready         bool  `json:"ready"`
	Draining      bool  `json:"draining,omitempty"`
	Sessions      int32 `json:"sessions"`
	Goroutines    int32 `json:"goroutines,omitempty"`
	LeakSuspected bool  `json:"leakSuspected,omitempty"`
	// Message explains an unreachable pod or a suspected leak.
	// +optional
	Message string `json:"message,omitempty"`
}

// TURNStatus is the TURN gateway as last seen.
type TURNStatus struct {
	// URLs clients are given (turn: and turns:); empty until the
	// Service has an address clients can use.
	// +kubebuilder:validation:MaxItems=3
	// +optional
	URLs []string `json:"urls,omitempty"`
	// Address is the host in URLs.
	// +optional
	Address string `json:"address,omitempty"`
	// Replicas and ReadyReplicas of the gateway.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// Allocations over the gateway pods, as last observed.
	// +optional
	Allocations int32 `json:"allocations,omitempty"`
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
}

// MediaServiceStatus is what the operator observed.
type MediaServiceStatus struct {
	// ObservedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the number of media pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of ready media pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// UpdatedReplicas is the number of media pods on the current spec.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// Selector is the label selector of media pods (for the scale
	// subresource and HPAs).
	// +optional
	Selector string `json:"selector,omitempty"`
	// Sessions over the fleet, from the pods' reports.
	// +optional
	Sessions *SessionsStatus `json:"sessions,omitempty"`
	// Pods lists the media pods (at most 50, by name) as last observed.
	// +kubebuilder:validation:MaxItems=50
	// +listType=map
	// +listMapKey=name
	// +optional
	Pods []PodStatus `json:"pods,omitempty"`
	// LeakingPods names the pods that report a suspected goroutine leak.
	// +listType=set
	// +optional
	LeakingPods []string `json:"leakingPods,omitempty"`
	// TURN is the gateway as clients reach it (spec.turn.enabled).
	// +optional
	TURN *TURNStatus `json:"turn,omitempty"`
	// Rooms are the largest rooms of the fleet (at most 10, most sessions
	// first) and how many pods each spans: its owner and the relay pods
	// that serve its viewers when the owner is full or the room is a
	// broadcast.
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	Rooms []RoomSpread `json:"rooms,omitempty"`
	// Conditions: Available, Progressing, Degraded, GoroutineLeak.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MediaService runs a fleet of WebRTC media servers.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=msvc,categories=mediafleet
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Sessions",type=integer,JSONPath=`.status.sessions.active`
// +kubebuilder:printcolumn:name="Capacity",type=integer,JSONPath=`.status.sessions.capacity`
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`
// +kubebuilder:printcolumn:name="Leak",type=string,JSONPath=`.status.conditions[?(@.type=="GoroutineLeak")].status`
// +kubebuilder:printcolumn:name="TURN",type=string,JSONPath=`.status.turn.address`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 52",message="metadata.name must be a DNS label of at most 52 characters starting with a letter (it names Services and pods)"
type MediaService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	// +optional
	Spec MediaServiceSpec `json:"spec,omitempty"`
	// +optional
	Status MediaServiceStatus `json:"status,omitempty"`
}

// MediaServiceList is a list of MediaServices.
// +kubebuilder:object:root=true
type MediaServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MediaService `json:"items"`
}
