package desired

import (
	"net"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/mediaserver/podenv"
)

// The TURN gateway's pods carry LabelTURNGateway (the MediaService's name)
// instead of LabelMediaService: they are not media pods (no member of the
// room list, no session reports), but they receive the member list.
const (
	LabelTURNGateway = "media.mediafleet.io/turn-gateway"
	turnAppName      = "mediafleet-turn"
	TURNSecretKey    = "secret"
	PortNameTURNUDP  = "turn-udp"
	PortNameTURNTCP  = "turn-tcp"
	PortNameTURNTLS  = "turn-tls"
	// The container's ports (unprivileged); the Service maps the spec's
	// ports (443 for TLS) onto them.
	turnContainerUDP int32 = 3478
	turnContainerTCP int32 = 3478
	turnContainerTLS int32 = 5349
	turnTLSVolume          = "turn-tls"
	turnTLSMountAt         = "/etc/mediafleet/turn-tls"
	// turnDrainTimeout: how long a terminating gateway pod waits for its
	// allocations (clients move to another pod when their ICE restarts).
	turnDrainTimeout = 30
)

// TURNEnabled says whether the MediaService runs a gateway.
func TURNEnabled(ms *mediav1alpha1.MediaService) bool {
	return ms.Spec.TURN != nil && ms.Spec.TURN.Enabled
}

func TURNName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-turn" }

// TURNSecretName holds the gateway's shared secret (made by the operator).
func TURNSecretName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-turn-secret" }

// TURNSelectorLabels select the gateway's pods.
func TURNSelectorLabels(ms *mediav1alpha1.MediaService) map[string]string {
	return map[string]string{labelName: turnAppName, labelInstance: ms.Name}
}

// TURNLabels are on every gateway object.
func TURNLabels(ms *mediav1alpha1.MediaService) map[string]string {
	l := TURNSelectorLabels(ms)
	l[LabelManagedBy] = ManagedByValue
	l[labelComponent] = "turn"
	l[LabelTURNGateway] = ms.Name
	return l
}

// TURNPeerPorts are the media pods' ICE ports, the only ports the gateway
// relays to ("50000" or "40000-40999").
func TURNPeerPorts(ms *mediav1alpha1.MediaService) string {
	if p, ok := iceMuxPort(ms); ok {
		return strconv.Itoa(int(p))
	}
	pr := ms.Spec.ICE.PortRange
	return strconv.Itoa(int(pr.Min)) + "-" + strconv.Itoa(int(pr.Max))
}

