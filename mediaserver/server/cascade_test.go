package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// podsOf starts n loopback servers of one fleet (pod-a, pod-b, ...) and
// gives them a member list, as the operator would.
func podsOf(t *testing.T, n int, mut func(*config.Config)) ([]*Server, statusapi.Membership) {
	t.Helper()
	list := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: time.Now().UnixNano()}
	var pods []*Server
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("pod-%c", 'a'+i)
		s := testServer(t, func(c *config.Config) {
			c.PodName, c.AdminToken = name, testAdminToken
			if mut != nil {
				mut(c)
			}
		})
		pods = append(pods, s)
		list.Members = append(list.Members, statusapi.Member{Name: name, Address: strings.TrimPrefix(s.PublicURL(), "http://"),
			AdminAddress: strings.TrimPrefix(s.AdminURL(), "http://"), Ready: true})
	}
	c := statusapi.Client{Token: testAdminToken}
	for _, s := range pods {
		if err := c.PutMembership(context.Background(), s.AdminURL(), list); err != nil {
			t.Fatalf("membership: %v", err)
		}
	}
	return pods, list
}

// publishSynthetic publishes synthetic media (pps 500-byte packets a
// second) into room through s until the test ends.
func publishSynthetic(t *testing.T, ctx context.Context, s *Server, room string, opts client.Options, pps int) *client.Session {
	t.Helper()
	pub, err := client.Publish(ctx, s.PublicURL(), room, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	pub.SendRTP(pps, 500)
	return pub
}

// publishBroadcast publishes synthetic media into a broadcast room (WHIP
// ?mode=broadcast) through s until the test ends.
func publishBroadcast(t *testing.T, ctx context.Context, s *Server, room string, opts client.Options) *client.Session {
	t.Helper()
	opts.Query = url.Values{"mode": {"broadcast"}}
	return publishSynthetic(t, ctx, s, room, opts, 100)
}

// linksOf is what a pod says of its relay links for room.
func linksOf(s *Server, room string) rtc.RoomStat {
	for _, l := range s.Engine().RoomStats(0) {
		if l.Room == room && (l.Role == "relay" || l.Links > 0) {
			return l
		}
	}
	return rtc.RoomStat{}
}

// TestCascadedRoomOverThreePods: three pods of 10 sessions each; one
// simulcast publisher and 25 WHEP viewers, all through pod-a's URL, of a
// room pod-b owns. pod-b takes viewers until it is full, then pod-a
// serves them as a relay, then pod-c: every viewer gets media (VP8
// keyframes on the top layer), no pod holds more than 10 sessions, and the
// owner holds one relay link per relay pod, not one per viewer. Each
// viewer's DELETE, sent to pod-a, reaches the pod that serves it; when the
// last viewer of a relay pod leaves, its link closes.
func TestCascadedRoomOverThreePods(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 3, func(c *config.Config) { c.MaxSessions = 10 })
	a, b, c := pods[0], pods[1], pods[2]
	room := roomOf(list, "pod-b", "webinar-")
	ctx := ctxT(t, 3*time.Minute)
	opts := clientOpts(t)
	publishSimulcast(t, ctx, a, room, opts)
	waitFor(t, 10*time.Second, "the publisher on the owner", sessionsAre(b, 1))

	var viewers []*client.Session
	for i := 0; i < 25; i++ {
		v := playWhenPublished(t, ctx, a, room, opts)
		viewers = append(viewers, v)
	}
	for i, v := range viewers {
		waitFor(t, 30*time.Second, fmt.Sprintf("viewer %d decoding", i), func() error {
			if k, p := v.Received.Keyframes.Load(), v.Received.Packets.Load(); k < 1 || p < 50 {
				return fmt.Errorf("%d keyframes, %d packets", k, p)
			}
			return nil
		})
	}
	got := map[string]int{}
	for _, s := range pods {
		n := s.Engine().SessionCount()
		got[s.cfg.PodName] = n
		if n > 10 {
			t.Errorf("%s holds %d sessions, over its limit of 10", s.cfg.PodName, n)
		}
	}
	if got["pod-a"]+got["pod-b"]+got["pod-c"] != 26 || got["pod-b"] != 10 || got["pod-a"] != 10 || got["pod-c"] != 6 {
		t.Errorf("sessions per pod %v, want pod-b 10 (publisher and 9 viewers), pod-a 10, pod-c 6", got)
	}
	if l := linksOf(b, room); l.Role != "owner" || l.Links != 2 {
		t.Errorf("owner's links: %+v, want one per relay pod (2)", l)
	}
	for _, s := range []*Server{a, c} {
		if l := linksOf(s, room); l.Role != "relay" || l.Owner != "pod-b" || l.Links != 1 {
			t.Errorf("%s: %+v, want one link to pod-b", s.cfg.PodName, l)
		}
	}
	// Relayed viewers get the top layer, picked on the relay pod.
	for _, v := range viewers {
		id := v.Resource[strings.LastIndexByte(v.Resource, '/')+1:]
		for _, s := range []*Server{a, c} {
			if sess, ok := s.Engine().Session(id); ok {
				waitFor(t, 20*time.Second, "a relayed viewer on the top layer", func() error {
					for _, l := range sess.Layers() {
						if l == "f" {
							return nil
						}
					}
					return fmt.Errorf("layers %v", sess.Layers())
				})
			}
		}
	}
	t.Logf("sessions per pod %v; owner links %+v; relayed packets %v", got, linksOf(b, room), nackCountsOf(t, b, "media_relay_link_packets_total"))
	if h := scrape(t, a)["media_relay_link_delay_seconds"].GetMetric(); len(h) != 1 || h[0].GetHistogram().GetSampleCount() < 10 || h[0].GetHistogram().GetSampleSum()/float64(h[0].GetHistogram().GetSampleCount()) > 0.1 {
		t.Errorf("media_relay_link_delay_seconds on a relay pod: %v", h)
	}
	if n := nackCountsOf(t, b, "media_relay_link_packets_total"); n < 100 {
		t.Errorf("media_relay_link_packets_total on the owner = %v", n)
	}
	// Every viewer leaves through pod-a's URL.
	for i, v := range viewers {
		if code, _, body := do(t, http.MethodDelete, a.PublicURL()+v.Resource[strings.Index(v.Resource, "/whep/"):], "", "", nil); code != http.StatusOK {
			t.Errorf("DELETE viewer %d (%s) through pod-a: %d %s", i, v.Resource, code, body)
		}
	}
	for _, s := range []*Server{a, c} {
		waitFor(t, 10*time.Second, s.cfg.PodName+" empty, its link closed", func() error {
			if n := s.Engine().SessionCount(); n != 0 {
				return fmt.Errorf("%d sessions", n)
			}
			if l := linksOf(s, room); l.Role != "" {
				return fmt.Errorf("link %+v", l)
			}
			return nil
		})
	}
	waitFor(t, 10*time.Second, "the owner without links", func() error {
		if l := linksOf(b, room); l.Links != 0 {
			return fmt.Errorf("%+v", l)
		}
		return nil
	})
}

