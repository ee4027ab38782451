package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// TestRecommendationStore: the highest recommendation in the window wins,
// a scale-down waits for the window (also after a restart, when the store
// is empty), and forget releases a MediaService.
func TestRecommendationStore(t *testing.T) {
	key := types.NamespacedName{Namespace: "media", Name: "demo"}
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	const window = 5 * time.Minute
	var s recommendationStore
	steps := []struct {
		after         time.Duration
		current, rec  int32
		want          int32
		wantNextAbove time.Duration // 0: no held-back scale-down
	}{
		{0, 4, 2, 4, window},                                      // fresh store: the current size counts as recommended now
		{time.Minute, 4, 2, 4, 3 * time.Minute},                   // still held
		{window + time.Second, 4, 2, 2, 0},                        // the 4 left the window
		{window + 2*time.Second, 2, 6, 6, 0},                      // up at once
		{window + 3*time.Second, 6, 3, 6, window - 2*time.Second}, // down waits again
	}
	for i, st := range steps {
		got, next := s.decide(key, t0.Add(st.after), st.current, st.rec, window)
		if got != st.want {
			t.Errorf("step %d: %d replicas, want %d", i, got, st.want)
		}
		if st.wantNextAbove == 0 && next != 0 || st.wantNextAbove != 0 && next < st.wantNextAbove {
			t.Errorf("step %d: next check in %v, want above %v", i, next, st.wantNextAbove)
		}
	}
	if len(s.keys()) != 1 {
		t.Fatalf("keys %v", s.keys())
	}
	s.forget(key)
	if len(s.keys()) != 0 {
		t.Fatalf("forget left %v", s.keys())
	}
}

func TestRecommend(t *testing.T) {
	as := &mediav1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 5, TargetSessionsPerPod: 10}
	rep := func(sessions int, reachable bool) podReport {
		r := podReport{ok: true, obs: Observation{Reachable: reachable}}
		r.obs.Report.Sessions = statusapi.Sessions{Active: sessions}
		return r
	}
	cases := []struct {
		name                  string
		reports               []podReport
		rec, total, reporting int32
	}{
		{"nothing reported", []podReport{{}}, 1, 0, 0},
		{"sessions over target", []podReport{rep(15, true), rep(11, true)}, 3, 26, 2},
		{"every busy pod is kept", []podReport{rep(1, true), rep(1, true), rep(1, true)}, 3, 3, 3},
		{"capped at max", []podReport{rep(100, true)}, 5, 100, 1},
		{"unreachable pods do not count", []podReport{rep(30, false), rep(0, true)}, 1, 0, 1},
	}
	for _, tc := range cases {
		rec, total, reporting := recommend(as, tc.reports)
		if rec != tc.rec || total != tc.total || reporting != tc.reporting {
			t.Errorf("%s: recommend = %d/%d/%d, want %d/%d/%d", tc.name, rec, total, reporting, tc.rec, tc.total, tc.reporting)
		}
	}
}
