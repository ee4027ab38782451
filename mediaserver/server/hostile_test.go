package server

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/signal"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Hostile neighbours: what a pod or client on the same network tries
// against the admin port and the signalling port (the security review's
// items, reproduced).

// TestAdminAPIWantsTheToken (items 1 and 2): with ADMIN_TOKEN, everything
// on the admin port but the probes and /metrics answers 401 without the
// token, or with a wrong one, and works with it.
func TestAdminAPIWantsTheToken(t *testing.T) {
	s := testServer(t, func(c *config.Config) { c.AdminToken = testAdminToken; c.PodName = "pod-a" })
	list := fmt.Sprintf(`{"apiVersion":%q,"generation":1,"members":[{"name":"evil","address":"203.0.113.7:8080","ready":true}]}`, statusapi.APIVersion)
	guarded := []struct{ method, path, body string }{
		{"GET", statusapi.Path, ""},
		{"PUT", statusapi.MembershipPath, list},
		{"GET", "/rooms/stage", ""},
		{"GET", "/debug/pprof/", ""},
		{"GET", "/debug/pprof/cmdline", ""},
		{"GET", "/debug/pprof/goroutine?debug=2", ""},
	}
	for _, auth := range []string{"", "Bearer wrong-token-wrong-token", "Basic " + testAdminToken, testAdminToken, "Bearer " + testAdminToken + "x"} {
		for _, g := range guarded {
			hdr := map[string]string{}
			if auth != "" {
				hdr["Authorization"] = auth
			}
			code, h, body := do(t, g.method, s.AdminURL()+g.path, "application/json", g.body, hdr)
			if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with Authorization %q: %d %q, want 401", g.method, g.path, auth, code, body)
			}
			if strings.Contains(body, "goroutine") || strings.Contains(body, "mediaserver") && g.path != statusapi.Path {
				t.Errorf("%s %s leaked internals without the token: %q", g.method, g.path, body)
			}
		}
	}
	if mb := s.members.Current(); mb.Generation != 0 {
		t.Fatalf("an unauthenticated member list was taken: %+v", mb)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, _ := do(t, "GET", s.AdminURL()+path, "", "", nil); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d (kubelet and Prometheus need it open)", path, code)
		}
	}
	ok := map[string]string{"Authorization": "Bearer " + testAdminToken}
	if code, _, body := do(t, "GET", s.AdminURL()+statusapi.Path, "", "", ok); code != http.StatusOK || !strings.Contains(body, statusapi.APIVersion) {
		t.Errorf("GET /status with the token: %d %q", code, body)
	}
	if code, _, body := do(t, "PUT", s.AdminURL()+statusapi.MembershipPath, "application/json", list, ok); code != http.StatusNoContent {
		t.Errorf("PUT /membership with the token: %d %q", code, body)
	}
	// A generation no operator could send would lock the operator out.
	far := fmt.Sprintf(`{"apiVersion":%q,"generation":%d,"members":[{"name":"evil","address":"203.0.113.7:8080"}]}`, statusapi.APIVersion, int64(math.MaxInt64))
	if code, _, body := do(t, "PUT", s.AdminURL()+statusapi.MembershipPath, "application/json", far, ok); code != http.StatusBadRequest {
		t.Errorf("generation 2^63-1: %d %q, want 400", code, body)
	}
	if code, _, _ := do(t, "GET", s.AdminURL()+"/debug/pprof/cmdline", "", "", ok); code != http.StatusOK {
		t.Errorf("pprof with the token: %d", code)
	}
}