// TestCascadedWebSocketRoom: pods of one session each, three WebSocket
// participants of a room pod-b owns, all joining through pod-a's URL: the
// first lands on the owner, which is then full, the second on pod-a as a
// relay, the third on pod-c. Each publishes, and each receives the two
// others: feeds published on a relay pod go up its link to the owner and
// down the other link.
func TestCascadedWebSocketRoom(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 3, func(c *config.Config) { c.MaxSessions = 1 })
	room := roomOf(list, "pod-b", "huddle-")
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	wsURL := "ws" + strings.TrimPrefix(pods[0].PublicURL(), "http") + "/ws"
	var ps []*client.Participant
	for i := range pods {
		p, err := client.Join(ctx, wsURL, room, true, opts)
		if err != nil {
			t.Fatalf("participant %d: %v", i, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		p.SendRTP(50, 400)
		ps = append(ps, p)
	}
	for _, s := range pods {
		if n := s.Engine().SessionCount(); n != 1 {
			t.Errorf("%s holds %d sessions, want 1", s.cfg.PodName, n)
		}
	}
	for i, p := range ps {
		waitFor(t, 30*time.Second, fmt.Sprintf("participant %d receiving both others", i), func() error {
			if tr, n := p.Received.Tracks.Load(), p.Received.Packets.Load(); tr < 2 || n < 100 {
				return fmt.Errorf("%d tracks, %d packets", tr, n)
			}
			return nil
		})
		if tr := p.Received.Tracks.Load(); tr != 2 {
			t.Errorf("participant %d receives %d tracks, want 2 (no duplicate, not its own)", i, tr)
		}
	}
	if l := linksOf(pods[1], room); l.Role != "owner" || l.Links != 2 {
		t.Errorf("owner's links: %+v", l)
	}
}

// TestBroadcastRoomViewersOnRelays: a publisher marks its room a broadcast
// (WHIP ?mode=broadcast); a viewer arriving at another pod is served there
// as a relay although the owner has room. A bad mode is refused.
func TestBroadcastRoomViewersOnRelays(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 2, nil)
	a, b := pods[0], pods[1]
	room := roomOf(list, "pod-b", "keynote-")
	if code, _, body := do(t, http.MethodPost, a.PublicURL()+"/whip/"+room+"?mode=meeting", "application/sdp", pionOffer(t), nil); code != http.StatusBadRequest {
		t.Errorf("mode=meeting: %d %s", code, body)
	}
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	publishBroadcast(t, ctx, a, room, opts)
	waitFor(t, 10*time.Second, "the publisher on the owner", sessionsAre(b, 1))
	v := playWhenPublished(t, ctx, a, room, opts)
	waitFor(t, 20*time.Second, "the viewer receiving", func() error {
		if n := v.Received.Packets.Load(); n < 100 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})
	if na, nb := a.Engine().SessionCount(), b.Engine().SessionCount(); na != 1 || nb != 1 {
		t.Errorf("sessions a=%d b=%d: the broadcast's viewer should be on pod-a", na, nb)
	}
	if r := getStatus(t, a).Rooms; len(r) != 1 || r[0].Role != statusapi.RoomRelay || r[0].Owner != "pod-b" || r[0].Members != 1 || r[0].LinkState != "connected" {
		t.Errorf("pod-a /status rooms %+v", r)
	}
	if r := getStatus(t, b).Rooms; len(r) != 1 || r[0].Role != statusapi.RoomOwner || r[0].Links != 1 || r[0].Members != 1 {
		t.Errorf("pod-b /status rooms %+v", r)
	}
}

