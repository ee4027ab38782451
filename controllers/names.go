package controllers

import (
	"k8s.io/apimachinery/pkg/labels"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

const (
	// FieldOwner is the server-side apply field manager of every object the
	// operator writes.
	FieldOwner = "mediafleet"

	// Standard labels on every child object.
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelComponent = "app.kubernetes.io/component"
	// LabelMediaService carries the MediaService name onto pods, so that
	// metrics and alerts can tell fleets apart.
	LabelMediaService = "media.mediafleet.io/service"

	managedByValue = "mediafleet"
	appNameValue   = "mediaserver"

	containerName   = "mediaserver"
	portNameSignal  = "signaling"
	portNameAdmin   = "admin"
	portNameICEMux  = "ice-mux"
	tmpVolumeName   = "tmp"
	nodeAddrVolume  = "node-addresses"
	nodeAddrMountAt = "/etc/mediafleet/node-addresses"
	tlsVolume       = "signaling-tls"
	tlsMountAt      = "/etc/mediafleet/tls"
)

// ManagedBySelector selects every object the operator manages; the
// manager's cache is limited to it.
func ManagedBySelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{labelManagedBy: managedByValue})
}

// selectorLabels are the immutable labels that select a MediaService's pods.
func selectorLabels(ms *mediav1alpha1.MediaService) map[string]string {
	return map[string]string{
		labelName:     appNameValue,
		labelInstance: ms.Name,
	}
}

// commonLabels are set on every child object.
func commonLabels(ms *mediav1alpha1.MediaService) map[string]string {
	l := selectorLabels(ms)
	l[labelManagedBy] = managedByValue
	l[labelComponent] = "media"
	l[LabelMediaService] = ms.Name
	return l
}

func serviceAccountName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-media" }
func deploymentName(ms *mediav1alpha1.MediaService) string     { return ms.Name }
func signalingServiceName(ms *mediav1alpha1.MediaService) string {
	return ms.Name
}
func headlessServiceName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-pods" }
func pdbName(ms *mediav1alpha1.MediaService) string             { return ms.Name }

// adminTokenSecretSuffix names the Secret of a MediaService's admin token.
const adminTokenSecretSuffix = "-admin-token"

func adminTokenSecretName(ms *mediav1alpha1.MediaService) string {
	return ms.Name + adminTokenSecretSuffix
}
func networkPolicyName(ms *mediav1alpha1.MediaService) string { return ms.Name }
func nodeAddressesConfigMapName(ms *mediav1alpha1.MediaService) string {
	return ms.Name + "-node-addresses"
}