// TestAdminPortWithoutTokenIsLoopbackOnly (item 2): a mediaserver run by
// hand without ADMIN_TOKEN never offers its open admin port on another
// interface, whatever LISTEN_HOST says; with a token it binds where told.
func TestAdminPortWithoutTokenIsLoopbackOnly(t *testing.T) {
	for _, host := range []string{"", "0.0.0.0", "127.0.0.1"} {
		cfg := config.Loopback()
		cfg.ListenHost = host
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if ip := net.ParseIP(cfg.AdminHost()); ip == nil || !ip.IsLoopback() {
			t.Errorf("LISTEN_HOST %q without a token: admin binds %q", host, cfg.AdminHost())
		}
	}
	s := testServer(t, func(c *config.Config) { c.ListenHost = "" })
	if host, _, _ := net.SplitHostPort(strings.TrimPrefix(s.AdminURL(), "http://")); !net.ParseIP(host).IsLoopback() {
		t.Errorf("admin listener on %s without a token", s.AdminURL())
	}
	cfg := config.Loopback()
	cfg.AdminToken, cfg.AdminListenHost = testAdminToken, "198.18.1.7"
	if err := cfg.Validate(); err != nil || cfg.AdminHost() != "198.18.1.7" {
		t.Errorf("with a token: admin host %q (%v)", cfg.AdminHost(), err)
	}
	cfg.AdminToken = "short"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ADMIN_TOKEN is too short") {
		t.Errorf("a 5-byte token: %v", err)
	}
}

// TestTURNCredentialsNeedTheToken (item 3): when a signalling token is
// required, a preflight without it learns the STUN servers only; the TURN
// username and password go to authenticated callers.
func TestTURNCredentialsNeedTheToken(t *testing.T) {
	s := testServer(t, func(c *config.Config) {
		c.AuthToken = "client-token"
		c.STUNServers = []string{"stun:stun.example.test:3478"}
		c.TURNServers = []config.TURNServer{{URLs: []string{"turn:turn.example.test:3478"}, Username: "alice", Password: "s3cret-turn-password"}}
	})
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Origin": "http://evil.example.test"}} {
		_, h, body := do(t, "OPTIONS", s.PublicURL()+"/whip/room", "", "", hdr)
		links := strings.Join(h.Values("Link"), ", ")
		if strings.Contains(links, "s3cret") || strings.Contains(links, "alice") || strings.Contains(body, "s3cret") {
			t.Errorf("OPTIONS with %v revealed TURN credentials: %s", hdr, links)
		}
	}
	_, h, _ := do(t, "OPTIONS", s.PublicURL()+"/whip/room", "", "", nil)
	if links := strings.Join(h.Values("Link"), ", "); !strings.Contains(links, "stun:stun.example.test") {
		t.Errorf("STUN servers no longer announced: %q", links)
	}
	_, h, _ = do(t, "OPTIONS", s.PublicURL()+"/whip/room", "", "", map[string]string{"Authorization": "Bearer client-token"})
	if links := strings.Join(h.Values("Link"), ", "); !strings.Contains(links, `credential="s3cret-turn-password"`) {
		t.Errorf("an authenticated preflight gets no TURN server: %q", links)
	}
	if code, h, _ := do(t, "POST", s.PublicURL()+"/whip/room", "application/sdp", "v=0", nil); code != http.StatusUnauthorized || strings.Contains(strings.Join(h.Values("Link"), ""), "s3cret") {
		t.Errorf("POST without the token: %d, links %v", code, h.Values("Link"))
	}
}

// pionOffer is a real offer from a pion client sending audio and video,
// with loopback candidates (gathering complete), closed afterwards.
func pionOffer(t *testing.T) string {
	return pionOfferOf(t, webrtc.RTPTransceiverDirectionSendonly)
}

// pionOfferOf is a real offer of a client whose audio and video go in the
// given direction.
func pionOfferOf(t *testing.T, dir webrtc.RTPTransceiverDirection) string {
	t.Helper()
	pc, err := clientOpts(t).API.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: dir}); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-done
	return pc.LocalDescription().SDP
}

// withCandidates adds n host candidates (loopback addresses only: a test
// never aims traffic anywhere else) to the first media section.
func withCandidates(offer string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp 2130706431 127.0.%d.%d %d typ host\r\n", 1000+i, i/250, 1+i%250, 20000+i)
	}
	i := strings.Index(offer, "a=mid:")
	return offer[:i] + b.String() + offer[i:]
}

