package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/signal"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

type member struct {
	name string
	p    *mediaproc.Proc
}

// fleetToken is the admin token the three pods share, as the operator's
// Secret gives it to a MediaService's pods.
const fleetToken = "test-fleet-admin-token-0123456789abcdef"

func (m member) status(t *testing.T) statusapi.Report {
	t.Helper()
	c := statusapi.Client{Token: fleetToken}
	r, err := c.Report(context.Background(), m.p.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// threePods starts three real mediaservers and gives them one member list,
// as the operator would.
func threePods(t *testing.T, env ...string) ([]member, statusapi.Membership) {
	t.Helper()
	var ms []member
	list := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: time.Now().UnixNano()}
	for _, name := range []string{"pod-a", "pod-b", "pod-c"} {
		p := start(t, append([]string{"POD_NAME=" + name, "ADMIN_TOKEN=" + fleetToken}, env...)...)
		ms = append(ms, member{name, p})
		list.Members = append(list.Members, statusapi.Member{Name: name, Address: strings.TrimPrefix(p.URL, "http://"),
			AdminAddress: strings.TrimPrefix(p.AdminURL, "http://"), Ready: true})
	}
	c := statusapi.Client{Token: fleetToken}
	for _, m := range ms {
		if err := c.PutMembership(context.Background(), m.p.AdminURL, list); err != nil {
			t.Fatalf("deliver membership to %s: %v", m.name, err)
		}
	}
	return ms, list
}

// roomOwnedBy finds a room name whose owner is the given member.
func roomOwnedBy(list statusapi.Membership, owner, prefix string) string {
	for i := 0; ; i++ {
		room := prefix + strconv.Itoa(i)
		if o, _ := fleet.Owner(room, list.Members); o.Name == owner {
			return room
		}
	}
}

// TestFleetRoomMeetsOnItsOwner: a WHIP publisher signalling to pod A and a
// WHEP viewer signalling to pod B of a room owned by pod C both end up on C,
// and the viewer receives the RTP; trickle and DELETE reach C through any
// pod. A three-party WebSocket room whose participants connect to three
// different pods sees all tracks. Killing the owner gives clean 503s, not
// split rooms.
func TestFleetRoomMeetsOnItsOwner(t *testing.T) {
	pods, list := threePods(t)
	a, b, c := pods[0], pods[1], pods[2]
	room := roomOwnedBy(list, c.name, "stage-")
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	pub, err := client.Publish(ctx, a.p.URL, room, opts)
	if err != nil {
		t.Fatalf("publish through pod A: %v", err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(200, 500)
	view, err := client.Play(ctx, b.p.URL, room, opts)
	if err != nil {
		t.Fatalf("play through pod B: %v", err)
	}
	defer view.Close()
	deadline := time.Now().Add(20 * time.Second)
	for view.Received.Packets.Load() < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("viewer received %d packets", view.Received.Packets.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if sa, sb, sc := a.status(t).Sessions.Active, b.status(t).Sessions.Active, c.status(t).Sessions.Active; sa != 0 || sb != 0 || sc != 2 {
		t.Errorf("sessions a=%d b=%d c=%d, want both on the owner c", sa, sb, sc)
	}
	// Media flows straight to the owner: its answer carries C's candidates.
	if !strings.Contains(view.Answer, "typ host") {
		t.Errorf("answer without host candidates")
	}
	// Trickle through pod B reaches the session on C.
	frag := signal.FormatTrickleFrag("", "", "0", []string{"candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host"})
	if code, body, err := pub.Patch(ctx, frag); err != nil || code != http.StatusNoContent {
		t.Errorf("PATCH through the publisher's URL: %d %s %v", code, body, err)
	}
	// DELETE through pod B's URL for the resource created through pod A.
	res := strings.Replace(pub.Resource, a.p.URL, b.p.URL, 1)
	req, _ := http.NewRequest("DELETE", res, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE through another pod: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	// WebSocket room: three participants, three pods, one room on its owner.
	wsRoom := roomOwnedBy(list, b.name, "party-")
	var parts []*client.Participant
	for _, m := range pods {
		p, err := client.Join(ctx, "ws"+strings.TrimPrefix(m.p.URL, "http")+"/ws", wsRoom, true, opts)
		if err != nil {
			t.Fatalf("join through %s: %v", m.name, err)
		}
		defer p.Close()
		if err := client.WaitConnected(ctx, p.PC); err != nil {
			t.Fatalf("participant via %s: %v", m.name, err)
		}
		p.SendRTP(100, 300)
		parts = append(parts, p)
	}
	for i, p := range parts {
		deadline := time.Now().Add(30 * time.Second)
		for p.Received.Tracks.Load() < 2 || p.Received.Packets.Load() < 100 {
			if time.Now().After(deadline) {
				t.Fatalf("participant %d got %d tracks, %d packets", i, p.Received.Tracks.Load(), p.Received.Packets.Load())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := b.status(t).Sessions.Active; n < 3 {
		t.Errorf("owner b holds %d sessions, want the room's 3", n)
	}

	// A client cannot switch routing off: the forwarding header without the
	// pods' token (or with a wrong one) is ignored, the room still meets
	// on its owner B, never split onto A.
	before, beforeB := a.status(t).Sessions.Active, b.status(t).Sessions.Active
	forged := opts
	forged.Header = http.Header{statusapi.ForwardedByHeader: {"pod-x"}, statusapi.PodTokenHeader: {"guess"}}
	f, err := client.Publish(ctx, a.p.URL, roomOwnedBy(list, b.name, "forged-"), forged)
	if err != nil {
		t.Fatalf("publish with a forged forwarding header: %v", err)
	}
	defer f.Close()
	if na, nb := a.status(t).Sessions.Active, b.status(t).Sessions.Active; na != before || nb != beforeB+1 {
		t.Errorf("forged forwarding header: sessions a %d→%d, b %d→%d; want the room on its owner b", before, na, beforeB, nb)
	}
	// A request another pod forwarded (with the token) is never forwarded
	// again (no loop can form): pod A serves it even though B owns the room.
	loopOpts := opts
	loopOpts.Header = http.Header{statusapi.ForwardedByHeader: {"pod-x"}, statusapi.PodTokenHeader: {fleetToken}}
	guarded, err := client.Publish(ctx, a.p.URL, roomOwnedBy(list, b.name, "loop-"), loopOpts)
	if err != nil {
		t.Fatalf("forwarded-marked publish: %v", err)
	}
	defer guarded.Close()
	if n := a.status(t).Sessions.Active; n != before+1 {
		t.Errorf("pod A has %d sessions after a forwarded request, want %d (served locally, not forwarded again)", n, before+1)
	}

	// The owner of a room dies: pods answer 503 + Retry-After instead of
	// opening the room elsewhere.
	_ = c.p.Cmd.Process.Kill()
	<-c.p.Exited()
	_, err = client.Publish(ctx, a.p.URL, room, opts)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.RetryAfter == "" {
		t.Fatalf("publish to a room whose owner is gone: %v, want 503 with Retry-After", err)
	}
	if n := a.status(t).Sessions.Active; n != before+1 {
		t.Errorf("pod A opened a session for a room it does not own (%d sessions)", n)
	}
	fmt.Println("owner down:", he.Body)
}
