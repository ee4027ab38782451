package web_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/ivfwriter"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/server"
	"github.com/mediafleet/mediafleet/mediaserver/server/servertest"
)

// Real headless Chromium (Debian's package) with fake camera and microphone
// drives the embedded page against a real mediaserver on loopback.

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: .ci/run installs Debian's chromium")
	}
	t.Skip("chromium not installed (apt-get install chromium chromium-driver)")
	return ""
}

// browser starts one headless Chromium; tabs are contexts derived from it.
func browser(t *testing.T) context.Context {
	t.Helper()
	return browserWith(t)
}

// browserWith starts Chromium with extra options.
func browserWith(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 800),
	)
	opts = append(opts, extra...)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if _, err := chromedp.Run(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

func tab(t *testing.T, b context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b)
	t.Cleanup(cancel)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return ctx
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := chromedp.Run(c, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %q: %v", js, err)
	}
	return out
}

func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, js string) {
	t.Helper()
	if err := poll(d, 250*time.Millisecond, func() bool { return eval[bool](t, ctx, js) }); err != nil {
		state := eval[string](t, ctx, `JSON.stringify({status: mediafleet.status, error: mediafleet.error, msg: document.getElementById('message').textContent})`)
		t.Fatalf("timed out after %s waiting for %s; page state %s", d, what, state)
	}
}

// poll asks cond every interval until it holds or d passes.
func poll(d, interval time.Duration, cond func() bool) error {
	return wait.PollUntilContextTimeout(context.Background(), interval, d, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
}

// watchTab opens a watching tab until one connects: the feed appears with
// the publisher's first RTP packet, and before that WHEP answers 404.
func watchTab(t *testing.T, b context.Context, url string, d time.Duration) context.Context {
	t.Helper()
	var view context.Context
	if err := poll(d, time.Second, func() bool {
		v := tab(t, b, url)
		waitJS(t, v, 15*time.Second, "watch settles", `mediafleet.status === 'connected' || mediafleet.status === 'error'`)
		if eval[string](t, v, `mediafleet.status`) != "connected" {
			t.Logf("watching not connected yet: %s", eval[string](t, v, `mediafleet.error`))
			return false
		}
		view = v
		return true
	}); err != nil {
		t.Fatalf("watching %s never connected", url)
	}
	return view
}

// framesDecoded sums framesDecoded of the page's inbound video.
const framesDecodedJS = `Object.entries(mediafleet.stats).filter(([k]) => k.startsWith('in video')).reduce((a, [, v]) => a + v.framesDecoded, 0)`

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "_artifacts")
	}
	_ = os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	abs, _ := filepath.Abs(path)
	t.Logf("screenshot of the page: %s", abs)
}

// TestBrowserPublishesAndAnotherTabWatches: tab 1 publishes its (fake)
// camera through the page over WHIP, tab 2 watches over WHEP and decodes.
func TestBrowserPublishesAndAnotherTabWatches(t *testing.T) {
	s := servertest.Start(t, nil)
	b := browser(t)
	pub := tab(t, b, s.PublicURL()+"/?room=stage&mode=publish")
	waitJS(t, pub, 30*time.Second, "publisher connected", `mediafleet.status === 'connected'`)

	view := watchTab(t, b, s.PublicURL()+"/?room=stage&mode=watch", 30*time.Second)
	waitJS(t, view, 20*time.Second, "watcher's video has a size", `(() => { const v = document.querySelector('figure[data-id="watch"] video'); return !!v && v.videoWidth > 0; })()`)
	waitJS(t, view, 20*time.Second, "frames decoded", framesDecodedJS+` > 10`)
	first := eval[float64](t, view, framesDecodedJS)
	waitJS(t, view, 10*time.Second, fmt.Sprintf("video keeps flowing (framesDecoded past %.0f+20)", first), fmt.Sprintf("%s > %f", framesDecodedJS, first+20))
	width := eval[float64](t, view, `document.querySelector('figure[data-id="watch"] video').videoWidth`)
	t.Logf("watcher decodes %.0f px wide video", width)
	if st := s.Report(); st.Sessions.Active != 2 {
		t.Errorf("/status counts %d sessions, want 2", st.Sessions.Active)
	}
	screenshot(t, view, "browser-watch.png")
}

// TestBrowserWebSocketRoomOfThree: three tabs in one room each receive the
// two others' video.
func TestBrowserWebSocketRoomOfThree(t *testing.T) {
	s := servertest.Start(t, nil)
	b := browser(t)
	var tabs []context.Context
	for i := 0; i < 3; i++ {
		tabs = append(tabs, tab(t, b, s.PublicURL()+"/?room=party&mode=join"))
	}
	for i, tc := range tabs {
		waitJS(t, tc, 45*time.Second, fmt.Sprintf("tab %d sees two remote videos", i),
			`[...document.querySelectorAll('figure:not([data-id="local"]) video')].filter(v => v.videoWidth > 0).length === 2`)
	}
	if st := s.Report(); st.Sessions.Active != 3 {
		t.Errorf("/status counts %d sessions, want 3", st.Sessions.Active)
	}
	waitJS(t, tabs[0], 10*time.Second, "statistics table has both remote videos",
		`Object.keys(mediafleet.stats).filter(k => k.startsWith('in video')).length === 2`)
	screenshot(t, tabs[0], "browser-room.png")
}

