package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
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

// linksOf is what a pod says of its relay links for room.
func linksOf(s *Server, room string) rtc.LinkInfo {
	for _, l := range s.Engine().Links() {
		if l.Room == room {
			return l
		}
	}
	return rtc.LinkInfo{}
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
