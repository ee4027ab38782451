package desired

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/mediaserver/podenv"
)

// mediaUID is the unprivileged user the mediaserver runs as.
const mediaUID int64 = 65532

// drainGraceMargin is added to drainTimeout for terminationGracePeriodSeconds:
// the pod needs time to close what is left and exit after the drain.
const drainGraceMargin = 10

// ownerRef makes the MediaService the controlling owner of a child.
func ownerRef(ms *mediav1alpha1.MediaService) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(mediav1alpha1.GroupVersion.String()).
		WithKind("MediaService").
		WithName(ms.Name).
		WithUID(ms.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// Deployment builds the media Deployment of a MediaService.
// adminTokenHash (of the admin token Secret, "" before it exists) goes on
// the pod template so that a new token rolls the pods. gw is the
// MediaService's own TURN gateway as clients reach it (no URLs while it has
// no address): the pods announce it to clients with credentials minted
// from its shared secret.
func Deployment(ms *mediav1alpha1.MediaService, opts Options, adminTokenHash string, gw Gateway) *appsv1ac.DeploymentApplyConfiguration {
	spec := ms.Spec
	replicas := int32(1)
	if spec.Replicas != nil {
		replicas = *spec.Replicas
	}
	image := spec.Image
	if image == "" {
		image = opts.MediaserverImage
	}

	podLabels := map[string]string{}
	for k, v := range spec.PodTemplate.Labels {
		podLabels[k] = v
	}
	for k, v := range CommonLabels(ms) { // ours win
		podLabels[k] = v
	}

	container := hardenedContainer(ContainerName, image, spec.ImagePullPolicy, spec.Resources).
		WithPorts(containerPorts(ms)...).
		WithEnv(podEnv(ms, gw.URLs)...).
		WithVolumeMounts(volumeMounts(ms)...)
	podSpec := hardenedPodSpec(ms, terminationGracePeriod(ms)).
		WithContainers(container).
		WithVolumes(volumes(ms)...)
	if spec.ICE.HostNetwork {
		podSpec.WithHostNetwork(true).WithDNSPolicy(corev1.DNSClusterFirstWithHostNet)
	}
	if len(spec.PodTemplate.NodeSelector) > 0 {
		podSpec.WithNodeSelector(spec.PodTemplate.NodeSelector)
	}
	if spec.PodTemplate.PriorityClassName != "" {
		podSpec.WithPriorityClassName(spec.PodTemplate.PriorityClassName)
	}
	for i := range spec.PodTemplate.Tolerations {
		podSpec.WithTolerations(toApply[corev1ac.TolerationApplyConfiguration](&spec.PodTemplate.Tolerations[i]))
	}
	if aff := affinityApply(ms); aff != nil {
		podSpec.WithAffinity(aff)
	}

	template := corev1ac.PodTemplateSpec().
		WithLabels(podLabels).
		WithSpec(podSpec)
	annotations := map[string]string{}
	for k, v := range spec.PodTemplate.Annotations {
		annotations[k] = v
	}
	if adminTokenHash != "" {
		annotations[AnnotationAdminTokenHash] = adminTokenHash // ours wins
	}
	if len(gw.URLs) > 0 && gw.SecretHash != "" {
		// A new gateway secret rolls the media pods, which mint with it.
		annotations[AnnotationTURNSecretHash] = gw.SecretHash
	}
	if len(annotations) > 0 {
		template.WithAnnotations(annotations)
	}

	return appsv1ac.Deployment(DeploymentName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ms))).
			WithStrategy(rolloutStrategy(ms)).
			WithRevisionHistoryLimit(5).
			WithTemplate(template))
}

// hardenedContainer is a container of the MediaService's pods (media and
// TURN gateway): readiness on /readyz and liveness on /healthz of the
// admin port, no privilege escalation, read-only root, no capabilities.
func hardenedContainer(name, image string, pull corev1.PullPolicy, res corev1.ResourceRequirements) *corev1ac.ContainerApplyConfiguration {
	c := corev1ac.Container().
		WithName(name).
		WithImage(image).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/readyz").WithPort(intstr.FromString(PortNameAdmin)).WithScheme(corev1.URISchemeHTTP)).
			WithPeriodSeconds(2).WithTimeoutSeconds(1).WithSuccessThreshold(1).WithFailureThreshold(2)).
		WithLivenessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/healthz").WithPort(intstr.FromString(PortNameAdmin)).WithScheme(corev1.URISchemeHTTP)).
			WithInitialDelaySeconds(5).WithPeriodSeconds(10).WithTimeoutSeconds(2).WithSuccessThreshold(1).WithFailureThreshold(3)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError)
	if pull != "" {
		c.WithImagePullPolicy(pull)
	}
	if len(res.Limits) > 0 || len(res.Requests) > 0 {
		r := corev1ac.ResourceRequirements()
		if len(res.Limits) > 0 {
			r.WithLimits(res.Limits)
		}
		if len(res.Requests) > 0 {
			r.WithRequests(res.Requests)
		}
		c.WithResources(r)
	}
	return c
}

