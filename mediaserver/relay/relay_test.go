package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/relay"
	"github.com/mediafleet/mediafleet/mediaserver/server/servertest"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
)

const (
	secret     = "relay-test-shared-secret-0123456789"
	adminToken = "relay-admin-token"
)

// caFile is where the TLS test's CA goes: Go reads SSL_CERT_FILE when it
// first needs the system roots, and pion's ICE agent verifies turns:
// servers against those (it has no setting for other roots).
var (
	caFile string
	caOnce sync.Once
	ca     *testpki.CA
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-test-ca")
	if err != nil {
		panic(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	_ = os.Setenv("SSL_CERT_FILE", caFile)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func trustedCA(t *testing.T) *testpki.CA {
	caOnce.Do(func() {
		ca = testpki.NewCA(t)
		if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	return ca
}

func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		var err error
		_ = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			err = goleak.Find(goleak.IgnoreCurrent())
			return err == nil, nil
		})
		if err != nil {
			t.Error(err)
		}
	})
}

// gateway runs a TURN gateway on loopback (every listener on a free port,
// relaying from 127.0.0.1) until the test ends.
func gateway(t *testing.T, mut func(*relay.Config)) *relay.Server {
	t.Helper()
	cfg := relay.Default()
	cfg.ListenHost, cfg.UDPPort, cfg.AdminPort = "127.0.0.1", 0, 0
	cfg.AdminListenHost, cfg.AdminToken = "127.0.0.1", adminToken
	cfg.Secret, cfg.RelayIP, cfg.AllowLoopbackPeers = secret, net.ParseIP("127.0.0.1"), true
	cfg.DrainTimeout = 5 * time.Second
	if mut != nil {
		mut(&cfg)
	}
	s, err := relay.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// members makes a member list of the given host:ports.
func members(addrs ...string) statusapi.Membership {
	mb := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: time.Now().UnixNano()}
	for i, a := range addrs {
		mb.Members = append(mb.Members, statusapi.Member{Name: fmt.Sprintf("media-%d", i), Address: a, Ready: true})
	}
	return mb
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, last)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestMediaOnlyThroughTheGateway: a WHIP publisher and a WHEP viewer that
// may only use relay candidates (iceTransportPolicy relay) exchange real
// RTP with a mediaserver through the gateway, over UDP, TCP and TLS, with
// the credentials the mediaserver minted for them. The mediaserver itself
// gathers no relay candidate on its own gateway (clients only).
func TestMediaOnlyThroughTheGateway(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			leakCheck(t)
			gw := gateway(t, func(c *relay.Config) {
				c.TCP, c.TCPPort = transport == "tcp", 0
				if transport == "tls" {
					cert, key := trustedCA(t).Issue(t, "127.0.0.1")
					c.TLS, c.TLSPort = true, 0
					c.TLSCertFile, c.TLSKeyFile = testpki.WritePair(t, t.TempDir(), cert, key)
				}
			})
			var url string
			switch transport {
			case "udp":
				url = "turn:" + gw.UDPAddr().String() + "?transport=udp"
			case "tcp":
				url = "turn:" + gw.TCPAddr().String() + "?transport=tcp"
			case "tls":
				url = "turns:" + gw.TLSAddr().String() + "?transport=tcp"
			}
			s := servertest.Start(t, func(c *config.Config) {
				c.AuthToken = "client-token"
				c.TURNServers = []config.TURNServer{{URLs: []string{url}, Secret: secret, TTL: 10 * time.Minute, ClientsOnly: true}}
			})
			host := strings.TrimPrefix(s.PublicURL(), "http://")
			if err := gw.SetMembers(members(host)); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 40*time.Second)
			api, err := client.NewAPI()
			if err != nil {
				t.Fatal(err)
			}
			servers := iceServersFor(t, s.PublicURL())
			opts := client.Options{API: api, Token: "client-token", ICEServers: servers, RelayOnly: true}
			pub, err := client.Publish(ctx, s.PublicURL(), "relayed", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if strings.Contains(pub.Answer, "typ relay") {
				t.Errorf("the mediaserver gathered a relay candidate on its own gateway:\n%s", pub.Answer)
			}
			pub.SendRTP(100, 600)
			view, err := client.Play(ctx, s.PublicURL(), "relayed", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer view.Close()
			poll(t, 30*time.Second, "video through the relay", func() error {
				if n := view.Received.Packets.Load(); n < 50 {
					return fmt.Errorf("%d packets at the viewer", n)
				}
				return nil
			})
			for _, sess := range []*client.Session{pub, view} {
				pair, err := sess.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
				if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
					t.Errorf("selected pair %v (%v), want the client's relay candidate", pair, err)
				}
			}
			m := scrape(t, gw)
			if m["turn_relayed_packets_total"]["to_peer"] < 50 || m["turn_relayed_packets_total"]["to_client"] < 50 {
				t.Errorf("relayed packets %v", m["turn_relayed_packets_total"])
			}
			if transport != "udp" && m["turn_connections"][""] < 1 {
				t.Errorf("no %s connection open at the gateway: %v", transport, m["turn_connections"])
			}
			if gw.Allocations() < 2 {
				t.Errorf("%d allocations, want one per client (2)", gw.Allocations())
			}
		})
	}
}

