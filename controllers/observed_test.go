package controllers

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

func report(active, capacity int, ready, draining, leak bool) Observation {
	r := statusapi.Report{APIVersion: statusapi.APIVersion, Ready: ready, Draining: draining,
		Sessions: statusapi.Sessions{Active: active, Capacity: capacity}, Goroutines: statusapi.Goroutines{Current: 40 + 20*active, Baseline: 30}}
	if leak {
		since := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
		r.Leak = statusapi.Leak{Suspected: true, Since: &since, Excess: 300, TopGrowth: []statusapi.GrowthSite{{Function: "example.com/leaky.watch", Count: 300, Growth: 300}}}
	}
	return Observation{Reachable: true, Report: r}
}

func TestComputeFleetStatus(t *testing.T) {
	ms := defaulted(nil)
	pod := func(name string) *corev1.Pod { return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	reports := []podReport{
		{pod: pod("a"), obs: report(3, 500, true, false, false), ok: true},
		{pod: pod("b"), obs: report(0, 500, true, false, true), ok: true},
		{pod: pod("c"), obs: report(2, 500, false, true, false), ok: true},
		{pod: pod("d"), obs: Observation{Error: "GET /status: timed out"}, ok: true},
		{pod: pod("e")},
	}
	computeObservedStatus(ms, reports)
	st := ms.Status
	if st.Sessions.Active != 5 || st.Sessions.Capacity != 1000 || st.Sessions.ReportingPods != 3 {
		t.Errorf("sessions %+v: draining pods count sessions but no capacity", st.Sessions)
	}
	if len(st.Pods) != 5 || st.Pods[3].Reachable || !strings.Contains(st.Pods[3].Message, "unreachable: GET /status: timed out") ||
		!strings.Contains(st.Pods[4].Message, "not observed yet") {
		t.Errorf("pods %+v", st.Pods)
	}
	if len(st.LeakingPods) != 1 || st.LeakingPods[0] != "b" {
		t.Errorf("leaking %v", st.LeakingPods)
	}
	c := findCond(st.Conditions, mediav1alpha1.ConditionGoroutineLeak)
	want := "pod b: suspected since 2026-11-26T01:00:00Z, 40 goroutines (baseline 30, 300 not explained by sessions), top growth example.com/leaky.watch (+300)"
	if c == nil || c.Status != metav1.ConditionTrue || c.Message != want {
		t.Errorf("condition %+v\nwant message %q", c, want)
	}

	// Bounded for large fleets.
	var many []podReport
	for i := 0; i < 120; i++ {
		many = append(many, podReport{pod: pod(string(rune('a'+i%26)) + strings.Repeat("x", i)), obs: report(1, 10, true, false, false), ok: true})
	}
	computeObservedStatus(ms, many)
	if len(ms.Status.Pods) != mediav1alpha1.MaxPodStatuses || ms.Status.Sessions.Active != 120 {
		t.Errorf("%d pods listed, %d sessions", len(ms.Status.Pods), ms.Status.Sessions.Active)
	}
}

func TestSessionsBucket(t *testing.T) {
	// Exact up to 10, then 5% of capacity: a busy pod's small swings do
	// not trigger reconciles.
	if sessionsBucket(3, 500) == sessionsBucket(4, 500) {
		t.Error("small counts must be exact")
	}
	if sessionsBucket(200, 500) != sessionsBucket(224, 500) || sessionsBucket(200, 500) == sessionsBucket(225, 500) {
		t.Error("busy counts must move in steps of 25 (5% of 500)")
	}
	a, b := report(5, 500, true, false, false), report(5, 500, true, false, true)
	if signature(a) == signature(b) || signature(a) == signature(Observation{}) {
		t.Error("leak and reachability changes must change the signature")
	}
}

// TestRoomSpreads: the pods' room reports add up to the fleet's largest
// rooms, each with its owner and the pods it spans; an unreachable pod's
// old report does not count; the list is bounded.
func TestRoomSpreads(t *testing.T) {
	pod := func(name string) *corev1.Pod { return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	rep := func(name string, reachable bool, rooms ...statusapi.RoomStatus) podReport {
		return podReport{pod: pod(name), ok: true, obs: Observation{Reachable: reachable, Report: statusapi.Report{Rooms: rooms}}}
	}
	got := roomSpreads([]podReport{
		rep("m-0", true, statusapi.RoomStatus{Name: "webinar", Role: statusapi.RoomOwner, Members: 10, Links: 2}, statusapi.RoomStatus{Name: "small", Role: statusapi.RoomOwner, Members: 2}),
		rep("m-1", true, statusapi.RoomStatus{Name: "webinar", Role: statusapi.RoomRelay, Owner: "m-0", Members: 10, Links: 1}),
		rep("m-2", true, statusapi.RoomStatus{Name: "webinar", Role: statusapi.RoomRelay, Owner: "m-0", Members: 5, Links: 1}),
		rep("m-3", false, statusapi.RoomStatus{Name: "ghost", Role: statusapi.RoomOwner, Members: 99}),
	})
	want := []mediav1alpha1.RoomSpread{{Name: "webinar", Owner: "m-0", Pods: 3, Sessions: 25}, {Name: "small", Owner: "m-0", Pods: 1, Sessions: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("roomSpreads = %+v, want %+v", got, want)
	}
	var many []statusapi.RoomStatus
	for i := 0; i < 30; i++ {
		many = append(many, statusapi.RoomStatus{Name: fmt.Sprintf("r%02d", i), Role: statusapi.RoomOwner, Members: i})
	}
	got = roomSpreads([]podReport{rep("m-0", true, many...)})
	if len(got) != mediav1alpha1.MaxRoomSpreads || got[0].Name != "r29" {
		t.Errorf("bounded list: %d rooms, first %+v", len(got), got[0])
	}
}