// hardenedPodSpec is the pod-level half: the MediaService's
// ServiceAccount without an API token, no service links, the unprivileged
// user, RuntimeDefault seccomp (restricted Pod Security).
func hardenedPodSpec(ms *mediav1alpha1.MediaService, grace int64) *corev1ac.PodSpecApplyConfiguration {
	return corev1ac.PodSpec().
		WithServiceAccountName(ServiceAccountName(ms)).
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(grace).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(mediaUID).
			WithRunAsGroup(mediaUID).
			WithFSGroup(mediaUID).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
}

// Gateway is the MediaService's TURN gateway as the media pods announce it.
type Gateway struct {
	URLs       []string
	SecretHash string
}

// rolloutStrategy: a pod-network fleet surges first so no ready pod is lost
// before its replacement is ready. A hostNetwork fleet cannot surge (the
// required anti-affinity needs a free node for the surge pod), so it replaces
// one pod at a time in place and relies on draining to keep sessions.
func rolloutStrategy(ms *mediav1alpha1.MediaService) *appsv1ac.DeploymentStrategyApplyConfiguration {
	ru := appsv1ac.RollingUpdateDeployment()
	if ms.Spec.ICE.HostNetwork {
		ru.WithMaxSurge(intstr.FromInt32(0)).WithMaxUnavailable(intstr.FromInt32(1))
	} else {
		ru.WithMaxSurge(intstr.FromInt32(1)).WithMaxUnavailable(intstr.FromInt32(0))
	}
	return appsv1ac.DeploymentStrategy().WithType(appsv1.RollingUpdateDeploymentStrategyType).WithRollingUpdate(ru)
}

// terminationGracePeriod gives a pod its whole drainTimeout plus a margin.
func terminationGracePeriod(ms *mediav1alpha1.MediaService) int64 {
	d := ms.Spec.Limits.DrainTimeout.Duration
	return int64(math.Ceil(d.Seconds())) + drainGraceMargin
}

func containerPorts(ms *mediav1alpha1.MediaService) []*corev1ac.ContainerPortApplyConfiguration {
	ports := []*corev1ac.ContainerPortApplyConfiguration{
		corev1ac.ContainerPort().WithName(PortNameSignal).WithContainerPort(ms.Spec.Signaling.Port).WithProtocol(corev1.ProtocolTCP),
		corev1ac.ContainerPort().WithName(PortNameAdmin).WithContainerPort(ms.Spec.AdminPort).WithProtocol(corev1.ProtocolTCP),
	}
	if p, ok := iceMuxPort(ms); ok {
		ports = append(ports, corev1ac.ContainerPort().WithName(portNameICEMux).WithContainerPort(p).WithProtocol(corev1.ProtocolUDP))
	}
	return ports
}

// defaultUDPMuxPort is the mux port of an ice block with no port mode.
const defaultUDPMuxPort int32 = 50000

// iceMuxPort is the UDP mux port the pods use: udpMuxPort, or the default
// when neither port mode is set (false: a port range is used).
func iceMuxPort(ms *mediav1alpha1.MediaService) (int32, bool) {
	switch {
	case ms.Spec.ICE.UDPMuxPort != nil:
		return *ms.Spec.ICE.UDPMuxPort, true
	case ms.Spec.ICE.PortRange != nil:
		return 0, false
	default:
		return defaultUDPMuxPort, true
	}
}

func fieldEnv(name, path string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
		WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath(path)))
}

func valueEnv(name, value string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValue(value)
}

func secretEnv(name, secret, key string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
		WithSecretKeyRef(corev1ac.SecretKeySelector().WithName(secret).WithKey(key)))
}

