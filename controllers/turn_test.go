package controllers

import (
	"testing"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
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
