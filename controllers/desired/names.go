package desired

import (
	"k8s.io/apimachinery/pkg/labels"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

const (
	// Standard labels on every child object.
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	labelComponent = "app.kubernetes.io/component"
	// LabelMediaService carries the MediaService name onto pods, so that
	// metrics and alerts can tell fleets apart.
	LabelMediaService = "media.mediafleet.io/service"

	ManagedByValue = "mediafleet"
	appNameValue   = "mediaserver"

	// ContainerName is the media container's name in the pod template.
	ContainerName   = "mediaserver"
	PortNameSignal  = "signaling"
	PortNameAdmin   = "admin"
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
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
}

// SelectorLabels are the immutable labels that select a MediaService's pods.
func SelectorLabels(ms *mediav1alpha1.MediaService) map[string]string {
	return map[string]string{
		labelName:     appNameValue,
		labelInstance: ms.Name,
	}
}

// CommonLabels are set on every child object.
func CommonLabels(ms *mediav1alpha1.MediaService) map[string]string {
	l := SelectorLabels(ms)
	l[LabelManagedBy] = ManagedByValue
	l[labelComponent] = "media"
	l[LabelMediaService] = ms.Name
	return l
}

func ServiceAccountName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-media" }
func DeploymentName(ms *mediav1alpha1.MediaService) string     { return ms.Name }
func SignalingServiceName(ms *mediav1alpha1.MediaService) string {
	return ms.Name
}
func HeadlessServiceName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-pods" }
func PDBName(ms *mediav1alpha1.MediaService) string             { return ms.Name }

// AdminTokenSecretSuffix names the Secret of a MediaService's admin token.
const AdminTokenSecretSuffix = "-admin-token"

func AdminTokenSecretName(ms *mediav1alpha1.MediaService) string {
	return ms.Name + AdminTokenSecretSuffix
}
func NetworkPolicyName(ms *mediav1alpha1.MediaService) string { return ms.Name }
func NodeAddressesConfigMapName(ms *mediav1alpha1.MediaService) string {
	return ms.Name + "-node-addresses"
}

// AdminTokenKey is the Secret key holding the admin token.
const AdminTokenKey = "token"

// AnnotationAdminTokenHash on the pod template changes with the token, so
// that a rotated token (the Secret deleted; the operator makes a new one)
// rolls the pods onto it. A SHA-256 prefix of 32 random bytes reveals
// nothing of them.
const AnnotationAdminTokenHash = "media.mediafleet.io/admin-token-hash"