// podEnv is the configuration contract (package podenv) rendered for a
// MediaService. Secrets go by reference: the operator never reads them.
func podEnv(ms *mediav1alpha1.MediaService, gatewayURLs []string) []*corev1ac.EnvVarApplyConfiguration {
	spec := ms.Spec
	env := []*corev1ac.EnvVarApplyConfiguration{
		fieldEnv(podenv.PodName, "metadata.name"),
		fieldEnv(podenv.PodNamespace, "metadata.namespace"),
		fieldEnv(podenv.PodIP, "status.podIP"),
		fieldEnv(podenv.HostIP, "status.hostIP"),
		fieldEnv(podenv.NodeName, "spec.nodeName"),
		valueEnv(podenv.ServiceName, ms.Name),
		valueEnv(podenv.Port, strconv.Itoa(int(spec.Signaling.Port))),
		valueEnv(podenv.AdminPort, strconv.Itoa(int(spec.AdminPort))),
		// The admin port on the pod's own address (the node's with
		// hostNetwork), never on every interface; the token guards it.
		valueEnv(podenv.AdminListenHost, "$("+podenv.PodIP+")"),
		secretEnv(podenv.AdminToken, AdminTokenSecretName(ms), AdminTokenKey),
	}
	if len(spec.Signaling.AllowedOrigins) > 0 {
		env = append(env, valueEnv(podenv.AllowedOrigins, strings.Join(spec.Signaling.AllowedOrigins, ",")))
	}
	if ref := spec.Signaling.TokenSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "token"
		}
		env = append(env, secretEnv(podenv.AuthToken, ref.Name, key))
	}
	if pr := spec.ICE.PortRange; pr != nil {
		env = append(env,
			valueEnv(podenv.ICEPortMin, strconv.Itoa(int(pr.Min))),
			valueEnv(podenv.ICEPortMax, strconv.Itoa(int(pr.Max))))
	}
	if p, ok := iceMuxPort(ms); ok {
		env = append(env, valueEnv(podenv.ICEUDPMuxPort, strconv.Itoa(int(p))))
	}
	if spec.Signaling.TLS != nil {
		env = append(env,
			valueEnv(podenv.TLSCertFile, tlsMountAt+"/"+corev1.TLSCertKey),
			valueEnv(podenv.TLSKeyFile, tlsMountAt+"/"+corev1.TLSPrivateKeyKey))
	}
	if len(spec.Rooms.Broadcast) > 0 {
		env = append(env, valueEnv(podenv.BroadcastRooms, strings.Join(spec.Rooms.Broadcast, ",")))
	}
	if len(spec.ICE.STUNServers) > 0 {
		env = append(env, valueEnv(podenv.STUNServers, strings.Join(spec.ICE.STUNServers, ",")))
	}
	gateway := len(gatewayURLs) > 0 && TURNEnabled(ms)
	if n := len(spec.ICE.TURNServers); n > 0 || gateway {
		if gateway {
			n++
		}
		env = append(env, valueEnv(podenv.TURNServerCount, strconv.Itoa(n)))
		for i, t := range spec.ICE.TURNServers {
			env = append(env, valueEnv(podenv.TURNURLs(i), strings.Join(t.URLs, ",")))
			switch {
			case t.SharedSecretRef != nil:
				key := t.SharedSecretRef.Key
				if key == "" {
					key = "secret"
				}
				env = append(env, secretEnv(podenv.TURNSecret(i), t.SharedSecretRef.Name, key))
				if t.CredentialTTL != nil {
					env = append(env, valueEnv(podenv.TURNTTL(i), t.CredentialTTL.Duration.String()))
				}
			case t.CredentialsSecretRef != nil:
				env = append(env,
					secretEnv(podenv.TURNUsername(i), t.CredentialsSecretRef.Name, "username"),
					secretEnv(podenv.TURNPassword(i), t.CredentialsSecretRef.Name, "password"))
			}
		}
		if gateway {
			// The gateway relays to the pods on the pod network: the pods
			// announce it to clients but gather no relay candidate on it.
			i := len(spec.ICE.TURNServers)
			env = append(env,
				valueEnv(podenv.TURNURLs(i), strings.Join(gatewayURLs, ",")),
				secretEnv(podenv.TURNSecret(i), TURNSecretName(ms), TURNSecretKey),
				valueEnv(podenv.TURNTTL(i), spec.TURN.CredentialTTL.Duration.String()),
				valueEnv(podenv.TURNClientsOnly(i), "true"))
		}
	}
	if spec.ICE.HostNetwork {
		// The node's address only: its other interfaces are not for clients.
		env = append(env, valueEnv(podenv.ICEIPs, "$("+podenv.HostIP+")"))
	}
	if pa := spec.ICE.PublicAddress; pa != nil {
		switch pa.Source {
		case mediav1alpha1.PublicAddressNodeInternalIP:
			env = append(env, valueEnv(podenv.PublicIPs, "$("+podenv.HostIP+")"))
		case mediav1alpha1.PublicAddressPodIP:
			env = append(env, valueEnv(podenv.PublicIPs, "$("+podenv.PodIP+")"))
		case mediav1alpha1.PublicAddressStatic:
			env = append(env, valueEnv(podenv.PublicIPs, strings.Join(pa.IPs, ",")))
		case mediav1alpha1.PublicAddressNodeExternalIP:
			// The node is known only once the pod is scheduled: the
			// operator publishes every node's ExternalIP in a ConfigMap
			// and the pod reads the file named after its node.
			env = append(env, valueEnv(podenv.PublicIPFile, nodeAddrMountAt+"/$("+podenv.NodeName+")"))
		}
	}
	env = append(env,
		valueEnv(podenv.MaxSessions, strconv.Itoa(int(spec.Limits.MaxSessionsPerPod))),
		valueEnv(podenv.MaxICECandidates, strconv.Itoa(int(spec.Limits.MaxICECandidatesPerSession))),
		valueEnv(podenv.WSSendBuffer, strconv.Itoa(int(spec.Limits.WebsocketSendBuffer))),
		valueEnv(podenv.WSSendTimeout, spec.Limits.WebsocketSendTimeout.Duration.String()),
		valueEnv(podenv.DrainTimeout, spec.Limits.DrainTimeout.Duration.String()),
		valueEnv(podenv.LeakBaselineWindow, spec.LeakDetection.BaselineWindow.Duration.String()),
		valueEnv(podenv.LeakThresholdRatio, strconv.Itoa(int(spec.LeakDetection.ThresholdRatio))),
	)
	if spec.Logging.Level != "" {
		env = append(env, valueEnv(podenv.LogLevel, spec.Logging.Level))
	}
	if spec.Logging.Format != "" {
		env = append(env, valueEnv(podenv.LogFormat, spec.Logging.Format))
	}
	return env
}

