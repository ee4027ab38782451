package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// ReasonNotServingYet: pods are ready but clients could still be refused.
const ReasonNotServingYet = "NotServingYet"

// servingRetry is how soon a reconcile tries again to deliver a member list
// to a ready pod that does not hold it.
const servingRetry = time.Second

// servingGaps names, for each ready media pod, what still stops it from
// taking sessions through the Service: the Service's EndpointSlices do not
// list it as a ready endpoint, or (with the observer) it does not yet hold
// the member list in which it is ready, so that it routes rooms the way the
// other pods do. It also notices when the Deployment counts more ready pods
// than the cache shows (the pod watch is behind): those are not judged yet.
// Empty means every ready pod serves.
//
// undelivered says a member list could not be delivered: the only gap no
// watch event closes (EndpointSlice and pod changes come by watch), so the
// only one worth a timed retry.
func (r *MediaServiceReconciler) servingGaps(ctx context.Context, ms *mediav1alpha1.MediaService, dep *appsv1.Deployment, pods []corev1.Pod) (gaps []string, undelivered bool, err error) {
	var ready []*corev1.Pod
	for i := range pods {
		if p := &pods[i]; podReady(p) && p.DeletionTimestamp == nil {
			ready = append(ready, p)
		}
	}
	if dep != nil && len(pods) > 0 && int(dep.Status.ReadyReplicas) > len(ready) {
		gaps = append(gaps, fmt.Sprintf("the Deployment counts %d ready pods, %d seen ready so far", dep.Status.ReadyReplicas, len(ready)))
	}
	if len(ready) == 0 {
		return gaps, false, nil
	}
	slices := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, slices, client.InNamespace(ms.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: desired.SignalingServiceName(ms)}); err != nil {
		return nil, false, fmt.Errorf("list endpointslices: %w", err)
	}
	inEndpoints := readyEndpointPods(slices.Items)
	for _, p := range ready {
		var missing []string
		if !inEndpoints[p.Name] {
			missing = append(missing, "not a ready endpoint of Service "+desired.SignalingServiceName(ms)+" yet")
		}
		if r.Observer != nil && !r.Observer.HoldsCurrentMembership(types.NamespacedName{Namespace: ms.Namespace, Name: ms.Name}, p.Name) {
			missing = append(missing, "member list not delivered yet")
			undelivered = true
		}
		if len(missing) > 0 {
			gaps = append(gaps, "pod "+p.Name+": "+strings.Join(missing, ", "))
		}
	}
	sort.Strings(gaps)
	return gaps, undelivered, nil
}

// readyEndpointPods are the pods listed as ready endpoints (a nil ready
// condition means ready, as the EndpointSlice API says).
func readyEndpointPods(slices []discoveryv1.EndpointSlice) map[string]bool {
	out := map[string]bool{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
				continue
			}
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out[ep.TargetRef.Name] = true
			}
		}
	}
	return out
}
