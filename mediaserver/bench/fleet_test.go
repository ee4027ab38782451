package bench

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/server"
	"github.com/mediafleet/mediafleet/mediaserver/signal"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// benchAdminToken is the ADMIN_TOKEN of the benchmark's fleet: pods
// forward rooms only with one.
const benchAdminToken = "bench-fleet-admin-token-0123456789"

// BenchmarkForwardedSignalling: the extra latency of signalling through a
// pod that does not own the room (it asks the ranked members whether they
// hold the room, then proxies) against the owner directly. Trickle PATCHes
// on a live session, one at a time, 1,000 each way. -benchtime 1x.
func BenchmarkForwardedSignalling(b *testing.B) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var srvs []*server.Server
	list := statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: 1}
	for _, name := range []string{"a", "b"} {
		cfg := serverConfig()
		cfg.PodName, cfg.AdminToken = name, benchAdminToken
		s, err := server.New(cfg, log)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(); err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		srvs = append(srvs, s)
		list.Members = append(list.Members, statusapi.Member{Name: name, Address: strings.TrimPrefix(s.PublicURL(), "http://"),
			AdminAddress: strings.TrimPrefix(s.AdminURL(), "http://"), Ready: true})
	}
	sc := statusapi.Client{Token: benchAdminToken}
	for _, s := range srvs {
		if err := sc.PutMembership(context.Background(), s.AdminURL(), list); err != nil {
			b.Fatal(err)
		}
	}
	room := ""
	for i := 0; room == ""; i++ {
		if o, _ := fleet.Owner("r"+strconv.Itoa(i), list.Members); o.Name == "a" {
			room = "r" + strconv.Itoa(i)
		}
	}
	owner, other := srvs[0], srvs[1]
	api, _ := client.NewAPI()
	ctx := context.Background()
	pub, err := client.Publish(ctx, owner.PublicURL(), room, client.Options{API: api})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	frag := signal.FormatTrickleFrag("", "", "0", nil)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	measure := func(base string) (p50, p99 float64) {
		url := strings.Replace(pub.Resource, owner.PublicURL(), base, 1)
		var lat []time.Duration
		for i := 0; i < 1000; i++ {
			req, _ := http.NewRequest("PATCH", url, strings.NewReader(frag))
			req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
			t0 := time.Now()
			resp, err := c.Do(req)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				b.Fatalf("PATCH via %s: %v %v", base, err, resp)
			}
			resp.Body.Close()
			lat = append(lat, time.Since(t0))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return float64(lat[len(lat)/2].Microseconds()) / 1000, float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	d50, d99 := measure(owner.PublicURL())
	f50, f99 := measure(other.PublicURL())
	b.ReportMetric(d50, "direct-p50-ms")
	b.ReportMetric(d99, "direct-p99-ms")
	b.ReportMetric(f50, "forwarded-p50-ms")
	b.ReportMetric(f99, "forwarded-p99-ms")
}