// TestPionPublishesBrowserWatches: a pion client publishes real VP8 (frames
// recorded from Chromium's encoder, testdata/camera.ivf) over WHIP; the
// browser decodes it over WHEP.
func TestPionPublishesBrowserWatches(t *testing.T) {
	s := servertest.Start(t, nil)
	ivf, err := os.ReadFile("testdata/camera.ivf")
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := client.PublishIVF(ctx, s.PublicURL(), "pion", ivf, client.Options{API: api})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	b := browser(t)
	view := watchTab(t, b, s.PublicURL()+"/?room=pion&mode=watch", 30*time.Second)
	waitJS(t, view, 20*time.Second, "browser decodes the pion stream", framesDecodedJS+` > 20`)
	waitJS(t, view, 10*time.Second, "video has a size", `document.querySelector('figure[data-id="watch"] video').videoWidth > 0`)
}

// TestBrowserPublishesPionWatches: the page publishes; a pion WHEP viewer
// counts the RTP it receives.
func TestBrowserPublishesPionWatches(t *testing.T) {
	s := servertest.Start(t, nil)
	b := browser(t)
	pubTab := tab(t, b, s.PublicURL()+"/?room=cam&mode=publish")
	waitJS(t, pubTab, 30*time.Second, "publisher connected", `mediafleet.status === 'connected'`)
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var view *client.Session
	if poll(15*time.Second, 500*time.Millisecond, func() bool {
		view, err = client.Play(ctx, s.PublicURL(), "cam", client.Options{API: api})
		return err == nil
	}) != nil {
		t.Fatalf("play: %v", err)
	}
	defer view.Close()
	if poll(20*time.Second, 200*time.Millisecond, func() bool {
		return view.Received.Packets.Load() >= 300 && view.Received.Tracks.Load() >= 2
	}) != nil {
		t.Fatalf("pion viewer got %d packets on %d tracks from the browser, want audio and video", view.Received.Packets.Load(), view.Received.Tracks.Load())
	}
	t.Logf("pion viewer received %d packets, %d bytes, %d tracks", view.Received.Packets.Load(), view.Received.Bytes.Load(), view.Received.Tracks.Load())

	// With MEDIAFLEET_RECORD_IVF set, record the browser's VP8 for testdata.
	if out := os.Getenv("MEDIAFLEET_RECORD_IVF"); out != "" {
		recordIVF(t, ctx, s, api, out)
	}
}

func recordIVF(t *testing.T, ctx context.Context, s *server.Server, api *webrtc.API, out string) {
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ivfwriter.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	done := make(chan struct{})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		end := time.Now().Add(3 * time.Second)
		for time.Now().Before(end) {
			p, _, err := tr.ReadRTP()
			if err != nil {
				break
			}
			_ = w.WriteRTP(p)
		}
		_ = w.Close()
		close(done)
	})
	offer, _ := pc.CreateOffer(nil)
	g := webrtc.GatheringCompletePromise(pc)
	_ = pc.SetLocalDescription(offer)
	<-g
	req, _ := http.NewRequestWithContext(ctx, "POST", s.PublicURL()+"/whep/cam", bytesReader(pc.LocalDescription().SDP))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("record: %v %v", err, resp)
	}
	ans := readAll(resp)
	_ = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans})
	select {
	case <-done:
		t.Logf("recorded the browser's VP8 into %s", out)
	case <-time.After(20 * time.Second):
		t.Fatal("recording timed out")
	}
}

// inboundVideoWidth is the width of the video the watch tab decodes.
const inboundVideoWidthJS = `Object.entries(mediafleet.stats).filter(([k]) => k.startsWith('in video')).reduce((a, [, v]) => Math.max(a, v.width), 0)`

// TestBrowserSimulcastLayerCap: the page publishes its camera as three
// simulcast layers over WHIP; a watching tab decodes the top layer and,
// capped at q through the page's layer control (the WHEP layer endpoint),
// decodes a smaller picture (getStats frameWidth).
func TestBrowserSimulcastLayerCap(t *testing.T) {
	s := servertest.Start(t, nil)
	b := browser(t)
	pub := tab(t, b, s.PublicURL()+"/?room=sim&mode=publish")
	waitJS(t, pub, 30*time.Second, "publisher connected", `mediafleet.status === 'connected'`)
	view := watchTab(t, b, s.PublicURL()+"/?room=sim&mode=watch", 30*time.Second)
	waitJS(t, view, 30*time.Second, "the watcher decodes a picture", inboundVideoWidthJS+` > 0 && `+framesDecodedJS+` > 10`)
	waitJS(t, view, 30*time.Second, "the watcher on a layer wider than a quarter", inboundVideoWidthJS+` > 320`)
	full := eval[float64](t, view, inboundVideoWidthJS)
	eval[bool](t, view, `(() => { const s = document.getElementById('layer'); s.value = 'q'; s.dispatchEvent(new Event('change')); return true; })()`)
	waitJS(t, view, 30*time.Second, fmt.Sprintf("the capped watcher decodes a smaller picture than %.0f px", full),
		fmt.Sprintf("%s > 0 && %s < %f", inboundVideoWidthJS, inboundVideoWidthJS, full))
	t.Logf("watcher decoded %.0f px wide on the best layer, %.0f px capped at q", full, eval[float64](t, view, inboundVideoWidthJS))
	screenshot(t, view, "browser-simulcast-q.png")
}
