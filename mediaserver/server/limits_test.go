package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/signal"
)

func TestPortRangeMode(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.ICEPortMin, c.ICEPortMax = 42100, 42109 })
	opts := clientOpts(t)
	ctx := ctxT(t, 20*time.Second)
	for i := 0; i < 3; i++ {
		pub, err := client.Publish(ctx, s.PublicURL(), fmt.Sprintf("range-%d", i), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		ports := hostCandidatePorts(pub.Answer)
		if len(ports) == 0 {
			t.Fatalf("answer has no host candidate:\n%s", pub.Answer)
		}
		for _, p := range ports {
			if p < 42100 || p > 42109 {
				t.Errorf("candidate port %d outside ICE_PORT_MIN..MAX 42100..42109", p)
			}
		}
		if err := client.WaitConnected(ctx, pub.PC); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUDPMuxMode(t *testing.T) {
	leakCheckFirst(t)
	port := freeUDPPort(t)
	s := testServer(t, func(c *config.Config) { c.UDPMuxPort = port })
	opts := clientOpts(t)
	ctx := ctxT(t, 20*time.Second)
	seen := map[int]bool{}
	for i := 0; i < 3; i++ {
		pub, err := client.Publish(ctx, s.PublicURL(), fmt.Sprintf("mux-%d", i), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		for _, p := range hostCandidatePorts(pub.Answer) {
			seen[p] = true
		}
		if err := client.WaitConnected(ctx, pub.PC); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 1 || !seen[port] {
		t.Errorf("candidate ports %v, want only the mux port %d for every session", seen, port)
	}
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestTrickleICEAndCandidateLimit(t *testing.T) {
	leakCheckFirst(t)
	// The offer's own candidates (the client's loopback ones) count toward
	// the limit too: with 5, two trickled fit and three more do not.
	s := testServer(t, func(c *config.Config) { c.MaxICECandidates = 5 })
	opts := clientOpts(t)
	ctx := ctxT(t, 20*time.Second)
	pub, err := client.Publish(ctx, s.PublicURL(), "trickle", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if own := strings.Count(pub.PC.LocalDescription().SDP, "a=candidate:"); own < 1 || own > 3 {
		t.Fatalf("the offer carries %d candidates; the test needs 1 to 3", own)
	}
	mid := "0"
	cand := func(port int) string {
		return fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", port, port)
	}
	frag := signal.FormatTrickleFrag("", "", mid, []string{cand(40001), cand(40002)})
	if code, body, err := pub.Patch(ctx, frag); err != nil || code != http.StatusNoContent {
		t.Fatalf("trickle PATCH = %d %q %v, want 204", code, body, err)
	}
	frag = signal.FormatTrickleFrag("", "", mid, []string{cand(40003), cand(40004), cand(40005)})
	code, body, err := pub.Patch(ctx, frag)
	if err != nil || code != http.StatusUnprocessableEntity || !strings.Contains(body, "ICE candidate limit reached: at most 5 candidates per session") {
		t.Fatalf("over-limit PATCH = %d %q %v, want 422 naming the limit", code, body, err)
	}
	// The session stays usable: it still connects and carries media.
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 200)
	var view *client.Session
	waitFor(t, 10*time.Second, "the feed appears (first RTP packet)", func() error {
		view, err = client.Play(ctx, s.PublicURL(), "trickle", opts)
		return err
	})
	defer view.Close()
	waitFor(t, 10*time.Second, "media after refused candidates", func() error {
		if view.Received.Packets.Load() < 20 {
			return errors.New("no media")
		}
		return nil
	})
	// A different ufrag is an ICE restart, which is refused.
	code, body, _ = pub.Patch(ctx, signal.FormatTrickleFrag("other", "pwdpwdpwdpwdpwdpwdpwdpwd", mid, nil))
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "ICE restart is not supported") {
		t.Errorf("ICE restart PATCH = %d %q", code, body)
	}
}

func TestSessionLimit(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.MaxSessions = 1 })
	opts := clientOpts(t)
	ctx := ctxT(t, 20*time.Second)
	first, err := client.Publish(ctx, s.PublicURL(), "full", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = client.Publish(ctx, s.PublicURL(), "full", opts)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.RetryAfter == "" || !strings.Contains(he.Body, "session limit reached (1 per pod)") {
		t.Fatalf("second publish: %v, want 503 with Retry-After", err)
	}
	if code, _, body := do(t, "GET", s.AdminURL()+"/readyz", "", "", nil); code != 503 || !strings.Contains(body, "capacity") {
		t.Errorf("readyz at capacity = %d %q", code, body)
	}
	// The first session is undisturbed.
	if err := client.WaitConnected(ctx, first.PC); err != nil {
		t.Fatal(err)
	}
	if n := s.Engine().SessionCount(); n != 1 {
		t.Errorf("%d sessions after refusal, want 1", n)
	}
}

func TestTokenAndOrigin(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) {
		c.AuthToken = "s3cret"
		c.AllowedOrigins = []string{"https://app.example.test"}
	})
	opts := clientOpts(t)
	ctx := ctxT(t, 20*time.Second)

	_, err := client.Publish(ctx, s.PublicURL(), "guarded", opts)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("publish without token: %v, want 401", err)
	}
	bad := opts
	bad.Token = "wrong"
	if _, err := client.Publish(ctx, s.PublicURL(), "guarded", bad); !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("publish with a wrong token: %v, want 401", err)
	}
	good := opts
	good.Token = "s3cret"
	pub, err := client.Publish(ctx, s.PublicURL(), "guarded", good)
	if err != nil {
		t.Fatalf("publish with token: %v", err)
	}
	defer pub.Close()

	wsURL := "ws" + s.PublicURL()[4:] + "/ws"
	evil := good
	evil.Header = http.Header{"Origin": {"https://evil.example.test"}}
	if _, err := client.Join(ctx, wsURL, "guarded", false, evil); !errors.As(err, &he) || he.Status != http.StatusForbidden {
		t.Fatalf("websocket from a foreign origin: %v, want 403", err)
	}
	if _, err := client.Join(ctx, wsURL, "guarded", false, opts); !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("websocket without token: %v, want 401", err)
	}
	allowed := good
	allowed.Header = http.Header{"Origin": {"https://app.example.test"}}
	p, err := client.Join(ctx, wsURL, "guarded", false, allowed)
	if err != nil {
		t.Fatalf("websocket from an allowed origin: %v", err)
	}
	defer p.Close()
	// Browsers cannot set headers on WebSocket: ?token= works there.
	q := opts
	p2, err := client.Join(ctx, wsURL+"?token=s3cret", "guarded", false, q)
	if err != nil {
		t.Fatalf("websocket with ?token=: %v", err)
	}
	defer p2.Close()
	// Cross-origin WHIP from a foreign origin is refused before any work.
	code, _, _ := do(t, "POST", s.PublicURL()+"/whip/guarded", "application/sdp", "v=0", map[string]string{"Origin": "https://evil.example.test", "Authorization": "Bearer s3cret"})
	if code != http.StatusForbidden {
		t.Errorf("foreign-origin WHIP = %d, want 403", code)
	}
}

