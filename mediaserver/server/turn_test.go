package server

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
)

// startTURN runs a real TURN server (pion/turn) on loopback with one user.
func startTURN(t *testing.T, user, pass string) string {
	t.Helper()
	key := turn.GenerateAuthKey(user, turnRealm, pass)
	return runTURN(t, func(u, _ string, _ net.Addr) ([]byte, bool) {
		if u == user {
			return key, true
		}
		return nil, false
	})
}

const turnRealm = "mediafleet.test"

// runTURN runs a real TURN server (pion/turn) on loopback, relaying on
// loopback, authenticating with auth; it returns its turn: URL.
func runTURN(t *testing.T, auth turn.AuthHandler) string {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:       turnRealm,
		AuthHandler: auth,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.ParseIP("127.0.0.1"), Address: "127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("turn:%s?transport=udp", conn.LocalAddr().String())
}

// TestTURNRelayCandidates: with a TURN server and its credentials the
// server's answer carries a relay candidate (the STUNner pattern); with a
// wrong password it carries none and still works over host candidates. The
// TURN server is announced to clients in Link headers.
func TestTURNRelayCandidates(t *testing.T) {
	leakCheckFirst(t)
	url := startTURN(t, "media", "s3cret")
	for _, tc := range []struct {
		name, pass string
		relay      bool
	}{{"right credentials", "s3cret", true}, {"wrong password", "nope", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer(t, func(c *config.Config) {
				c.TURNServers = []config.TURNServer{{URLs: []string{url}, Username: "media", Password: tc.pass}}
			})
			opts := clientOpts(t)
			ctx := ctxT(t, 30*time.Second)
			pub, err := client.Publish(ctx, s.PublicURL(), "relay", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if got := strings.Contains(pub.Answer, "typ relay"); got != tc.relay {
				t.Errorf("relay candidate in the answer = %v, want %v:\n%s", got, tc.relay, pub.Answer)
			}
			if err := client.WaitConnected(ctx, pub.PC); err != nil {
				t.Fatal(err)
			}
			_, hdr, _ := do(t, "OPTIONS", s.PublicURL()+"/whip/relay", "", "", nil)
			if link := strings.Join(hdr.Values("Link"), ", "); !strings.Contains(link, "<"+url+">; rel=\"ice-server\"; username=\"media\"") {
				t.Errorf("Link headers %q do not announce the TURN server", link)
			}
		})
	}
}

// startRESTTURN runs a real TURN server (pion/turn) that accepts only
// time-windowed credentials of the TURN REST API made with secret.
func startRESTTURN(t *testing.T, secret string) string {
	t.Helper()
	return runTURN(t, turn.LongTermTURNRESTAuthHandler(secret, nil))
}

// allocate tries a TURN allocation with the given credentials.
func allocate(t *testing.T, turnURL, user, pass string) error {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(turnURL, "turn:"), "?transport=udp")
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass, Realm: turnRealm, RTO: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err == nil {
		relay.Close()
	}
	return err
}

// TestTURNSharedSecretCredentials (hostile review, TURN credentials): with
// a shared secret instead of a password, the server mints credentials per
// session (username "<expiry>:<session>", password
// base64(HMAC-SHA1(secret, username))) that a real pion/turn server
// configured with the same secret accepts: the server's own relay
// candidate, and a relay-only client using what the Link headers gave it.
// Expired or forged ones are refused, and the secret itself never leaves
// the pod.
func TestTURNSharedSecretCredentials(t *testing.T) {
	leakCheckFirst(t)
	const secret = "turn-shared-secret-0123456789"
	url := startRESTTURN(t, secret)
	s := testServer(t, func(c *config.Config) {
		c.AuthToken = "client-token"
		c.TURNServers = []config.TURNServer{{URLs: []string{url}, Secret: secret, TTL: 10 * time.Minute}}
	})
	authed := map[string]string{"Authorization": "Bearer client-token"}
	_, hdr, body := do(t, "OPTIONS", s.PublicURL()+"/whip/relay", "", "", authed)
	servers := client.ICEServersFromLinks(hdr)
	if len(servers) != 1 || strings.Contains(strings.Join(hdr.Values("Link"), "")+body, secret) {
		t.Fatalf("Link headers %q", hdr.Values("Link"))
	}
	user, pass := servers[0].Username, servers[0].Credential.(string)
	expiry, id, ok := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if !ok || err != nil || id == "" || time.Until(time.Unix(exp, 0)) < 9*time.Minute || time.Until(time.Unix(exp, 0)) > 11*time.Minute {
		t.Fatalf("minted username %q: want <expiry in 10m>:<id>", user)
	}
	if err := allocate(t, url, user, pass); err != nil {
		t.Errorf("the TURN server refused minted credentials: %v", err)
	}
	// Expired, forged and wrong-secret credentials are refused.
	old := config.TURNServer{Secret: secret, TTL: time.Minute}
	oldUser, oldPass := old.Credentials(time.Now().Add(-2*time.Minute), "late")
	forged := config.TURNServer{Secret: "guessed", TTL: time.Hour}
	fUser, fPass := forged.Credentials(time.Now(), "mallory")
	for name, c := range map[string][2]string{"expired": {oldUser, oldPass}, "forged": {fUser, fPass}, "tampered": {strings.Replace(user, ":", "0:", 1), pass}} {
		if err := allocate(t, url, c[0], c[1]); err == nil {
			t.Errorf("%s credentials allocated a relay", name)
		}
	}

	// A relay-only client with the credentials the server handed out
	// publishes through the TURN server, and the server's answer carries
	// its own relay candidate (made with credentials minted for it).
	opts := clientOpts(t)
	opts.Token, opts.ICEServers, opts.RelayOnly = "client-token", servers, true
	ctx := ctxT(t, 30*time.Second)
	pub, err := client.Publish(ctx, s.PublicURL(), "relay", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if !strings.Contains(pub.Answer, "typ relay") {
		t.Errorf("no relay candidate in the answer:\n%s", pub.Answer)
	}
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatalf("relay-only client: %v", err)
	}
	pair, err := pub.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Typ.String() != "relay" {
		t.Errorf("selected pair %v (%v), want the client's relay candidate", pair, err)
	}
}
