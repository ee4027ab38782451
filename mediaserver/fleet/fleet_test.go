package fleet

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

func members(n int) []statusapi.Member {
	var out []statusapi.Member
	for i := 0; i < n; i++ {
		out = append(out, statusapi.Member{Name: fmt.Sprintf("fleet-7d9c-%05d", i), Address: fmt.Sprintf("198.18.0.%d:8080", i+1), Ready: true})
	}
	return out
}

// TestAddingAMemberMovesAboutOneNth: over 20,000 rooms, adding a fourth
// (…tenth) member moves about 1/N of the rooms, all of them to the new one.
func TestAddingAMemberMovesAboutOneNth(t *testing.T) {
	const rooms = 20000
	for _, n := range []int{3, 5, 10} {
		before, after := members(n), members(n+1)
		moved, toNew := 0, 0
		for i := 0; i < rooms; i++ {
			room := fmt.Sprintf("room-%d", i)
			a, _ := Owner(room, before)
			b, _ := Owner(room, after)
			if a.Name != b.Name {
				moved++
				if b.Name == after[n].Name {
					toNew++
				}
			}
		}
		ideal := float64(rooms) / float64(n+1)
		if float64(moved) > ideal*1.15 || float64(moved) < ideal*0.85 {
			t.Errorf("%d→%d members moved %d rooms, ideal %.0f (±15%%)", n, n+1, moved, ideal)
		}
		if toNew != moved {
			t.Errorf("%d rooms moved between old members", moved-toNew)
		}
		t.Logf("%d→%d members: %d of %d rooms moved (%.1f%%, ideal %.1f%%)", n, n+1, moved, rooms, 100*float64(moved)/rooms, 100/float64(n+1))
	}
}

func TestDrainingAndNotReadyOwnNothingNew(t *testing.T) {
	ms := members(3)
	for i := 0; i < 1000; i++ {
		room := fmt.Sprintf("r%d", i)
		owner, _ := Owner(room, ms)
		// The owner drains: the room goes to the next in rank, the same
		// for every pod computing it.
		drained := append([]statusapi.Member(nil), ms...)
		for j := range drained {
			if drained[j].Name == owner.Name {
				drained[j].Draining = true
			}
		}
		next, ok := Owner(room, drained)
		if !ok || next.Name == owner.Name || next.Name != Rank(room, ms)[1].Name {
			t.Fatalf("room %s: after draining %s the owner is %s, want the second in rank", room, owner.Name, next.Name)
		}
	}
	none := members(2)
	none[0].Ready, none[1].Draining = false, true
	if _, ok := Owner("x", none); ok {
		t.Error("an owner among no ready, non-draining member")
	}
}

func TestRankPutsANewMemberInFrontOnly(t *testing.T) {
	// Existing rooms are found by asking members in rank order: adding a
	// member must not reorder the others.
	ms := members(4)
	for i := 0; i < 500; i++ {
		room := fmt.Sprintf("r%d", i)
		before := Rank(room, ms[:3])
		after := Rank(room, ms)
		var filtered []string
		for _, m := range after {
			if m.Name != ms[3].Name {
				filtered = append(filtered, m.Name)
			}
		}
		for j := range before {
			if before[j].Name != filtered[j] {
				t.Fatalf("room %s: order of old members changed", room)
			}
		}
	}
}

