package controllers

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// Condition reasons.
const (
	ReasonMinimumReplicasReady = "MinimumReplicasReady"
	ReasonNotEnoughReady       = "NotEnoughReplicasReady"
	ReasonScaledToZero         = "ScaledToZero"
	ReasonDeploymentMissing    = "DeploymentMissing"
	ReasonRollingOut           = "RollingOut"
	ReasonRolloutComplete      = "RolloutComplete"
	ReasonDeadlineExceeded     = "ProgressDeadlineExceeded"
	ReasonAsExpected           = "AsExpected"
	ReasonPodsFailing          = "PodsFailing"
	ReasonReplicaFailure       = "ReplicaFailure"
)

// failingWaitingReasons are container states that will not fix themselves.
var failingWaitingReasons = map[string]bool{
	"CrashLoopBackOff":           true,
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"ErrImageNeverPull":          true,
	"InvalidImageName":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
}

// minReady is how many ready pods make a MediaService Available: all but
// the one a disruption (or a hostNetwork rollout) may take.
func minReady(desired int32) int32 {
	if desired <= 1 {
		return desired
	}
	return desired - 1
}

// computeStatus fills ms.Status from the Deployment and pods as cached.
// Conditions keep their transition time unless their status changes.
//
// gaps (from servingGaps) name ready pods that cannot take sessions through
// the Service yet. Available turns True only when there are none, so that a
// client acting on Available is never refused; once Available, a new pod's
// short gap (a scale-up) does not flip it back.
func computeStatus(ms *mediav1alpha1.MediaService, dep *appsv1.Deployment, pods []corev1.Pod, gaps []string, reconcileErr error) {
	st := &ms.Status
	want := int32(1)
	if ms.Spec.Replicas != nil {
		want = *ms.Spec.Replicas
	}
	st.Selector = labels.SelectorFromSet(desired.SelectorLabels(ms)).String()
	gen := ms.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}

	if dep == nil {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = 0, 0, 0
		set(mediav1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonDeploymentMissing, "the media Deployment does not exist yet")
		set(mediav1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut, "creating the media Deployment")
	} else {
		st.Replicas = dep.Status.Replicas
		st.ReadyReplicas = dep.Status.ReadyReplicas
		st.UpdatedReplicas = dep.Status.UpdatedReplicas

		need := minReady(want)
		switch {
		case want == 0:
			set(mediav1alpha1.ConditionAvailable, metav1.ConditionTrue, ReasonScaledToZero, "scaled to zero replicas")
		case dep.Status.ReadyReplicas >= need && len(gaps) > 0 && !availableWithReady(st.Conditions):
			msg := strings.Join(gaps, "; ")
			if len(gaps) > 3 {
				msg = strings.Join(gaps[:3], "; ") + fmt.Sprintf("; and %d more", len(gaps)-3)
			}
			set(mediav1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonNotServingYet,
				fmt.Sprintf("%d/%d media pods ready, not all serving yet: %s", dep.Status.ReadyReplicas, want, truncate(msg, 512)))
		case dep.Status.ReadyReplicas >= need:
			set(mediav1alpha1.ConditionAvailable, metav1.ConditionTrue, ReasonMinimumReplicasReady,
				fmt.Sprintf("%d/%d media pods ready (at least %d needed)", dep.Status.ReadyReplicas, want, need))
		default:
			set(mediav1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonNotEnoughReady,
				fmt.Sprintf("%d/%d media pods ready (at least %d needed)", dep.Status.ReadyReplicas, want, need))
		}

		depProgressing := deploymentCondition(dep, appsv1.DeploymentProgressing)
		rolledOut := dep.Status.ObservedGeneration >= dep.Generation &&
			dep.Status.UpdatedReplicas == want && dep.Status.Replicas == want &&
			dep.Status.AvailableReplicas == want
		switch {
		case depProgressing != nil && depProgressing.Reason == "ProgressDeadlineExceeded":
			set(mediav1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonDeadlineExceeded, depProgressing.Message)
		case rolledOut:
			set(mediav1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete,
				fmt.Sprintf("%d/%d media pods updated and available", dep.Status.UpdatedReplicas, want))
		default:
			set(mediav1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut,
				fmt.Sprintf("%d/%d updated, %d/%d available, %d total", dep.Status.UpdatedReplicas, want,
					dep.Status.AvailableReplicas, want, dep.Status.Replicas))
		}
	}

	reason, msg := degradedReason(dep, pods, reconcileErr)
	if reason == "" {
		set(mediav1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "no failing media pods")
	} else {
		set(mediav1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, msg)
	}
	if reconcileErr == nil {
		st.ObservedGeneration = ms.Generation
	}
}

// availableWithReady: the MediaService is already Available because enough
// pods served.
func availableWithReady(conds []metav1.Condition) bool {
	c := meta.FindStatusCondition(conds, mediav1alpha1.ConditionAvailable)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == ReasonMinimumReplicasReady
}

func deploymentCondition(dep *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range dep.Status.Conditions {
		if dep.Status.Conditions[i].Type == t {
			return &dep.Status.Conditions[i]
		}
	}
	return nil
}

// degradedReason names the worst thing wrong, or "".
func degradedReason(dep *appsv1.Deployment, pods []corev1.Pod, reconcileErr error) (string, string) {
	if reconcileErr != nil {
		return ReasonApplyFailed, truncate(reconcileErr.Error(), 512)
	}
	var failing []string
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && failingWaitingReasons[w.Reason] {
				failing = append(failing, fmt.Sprintf("pod %s: %s: %s", p.Name, w.Reason, truncate(w.Message, 160)))
			}
		}
	}
	if len(failing) > 0 {
		sort.Strings(failing)
		if len(failing) > 3 {
			failing = append(failing[:3], fmt.Sprintf("and %d more", len(failing)-3))
		}
		return ReasonPodsFailing, strings.Join(failing, "; ")
	}
	if dep != nil {
		if c := deploymentCondition(dep, appsv1.DeploymentReplicaFailure); c != nil && c.Status == corev1.ConditionTrue {
			return ReasonReplicaFailure, truncate(c.Message, 512)
		}
		if c := deploymentCondition(dep, appsv1.DeploymentProgressing); c != nil && c.Reason == "ProgressDeadlineExceeded" {
			return ReasonDeadlineExceeded, truncate(c.Message, 512)
		}
	}
	return "", ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
