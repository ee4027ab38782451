package controllers

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Fleet condition reasons and event reasons.
const (
	ReasonLeakSuspected     = "LeakSuspected"
	ReasonNoLeak            = "NoLeakReported"
	ReasonLeakStarted       = "GoroutineLeakSuspected"
	ReasonLeakCleared       = "GoroutineLeakCleared"
	ReasonRestartedLeaking  = "RestartedLeakingPod"
	ReasonAutoscaled        = "Autoscaled"
	annotationDeletionCost  = "controller.kubernetes.io/pod-deletion-cost"
	defaultDeletionCostWait = 15 * time.Second
)

// fleetState is what the reconciler remembers between reconciles: the
// autoscaler's recent recommendations and when each pod's deletion cost was
// last written.
type fleetState struct {
	mu              sync.Mutex
	recommendations map[types.NamespacedName][]recommendation
	// costWritten is per MediaService, per pod: pruned with the pods each
	// reconcile lists, and whole when the MediaService goes.
	costWritten map[types.NamespacedName]map[types.UID]time.Time
}

type recommendation struct {
	at       time.Time
	replicas int32
}

func (f *fleetState) init() {
	if f.recommendations == nil {
		f.recommendations = map[types.NamespacedName][]recommendation{}
		f.costWritten = map[types.NamespacedName]map[types.UID]time.Time{}
	}
}

// podReport pairs a media pod with its last observation.
type podReport struct {
	pod *corev1.Pod
	obs Observation
	ok  bool // observed at all
}

func (r *MediaServiceReconciler) fleetReports(pods []corev1.Pod) []podReport {
	var out []podReport
	for i := range pods {
		p := &pods[i]
		pr := podReport{pod: p}
		if r.Observer != nil {
			pr.obs, pr.ok = r.Observer.Get(p.Namespace, p.Name)
		}
		out = append(out, pr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.Name < out[j].pod.Name })
	return out
}

