package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

func TestTURNRecommend(t *testing.T) {
	as := &mediav1alpha1.TURNAutoscalingSpec{MinReplicas: 2, MaxReplicas: 6, TargetAllocationsPerPod: 100}
	for _, tc := range []struct {
		allocations, want int32
	}{{0, 2}, {150, 2}, {201, 3}, {600, 6}, {5000, 6}} {
		if got := turnRecommend(as, tc.allocations); got != tc.want {
			t.Errorf("%d allocations: %d replicas, want %d", tc.allocations, got, tc.want)
		}
	}
}

func TestRestartMessage(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 11, 27, 8, 40, 3, 0, time.UTC))
	pod := func(restarts int32, term *corev1.ContainerStateTerminated) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: desired.ContainerName, RestartCount: restarts,
			LastTerminationState: corev1.ContainerState{Terminated: term}}}}}
	}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{pod(0, nil), ""},
		{pod(1, &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137, FinishedAt: at}), "restarted 1 times; last: OOMKilled (exit 137) at 2026-11-27T08:40:03Z"},
		{pod(3, &corev1.ContainerStateTerminated{ExitCode: 2, FinishedAt: at}), "restarted 3 times; last: terminated (exit 2) at 2026-11-27T08:40:03Z"},
		{pod(2, nil), "restarted 2 times"},
	} {
		if got := restartMessage(tc.pod); got != tc.want {
			t.Errorf("restartMessage = %q, want %q", got, tc.want)
		}
	}
	if got := restartPart("leak suspected since …; restarted 1 times; last: OOMKilled"); got != "restarted 1 times; last: OOMKilled" {
		t.Errorf("restartPart = %q", got)
	}
}
