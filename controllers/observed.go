package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Condition and event reasons of what the observer reports.
const (
	ReasonLeakSuspected    = "LeakSuspected"
	ReasonNoLeak           = "NoLeakReported"
	ReasonLeakStarted      = "GoroutineLeakSuspected"
	ReasonContainerRestart = "MediaPodRestarted"
	ReasonLeakCleared      = "GoroutineLeakCleared"
	ReasonRestartedLeaking = "RestartedLeakingPod"
	ReasonAutoscaled       = "Autoscaled"
)

// podReport pairs a media pod with its last observation.
type podReport struct {
	pod *corev1.Pod
	obs Observation
	ok  bool // observed at all
}

func (r *MediaServiceReconciler) podReports(pods []corev1.Pod) []podReport {
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

// computeObservedStatus fills sessions, pods, leakingPods and GoroutineLeak.
func computeObservedStatus(ms *mediav1alpha1.MediaService, reports []podReport) {
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
		if rs := restartMessage(pr.pod); rs != "" {
			// Why the container last restarted (OOMKilled, a crash):
			// kubectl describe msvc says it without a look at the pod.
			if ps.Message != "" {
				ps.Message += "; "
			}
			ps.Message += rs
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
	st.Rooms = roomSpreads(reports)
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

// restartMessage says why a pod's media container last restarted
// ("restarted 2 times; last: OOMKilled (exit 137) at 2026-11-27T08:40:03Z"),
// "" when it never did.
func restartMessage(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != desired.ContainerName || cs.RestartCount == 0 {
			continue
		}
		msg := fmt.Sprintf("restarted %d times", cs.RestartCount)
		if t := cs.LastTerminationState.Terminated; t != nil {
			reason := t.Reason
			if reason == "" {
				reason = "terminated"
			}
			msg += fmt.Sprintf("; last: %s (exit %d) at %s", reason, t.ExitCode, t.FinishedAt.UTC().Format(time.RFC3339))
		}
		return msg
	}
	return ""
}

// recordRestartTransitions emits a Warning Event when a pod's container
// restarted since the status before (its restart message changed).
func (r *MediaServiceReconciler) recordRestartTransitions(ms *mediav1alpha1.MediaService, before []mediav1alpha1.PodStatus) {
	was := map[string]string{}
	for _, ps := range before {
		was[ps.Name] = restartPart(ps.Message)
	}
	for _, ps := range ms.Status.Pods {
		if now := restartPart(ps.Message); now != "" && now != was[ps.Name] {
			r.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, ReasonContainerRestart, "Observe", "pod %s: %s", ps.Name, now)
		}
	}
}

// restartPart is the restart message within a pod's status message.
func restartPart(msg string) string {
	if i := strings.Index(msg, "restarted "); i >= 0 {
		return msg[i:]
	}
	return ""
}

// roomSpreads adds up the rooms the pods report: the largest, with the
// pods each spans (its owner and relay pods).
func roomSpreads(reports []podReport) []mediav1alpha1.RoomSpread {
	byName := map[string]*mediav1alpha1.RoomSpread{}
	for _, pr := range reports {
		if !pr.ok || !pr.obs.Reachable {
			continue
		}
		for _, r := range pr.obs.Report.Rooms {
			rs := byName[r.Name]
			if rs == nil {
				rs = &mediav1alpha1.RoomSpread{Name: truncate(r.Name, 64)}
				byName[r.Name] = rs
			}
			rs.Pods++
			rs.Sessions += int32(r.Members)
			if r.Role == statusapi.RoomOwner {
				rs.Owner = pr.pod.Name
			}
		}
	}
	out := make([]mediav1alpha1.RoomSpread, 0, len(byName))
	for _, rs := range byName {
		out = append(out, *rs)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Sessions != out[j].Sessions {
			return out[i].Sessions > out[j].Sessions
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > mediav1alpha1.MaxRoomSpreads {
		out = out[:mediav1alpha1.MaxRoomSpreads]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