// TestBroadcastRoomsBySpec: rooms named in BROADCAST_ROOMS (the
// MediaService's spec.rooms.broadcast) are broadcasts without the
// publisher asking; other rooms are not.
func TestBroadcastRoomsBySpec(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 2, func(c *config.Config) { c.BroadcastRooms = []string{"town-hall-*"} })
	a, b := pods[0], pods[1]
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	for _, tc := range []struct {
		prefix  string
		relayed bool
	}{{"town-hall-", true}, {"meeting-", false}} {
		room := roomOf(list, "pod-b", tc.prefix)
		publishSynthetic(t, ctx, b, room, opts, 100)
		before := a.Engine().SessionCount()
		v := playWhenPublished(t, ctx, a, room, opts)
		waitFor(t, 20*time.Second, "the viewer of "+room+" receiving", func() error {
			if n := v.Received.Packets.Load(); n < 50 {
				return fmt.Errorf("%d packets", n)
			}
			return nil
		})
		if relayed := a.Engine().SessionCount() > before; relayed != tc.relayed {
			t.Errorf("room %s: viewer served by pod-a as a relay: %v, want %v", room, relayed, tc.relayed)
		}
	}
}

// TestRelayLinksRefuseStrangers: the owner's link endpoint wants the admin
// token and a room owned there; the relay header means nothing without the
// pod token; a session id naming an unknown pod is not found.
func TestRelayLinksRefuseStrangers(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 2, nil)
	a, b := pods[0], pods[1]
	room := roomOf(list, "pod-b", "guarded-")
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	publishSynthetic(t, ctx, b, room, opts, 50)
	upgrade := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	if code, _, body := do(t, http.MethodGet, b.AdminURL()+fleet.LinkPath+room, "", "", upgrade); code != http.StatusUnauthorized {
		t.Errorf("link without the token: %d %s", code, body)
	}
	upgrade["Authorization"] = "Bearer " + testAdminToken
	if code, _, body := do(t, http.MethodGet, b.AdminURL()+fleet.LinkPath+"not-here", "", "", upgrade); code != http.StatusNotFound {
		t.Errorf("link of a room not owned there: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodGet, a.AdminURL()+fleet.LinkPath+room, "", "", upgrade); code != http.StatusNotFound {
		t.Errorf("link from a pod that does not own the room: %d %s", code, body)
	}
	// A client claiming to be a pod asking for relay service is routed as
	// any client: the viewer lands on the owner, which has room.
	forged := opts
	forged.Header = http.Header{fleet.RelayOwnerHeader: {"pod-a"}, statusapi.ForwardedByHeader: {"pod-b"}}
	view, err := client.Play(ctx, a.PublicURL(), room, forged)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = view.Close() })
	if na, nb := a.Engine().SessionCount(), b.Engine().SessionCount(); na != 0 || nb != 2 {
		t.Errorf("sessions a=%d b=%d: a forged relay header took effect", na, nb)
	}
	if code, _, body := do(t, http.MethodDelete, a.PublicURL()+"/whep/"+room+"/pod-x.0123", "", "", nil); code != http.StatusNotFound {
		t.Errorf("DELETE of a session naming no member: %d %s", code, body)
	}
}