func TestMembersRefusesStaleAndInvalidLists(t *testing.T) {
	var m Members
	ok := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: 10, Members: members(2)}
	if err := m.Update(ok, time.Now()); err != nil {
		t.Fatal(err)
	}
	stale := ok
	stale.Generation = 9
	if err := m.Update(stale, time.Now()); !errors.Is(err, ErrStale) {
		t.Errorf("stale update: %v", err)
	}
	if m.Current().Generation != 10 {
		t.Errorf("stale list replaced the newer one")
	}
	same := ok
	same.Members = members(3)
	if err := m.Update(same, time.Now()); err != nil || len(m.Current().Members) != 3 {
		t.Errorf("same generation must be accepted (retries): %v", err)
	}
	for name, bad := range map[string]statusapi.Membership{
		"version":    {APIVersion: "v0", Generation: 11},
		"generation": {APIVersion: statusapi.APIVersion},
		"duplicate":  {APIVersion: statusapi.APIVersion, Generation: 12, Members: append(members(1), members(1)...)},
		"no address": {APIVersion: statusapi.APIVersion, Generation: 13, Members: []statusapi.Member{{Name: "a"}}},
		// A generation no operator could send (item 1 of the hostile
		// review: 2^63-1 locked the operator out until a restart).
		"from the far future": {APIVersion: statusapi.APIVersion, Generation: math.MaxInt64, Members: members(1)},
		"two days ahead":      {APIVersion: statusapi.APIVersion, Generation: time.Now().Add(48 * time.Hour).UnixNano(), Members: members(1)},
		"too many members":    {APIVersion: statusapi.APIVersion, Generation: 14, Members: members(MaxMembers + 1)},
	} {
		if err := m.Update(bad, time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestReadyPodTakesRoomsItWouldOwn: the member list lags behind the pod's
// own readiness (the operator rebuilds it when the kubelet reports the pod
// ready). A ready pod never refuses a room it would own; a pod that is not
// ready still does, and other pods' rooms still go to them.
func TestReadyPodTakesRoomsItWouldOwn(t *testing.T) {
	notReady := members(2)
	for i := range notReady {
		notReady[i].Ready = false
	}
	selfReady := true
	for _, tc := range []struct {
		name    string
		list    []statusapi.Member
		self    string
		ready   bool
		wantErr bool
	}{
		{"list says self not ready, no other ready member", notReady, notReady[0].Name, true, false},
		{"list predates self", notReady, "fleet-new-pod", true, false},
		{"self not ready either", notReady, notReady[0].Name, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Members
			if err := m.Update(statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: 1, Members: tc.list}, time.Now()); err != nil {
				t.Fatal(err)
			}
			selfReady = tc.ready
			r := &Router{Self: tc.self, Members: &m, Local: func(string) int { return 0 }, SelfReady: func() bool { return selfReady }}
			for i := 0; i < 50; i++ {
				addr, err := r.Route(t.Context(), fmt.Sprintf("room-%d", i))
				if tc.wantErr {
					if !errors.Is(err, ErrNoOwner) {
						t.Fatalf("room-%d: %q %v, want ErrNoOwner", i, addr, err)
					}
					continue
				}
				if err != nil || addr != "" {
					t.Fatalf("room-%d: routed to %q (%v), want this pod", i, addr, err)
				}
			}
		})
	}
	// With another ready member, rooms it ranks first still go to it.
	list := members(2)
	list[0].Ready = false
	var m Members
	if err := m.Update(statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: 1, Members: list}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := &Router{Self: list[0].Name, Members: &m, Local: func(string) int { return 0 }, SelfReady: func() bool { return true }}
	remote := 0
	for i := 0; i < 200; i++ {
		room := fmt.Sprintf("room-%d", i)
		want, _ := Owner(room, members(2))
		addr, err := r.Route(t.Context(), room)
		if err != nil {
			t.Fatal(err)
		}
		if (want.Name == list[0].Name) != (addr == "") {
			t.Fatalf("%s: routed to %q, owner %s", room, addr, want.Name)
		}
		if addr != "" {
			remote++
		}
	}
	if remote == 0 || remote == 200 {
		t.Fatalf("%d of 200 rooms remote: the ranking is not shared", remote)
	}
}

// TestRelayPods: the pods that may relay a room are the ready,
// non-draining members but the owner, this pod first when it can take
// sessions, the others in the room's rank order.
func TestRelayPods(t *testing.T) {
	ms := members(6)
	ms[2].Draining = true
	ms[3].Ready = false
	var list Members
	if err := list.Update(statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: 1, Members: ms}, time.Now()); err != nil {
		t.Fatal(err)
	}
	const room = "webinar"
	owner := ms[0].Name
	for _, selfReady := range []bool{true, false} {
		r := &Router{Self: ms[5].Name, Members: &list, SelfReady: func() bool { return selfReady }}
		got := r.RelayPods(room, owner)
		var names []string
		for _, m := range got {
			names = append(names, m.Name)
			if m.Name == owner || m.Name == ms[2].Name || m.Name == ms[3].Name {
				t.Errorf("self ready %v: %s offered as a relay (owner, draining or not ready)", selfReady, m.Name)
			}
		}
		if selfReady && (len(got) != 3 || got[0].Name != ms[5].Name) {
			t.Errorf("self ready: relays %v, want this pod first, then the two others", names)
		}
		if !selfReady && len(got) != 2 {
			t.Errorf("self full: relays %v, want the two other ready pods", names)
		}
		var rest []statusapi.Member
		for _, m := range got {
			if m.Name != ms[5].Name {
				rest = append(rest, m)
			}
		}
		if ranked := Rank(room, rest); len(ranked) == 2 && (ranked[0].Name != rest[0].Name || ranked[1].Name != rest[1].Name) {
			t.Errorf("relays not in the room's rank order: %v", names)
		}
	}
}
