package controllers

import (
	"context"
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// recommendationStore owns the autoscaler's recent recommendations, per
// MediaService: the scale-down stabilization window keeps the highest of
// them (the way the HorizontalPodAutoscaler does).
type recommendationStore struct {
	perMediaService[[]recommendation]
}

type recommendation struct {
	at       time.Time
	replicas int32
}

// decide records rec for key at now and returns the replica count to run
// (the highest recommendation within window) and, when a higher one holds
// the count up, how soon it leaves the window. A MediaService without
// history acts as if current had just been recommended: after an operator
// restart, no scale-down before a full window.
func (s *recommendationStore) decide(key types.NamespacedName, now time.Time, current, rec int32, window time.Duration) (want int32, next time.Duration) {
	s.with(key, func(hist *[]recommendation) {
		if *hist == nil {
			*hist = []recommendation{{at: now, replicas: current}}
		}
		kept := (*hist)[:0]
		for _, h := range append(*hist, recommendation{at: now, replicas: rec}) {
			if now.Sub(h.at) <= window {
				kept = append(kept, h)
			}
		}
		*hist = kept
		want = rec
		for _, h := range kept {
			want = max(want, h.replicas)
			if h.replicas > rec {
				if d := window - now.Sub(h.at) + time.Second; next == 0 || d < next {
					next = d
				}
			}
		}
	})
	return want, next
}

// recommend is the replica count the reported sessions ask for (see the
// API docs of AutoscalingSpec), and whether any pod reported at all.
func recommend(as *mediav1alpha1.AutoscalingSpec, reports []podReport) (rec, total, reporting int32) {
	var busy int32
	for _, pr := range reports {
		if pr.ok && pr.obs.Reachable {
			reporting++
			total += int32(pr.obs.Report.Sessions.Active)
			if pr.obs.Report.Sessions.Active > 0 {
				busy++
			}
		}
	}
	rec = int32(math.Ceil(float64(total) / float64(as.TargetSessionsPerPod)))
	rec = max(rec, busy, as.MinReplicas)
	rec = min(rec, as.MaxReplicas)
	return rec, total, reporting
}

// autoscale sets spec.replicas from the reported sessions. It returns when
// the stabilization window next lets a lower recommendation through.
func (r *MediaServiceReconciler) autoscale(ctx context.Context, ms *mediav1alpha1.MediaService, reports []podReport) (time.Duration, error) {
	key := client.ObjectKeyFromObject(ms)
	as := ms.Spec.Autoscaling
	if as == nil {
		r.recommendations.forget(key)
		return 0, nil
	}
	rec, total, reporting := recommend(as, reports)
	if reporting == 0 {
		return 0, nil // nothing observed: hold
	}
	current := int32(1)
	if ms.Spec.Replicas != nil {
		current = *ms.Spec.Replicas
	}
	want, next := r.recommendations.decide(key, r.clock().Now(), current, rec, as.ScaleDownStabilization.Duration)
	if want == current {
		return next, nil
	}
	base := ms.DeepCopy()
	ms.Spec.Replicas = &want
	if err := r.Patch(ctx, ms, client.MergeFrom(base)); err != nil {
		return 0, fmt.Errorf("autoscale to %d replicas: %w", want, err)
	}
	r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonAutoscaled, "Scale",
		"autoscaling: %d → %d replicas (%d sessions on %d pods, target %d per pod)", current, want, total, reporting, as.TargetSessionsPerPod)
	return next, nil
}
