package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

const benchFleetToken = "bench-fleet-admin-token-0123456789abcdef"

// benchFleet starts mediaserver processes pod-0, pod-1, ... of one fleet
// and delivers them one member list.
func benchFleet(b *testing.B, bin string, n int) ([]*mediaproc.Proc, statusapi.Membership) {
	b.Helper()
	list := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: time.Now().UnixNano()}
	var ps []*mediaproc.Proc
	for i := 0; i < n; i++ {
		name := "pod-" + strconv.Itoa(i)
		p := mediaproc.Start(b, bin, mediaproc.Options{Env: []string{"MAX_SESSIONS=100000", "LOG_LEVEL=error", "POD_NAME=" + name,
			"ADMIN_TOKEN=" + benchFleetToken, "ICE_UDP_MUX_PORT=" + strconv.Itoa(freeUDPPort(b))}})
		ps = append(ps, p)
		list.Members = append(list.Members, statusapi.Member{Name: name, Address: strings.TrimPrefix(p.URL, "http://"),
			AdminAddress: strings.TrimPrefix(p.AdminURL, "http://"), Ready: true})
	}
	c := statusapi.Client{Token: benchFleetToken}
	for _, p := range ps {
		if err := c.PutMembership(context.Background(), p.AdminURL, list); err != nil {
			b.Fatal(err)
		}
	}
	return ps, list
}

// ownedBy is a room name the named pod owns.
func ownedBy(list statusapi.Membership, pod string) string {
	for i := 0; ; i++ {
		room := "cascade-" + strconv.Itoa(i)
		if o, _ := fleet.Owner(room, list.Members); o.Name == pod {
			return room
		}
	}
}

// broadcastPublisher publishes synthetic 1,000-byte VP8 at procPPS into a
// broadcast room through base.
func broadcastPublisher(b *testing.B, ctx context.Context, base, room string, opts client.Options) {
	b.Helper()
	opts.Query = url.Values{"mode": {"broadcast"}}
	pub, err := client.Publish(ctx, base, room, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		b.Fatal(err)
	}
	pub.SendRTP(procPPS, procPayload)
}

// BenchmarkCascadeProcess measures cascading rooms with mediaservers in
// their own processes on loopback and the clients in this one:
//
//   - latency: one publisher, a viewer on the owner and a viewer on a relay
//     pod; the same video packets (the relay keeps their sequence numbers)
//     arrive at both; the relayed path's added delay is the difference of
//     their arrival times, p50 and p99 over 10 s at 200 packets/s;
//
//   - owner CPU: one publisher and K = 4 direct viewers, against one
//     publisher and 4 relay pods (4 links) with 10 viewers each; with the
//     publisher alone as baseline, the owner's CPU per direct viewer and
//     per relay link (from /proc/<pid>/stat).
//
//     go test -run '^$' -bench CascadeProcess -benchtime 1x -timeout 20m ./mediaserver/bench/
func BenchmarkCascadeProcess(b *testing.B) {
	bin := mediaproc.Binary(b, mediaproc.Build{})
	b.Run("added-latency", func(b *testing.B) { cascadeLatency(b, bin) })
	b.Run("owner-cpu", func(b *testing.B) { cascadeOwnerCPU(b, bin) })
}

