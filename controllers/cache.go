package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions limits the manager's cache to the objects the operator
// manages (by label), so that a cluster's other Deployments, Services,
// ConfigMaps and pods cost it nothing. Children keep their managedFields:
// drift detection reads them. Pods and nodes drop them to save memory.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: ManagedBySelector()}
	stripped := cache.ByObject{Label: ManagedBySelector(), Transform: cache.TransformStripManagedFields()}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:            managed,
			&corev1.Service{}:               managed,
			&corev1.ServiceAccount{}:        managed,
			&corev1.ConfigMap{}:             managed,
			&policyv1.PodDisruptionBudget{}: managed,
			&corev1.Pod{}:                   stripped,
			&corev1.Node{}:                  {Transform: cache.TransformStripManagedFields()},
		},
	}
}
