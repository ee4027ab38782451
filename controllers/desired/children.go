package desired

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// ServiceAccount is the identity of media pods. Media pods never talk
// to the API server, so no token is mounted.
func ServiceAccount(ms *mediav1alpha1.MediaService) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(ServiceAccountName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithAutomountServiceAccountToken(false)
}

// SignalingService exposes the public signalling port only; the admin
// port is never on it.
func SignalingService(ms *mediav1alpha1.MediaService) *corev1ac.ServiceApplyConfiguration {
	svcType := corev1.ServiceType(ms.Spec.Signaling.ServiceType)
	if svcType == "" {
		svcType = corev1.ServiceTypeClusterIP
	}
	return corev1ac.Service(SignalingServiceName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(svcType).
			WithSelector(SelectorLabels(ms)).
			WithPorts(corev1ac.ServicePort().
				WithName(PortNameSignal).
				WithPort(ms.Spec.Signaling.Port).
				WithTargetPort(intstr.FromString(PortNameSignal)).
				WithProtocol(corev1.ProtocolTCP)))
}

// HeadlessService gives every media pod a stable DNS name and lists
// not-ready (draining) pods too, so that signalling can still reach them.
func HeadlessService(ms *mediav1alpha1.MediaService) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(HeadlessServiceName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(SelectorLabels(ms)).
			WithPorts(
				corev1ac.ServicePort().WithName(PortNameSignal).WithPort(ms.Spec.Signaling.Port).
					WithTargetPort(intstr.FromString(PortNameSignal)).WithProtocol(corev1.ProtocolTCP),
				corev1ac.ServicePort().WithName(PortNameAdmin).WithPort(ms.Spec.AdminPort).
					WithTargetPort(intstr.FromString(PortNameAdmin)).WithProtocol(corev1.ProtocolTCP)))
}

// PDB lets voluntary disruptions (node drains) take one media pod at
// a time, which then drains its sessions.
func PDB(ms *mediav1alpha1.MediaService) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(PDBName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ms))))
}

// NodeAddresses publishes each node's ExternalIP (falling back to
// its InternalIP) under the node's name, for publicAddress.source
// NodeExternalIP. Nil when the MediaService does not use it.
func NodeAddresses(ms *mediav1alpha1.MediaService, nodes []corev1.Node) *corev1ac.ConfigMapApplyConfiguration {
	if !UsesNodeExternalIP(ms) {
		return nil
	}
	data := map[string]string{}
	for i := range nodes {
		if ip := NodeAddress(&nodes[i]); ip != "" {
			data[nodes[i].Name] = ip
		}
	}
	return corev1ac.ConfigMap(NodeAddressesConfigMapName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithData(data)
}

// NodeAddress is a node's first ExternalIP, else its first InternalIP.
func NodeAddress(n *corev1.Node) string {
	addrs := append([]corev1.NodeAddress(nil), n.Status.Addresses...)
	rank := func(t corev1.NodeAddressType) int {
		switch t {
		case corev1.NodeExternalIP:
			return 0
		case corev1.NodeInternalIP:
			return 1
		}
		return 2
	}
	sort.SliceStable(addrs, func(i, j int) bool { return rank(addrs[i].Type) < rank(addrs[j].Type) })
	if len(addrs) == 0 || rank(addrs[0].Type) == 2 {
		return ""
	}
	return addrs[0].Address
}