func cascadeLatency(b *testing.B, bin string) {
	ps, list := benchFleet(b, bin, 2)
	owner, relay := ps[0], ps[1]
	room := ownedBy(list, "pod-0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api, err := client.NewAPI()
	if err != nil {
		b.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}}
	broadcastPublisher(b, ctx, owner.URL, room, opts)
	var direct, relayed [1 << 16]atomic.Int64
	var recording atomic.Bool
	play := func(base string, at *[1 << 16]atomic.Int64) *client.Session {
		o := opts
		o.OnRTP = func(kind webrtc.RTPCodecType, h *rtp.Header, t time.Time) {
			if kind == webrtc.RTPCodecTypeVideo && recording.Load() {
				at[h.SequenceNumber].Store(t.UnixNano())
			}
		}
		v, err := client.Play(ctx, base, room, o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = v.Close() })
		return v
	}
	dv := play(owner.URL, &direct) // the owner serves its own broadcast's viewers that reach it
	rv := play(relay.URL, &relayed)
	for _, v := range []*client.Session{dv, rv} {
		if err := waitUntil(ctx, func() bool { return v.Received.Packets.Load() > 200 }); err != nil {
			b.Fatal("no media: ", err)
		}
	}
	if r, _ := (&statusapi.Client{Token: benchFleetToken}).Report(ctx, relay.AdminURL); len(r.Rooms) != 1 || r.Rooms[0].Role != statusapi.RoomRelay {
		b.Fatalf("the second viewer is not relayed: %+v", r.Rooms)
	}
	b.ResetTimer()
	recording.Store(true)
	time.Sleep(procWindow) // the measured window
	recording.Store(false)
	// A packet of the window's end seen by one viewer only is left out.
	var deltas []time.Duration
	for i := range direct {
		d, r := direct[i].Load(), relayed[i].Load()
		if d != 0 && r != 0 && r-d > -int64(time.Second) && r-d < int64(time.Second) {
			deltas = append(deltas, time.Duration(r-d))
		}
	}
	if len(deltas) < 100 {
		b.Fatalf("only %d packets seen by both viewers", len(deltas))
	}
	sort.Slice(deltas, func(i, j int) bool { return deltas[i] < deltas[j] })
	p50, p99 := deltas[len(deltas)/2], deltas[len(deltas)*99/100]
	b.ReportMetric(float64(p50.Microseconds()), "added-p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "added-p99-µs")
	b.ReportMetric(float64(len(deltas)), "packets")
	b.Logf("relayed path vs direct, %d video packets: added p50 %s, p99 %s", len(deltas), p50, p99)
}

func cascadeOwnerCPU(b *testing.B, bin string) {
	const links, perRelay = 4, 10
	api, err := client.NewAPI()
	if err != nil {
		b.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}}
	// ownerCPU runs one shape on a fresh fleet and returns the owner's
	// CPU per second of the window.
	ownerCPU := func(shape string, relays, viewersOnOwner int) float64 {
		ps, list := benchFleet(b, bin, 1+relays)
		owner := ps[0]
		room := ownedBy(list, "pod-0")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		broadcastPublisher(b, ctx, owner.URL, room, opts)
		var views []*client.Session
		for i := 0; i < viewersOnOwner; i++ {
			v, err := client.Play(ctx, owner.URL, room, opts)
			if err != nil {
				b.Fatal(err)
			}
			views = append(views, v)
		}
		for _, r := range ps[1:] {
			for i := 0; i < perRelay; i++ {
				v, err := client.Play(ctx, r.URL, room, opts)
				if err != nil {
					b.Fatal(err)
				}
				views = append(views, v)
			}
		}
		defer func() {
			for _, v := range views {
				_ = v.Close()
			}
		}()
		for _, v := range views {
			if err := waitUntil(ctx, func() bool { return v.Received.Packets.Load() > 100 }); err != nil {
				b.Fatalf("%s: a viewer without media: %v", shape, err)
			}
		}
		pid := owner.Cmd.Process.Pid
		c0, _ := procCPU(b, pid)
		t0 := time.Now()
		time.Sleep(procWindow) // the measured window
		c1, _ := procCPU(b, pid)
		perSec := (c1 - c0).Seconds() / time.Since(t0).Seconds()
		b.Logf("%s: owner %.3f cores", shape, perSec)
		return perSec
	}
	base := ownerCPU("publisher alone", 0, 0)
	direct := ownerCPU(fmt.Sprintf("%d direct viewers", links), 0, links)
	relayed := ownerCPU(fmt.Sprintf("%d relay links (%d viewers each)", links, perRelay), links, 0)
	perViewer := (direct - base) / links * 1000
	perLink := (relayed - base) / links * 1000
	b.ReportMetric(perViewer, "owner-mcores/viewer")
	b.ReportMetric(perLink, "owner-mcores/link")
	b.Logf("owner CPU: %.1f millicores per direct viewer, %.1f per relay link (carrying %d viewers); publisher alone %.1f",
		perViewer, perLink, perRelay, base*1000)
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
