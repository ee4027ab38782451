package desired

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// defaultMetricsFrom is the Prometheus peer of the admin port when none is
// named: kube-prometheus deploys Prometheus as pods labelled
// app.kubernetes.io/name=prometheus in the namespace "monitoring". A new
// value each time: an apply writes the server's answer into the object.
func defaultMetricsFrom() *networkingv1ac.NetworkPolicyPeerApplyConfiguration {
	return networkingv1ac.NetworkPolicyPeer().
		WithNamespaceSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{corev1.LabelMetadataName: "monitoring"})).
		WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{"app.kubernetes.io/name": "prometheus"}))
}

func NetworkPolicyEnabled(ms *mediav1alpha1.MediaService) bool {
	return ms.Spec.NetworkPolicy.Enabled == nil || *ms.Spec.NetworkPolicy.Enabled
}

// NetworkPolicy admits, to the media pods: the signalling port and
// the ICE UDP ports from anywhere (clients are everywhere), and the admin
// port from the operator's namespace (fleet status, member lists), from
// the MediaService's own pods (room ownership probes, relay links of
// cascaded rooms) and from the
// Prometheus peers. Everything else is refused where the network plugin
// enforces it. Egress stays open (STUN, TURN, the other pods).
func NetworkPolicy(ms *mediav1alpha1.MediaService, opts Options) *networkingv1ac.NetworkPolicyApplyConfiguration {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	media := networkingv1ac.NetworkPolicyIngressRule().WithPorts(
		networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(ms.Spec.Signaling.Port)))
	if p, ok := iceMuxPort(ms); ok {
		media.WithPorts(networkingv1ac.NetworkPolicyPort().WithProtocol(udp).WithPort(intstr.FromInt32(p)))
	} else if pr := ms.Spec.ICE.PortRange; pr != nil {
		media.WithPorts(networkingv1ac.NetworkPolicyPort().WithProtocol(udp).WithPort(intstr.FromInt32(pr.Min)).WithEndPort(pr.Max))
	}

	admin := networkingv1ac.NetworkPolicyIngressRule().
		WithPorts(networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(ms.Spec.AdminPort))).
		WithFrom(networkingv1ac.NetworkPolicyPeer().WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ms))))
	if opts.OperatorNamespace != "" {
		admin.WithFrom(networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(
			metav1ac.LabelSelector().WithMatchLabels(map[string]string{corev1.LabelMetadataName: opts.OperatorNamespace})))
	}
	if len(ms.Spec.NetworkPolicy.MetricsFrom) == 0 {
		admin.WithFrom(defaultMetricsFrom())
	}
	for i := range ms.Spec.NetworkPolicy.MetricsFrom {
		admin.WithFrom(toApply[networkingv1ac.NetworkPolicyPeerApplyConfiguration](&ms.Spec.NetworkPolicy.MetricsFrom[i]))
	}
	return networkingv1ac.NetworkPolicy(NetworkPolicyName(ms), ms.Namespace).
		WithLabels(CommonLabels(ms)).
		WithOwnerReferences(ownerRef(ms)).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ms))).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(media, admin))
}