func TestBadHTTPInput(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	base := s.PublicURL()
	big := strings.Repeat("a", signal.MaxSDPBytes+1)
	cases := []struct {
		name, method, path, ctype, body string
		want                            int
		msg                             string
	}{
		{"wrong content type", "POST", "/whip/r1", "text/plain", "v=0", 415, "Content-Type must be application/sdp"},
		{"empty offer", "POST", "/whip/r1", "application/sdp", "", 400, "empty SDP offer"},
		{"malformed offer", "POST", "/whip/r1", "application/sdp", "this is not sdp", 400, "invalid SDP offer"},
		{"oversized offer", "POST", "/whip/r1", "application/sdp", big, 413, "body larger than"},
		{"bad room name", "POST", "/whip/a%20b", "application/sdp", "v=0", 400, "room must be"},
		{"whep on empty room", "POST", "/whep/nobody", "application/sdp", "v=0", 404, "nothing is published"},
		{"patch unknown session", "PATCH", "/whip/r1/0123", "application/trickle-ice-sdpfrag", "a=mid:0\r\n", 404, "no such session"},
		{"patch wrong type", "PATCH", "/whip/r1/0123", "application/sdp", "a=mid:0", 415, "trickle-ice-sdpfrag"},
		{"delete unknown session", "DELETE", "/whep/r1/0123", "", "", 404, "no such session"},
		{"get on whip", "GET", "/whip/r1", "", "", 405, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := do(t, tc.method, base+tc.path, tc.ctype, tc.body, nil)
			if code != tc.want || !strings.Contains(body, tc.msg) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, code, body, tc.want, tc.msg)
			}
		})
	}
	if n := s.Engine().SessionCount(); n != 0 {
		t.Errorf("bad requests left %d sessions", n)
	}
}

