package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/server"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const (
	fwdPPS     = 1000 // publisher packets per second
	fwdPayload = 1000 // bytes per packet
	fwdWindow  = 5 * time.Second
)

// BenchmarkForwarding: one publisher to 1, 10 and 100 viewers on loopback,
// through the mediaserver (WHIP in, WHEP out) and through a raw pion relay
// built in-process the same way (publisher → relay PeerConnection →
// TrackLocalStaticRTP → viewers), side by side. Reports forwarded packets
// per second received by all viewers, per CPU-second of the whole process
// (clients included: both variants carry the same clients), and loss.
// Each run is one 5 s window after the viewers connect; -benchtime 1x.
func BenchmarkForwarding(b *testing.B) {
	for _, viewers := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("raw-pion/viewers=%d", viewers), func(b *testing.B) { forwardRaw(b, viewers) })
		b.Run(fmt.Sprintf("mediaserver/viewers=%d", viewers), func(b *testing.B) { forwardServer(b, viewers) })
	}
}

func measure(b *testing.B, sent func() uint64, received func() uint64, viewers int) {
	time.Sleep(time.Second) // warm up: keyframes, NACK windows
	s0, r0, c0, t0 := sent(), received(), cpuTime(), time.Now()
	time.Sleep(fwdWindow)
	s1, r1, c1 := sent(), received(), cpuTime()
	el := time.Since(t0).Seconds()
	fwd := float64(r1-r0) / el
	b.ReportMetric(fwd, "fwd-pkts/s")
	b.ReportMetric(fwd/(c1-c0).Seconds(), "fwd-pkts/cpu-s")
	if exp := float64(s1-s0) * float64(viewers); exp > 0 {
		b.ReportMetric(100*(1-float64(r1-r0)/exp), "loss-%")
	}
}

func forwardServer(b *testing.B, viewers int) {
	cfg := serverConfig()
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	api, _ := client.NewAPI()
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 30 * time.Second}}
	ctx := context.Background()
	pub, err := client.Publish(ctx, s.PublicURL(), "fwd", opts)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		b.Fatal(err)
	}
	pub.SendRTP(fwdPPS, fwdPayload)
	var views []*client.Session
	for i := 0; i < viewers; i++ {
		var v *client.Session
		for try := 0; ; try++ {
			if v, err = client.Play(ctx, s.PublicURL(), "fwd", opts); err == nil {
				break
			}
			if try > 50 {
				b.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		views = append(views, v)
		defer v.Close()
	}
	for _, v := range views {
		if err := client.WaitConnected(ctx, v.PC); err != nil {
			b.Fatal(err)
		}
	}
	// Only video counts: Sent counts video packets.
	measure(b, pub.Sent.Load, func() uint64 {
		var n uint64
		for _, v := range views {
			n += v.Received.Packets.Load()
		}
		return n - audioShare(n)
	}, viewers)
}

// audioShare removes the Opus packets (50/s against fwdPPS video) from a
// mixed count.
func audioShare(n uint64) uint64 { return n * 50 / (fwdPPS + 50) }

func forwardRaw(b *testing.B, viewers int) {
	capi, _ := client.NewAPI()
	cfg := serverConfig()
	sapi, closer, err := rtc.NewAPI(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer closer.Close()
	// Publisher → relay.
	pubPC, relayIn := rawPair(b, capi, sapi)
	defer pubPC.Close()
	defer relayIn.Close()
	local, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "relay")
	relayIn.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		buf := make([]byte, 1500)
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			_, _ = local.Write(buf[:n])
		}
	})
	// Relay → viewers.
	var received atomic.Uint64
	for i := 0; i < viewers; i++ {
		out, err := sapi.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		snd, _ := out.AddTrack(local)
		go func() {
			for {
				if _, _, err := snd.ReadRTCP(); err != nil {
					return
				}
			}
		}()
		in, err := capi.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		in.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
				received.Add(1)
			}
		})
		connectPair(b, out, in)
	}
	// The publisher's track is the first sender of pubPC (rawPair added it).
	var video *webrtc.TrackLocalStaticRTP
	for _, s := range pubPC.GetSenders() {
		if t, ok := s.Track().(*webrtc.TrackLocalStaticRTP); ok && t.Kind() == webrtc.RTPCodecTypeVideo {
			video = t
		}
	}
	var sent atomic.Uint64
	stop := make(chan struct{})
	defer close(stop)
	go sendVideo(stop, video, &sent)
	measure(b, sent.Load, received.Load, viewers)
}

// connectPair connects an offerer to an answerer in-process.
func connectPair(b *testing.B, off, ans *webrtc.PeerConnection) {
	connected := make(chan struct{})
	var once atomic.Bool
	ans.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected && once.CompareAndSwap(false, true) {
			close(connected)
		}
	})
	o, _ := off.CreateOffer(nil)
	g := webrtc.GatheringCompletePromise(off)
	_ = off.SetLocalDescription(o)
	<-g
	if err := ans.SetRemoteDescription(*off.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	a, _ := ans.CreateAnswer(nil)
	g = webrtc.GatheringCompletePromise(ans)
	_ = ans.SetLocalDescription(a)
	<-g
	if err := off.SetRemoteDescription(*ans.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		b.Fatal("pair did not connect")
	}
}

func sendVideo(stop <-chan struct{}, track *webrtc.TrackLocalStaticRTP, sent *atomic.Uint64) {
	payload := make([]byte, fwdPayload)
	payload[0] = 0x10
	tick := time.NewTicker(time.Second / fwdPPS)
	defer tick.Stop()
	var seq uint16
	var ts uint32
	hdr := make([]byte, 12)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		seq++
		ts += 90
		hdr[0], hdr[1] = 0x80, 96
		hdr[2], hdr[3] = byte(seq>>8), byte(seq)
		hdr[4], hdr[5], hdr[6], hdr[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
		hdr[11] = 1
		if _, err := track.Write(append(hdr, payload...)); err == nil {
			sent.Add(1)
		}
	}
}