// computeFleetStatus fills sessions, pods, leakingPods and GoroutineLeak.
func computeFleetStatus(ms *mediav1alpha1.MediaService, reports []podReport) {
	st := &ms.Status
	var sess mediav1alpha1.SessionsStatus
	var pods []mediav1alpha1.PodStatus
	var leaking []string
	var leakMsgs []string
	observed := false
	for _, pr := range reports {
		if pr.pod.DeletionTimestamp != nil && !pr.ok {
			continue
		}
		ps := mediav1alpha1.PodStatus{Name: pr.pod.Name}
		switch {
		case !pr.ok:
			ps.Message = "not observed yet (" + podPhase(pr.pod) + ")"
		case !pr.obs.Reachable:
			observed = true
			ps.Message = "unreachable: " + pr.obs.Error
		default:
			observed = true
			rep := pr.obs.Report
			ps.Reachable, ps.Ready, ps.Draining = true, rep.Ready, rep.Draining
			ps.Sessions, ps.Goroutines = int32(rep.Sessions.Active), int32(rep.Goroutines.Current)
			sess.Active += int32(rep.Sessions.Active)
			sess.ReportingPods++
			if !rep.Draining {
				sess.Capacity += int32(rep.Sessions.Capacity)
			}
			if rep.Leak.Suspected {
				ps.LeakSuspected = true
				leaking = append(leaking, pr.pod.Name)
				ps.Message = leakMessage(rep.Leak.Since, rep.Goroutines.Current, rep.Goroutines.Baseline, rep.Leak.Excess, rep.Leak.TopGrowth)
				leakMsgs = append(leakMsgs, "pod "+pr.pod.Name+": "+ps.Message)
			}
		}
		if len(pods) < mediav1alpha1.MaxPodStatuses {
			pods = append(pods, ps)
		}
	}
	if observed {
		st.Sessions = &sess
	} else {
		st.Sessions = nil
	}
	st.Pods = pods
	st.LeakingPods = leaking
	c := metav1.Condition{Type: mediav1alpha1.ConditionGoroutineLeak, Status: metav1.ConditionFalse, Reason: ReasonNoLeak,
		Message: "no media pod reports a suspected goroutine leak", ObservedGeneration: ms.Generation}
	if len(leaking) > 0 {
		c.Status, c.Reason = metav1.ConditionTrue, ReasonLeakSuspected
		c.Message = truncate(strings.Join(leakMsgs, "; "), 1024)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

func podPhase(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	if p.Status.Phase == "" {
		return "Pending"
	}
	return string(p.Status.Phase)
}

func leakMessage(since *time.Time, current, baseline, excess int, top []statusapi.GrowthSite) string {
	var b strings.Builder
	if since != nil {
		fmt.Fprintf(&b, "suspected since %s, ", since.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "%d goroutines (baseline %d, %d not explained by sessions)", current, baseline, excess)
	if len(top) > 0 {
		fmt.Fprintf(&b, ", top growth %s (+%d)", top[0].Function, top[0].Growth)
	}
	return b.String()
}

// reconcileDeletionCost writes each pod's session count into
// controller.kubernetes.io/pod-deletion-cost so that a scale-down removes
// the emptiest pods first; at most once per interval per pod and only when
// the value changes. It returns how soon a held-back write is due.
func (r *MediaServiceReconciler) reconcileDeletionCost(ctx context.Context, ms *mediav1alpha1.MediaService, reports []podReport) (time.Duration, error) {
	key := client.ObjectKeyFromObject(ms)
	r.fleet.mu.Lock()
	r.fleet.init()
	written := r.fleet.costWritten[key]
	if written == nil {
		written = map[types.UID]time.Time{}
		r.fleet.costWritten[key] = written
	}
	alive := make(map[types.UID]bool, len(reports))
	for _, pr := range reports {
		alive[pr.pod.UID] = true
	}
	for uid := range written {
		if !alive[uid] {
			delete(written, uid)
		}
	}
	r.fleet.mu.Unlock()
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
		r.fleet.mu.Lock()
		last := written[pr.pod.UID]
		r.fleet.mu.Unlock()
		if since := now.Sub(last); since < wait {
			if d := wait - since; retry == 0 || d < retry {
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
		r.fleet.mu.Lock()
		written[pr.pod.UID] = now
		r.fleet.mu.Unlock()
	}
	return retry, nil
}

// forget drops what the reconciler remembers of a MediaService that is
// gone (or going).
func (f *fleetState) forget(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recommendations, key)
	delete(f.costWritten, key)
}

// sizeIn is how many MediaServices of a namespace the reconciler holds
// state for (tests).
func (f *fleetState) sizeIn(namespace string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	held := map[types.NamespacedName]bool{}
	for k := range f.recommendations {
		held[k] = true
	}
	for k := range f.costWritten {
		held[k] = true
	}
	n := 0
	for k := range held {
		if k.Namespace == namespace {
			n++
		}
	}
	return n
}

// autoscale sets spec.replicas from the reported sessions (see the API
// docs of AutoscalingSpec). It returns when the stabilization window next
// lets a lower recommendation through.
func (r *MediaServiceReconciler) autoscale(ctx context.Context, ms *mediav1alpha1.MediaService, reports []podReport) (time.Duration, error) {
	key := client.ObjectKeyFromObject(ms)
	as := ms.Spec.Autoscaling
	r.fleet.mu.Lock()
	r.fleet.init()
	if as == nil {
		delete(r.fleet.recommendations, key)
		r.fleet.mu.Unlock()
		return 0, nil
	}
	r.fleet.mu.Unlock()

	var total, busy, reporting int32
	for _, pr := range reports {
		if pr.ok && pr.obs.Reachable {
			reporting++
			total += int32(pr.obs.Report.Sessions.Active)
			if pr.obs.Report.Sessions.Active > 0 {
				busy++
			}
		}
	}
	current := int32(1)
	if ms.Spec.Replicas != nil {
		current = *ms.Spec.Replicas
	}
	if reporting == 0 {
		return 0, nil // nothing observed: hold
	}
	rec := int32(math.Ceil(float64(total) / float64(as.TargetSessionsPerPod)))
	rec = max(rec, busy, as.MinReplicas)
	rec = min(rec, as.MaxReplicas)

	now := r.clock().Now()
	window := as.ScaleDownStabilization.Duration
	r.fleet.mu.Lock()
	hist := r.fleet.recommendations[key]
	if hist == nil {
		// After a restart, act as if the current size had just been
		// recommended: no scale-down before a full window.
		hist = []recommendation{{at: now, replicas: current}}
	}
	hist = append(hist, recommendation{at: now, replicas: rec})
	kept := hist[:0]
	for _, h := range hist {
		if now.Sub(h.at) <= window {
			kept = append(kept, h)
		}
	}
	hist = kept
	r.fleet.recommendations[key] = hist
	desired := rec
	for _, h := range hist {
		desired = max(desired, h.replicas) // the highest recent recommendation wins
	}
	var next time.Duration
	for _, h := range hist {
		if h.replicas > rec {
			if d := window - now.Sub(h.at); next == 0 || d < next {
				next = d + time.Second
			}
		}
	}
	r.fleet.mu.Unlock()

	if desired == current {
		return next, nil
	}
	base := ms.DeepCopy()
	ms.Spec.Replicas = &desired
	if err := r.Patch(ctx, ms, client.MergeFrom(base)); err != nil {
		return 0, fmt.Errorf("autoscale to %d replicas: %w", desired, err)
	}
	r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonAutoscaled, "Scale",
		"autoscaling: %d → %d replicas (%d sessions on %d pods, target %d per pod)", current, desired, total, reporting, as.TargetSessionsPerPod)
	return next, nil
}

// restartIdleLeakingPod deletes one pod that reports a suspected leak and
// holds no session, when remediation is RestartWhenIdle and no pod of this
// MediaService is already terminating.
func (r *MediaServiceReconciler) restartIdleLeakingPod(ctx context.Context, ms *mediav1alpha1.MediaService, reports []podReport) error {
	if ms.Spec.LeakDetection.Remediation != mediav1alpha1.RemediationRestartWhenIdle {
		return nil
	}
	for _, pr := range reports {
		if pr.pod.DeletionTimestamp != nil {
			return nil // one at a time
		}
	}
	for _, pr := range reports {
		rep := pr.obs.Report
		if !pr.ok || !pr.obs.Reachable || !rep.Leak.Suspected || rep.Sessions.Active != 0 {
			continue
		}
		uid := pr.pod.UID
		if err := r.Delete(ctx, pr.pod, client.Preconditions{UID: &uid}); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				return nil
			}
			return fmt.Errorf("delete leaking pod %s: %w", pr.pod.Name, err)
		}
		r.Recorder.Eventf(ms, pr.pod, corev1.EventTypeWarning, ReasonRestartedLeaking, "Delete",
			"deleted pod %s: goroutine leak suspected and no session open; the Deployment replaces it", pr.pod.Name)
		return nil
	}
	return nil
}

// recordLeakTransitions emits an Event for each pod whose leak state changed.
func (r *MediaServiceReconciler) recordLeakTransitions(ms *mediav1alpha1.MediaService, before []string) {
	was := map[string]bool{}
	for _, p := range before {
		was[p] = true
	}
	now := map[string]bool{}
	for _, p := range ms.Status.LeakingPods {
		now[p] = true
		if !was[p] {
			msg := ""
			for _, ps := range ms.Status.Pods {
				if ps.Name == p {
					msg = ps.Message
				}
			}
			r.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, ReasonLeakStarted, "Observe", "pod %s: goroutine leak suspected: %s", p, msg)
		}
	}
	for p := range was {
		if !now[p] {
			r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonLeakCleared, "Observe", "pod %s: goroutine leak no longer suspected", p)
		}
	}
}
