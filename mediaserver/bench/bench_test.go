// Package bench holds the mediaserver's side-by-side benchmarks: session
// setup through WHIP against raw pion PeerConnection pairs, and the
// footprint of connected sessions. Figures go to the README; nothing here
// is a pass/fail test.
//
//	go test -run '^$' -bench . -benchtime 200x ./mediaserver/bench/
package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/server"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

func serverConfig() config.Config {
	cfg := config.Loopback()
	cfg.MaxSessions = 100000
	return cfg
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkSessionSetup compares, in one run, a WHIP session (HTTP offer,
// server PeerConnection, answer after gathering, ICE+DTLS to connected)
// with a raw pion pair connected in-process through the same steps.
func BenchmarkSessionSetup(b *testing.B) {
	b.Run("raw-pion-pair", func(b *testing.B) {
		capi, err := client.NewAPI()
		if err != nil {
			b.Fatal(err)
		}
		cfg := serverConfig()
		sapi, closer, err := rtc.NewAPI(&cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer closer.Close()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			a, z := rawPair(b, capi, sapi)
			lat = append(lat, time.Since(start))
			b.StopTimer()
			_ = a.Close()
			_ = z.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
		reportLatency(b, lat)
	})
	b.Run("whip", func(b *testing.B) {
		s, err := server.New(serverConfig(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(); err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		api, err := client.NewAPI()
		if err != nil {
			b.Fatal(err)
		}
		opts := client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}}
		lat := make([]time.Duration, 0, b.N)
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			pub, err := client.Publish(ctx, s.PublicURL(), "bench-"+strconv.Itoa(i), opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := client.WaitConnected(ctx, pub.PC); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			b.StopTimer()
			_, _ = pub.Delete(ctx)
			_ = pub.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
		reportLatency(b, lat)
	})
}

// rawPair connects an offerer (client API, one sendonly VP8 track and one
// Opus track, as the WHIP client) to an answerer (the server's API).
func rawPair(b *testing.B, capi, sapi *webrtc.API) (*webrtc.PeerConnection, *webrtc.PeerConnection) {
	a, err := capi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	z, err := sapi.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		b.Fatal(err)
	}
	for _, mime := range []string{webrtc.MimeTypeVP8, webrtc.MimeTypeOpus} {
		tr, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: mime}, "t", "s")
		if _, err := a.AddTrack(tr); err != nil {
			b.Fatal(err)
		}
	}
	connected := make(chan struct{})
	a.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected {
			close(connected)
		}
	})
	offer, _ := a.CreateOffer(nil)
	g := webrtc.GatheringCompletePromise(a)
	_ = a.SetLocalDescription(offer)
	<-g
	if err := z.SetRemoteDescription(*a.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	ans, _ := z.CreateAnswer(nil)
	g = webrtc.GatheringCompletePromise(z)
	_ = z.SetLocalDescription(ans)
	<-g
	if err := a.SetRemoteDescription(*z.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		b.Fatal("raw pair did not connect")
	}
	return a, z
}

// BenchmarkFootprintRawPion: goroutines and heap per connected PeerConnection
// with pion's defaults (webrtc.NewPeerConnection), in-process.
func BenchmarkFootprintRawPion(b *testing.B) {
	api := webrtc.NewAPI() // pion's defaults: all default interceptors, mDNS on
	runtime.GC()
	g0, h0 := runtime.NumGoroutine(), heapInuse()
	var pcs []*webrtc.PeerConnection
	for i := 0; i < b.N; i++ {
		a, z := rawPair(b, api, api)
		pcs = append(pcs, a, z)
	}
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	g1, h1 := runtime.NumGoroutine(), heapInuse()
	b.ReportMetric(float64(g1-g0)/float64(2*b.N), "goroutines/pc")
	b.ReportMetric(float64(h1-h0)/1024/float64(2*b.N), "KiB/pc")
	for _, pc := range pcs {
		_ = pc.Close()
	}
}

func heapInuse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// BenchmarkFootprintServer: goroutines and heap per connected WHIP session
// in a separate mediaserver process (so client goroutines do not count),
// read from its /status and its heap profile after a GC.
func BenchmarkFootprintServer(b *testing.B) {
	bin := mediaproc.Binary(b, mediaproc.Build{})
	// The operator's default is one UDP mux port; a port range gives every
	// session its own socket (and socket reader). Both are picked free.
	mux := freeUDPPort(b)
	b.Run("udp-mux", func(b *testing.B) { footprintServer(b, bin, "ICE_UDP_MUX_PORT="+strconv.Itoa(mux)) })
	b.Run("port-range", func(b *testing.B) { footprintServer(b, bin, "ICE_PORT_MIN=40000", "ICE_PORT_MAX=44999") })
}

// freeUDPPort is a UDP port free on loopback now.
func freeUDPPort(b *testing.B) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func footprintServer(b *testing.B, bin string, iceEnv ...string) {
	p := mediaproc.Start(b, bin, mediaproc.Options{Env: append([]string{"MAX_SESSIONS=100000", "LOG_LEVEL=error"}, iceEnv...)})
	base, admin := p.URL, p.AdminURL
	g0, h0 := remoteFootprint(b, admin)
	api, _ := client.NewAPI()
	opts := client.Options{API: api}
	ctx := context.Background()
	var sessions []*client.Session
	for i := 0; i < b.N; i++ {
		pub, err := client.Publish(ctx, base, "fp-"+strconv.Itoa(i), opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := client.WaitConnected(ctx, pub.PC); err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, pub)
	}
	time.Sleep(time.Second)
	g1, h1 := remoteFootprint(b, admin)
	b.ReportMetric(float64(g1-g0)/float64(b.N), "goroutines/session")
	b.ReportMetric(float64(h1-h0)/1024/float64(b.N), "KiB/session")
	for _, s := range sessions {
		_ = s.Close()
	}
}

// remoteFootprint reads goroutines from /status and HeapInuse from the heap
// profile (gc=1 collects first).
func remoteFootprint(b *testing.B, admin string) (int, int64) {
	st, err := (&statusapi.Client{}).Report(context.Background(), admin)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.Get(admin + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var heap int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			heap, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if heap == 0 {
		b.Fatal(fmt.Errorf("no HeapInuse in heap profile"))
	}
	return st.Goroutines.Current, heap
}
