package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// TestRelayPodKilled: three real processes of four sessions each; a
// publisher and nine viewers of a room pod-b owns, all through pod-a:
// pod-b holds the publisher and three viewers, pod-a four viewers as a
// relay, pod-c two. pod-c is SIGKILLed: its viewers lose their
// connection (nobody is left to tell them: ICE consent fails), the
// others keep receiving without a gap of a keyframe interval (2 s), a
// WebSocket participant relayed there through pod-a is told at once
// (closed, pod-gone), the owner's link to
// pod-c goes, and the room goes on: a new viewer through pod-a gets media.
func TestRelayPodKilled(t *testing.T) {
	pods, list := threePods(t, "MAX_SESSIONS=4")
	a, b, c := pods[0], pods[1], pods[2]
	room := roomOwnedBy(list, b.name, "cast-")
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub, err := client.Publish(ctx, a.p.URL, room, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 500)
	var viewers []*client.Session
	onC := map[*client.Session]bool{}
	for i := 0; i < 9; i++ {
		v, err := client.Play(ctx, a.p.URL, room, opts)
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		defer v.Close()
		viewers = append(viewers, v)
		id := v.Resource[strings.LastIndexByte(v.Resource, '/')+1:]
		onC[v] = fleet.SessionPod(id) == c.name
	}
	for i, v := range viewers {
		poll(t, 20*time.Second, fmt.Sprintf("viewer %d receiving", i), func() bool { return v.Received.Packets.Load() >= 100 })
	}
	// A WebSocket participant through pod-a lands on pod-c too (pod-a
	// relays its connection there).
	part, err := client.Join(ctx, "ws"+strings.TrimPrefix(a.p.URL, "http")+"/ws", room, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	poll(t, 20*time.Second, "the participant receiving", func() bool { return part.Received.Packets.Load() >= 100 })
	sessions := func(m member) int { return m.status(t).Sessions.Active }
	if sa, sb, sc := sessions(a), sessions(b), sessions(c); sa != 4 || sb != 4 || sc != 3 {
		t.Fatalf("sessions a=%d b=%d c=%d, want 4, 4 (publisher and 3 viewers), 3 (2 viewers, the participant)", sa, sb, sc)
	}
	if n := len(onC); n != 9 {
		t.Fatalf("%d viewers", n)
	}
	for _, v := range viewers {
		v.Received.ResetMaxGap()
	}
	if err := c.p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-c.p.Exited()
	for i, v := range viewers {
		if !onC[v] {
			continue
		}
		poll(t, 40*time.Second, fmt.Sprintf("viewer %d of the killed pod losing its connection", i), func() bool {
			s := v.PC.ICEConnectionState()
			return s == webrtc.ICEConnectionStateDisconnected || s == webrtc.ICEConnectionStateFailed
		})
	}
	t.Logf("the killed pod's viewers disconnected %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	// The participant hears it at once from the pod it connected through.
	poll(t, 10*time.Second, "the participant told its pod is gone", func() bool {
		for {
			select {
			case m := <-part.Events:
				if m.Type == "closed" {
					if m.Reason != "pod-gone" {
						t.Errorf("closed with reason %q, want pod-gone", m.Reason)
					}
					return true
				}
			default:
				return false
			}
		}
	})
	before := map[*client.Session]uint64{}
	for _, v := range viewers {
		before[v] = v.Received.Packets.Load()
	}
	for i, v := range viewers {
		if onC[v] {
			continue
		}
		poll(t, 10*time.Second, fmt.Sprintf("viewer %d still receiving", i), func() bool { return v.Received.Packets.Load() >= before[v]+200 })
		if g := v.Received.MaxGap(); g > 2*time.Second { // a keyframe interval (OBS's default)
			t.Errorf("viewer %d (not on the killed pod): a gap of %s in its media across the kill", i, g)
		}
	}
	poll(t, 30*time.Second, "the owner's link to the killed pod gone", func() bool {
		for _, r := range b.status(t).Rooms {
			if r.Name == room {
				return r.Role == statusapi.RoomOwner && r.Links == 1
			}
		}
		return false
	})
	// One viewer of pod-a leaves; a new one takes its place on pod-a.
	for _, v := range viewers {
		if id := v.Resource[strings.LastIndexByte(v.Resource, '/')+1:]; fleet.SessionPod(id) == a.name {
			if code, err := v.Delete(ctx); err != nil || code != http.StatusOK {
				t.Fatalf("DELETE a viewer of pod-a: %d %v", code, err)
			}
			break
		}
	}
	late, err := client.Play(ctx, a.p.URL, room, opts)
	if err != nil {
		t.Fatalf("a new viewer after the kill: %v", err)
	}
	defer late.Close()
	poll(t, 20*time.Second, "the new viewer receiving", func() bool { return late.Received.Packets.Load() >= 100 })
}
