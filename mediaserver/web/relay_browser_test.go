package web_test

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/relay"
	"github.com/mediafleet/mediafleet/mediaserver/server/servertest"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// relayPairJS asks getStats for the local candidate type of the page's
// selected ICE pair (kept in window.selectedLocal; "relay" when the media
// goes through TURN) and says whether the last answer was relay.
const relayPairJS = `(() => {
  mediafleet.pc.getStats().then((r) => {
    let pair;
    r.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = r.get(s.selectedCandidatePairId); });
    if (!pair) r.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    window.selectedLocal = pair ? r.get(pair.localCandidateId).candidateType : 'none';
  });
  return window.selectedLocal === 'relay';
})()`

// TestBrowserThroughTheRelayOnly: the demo page with ?relay=1
// (iceTransportPolicy "relay") publishes and another tab watches, both
// through the MediaService's TURN gateway (mediaserver/relay) with the
// credentials the mediaserver minted for them; frames are decoded and both
// selected pairs are relayed.
func TestBrowserThroughTheRelayOnly(t *testing.T) {
	cfg := relay.Default()
	cfg.ListenHost, cfg.UDPPort, cfg.AdminPort = "127.0.0.1", 0, 0
	cfg.Secret, cfg.RelayIP, cfg.AllowLoopbackPeers = "browser-relay-secret-0123456789", net.ParseIP("127.0.0.1"), true
	gw, err := relay.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	s := servertest.Start(t, func(c *config.Config) {
		c.TURNServers = []config.TURNServer{{URLs: []string{"turn:" + gw.UDPAddr().String() + "?transport=udp"},
			Secret: cfg.Secret, TTL: 10 * time.Minute, ClientsOnly: true}}
	})
	if err := gw.SetMembers(statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: time.Now().UnixNano(),
		Members: []statusapi.Member{{Name: "media-0", Address: strings.TrimPrefix(s.PublicURL(), "http://"), Ready: true}}}); err != nil {
		t.Fatal(err)
	}
	b := browser(t)
	pub := tab(t, b, s.PublicURL()+"/?room=relayed&mode=publish&relay=1")
	waitJS(t, pub, 30*time.Second, "publisher connected through the relay", `mediafleet.status === 'connected'`)
	view := watchTab(t, b, s.PublicURL()+"/?room=relayed&mode=watch&relay=1", 30*time.Second)
	waitJS(t, view, 30*time.Second, "frames decoded through the relay", framesDecodedJS+` > 10`)
	waitJS(t, pub, 10*time.Second, "publisher's selected pair is relayed", relayPairJS)
	waitJS(t, view, 10*time.Second, "viewer's selected pair is relayed", relayPairJS)
	if n := gw.Allocations(); n < 2 {
		t.Errorf("%d allocations at the gateway, want one per tab", n)
	}
}