// TestOfferHostility (items 5 and 6): candidates inside an offer count
// toward MAX_ICE_CANDIDATES (refused with 422 naming the limit, no
// session kept); an offer without media is refused with 400 and holds no
// slot; what an offer used of the budget is gone for trickling.
func TestOfferHostility(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.MaxICECandidates = 50 })
	offer := pionOffer(t)
	url := s.PublicURL() + "/whip/hostile"

	code, _, body := do(t, "POST", url, "application/sdp", withCandidates(offer, 200), nil)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "MAX_ICE_CANDIDATES") || !strings.Contains(body, "at most 50") {
		t.Errorf("offer with 200 candidates: %d %q, want 422 naming the limit", code, body)
	}
	noMedia := "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
	code, _, body = do(t, "POST", url, "application/sdp", noMedia, nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "no media section") {
		t.Errorf("offer without media: %d %q, want 400", code, body)
	}
	waitFor(t, 5*time.Second, "no session held by refused offers", sessionsAre(s, 0))

	// 45 candidates in the offer (the client's own and ours) leave 5 for
	// trickle ICE.
	own := strings.Count(offer, "a=candidate:")
	code, h, body := do(t, "POST", url, "application/sdp", withCandidates(offer, 45-own), nil)
	if code != http.StatusCreated {
		t.Fatalf("offer with 45 candidates: %d %q", code, body)
	}
	resource := s.PublicURL() + h.Get("Location")
	var lines []string
	for i := 0; i < 10; i++ {
		lines = append(lines, fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.9.%d 30000 typ host", 5000+i, i+1))
	}
	ufrag := regexp.MustCompile(`a=ice-ufrag:(\S+)`).FindStringSubmatch(offer)[1]
	code, _, body = do(t, "PATCH", resource, "application/trickle-ice-sdpfrag", signal.FormatTrickleFrag(ufrag, "", "0", lines), nil)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "5 of 10") {
		t.Errorf("trickling 10 after 45 in the offer: %d %q, want 422 after 5", code, body)
	}
	code, _, _ = do(t, "DELETE", resource, "", "", nil)
	if code != http.StatusOK {
		t.Errorf("DELETE: %d", code)
	}
	waitFor(t, 5*time.Second, "session gone", sessionsAre(s, 0))
}

// dialRaw opens a TCP connection to a listener's host:port.
func dialRaw(t *testing.T, base string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin says whether the server closes (or answers and closes) c
// within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// TestSlowBodiesAreCut (item 7): 20 connections announcing a 60,000-byte
// body and sending a byte every 100 ms are cut once the body deadline
// passes, instead of being held open for as long as they trickle.
func TestSlowBodiesAreCut(t *testing.T) {
	s := testServer(t, func(c *config.Config) { c.HeaderTimeout, c.BodyTimeout = time.Second, time.Second })
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c := dialRaw(t, s.PublicURL())
		fmt.Fprintf(c, "POST /whip/slow HTTP/1.1\r\nHost: media\r\nContent-Type: application/sdp\r\nContent-Length: 60000\r\n\r\n")
		conns = append(conns, c)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 100 ms on every connection
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, c := range conns {
				_, _ = c.Write([]byte("v"))
			}
		}
	}()
	for i, c := range conns {
		if !closedWithin(c, 10*time.Second) {
			t.Fatalf("slow body connection %d still open after 10 s (body deadline 1 s)", i)
		}
	}
}