// iceServersFor asks the mediaserver (authenticated) for the ICE servers a
// client gets.
func iceServersFor(t *testing.T, base string) []webrtc.ICEServer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodOptions, base+"/whip/relayed", nil)
	req.Header.Set("Authorization", "Bearer client-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	servers := client.ICEServersFromLinks(resp.Header)
	if len(servers) != 1 || !strings.Contains(servers[0].Username, ":") {
		t.Fatalf("ICE servers from the Link headers: %+v", servers)
	}
	if strings.Contains(strings.Join(resp.Header.Values("Link"), ""), secret) {
		t.Fatal("the shared secret is in a Link header")
	}
	return servers
}

// scrape reads the gateway's metrics: name → label value (the first
// label's; "" for none) → value.
func scrape(t *testing.T, gw *relay.Server) map[string]map[string]float64 {
	t.Helper()
	resp, err := http.Get(gw.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "turn_") {
			continue
		}
		nameLabels, val, _ := strings.Cut(line, " ")
		name, labels, _ := strings.Cut(nameLabels, "{")
		label := ""
		if _, v, ok := strings.Cut(labels, "=\""); ok {
			label, _, _ = strings.Cut(v, "\"")
		}
		var f float64
		_, _ = fmt.Sscan(val, &f)
		if out[name] == nil {
			out[name] = map[string]float64{}
		}
		out[name][label] = f
	}
	return out
}

// turnClient is a raw pion/turn client of the gateway's UDP listener.
func turnClient(t *testing.T, gw *relay.Server, user, pass string) *turn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := gw.UDPAddr().String()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass, Realm: "mediafleet", RTO: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	return c
}

func creds(at time.Time, ttl time.Duration, session string) (string, string) {
	return config.TURNServer{Secret: secret, TTL: ttl}.Credentials(at, session)
}

