// Package v1alpha1 contains the MediaService API (group media.mediafleet.io).
// It depends on k8s.io/apimachinery and other API packages only, so that
// clients can import it cheaply.
// +kubebuilder:object:generate=true
// +groupName=media.mediafleet.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "media.mediafleet.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MediaService{}, &MediaServiceList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