func TestBadWebSocketInput(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.WSReadLimit = 4096 })
	conn, _, err := websocket.DefaultDialer.Dial("ws"+s.PublicURL()[4:]+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expect := func(send string, code string) {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m map[string]any
		for {
			if err := conn.ReadJSON(&m); err != nil {
				t.Fatalf("after %q: %v", send, err)
			}
			if m["type"] != "offer" && m["type"] != "candidate" {
				break // server-driven negotiation runs beside the errors
			}
		}
		if m["type"] != "error" || m["code"] != code {
			t.Fatalf("after %q got %v, want error %s", send, m, code)
		}
	}
	expect(`not json`, signal.CodeBadMessage)
	expect(`{"type":"dance"}`, signal.CodeUnknownType)
	expect(`{"type":"answer","sdp":"v=0"}`, signal.CodeNotJoined)
	expect(`{"type":"join","room":"../etc"}`, signal.CodeBadRoom)
	expect(`{"type":"join","room":"ok","extra":1}`, signal.CodeBadMessage)
	expect(`{"type":"candidate"}`, signal.CodeBadCandidate)
	// A join still works on the same connection after all that.
	if err := conn.WriteJSON(map[string]any{"type": "join", "room": "ok"}); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := conn.ReadJSON(&m); err != nil || m["type"] != "joined" {
		t.Fatalf("join after errors: %v %v", m, err)
	}
	expect(`{"type":"join","room":"again"}`, signal.CodeAlreadyJoined)
	expect(`{"type":"answer","sdp":"garbage"}`, signal.CodeBadAnswer)
	expect(`{"type":"candidate","candidate":{"candidate":"nonsense"}}`, signal.CodeBadCandidate)
	// An oversized message closes the connection (read limit) and the session.
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"answer","sdp":"`+strings.Repeat("x", 8192)+`"}`))
	waitFor(t, 5*time.Second, "session closed after oversized message", sessionsAre(s, 0))
}

// TestSlowWebSocketClientIsDisconnected: a client that stops reading is cut
// off after its queue stays full for the send timeout; its session closes
// and another participant is not slowed.
func TestSlowWebSocketClientIsDisconnected(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) {
		c.WSSendBuffer = 8
		c.WSSendTimeout = 200 * time.Millisecond
	})
	opts := clientOpts(t)
	ctx := ctxT(t, 60*time.Second)
	wsURL := "ws" + s.PublicURL()[4:] + "/ws"

	healthy, err := client.Join(ctx, wsURL, "slow", false, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()

	// The slow client: a tiny receive buffer, and it never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			_ = c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	slow, _, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if err := slow.WriteJSON(map[string]string{"type": "join", "room": "slow"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "slow client joined", sessionsAre(s, 2))
	// Each bad message makes the server queue an error reply.
	msg := []byte(`{"type":"bogus-` + strings.Repeat("x", 900) + `"}`)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && s.Engine().SessionCount() == 2 {
		_ = slow.SetWriteDeadline(time.Now().Add(time.Second))
		if err := slow.WriteMessage(websocket.TextMessage, msg); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// The server is busy queueing replies we never read; a
				// timed-out write leaves this connection unusable, so
				// wait for the server's verdict instead.
				break
			}
			break // the server hung up on us
		}
	}
	waitFor(t, 30*time.Second, "slow client's session closed", sessionsAre(s, 1))
	waitFor(t, 5*time.Second, "slow client's connection dropped", func() error {
		if n := s.Signal().WebSocketCount(); n != 1 {
			return fmt.Errorf("%d websockets", n)
		}
		return nil
	})
	// The healthy participant still gets prompt answers.
	start := time.Now()
	if err := healthy.Send(client.WSMessage{Type: "bogus"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-healthy.Events:
		if ev.Code != signal.CodeUnknownType {
			t.Errorf("healthy client got %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("healthy client got no reply within 5s")
	}
	t.Logf("healthy client's reply after the slow one was cut: %s", time.Since(start))
}

// TestDrain: draining turns readiness off, refuses new sessions with 503,
// tells WebSocket clients, waits for sessions, then closes the rest.
func TestDrain(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.DrainTimeout = 1500 * time.Millisecond })
	opts := clientOpts(t)
	ctx := ctxT(t, 30*time.Second)
	p, err := client.Join(ctx, "ws"+s.PublicURL()[4:]+"/ws", "drain", true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pub, err := client.Publish(ctx, s.PublicURL(), "drain2", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	done := make(chan struct{})
	start := time.Now()
	go func() { s.Drain(context.Background()); close(done) }()
	waitFor(t, 2*time.Second, "readiness off", func() error {
		if !s.Engine().Draining() {
			return errors.New("not draining")
		}
		return nil
	})
	var got []string
	for ev := range p.Events {
		got = append(got, ev.Type)
		if ev.Type == "draining" && ev.RetryAfter == 0 {
			t.Errorf("draining message without retryAfter")
		}
		if ev.Type == "closed" {
			if ev.Reason != "drain-timeout" {
				t.Errorf("closed reason %q", ev.Reason)
			}
			break
		}
	}
	if strings.Join(got, ",") != "draining,closed" {
		t.Errorf("websocket client saw %v, want draining then closed", got)
	}
	<-done
	if el := time.Since(start); el < 1400*time.Millisecond {
		t.Errorf("drain returned after %s, before drainTimeout", el)
	}
	if n := s.Engine().SessionCount(); n != 0 {
		t.Errorf("%d sessions left after drain", n)
	}
	var he *client.HTTPError
	_, err = client.Publish(ctx, s.PublicURL(), "late", opts)
	if err == nil || errors.As(err, &he) && he.Status != 503 {
		t.Errorf("publish after drain: %v", err)
	}
}

// TestICEIPsLimitGathering: with ICE_IPS (set by the operator on
// hostNetwork pods to the node's address) the server offers candidates on
// that address only, though it may gather on every interface, in both the
// port-range and the mux mode.
func TestICEIPsLimitGathering(t *testing.T) {
	for _, mode := range []string{"range", "mux"} {
		t.Run(mode, func(t *testing.T) {
			leakCheckFirst(t)
			s := testServer(t, func(c *config.Config) {
				c.ICEInterfaces = nil
				c.ICEIPs = []string{"127.0.0.1"}
				if mode == "mux" {
					c.ListenHost = ""
					c.UDPMuxPort = freeUDPPort(t)
				} else {
					c.ICEPortMin, c.ICEPortMax = 42110, 42119
				}
			})
			ctx := ctxT(t, 20*time.Second)
			pub, err := client.Publish(ctx, s.PublicURL(), "ice-ips-"+mode, clientOpts(t))
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			cands := candPort.FindAllStringSubmatch(pub.Answer, -1)
			if len(cands) == 0 {
				t.Fatalf("no candidates:\n%s", pub.Answer)
			}
			for _, m := range cands {
				if m[1] != "127.0.0.1" {
					t.Errorf("candidate on %s, want only ICE_IPS 127.0.0.1: %s", m[1], m[0])
				}
			}
			if err := client.WaitConnected(ctx, pub.PC); err != nil {
				t.Fatal(err)
			}
		})
	}
}