// TestNotAnOpenRelay: a client with good credentials may relay only to a
// media pod (the member list) and only on an ICE port. A permission or a
// channel bind towards another address (here another loopback address,
// standing for the node or the API server) is refused; a packet to a
// media pod's address on another port is dropped; both are counted.
func TestNotAnOpenRelay(t *testing.T) {
	leakCheck(t)
	media := udpSocket(t)
	other := udpSocket(t)
	mediaPort := media.LocalAddr().(*net.UDPAddr).Port
	gw := gateway(t, func(c *relay.Config) { c.PeerPorts = []relay.PortRange{{Min: mediaPort, Max: mediaPort}} })
	if err := gw.SetMembers(members(media.LocalAddr().String())); err != nil {
		t.Fatal(err)
	}
	user, pass := creds(time.Now(), time.Hour, "s1")
	c := turnClient(t, gw, user, pass)
	alloc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer alloc.Close()

	// Not a media pod: the permission (and so the packet) is refused.
	notMedia := &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: mediaPort}
	if _, err := alloc.WriteTo([]byte("to the API server"), notMedia); err == nil {
		t.Error("a packet towards an address that is no media pod was accepted")
	}
	if err := c.CreatePermission(notMedia); err == nil {
		t.Error("CreatePermission towards an address that is no media pod succeeded")
	}
	// A media pod's address, another port: dropped. Then the ICE port:
	// relayed. Loopback delivers in order, so once the second arrived
	// the first would have been there.
	if _, err := alloc.WriteTo([]byte("wrong port"), other.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := alloc.WriteTo([]byte("ice port"), media.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = media.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := media.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ice port" {
		t.Fatalf("the media pod got %q, %v", buf[:n], err)
	}
	if from.String() != alloc.LocalAddr().String() {
		t.Errorf("relayed from %s, want the allocation's relay address %s", from, alloc.LocalAddr())
	}
	_ = other.SetReadDeadline(time.Now())
	if n, _, err := other.ReadFrom(buf); err == nil {
		t.Errorf("a packet reached a port that is no ICE port: %q", buf[:n])
	}
	m := scrape(t, gw)
	if m["turn_refused_permissions_total"]["peer"] < 2 || m["turn_refused_permissions_total"]["port"] < 1 {
		t.Errorf("refusals not counted: %v", m["turn_refused_permissions_total"])
	}
	// Once the pod left the member list, nothing more reaches it.
	if err := gw.SetMembers(members("127.0.0.3:1")); err != nil {
		t.Fatal(err)
	}
	before := m["turn_refused_permissions_total"]["peer"]
	if _, err := alloc.WriteTo([]byte("after leaving"), media.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the packet to a former member refused", func() error {
		if got := scrape(t, gw)["turn_refused_permissions_total"]["peer"]; got <= before {
			return fmt.Errorf("refused %v", got)
		}
		return nil
	})
}

// TestCredentials: only unexpired credentials minted with the shared
// secret allocate; every other kind is refused and counted by reason.
func TestCredentials(t *testing.T) {
	leakCheck(t)
	gw := gateway(t, nil)
	good, goodPass := creds(time.Now(), time.Hour, "ok")
	old, oldPass := creds(time.Now().Add(-2*time.Hour), time.Hour, "late")
	forgedUser, forgedPass := config.TURNServer{Secret: "guessed-secret-0123456789", TTL: time.Hour}.Credentials(time.Now(), "mallory")
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"minted", good, goodPass, true},
		{"expired", old, oldPass, false},
		{"forged", forgedUser, forgedPass, false},
		{"tampered", strings.Replace(good, ":", "9:", 1), goodPass, false},
		{"no expiry", "mallory", "x", false},
		{"long", strings.Repeat("9", 300) + ":x", "x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := turnClient(t, gw, tc.user, tc.pass)
			alloc, err := c.Allocate()
			if err == nil {
				_ = alloc.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("allocate: %v, want success %v", err, tc.ok)
			}
		})
	}
	m := scrape(t, gw)["turn_auth_failures_total"]
	if m["expired"] < 1 || m["forged"] < 2 || m["malformed"] < 2 {
		t.Errorf("auth failures %v, want expired ≥1, forged ≥2 (forged, tampered), malformed ≥2", m)
	}
}

