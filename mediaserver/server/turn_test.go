package server

import (
	"fmt"
	"net"
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
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm = "mediafleet.test"
	key := turn.GenerateAuthKey(user, realm, pass)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(u, r string, _ net.Addr) ([]byte, bool) {
			if u == user {
				return key, true
			}
			return nil, false
		},
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
