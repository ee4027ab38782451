package controllers

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// desiredServiceAccount is the identity of media pods. Media pods never talk
// to the API server, so no token is mounted.
func desiredServiceAccount(ms *mediav1alpha1.MediaService) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(serviceAccountName(ms), ms.Namespace).
		WithLabels(commonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithAutomountServiceAccountToken(false)
}

// desiredSignalingService exposes the public signalling port only; the admin
// port is never on it.
func desiredSignalingService(ms *mediav1alpha1.MediaService) *corev1ac.ServiceApplyConfiguration {
	svcType := corev1.ServiceType(ms.Spec.Signaling.ServiceType)
	if svcType == "" {
		svcType = corev1.ServiceTypeClusterIP
	}
	return corev1ac.Service(signalingServiceName(ms), ms.Namespace).
		WithLabels(commonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(svcType).
			WithSelector(selectorLabels(ms)).
			WithPorts(corev1ac.ServicePort().
				WithName(portNameSignal).
				WithPort(ms.Spec.Signaling.Port).
				WithTargetPort(intstr.FromString(portNameSignal)).
				WithProtocol(corev1.ProtocolTCP)))
}

// desiredHeadlessService gives every media pod a stable DNS name and lists
// not-ready (draining) pods too, so that signalling can still reach them.
func desiredHeadlessService(ms *mediav1alpha1.MediaService) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(headlessServiceName(ms), ms.Namespace).
		WithLabels(commonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(selectorLabels(ms)).
			WithPorts(
				corev1ac.ServicePort().WithName(portNameSignal).WithPort(ms.Spec.Signaling.Port).
					WithTargetPort(intstr.FromString(portNameSignal)).WithProtocol(corev1.ProtocolTCP),
				corev1ac.ServicePort().WithName(portNameAdmin).WithPort(ms.Spec.AdminPort).
					WithTargetPort(intstr.FromString(portNameAdmin)).WithProtocol(corev1.ProtocolTCP)))
}

// desiredPDB lets voluntary disruptions (node drains) take one media pod at
// a time, which then drains its sessions.
func desiredPDB(ms *mediav1alpha1.MediaService) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(pdbName(ms), ms.Namespace).
		WithLabels(commonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(ms))))
}

// desiredNodeAddresses publishes each node's ExternalIP (falling back to
// its InternalIP) under the node's name, for publicAddress.source
// NodeExternalIP. Nil when the MediaService does not use it.
func desiredNodeAddresses(ms *mediav1alpha1.MediaService, nodes []corev1.Node) *corev1ac.ConfigMapApplyConfiguration {
	if !usesNodeExternalIP(ms) {
		return nil
	}
	data := map[string]string{}
	for i := range nodes {
		if ip := nodeAddress(&nodes[i]); ip != "" {
			data[nodes[i].Name] = ip
		}
	}
	return corev1ac.ConfigMap(nodeAddressesConfigMapName(ms), ms.Namespace).
		WithLabels(commonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithData(data)
}

// nodeAddress is a node's first ExternalIP, else its first InternalIP.
func nodeAddress(n *corev1.Node) string {
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