// TURNDeployment builds the gateway: "mediaserver turn" from the media
// image, hardened like the media pods (restricted Pod Security, no API
// token, read-only root), ready once it holds a member list, draining its
// allocations on SIGTERM.
// replicas is what the gateway should run (TURNReplicas, or the
// autoscaler's decision).
func TURNDeployment(ms *mediav1alpha1.MediaService, opts Options, secretHash string, replicas int32) *appsv1ac.DeploymentApplyConfiguration {
	t := ms.Spec.TURN
	image := ms.Spec.Image
	if image == "" {
		image = opts.MediaserverImage
	}
	adminPort := ms.Spec.AdminPort
	env := []*corev1ac.EnvVarApplyConfiguration{
		fieldEnv(podenv.PodName, "metadata.name"),
		fieldEnv(podenv.PodIP, "status.podIP"),
		valueEnv(podenv.ServiceName, ms.Name),
		valueEnv(podenv.AdminPort, strconv.Itoa(int(adminPort))),
		valueEnv(podenv.AdminListenHost, "$("+podenv.PodIP+")"),
		secretEnv(podenv.AdminToken, AdminTokenSecretName(ms), AdminTokenKey),
		secretEnv(podenv.RelaySecret, TURNSecretName(ms), TURNSecretKey),
		valueEnv(podenv.RelayPeerPorts, TURNPeerPorts(ms)),
		valueEnv(podenv.RelayMaxAllocations, strconv.Itoa(int(t.MaxAllocationsPerPod))),
		valueEnv(podenv.RelayUserAllocations, strconv.Itoa(int(t.MaxAllocationsPerUser))),
		valueEnv(podenv.RelayAllocationBPS, strconv.Itoa(int(t.MaxKbpsPerAllocation)*1000)),
		valueEnv(podenv.DrainTimeout, strconv.Itoa(turnDrainTimeout)+"s"),
	}
	var ports []*corev1ac.ContainerPortApplyConfiguration
	ports = append(ports, corev1ac.ContainerPort().WithName(PortNameAdmin).WithContainerPort(adminPort).WithProtocol(corev1.ProtocolTCP))
	if t.UDP.On() {
		env = append(env, valueEnv(podenv.RelayUDPPort, strconv.Itoa(int(turnContainerUDP))))
		ports = append(ports, corev1ac.ContainerPort().WithName(PortNameTURNUDP).WithContainerPort(turnContainerUDP).WithProtocol(corev1.ProtocolUDP))
	} else {
		env = append(env, valueEnv(podenv.RelayUDPPort, "off"))
	}
	if t.TCP.Enabled {
		env = append(env, valueEnv(podenv.RelayTCPPort, strconv.Itoa(int(turnContainerTCP))))
		ports = append(ports, corev1ac.ContainerPort().WithName(PortNameTURNTCP).WithContainerPort(turnContainerTCP).WithProtocol(corev1.ProtocolTCP))
	}
	volumes := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName(tmpVolumeName).WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("16Mi"))),
	}
	mounts := []*corev1ac.VolumeMountApplyConfiguration{corev1ac.VolumeMount().WithName(tmpVolumeName).WithMountPath("/tmp")}
	if t.TLS.Enabled && t.TLS.SecretRef != nil {
		env = append(env,
			valueEnv(podenv.RelayTLSPort, strconv.Itoa(int(turnContainerTLS))),
			valueEnv(podenv.TLSCertFile, turnTLSMountAt+"/"+corev1.TLSCertKey),
			valueEnv(podenv.TLSKeyFile, turnTLSMountAt+"/"+corev1.TLSPrivateKeyKey))
		ports = append(ports, corev1ac.ContainerPort().WithName(PortNameTURNTLS).WithContainerPort(turnContainerTLS).WithProtocol(corev1.ProtocolTCP))
		volumes = append(volumes, corev1ac.Volume().WithName(turnTLSVolume).WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(t.TLS.SecretRef.Name).WithDefaultMode(0o440).
			WithItems(corev1ac.KeyToPath().WithKey(corev1.TLSCertKey).WithPath(corev1.TLSCertKey),
				corev1ac.KeyToPath().WithKey(corev1.TLSPrivateKeyKey).WithPath(corev1.TLSPrivateKeyKey))))
		mounts = append(mounts, corev1ac.VolumeMount().WithName(turnTLSVolume).WithMountPath(turnTLSMountAt).WithReadOnly(true))
	}
	if ms.Spec.Logging.Level != "" {
		env = append(env, valueEnv(podenv.LogLevel, ms.Spec.Logging.Level))
	}
	if ms.Spec.Logging.Format != "" {
		env = append(env, valueEnv(podenv.LogFormat, ms.Spec.Logging.Format))
	}

	container := hardenedContainer("turn", image, ms.Spec.ImagePullPolicy, t.Resources).
		WithArgs("turn").
		WithPorts(ports...).
		WithEnv(env...).
		WithVolumeMounts(mounts...)
	podSpec := hardenedPodSpec(ms, turnDrainTimeout+drainGraceMargin).
		WithContainers(container).
		WithVolumes(volumes...)
	if len(ms.Spec.PodTemplate.NodeSelector) > 0 {
		podSpec.WithNodeSelector(ms.Spec.PodTemplate.NodeSelector)
	}
	for i := range ms.Spec.PodTemplate.Tolerations {
		podSpec.WithTolerations(toApply[corev1ac.TolerationApplyConfiguration](&ms.Spec.PodTemplate.Tolerations[i]))
	}
	template := corev1ac.PodTemplateSpec().WithLabels(TURNLabels(ms)).WithSpec(podSpec)
	if secretHash != "" {
		// A new shared secret rolls the gateway (as the media pods roll
		// on a new admin token).
		template.WithAnnotations(map[string]string{AnnotationTURNSecretHash: secretHash})
	}
	ru := appsv1ac.RollingUpdateDeployment().WithMaxSurge(intstr.FromInt32(1)).WithMaxUnavailable(intstr.FromInt32(0))
	return appsv1ac.Deployment(TURNName(ms), ms.Namespace).
		WithLabels(TURNLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(TURNSelectorLabels(ms))).
			WithStrategy(appsv1ac.DeploymentStrategy().WithType(appsv1.RollingUpdateDeploymentStrategyType).WithRollingUpdate(ru)).
			WithRevisionHistoryLimit(5).
			WithTemplate(template))
}

