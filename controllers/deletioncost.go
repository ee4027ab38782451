package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

const (
	annotationDeletionCost  = "controller.kubernetes.io/pod-deletion-cost"
	defaultDeletionCostWait = 15 * time.Second
)

// costLedger owns when each pod's deletion cost was last written, per
// MediaService, per pod UID: pruned to the pods each reconcile lists, and
// whole when the MediaService goes.
type costLedger struct {
	perMediaService[map[types.UID]time.Time]
}

// prune keeps only the pods in alive; the MediaService is held from its
// first reconcile on (forget releases it).
func (l *costLedger) prune(key types.NamespacedName, alive map[types.UID]bool) {
	l.with(key, func(written *map[types.UID]time.Time) {
		for uid := range *written {
			if !alive[uid] {
				delete(*written, uid)
			}
		}
	})
}

// due says whether a pod's cost may be written at now (at most once per
// wait), and otherwise how long until it may.
func (l *costLedger) due(key types.NamespacedName, uid types.UID, now time.Time, wait time.Duration) (ok bool, retry time.Duration) {
	l.with(key, func(written *map[types.UID]time.Time) {
		since := now.Sub((*written)[uid])
		ok, retry = since >= wait, max(wait-since, 0)
	})
	return ok, retry
}

// wrote records a write.
func (l *costLedger) wrote(key types.NamespacedName, uid types.UID, now time.Time) {
	l.with(key, func(written *map[types.UID]time.Time) {
		if *written == nil {
			*written = map[types.UID]time.Time{}
		}
		(*written)[uid] = now
	})
}

// reconcileDeletionCost writes each pod's session count into
// controller.kubernetes.io/pod-deletion-cost so that a scale-down removes
// the emptiest pods first; at most once per interval per pod and only when
// the value changes. It returns how soon a held-back write is due.
func (r *MediaServiceReconciler) reconcileDeletionCost(ctx context.Context, ms *mediav1alpha1.MediaService, reports []podReport) (time.Duration, error) {
	key := client.ObjectKeyFromObject(ms)
	alive := make(map[types.UID]bool, len(reports))
	for _, pr := range reports {
		alive[pr.pod.UID] = true
	}
	r.costs.prune(key, alive)
	now := r.clock().Now()
	wait := r.Options.DeletionCostInterval
	if wait <= 0 {
		wait = defaultDeletionCostWait
	}
	var retry time.Duration
	for _, pr := range reports {
		if !pr.ok || !pr.obs.Reachable || pr.pod.DeletionTimestamp != nil {
			continue
		}
		want := strconv.Itoa(pr.obs.Report.Sessions.Active)
		if pr.pod.Annotations[annotationDeletionCost] == want {
			continue
		}
		if ok, d := r.costs.due(key, pr.pod.UID, now, wait); !ok {
			if retry == 0 || d < retry {
				retry = d
			}
			continue
		}
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotationDeletionCost, want)
		if err := r.Patch(ctx, pr.pod, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return 0, fmt.Errorf("patch deletion cost of pod %s: %w", pr.pod.Name, err)
		}
		r.costs.wrote(key, pr.pod.UID, now)
	}
	return retry, nil
}