// TestRelayLinkHostilePeer: whoever holds the admin token still cannot
// break the owner through a link: a garbage offer, an unknown message, an
// offer asking for more tracks than allowed and an oversized message are
// refused (error messages, then the connection closed for the oversized
// one), and the room keeps serving.
func TestRelayLinkHostilePeer(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 2, nil)
	b := pods[1]
	room := roomOf(list, "pod-b", "target-")
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	publishSynthetic(t, ctx, b, room, opts, 50)
	link, err := (&fleet.Forwarder{Self: "pod-x", Token: testAdminToken}).DialLink(ctx, strings.TrimPrefix(b.AdminURL(), "http://"), room)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	first, err := link.Recv()
	if err != nil || first.Type != "feeds" {
		t.Fatalf("first message %+v %v, want the room's feeds", first, err)
	}
	expectError := func(what string, m rtc.LinkMsg) {
		t.Helper()
		if err := link.Send(m); err != nil {
			t.Fatalf("%s: send: %v", what, err)
		}
		for {
			got, err := link.Recv()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if got.Type == "feeds" {
				continue
			}
			if got.Type != "error" || got.Error == "" {
				t.Fatalf("%s: answered %+v, want an error", what, got)
			}
			return
		}
	}
	expectError("garbage offer", rtc.LinkMsg{Type: "offer", SDP: "v=0 garbage"})
	expectError("unknown message", rtc.LinkMsg{Type: "answer", SDP: "v=0"})
	many := make([]rtc.LinkTrack, 1000)
	expectError("too many tracks", rtc.LinkMsg{Type: "offer", SDP: pionOffer(t), Recv: many})
	if err := link.Send(rtc.LinkMsg{Type: "offer", SDP: strings.Repeat("a", fleet.MaxLinkMessage)}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := link.Recv(); err != nil {
			break // the owner closed the link
		}
	}
	waitFor(t, 10*time.Second, "the owner without the hostile link", func() error {
		if l := linksOf(b, room); l.Links != 0 {
			return fmt.Errorf("%+v", l)
		}
		return nil
	})
	v := playWhenPublished(t, ctx, b, room, opts)
	waitFor(t, 10*time.Second, "the room still serving", func() error {
		if n := v.Received.Packets.Load(); n < 50 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})
}

// TestRelayedViewerAcrossPublishers: a viewer served by a relay pod asks
// for a keyframe and the publisher on the owner gets the request (up the
// link); the publisher leaves and another one publishes into the room: the
// link is renegotiated and the same WHEP viewer (which cannot
// renegotiate) receives the new publisher's media.
func TestRelayedViewerAcrossPublishers(t *testing.T) {
	leakCheckFirst(t)
	pods, list := podsOf(t, 2, nil)
	a, b := pods[0], pods[1]
	room := roomOf(list, "pod-b", "stage-")
	ctx := ctxT(t, time.Minute)
	opts := clientOpts(t)
	first := publishBroadcast(t, ctx, b, room, opts)
	v := playWhenPublished(t, ctx, a, room, opts)
	waitFor(t, 20*time.Second, "the relayed viewer receiving", func() error {
		if n := v.Received.Packets.Load(); n < 100 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})
	if a.Engine().SessionCount() != 1 {
		t.Fatalf("the viewer is not on the relay pod")
	}
	var ssrc uint32
	for _, r := range v.PC.GetReceivers() {
		if tr := r.Track(); tr != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.SSRC())
		}
	}
	before := first.KeyframeRequests.Load()
	waitFor(t, 10*time.Second, "the viewer's keyframe request at the publisher", func() error {
		_ = v.PC.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
		if got := first.KeyframeRequests.Load(); got <= before {
			return fmt.Errorf("%d PLIs at the publisher, %d before", got, before)
		}
		return nil
	})
	if code, err := first.Delete(ctx); err != nil || code != http.StatusOK {
		t.Fatalf("the first publisher's DELETE: %d %v", code, err)
	}
	_ = first.Close()
	waitFor(t, 10*time.Second, "the feeds gone on the relay pod", func() error {
		if l := linksOf(a, room); l.Role != "relay" {
			return fmt.Errorf("link %+v", l)
		}
		if n := nackCountsOf(t, b, "media_relay_link_packets_total"); n == 0 {
			return fmt.Errorf("no packets over the link")
		}
		return nil
	})
	publishSynthetic(t, ctx, b, room, opts, 100)
	n0 := v.Received.Packets.Load()
	waitFor(t, 20*time.Second, "the relayed viewer receiving the second publisher", func() error {
		if n := v.Received.Packets.Load(); n < n0+200 {
			return fmt.Errorf("%d packets since the second publisher", n-n0)
		}
		return nil
	})
}
