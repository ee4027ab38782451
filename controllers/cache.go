package controllers

import (
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mediafleet/mediafleet/controllers/desired"
)

// CacheOptions limits the manager's cache to the objects the operator
// manages (by label), so that a cluster's other Deployments, Services,
// ConfigMaps and pods cost it nothing. Children keep their managedFields:
// drift detection reads them. Pods and nodes drop them to save memory.
//
// The Prometheus Operator's kinds can be limited the same way only when
// their CRDs are served at start (the cache resolves every ByObject type
// then); installed later, they are watched unfiltered.
func CacheOptions(monitoringServed bool) cache.Options {
	managed := cache.ByObject{Label: desired.ManagedBySelector()}
	stripped := cache.ByObject{Label: desired.ManagedBySelector(), Transform: cache.TransformStripManagedFields()}
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:     managed,
			&corev1.Service{}:        managed,
			&corev1.ServiceAccount{}: managed,
			&corev1.ConfigMap{}:      managed,
			// Only the admin token Secrets it made: the operator never
			// caches (or reads) anyone else's Secrets.
			&corev1.Secret{}:                stripped,
			&policyv1.PodDisruptionBudget{}: managed,
			&networkingv1.NetworkPolicy{}:   managed,
			&corev1.Pod{}:                   stripped,
			&corev1.Node{}:                  {Transform: cache.TransformStripManagedFields()},
			// The media Services' EndpointSlices carry their labels.
			&discoveryv1.EndpointSlice{}: stripped,
		},
	}
	if monitoringServed {
		opts.ByObject[&monitoringv1.PodMonitor{}] = managed
		opts.ByObject[&monitoringv1.PrometheusRule{}] = managed
	}
	return opts
}

// MonitoringCRDsServed asks the API server whether monitoring.coreos.com/v1
// serves PodMonitor and PrometheusRule.
func MonitoringCRDsServed(cfg *rest.Config) bool {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false
	}
	list, err := dc.ServerResourcesForGroupVersion(monitoringv1.SchemeGroupVersion.String())
	if err != nil {
		return false
	}
	found := 0
	for _, r := range list.APIResources {
		if r.Kind == monitoringv1.PodMonitorsKind || r.Kind == monitoringv1.PrometheusRuleKind {
			found++
		}
	}
	return found == 2
}