// TestConnectionCap (item 7): past MAX_CONNECTIONS a connection is closed
// at once and counted; the listener serves again once connections go.
func TestConnectionCap(t *testing.T) {
	s := testServer(t, func(c *config.Config) { c.MaxConnections = 10 })
	var held []net.Conn
	for i := 0; i < 10; i++ {
		held = append(held, dialRaw(t, s.PublicURL()))
	}
	waitFor(t, 5*time.Second, "10 connections counted", func() error {
		if n := s.publicConns.Open(); n != 10 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	extra := dialRaw(t, s.PublicURL())
	fmt.Fprintf(extra, "GET / HTTP/1.1\r\nHost: media\r\n\r\n")
	if !closedWithin(extra, 5*time.Second) {
		t.Fatal("the 11th connection was kept open")
	}
	if v := testutil.ToFloat64(s.metrics.ConnectionsRefused.WithLabelValues("public")); v < 1 {
		t.Errorf("media_connections_refused_total{listener=public} = %v", v)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, 5*time.Second, "a request served again", func() error {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
		resp, err := c.Get(s.PublicURL() + "/")
		if err != nil {
			return err // refused until the server notices the closed ones
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /: %d", resp.StatusCode)
		}
		return nil
	})
}

// TestSlowClientsRaiseNoLeakAlarm (item 8): 300 connections sending their
// headers slowly, with no session at all, hold hundreds of goroutines; the
// leak detector counts them as explained, so nobody on the network can
// make the operator restart idle pods.
func TestSlowClientsRaiseNoLeakAlarm(t *testing.T) {
	s := testServer(t, func(c *config.Config) {
		c.SampleInterval, c.LeakBaselineWindow = 50*time.Millisecond, 300*time.Millisecond
		c.HeaderTimeout = time.Minute
	})
	waitFor(t, 5*time.Second, "baseline learnt", func() error {
		if getStatus(t, s).Goroutines.Baseline == 0 {
			return errors.New("learning")
		}
		return nil
	})
	for i := 0; i < 300; i++ {
		c := dialRaw(t, s.PublicURL())
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: med") // and never the rest
	}
	waitFor(t, 10*time.Second, "300 connections open", func() error {
		if n := s.publicConns.Open(); n < 300 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	for i := 0; i < 20; i++ { // a second of samples (50 ms apart)
		st := getStatus(t, s)
		if st.Leak.Suspected {
			t.Fatalf("300 slow connections and no session raised the leak alarm: %+v", st.Leak)
		}
		if st.Goroutines.Current < st.Goroutines.Baseline+250 {
			t.Fatalf("the connections hold only %d goroutines over the baseline %d: the test proves nothing", st.Goroutines.Current-st.Goroutines.Baseline, st.Goroutines.Baseline)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRepeatedCandidatesCountOnce: a browser repeats its candidates in
// every m-section and in every answer of a renegotiation; each distinct
// candidate counts once toward MAX_ICE_CANDIDATES, so a room whose
// participants renegotiate many times is not refused, while as many
// distinct candidates as the limit allows still are.
func TestRepeatedCandidatesCountOnce(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.MaxICECandidates = 50 })
	offer := pionOffer(t)
	if strings.Count(offer, "a=mid:") < 2 {
		t.Fatal("the offer needs two m-sections")
	}
	// The same 30 candidates in every m-section: 30 distinct.
	var b strings.Builder
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp 2130706431 127.0.0.%d %d typ host\r\n", 1000+i, 1+i, 20000+i)
	}
	repeated := strings.ReplaceAll(offer, "a=mid:", b.String()+"a=mid:")
	code, hdr, body := do(t, "POST", s.PublicURL()+"/whip/repeat", "application/sdp", repeated, nil)
	if code != http.StatusCreated {
		t.Fatalf("offer repeating 30 candidates in each m-section: %d %q, want 201", code, body)
	}
	own := map[string]bool{} // pion's own candidates in the offer
	for _, l := range strings.Split(offer, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") {
			own[l] = true
		}
	}
	sess, ok := s.Engine().Session(path.Base(hdr.Get("Location")))
	if !ok || sess.CandidateCount() != 30+len(own) {
		t.Fatalf("candidates counted: %v (session found %v), want %d", sess.CandidateCount(), ok, 30+len(own))
	}
	code, _, body = do(t, "POST", s.PublicURL()+"/whip/repeat2", "application/sdp", withCandidates(offer, 51), nil)
	if code != http.StatusUnprocessableEntity {
		t.Errorf("offer with 51 distinct candidates: %d %q, want 422", code, body)
	}
	code, _, _ = do(t, "DELETE", s.PublicURL()+hdr.Get("Location"), "", "", nil)
	if code != http.StatusOK {
		t.Errorf("delete: %d", code)
	}
}