// TURNReplicas is spec.turn.replicas (1 when unset).
func TURNReplicas(ms *mediav1alpha1.MediaService) int32 {
	if r := ms.Spec.TURN.Replicas; r != nil {
		return *r
	}
	return 1
}

// AnnotationTURNSecretHash on the gateway's pod template changes with the
// shared secret.
const AnnotationTURNSecretHash = "media.mediafleet.io/turn-secret-hash"

// TURNService exposes the gateway's listeners (never its admin port).
func TURNService(ms *mediav1alpha1.MediaService) *corev1ac.ServiceApplyConfiguration {
	t := ms.Spec.TURN
	svcType := corev1.ServiceType(t.ServiceType)
	if svcType == "" {
		svcType = corev1.ServiceTypeLoadBalancer
	}
	spec := corev1ac.ServiceSpec().WithType(svcType).WithSelector(TURNSelectorLabels(ms))
	if t.UDP.On() {
		spec.WithPorts(corev1ac.ServicePort().WithName(PortNameTURNUDP).WithPort(t.UDP.Port).
			WithTargetPort(intstr.FromString(PortNameTURNUDP)).WithProtocol(corev1.ProtocolUDP))
	}
	if t.TCP.Enabled {
		spec.WithPorts(corev1ac.ServicePort().WithName(PortNameTURNTCP).WithPort(t.TCP.Port).
			WithTargetPort(intstr.FromString(PortNameTURNTCP)).WithProtocol(corev1.ProtocolTCP))
	}
	if t.TLS.Enabled && t.TLS.SecretRef != nil {
		spec.WithPorts(corev1ac.ServicePort().WithName(PortNameTURNTLS).WithPort(t.TLS.Port).
			WithTargetPort(intstr.FromString(PortNameTURNTLS)).WithProtocol(corev1.ProtocolTCP))
	}
	if svcType != corev1.ServiceTypeClusterIP {
		// A client keeps its 5-tuple on one gateway pod; Local keeps the
		// client's address (quotas and logs see the real client).
		spec.WithExternalTrafficPolicy(corev1.ServiceExternalTrafficPolicyLocal)
	}
	spec.WithSessionAffinity(corev1.ServiceAffinityClientIP)
	return corev1ac.Service(TURNName(ms), ms.Namespace).
		WithLabels(TURNLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(spec)
}

// TURNPDB lets voluntary disruptions take one gateway pod at a time.
func TURNPDB(ms *mediav1alpha1.MediaService) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(TURNName(ms), ms.Namespace).
		WithLabels(TURNLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(TURNSelectorLabels(ms))))
}

// TURNAddress is the host clients are told: spec.turn.publicAddress, else
// the load balancer's address, else (ClusterIP) the cluster IP; "" while
// none is known.
func TURNAddress(ms *mediav1alpha1.MediaService, svc *corev1.Service) string {
	t := ms.Spec.TURN
	if t.PublicAddress != "" {
		return t.PublicAddress
	}
	if svc == nil {
		return ""
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer:
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				return in.IP
			}
			if in.Hostname != "" {
				return in.Hostname
			}
		}
	case corev1.ServiceTypeClusterIP:
		if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			return svc.Spec.ClusterIP
		}
	}
	return ""
}

// TURNURLs are what clients are given for the gateway at address: one
// URL per listener, with the Service's port (the node port with NodePort).
func TURNURLs(ms *mediav1alpha1.MediaService, svc *corev1.Service, address string) []string {
	if address == "" {
		return nil
	}
	t := ms.Spec.TURN
	port := func(name string, fallback int32) string {
		if svc != nil && svc.Spec.Type == corev1.ServiceTypeNodePort {
			for _, p := range svc.Spec.Ports {
				if p.Name == name && p.NodePort != 0 {
					return strconv.Itoa(int(p.NodePort))
				}
			}
			return ""
		}
		return strconv.Itoa(int(fallback))
	}
	var urls []string
	add := func(scheme, name string, p int32, transport string) {
		if pp := port(name, p); pp != "" {
			urls = append(urls, scheme+":"+net.JoinHostPort(address, pp)+"?transport="+transport)
		}
	}
	if t.UDP.On() {
		add("turn", PortNameTURNUDP, t.UDP.Port, "udp")
	}
	if t.TCP.Enabled {
		add("turn", PortNameTURNTCP, t.TCP.Port, "tcp")
	}
	if t.TLS.Enabled && t.TLS.SecretRef != nil {
		add("turns", PortNameTURNTLS, t.TLS.Port, "tcp")
	}
	return urls
}
