package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
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
	mu      sync.Mutex
	written map[types.NamespacedName]map[types.UID]time.Time
}

// prune keeps only the pods in alive; the MediaService is held from its
// first reconcile on (forget releases it).
func (l *costLedger) prune(key types.NamespacedName, alive map[types.UID]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[types.NamespacedName]map[types.UID]time.Time{}
	}
	if l.written[key] == nil {
		l.written[key] = map[types.UID]time.Time{}
	}
	for uid := range l.written[key] {
		if !alive[uid] {
			delete(l.written[key], uid)
		}
	}
}

// due says whether a pod's cost may be written at now (at most once per
// wait), and otherwise how long until it may.
func (l *costLedger) due(key types.NamespacedName, uid types.UID, now time.Time, wait time.Duration) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	since := now.Sub(l.written[key][uid])
	if since < wait {
		return false, wait - since
	}
	return true, 0
}

// wrote records a write.
func (l *costLedger) wrote(key types.NamespacedName, uid types.UID, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[types.NamespacedName]map[types.UID]time.Time{}
	}
	if l.written[key] == nil {
		l.written[key] = map[types.UID]time.Time{}
	}
	l.written[key][uid] = now
}

func (l *costLedger) forget(key types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.written, key)
}

// keys lists the MediaServices the ledger holds.
func (l *costLedger) keys() []types.NamespacedName {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Collect(maps.Keys(l.written))
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