func UsesNodeExternalIP(ms *mediav1alpha1.MediaService) bool {
	pa := ms.Spec.ICE.PublicAddress
	return pa != nil && pa.Source == mediav1alpha1.PublicAddressNodeExternalIP
}

func volumes(ms *mediav1alpha1.MediaService) []*corev1ac.VolumeApplyConfiguration {
	v := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName(tmpVolumeName).WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("64Mi"))),
	}
	if UsesNodeExternalIP(ms) {
		v = append(v, corev1ac.Volume().WithName(nodeAddrVolume).WithConfigMap(
			corev1ac.ConfigMapVolumeSource().WithName(NodeAddressesConfigMapName(ms))))
	}
	if t := ms.Spec.Signaling.TLS; t != nil {
		// A Secret volume, not env: the kubelet updates the files when the
		// Secret changes and the mediaserver reloads them.
		v = append(v, corev1ac.Volume().WithName(tlsVolume).WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(t.SecretRef.Name).WithDefaultMode(0o440).
			WithItems(corev1ac.KeyToPath().WithKey(corev1.TLSCertKey).WithPath(corev1.TLSCertKey),
				corev1ac.KeyToPath().WithKey(corev1.TLSPrivateKeyKey).WithPath(corev1.TLSPrivateKeyKey))))
	}
	return v
}

func volumeMounts(ms *mediav1alpha1.MediaService) []*corev1ac.VolumeMountApplyConfiguration {
	m := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName(tmpVolumeName).WithMountPath("/tmp"),
	}
	if UsesNodeExternalIP(ms) {
		m = append(m, corev1ac.VolumeMount().WithName(nodeAddrVolume).WithMountPath(nodeAddrMountAt).WithReadOnly(true))
	}
	if ms.Spec.Signaling.TLS != nil {
		m = append(m, corev1ac.VolumeMount().WithName(tlsVolume).WithMountPath(tlsMountAt).WithReadOnly(true))
	}
	return m
}

// affinityApply returns the user's affinity plus, with host networking, a
// required anti-affinity that keeps two pods of one MediaService off a node
// (they would fight over the signalling, admin and ICE ports).
func affinityApply(ms *mediav1alpha1.MediaService) *corev1ac.AffinityApplyConfiguration {
	user := ms.Spec.PodTemplate.Affinity
	if user == nil && !ms.Spec.ICE.HostNetwork {
		return nil
	}
	aff := corev1ac.Affinity()
	if user != nil {
		aff = toApply[corev1ac.AffinityApplyConfiguration](user)
	}
	if ms.Spec.ICE.HostNetwork {
		if aff.PodAntiAffinity == nil {
			aff.WithPodAntiAffinity(corev1ac.PodAntiAffinity())
		}
		aff.PodAntiAffinity.WithRequiredDuringSchedulingIgnoredDuringExecution(corev1ac.PodAffinityTerm().
			WithTopologyKey(corev1.LabelHostname).
			WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ms))))
	}
	return aff
}

// toApply converts a typed API value (a user's affinity, toleration,
// NetworkPolicy peer, ...) into its apply configuration. Both share one
// JSON form by design, so every field comes across, including ones added
// to Kubernetes after this code was written (matchLabelKeys, say); a
// hand-written field-by-field copy silently drops those.
func toApply[AC any](in any) *AC {
	out := new(AC)
	raw, err := json.Marshal(in)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", in, err)) // API types always marshal
	}
	if err := json.Unmarshal(raw, out); err != nil {
		panic(fmt.Sprintf("%T into %T: %v", in, out, err)) // the same JSON form by construction
	}
	return out
}