// TestQuotas: allocations are bounded per username and per server, and
// an allocation's bitrate per direction.
func TestQuotas(t *testing.T) {
	leakCheck(t)
	media := udpSocket(t)
	gw := gateway(t, func(c *relay.Config) {
		c.UserAllocations, c.MaxAllocations = 2, 3
		// 1 byte per second: what passes is the burst (64 KiB), however
		// long the sending takes.
		c.AllocationBPS = 8
	})
	if err := gw.SetMembers(members(media.LocalAddr().String())); err != nil {
		t.Fatal(err)
	}
	var allocs []net.PacketConn
	defer func() {
		for _, a := range allocs {
			_ = a.Close()
		}
	}()
	alloc := func(session string) error {
		user, pass := creds(time.Now(), time.Hour, session)
		a, err := turnClient(t, gw, user, pass).Allocate()
		if err == nil {
			allocs = append(allocs, a)
		}
		return err
	}
	for i, want := range []bool{true, true, false} { // per username: 2
		if err := alloc("same"); (err == nil) != want {
			t.Fatalf("allocation %d of one username: %v, want success %v", i+1, err, want)
		}
	}
	if err := alloc("other"); err != nil {
		t.Fatalf("third allocation of the server: %v", err)
	}
	if err := alloc("third"); err == nil {
		t.Fatal("a fourth allocation passed the server's bound of 3")
	}
	q := scrape(t, gw)["turn_quota_refused_total"]
	if q["user"] != 1 || q["server"] != 1 {
		t.Errorf("quota refusals %v", q)
	}

	// 300 KB through the allocation, ten packets at a time (so that
	// none is lost before the gateway's socket): the burst (65 packets)
	// passes, the rest is dropped and counted.
	pkt := make([]byte, 1000)
	var over, relayed float64
	for sent := 10; sent <= 300; sent += 10 {
		for i := 0; i < 10; i++ {
			if _, err := allocs[0].WriteTo(pkt, media.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		poll(t, 10*time.Second, "packets accounted for", func() error {
			m := scrape(t, gw)
			over, relayed = m["turn_over_budget_packets_total"]["to_peer"], m["turn_relayed_packets_total"]["to_peer"]
			if int(over+relayed) < sent {
				return fmt.Errorf("%d sent, %v over budget, %v relayed", sent, over, relayed)
			}
			return nil
		})
	}
	if relayed < 65 || relayed > 66 {
		t.Errorf("%v packets relayed of 300 through a 64 KiB burst at 1 B/s, want 65", relayed)
	}
}

// TestDrain: a draining gateway is not ready, refuses new allocations,
// keeps the existing ones, and closes once they end.
func TestDrain(t *testing.T) {
	leakCheck(t)
	gw := gateway(t, nil)
	if err := gw.SetMembers(members("127.0.0.1:9")); err != nil {
		t.Fatal(err)
	}
	user, pass := creds(time.Now(), time.Hour, "stays")
	c := turnClient(t, gw, user, pass)
	a, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if code := get(t, gw.AdminURL()+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz %d before the drain", code)
	}
	done := make(chan struct{})
	go func() { gw.Drain(context.Background()); close(done) }()
	poll(t, 5*time.Second, "draining", func() error {
		if !gw.Draining() {
			return fmt.Errorf("not draining")
		}
		return nil
	})
	if code := get(t, gw.AdminURL()+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("readyz %d while draining, want 503", code)
	}
	u2, p2 := creds(time.Now(), time.Hour, "new")
	if b, err := turnClient(t, gw, u2, p2).Allocate(); err == nil {
		_ = b.Close()
		t.Error("a draining gateway made a new allocation")
	}
	select {
	case <-done:
		t.Fatal("the drain ended with an allocation still live")
	default:
	}
	_ = a.Close() // the client leaves (a Refresh with lifetime 0)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end after the last allocation")
	}
	<-gw.Done()
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	code, _ := request(t, http.MethodGet, url, token, "")
	return code
}

// request sends one admin request (token "" for none) and returns its
// status and body.
func request(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestAdminAPI: the member list and the status need the admin token; a
// hostile or stale list is refused.
func TestAdminAPI(t *testing.T) {
	leakCheck(t)
	gw := gateway(t, nil)
	put := func(token, body string) int {
		code, _ := request(t, http.MethodPut, gw.AdminURL()+statusapi.MembershipPath, token, body)
		return code
	}
	list := func(gen int64, addrs ...string) string {
		mb := members(addrs...)
		mb.Generation = gen
		return fmt.Sprintf(`{"apiVersion":%q,"generation":%d,"members":[%s]}`, mb.APIVersion, gen, func() string {
			var parts []string
			for _, m := range mb.Members {
				parts = append(parts, fmt.Sprintf(`{"name":%q,"address":%q}`, m.Name, m.Address))
			}
			return strings.Join(parts, ",")
		}())
	}
	now := time.Now().UnixNano()
	for _, tc := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", list(now, "10.0.0.1:8080"), http.StatusUnauthorized},
		{"wrong token", "nope", list(now, "10.0.0.1:8080"), http.StatusUnauthorized},
		{"not json", adminToken, "{", http.StatusBadRequest},
		{"too big", adminToken, `{"members":[` + strings.Repeat(`{"name":"x","address":"y"},`, 60000) + `{}]}`, http.StatusBadRequest},
		{"far future", adminToken, list(time.Now().Add(fleet.MaxGenerationAhead+time.Hour).UnixNano(), "10.0.0.1:8080"), http.StatusBadRequest},
		{"good", adminToken, list(now, "10.0.0.1:8080"), http.StatusNoContent},
		{"stale", adminToken, list(now-1, "10.0.0.2:8080"), http.StatusConflict},
	} {
		if got := put(tc.token, tc.body); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if code := get(t, gw.AdminURL()+statusapi.Path, ""); code != http.StatusUnauthorized {
		t.Errorf("status without a token: %d", code)
	}
	code, body := request(t, http.MethodGet, gw.AdminURL()+statusapi.Path, adminToken, "")
	var st relay.Status
	err := json.Unmarshal(body, &st)
	if err != nil || code != http.StatusOK || st.APIVersion != statusapi.APIVersion || !st.Ready ||
		strings.Join(st.PeerAddresses, ",") != "10.0.0.1" || st.MembershipGeneration != now {
		t.Errorf("status with the token: %d %+v %v (want the good list's one address and generation)", code, st, err)
	}
	for _, open := range []string{"/healthz", "/readyz", "/metrics"} {
		if code := get(t, gw.AdminURL()+open, ""); code == http.StatusUnauthorized {
			t.Errorf("%s needs a token; probes and scrapes carry none", open)
		}
	}
}

// TestReusePortListeners: with four UDP sockets on one port
// (SO_REUSEPORT), clients spread over them and each one's allocation
// relays to the media pod.
func TestReusePortListeners(t *testing.T) {
	leakCheck(t)
	media := udpSocket(t)
	gw := gateway(t, func(c *relay.Config) { c.UDPListeners = 4 })
	if err := gw.SetMembers(members(media.LocalAddr().String())); err != nil {
		t.Fatal(err)
	}
	const clients = 12
	for i := 0; i < clients; i++ {
		user, pass := creds(time.Now(), time.Hour, fmt.Sprintf("c%d", i))
		a, err := turnClient(t, gw, user, pass).Allocate()
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		defer a.Close()
		if _, err := a.WriteTo([]byte(fmt.Sprintf("hello %d", i)), media.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	buf := make([]byte, 100)
	_ = media.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(seen) < clients {
		n, _, err := media.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%d of %d clients relayed: %v", len(seen), clients, err)
		}
		seen[string(buf[:n])] = true
	}
	if gw.Allocations() != clients {
		t.Errorf("%d allocations, want %d", gw.Allocations(), clients)
	}
}

// udpSocket is a loopback UDP socket standing for a media pod (closed when
// the test ends).
func udpSocket(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
