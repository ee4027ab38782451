package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Process-level forwarding: the server alone in its own process, its CPU
// read from /proc/<pid>/stat, the clients in this process.
const (
	procPPS     = 200  // video packets per second per publisher
	procPayload = 1000 // bytes per packet
	procWindow  = 10 * time.Second
)

// BenchmarkForwardingProcess measures the mediaserver and the plain pion
// relay (hack/pionrelay: publisher → TrackLocalStaticRTP → viewers, pion's
// defaults) the same way, side by side: each runs as its own process, the
// same pion clients in this process publish 1,000-byte VP8 packets at 200
// per second (plus Opus) and play them over WHEP, and the server's CPU
// comes from /proc/<pid>/stat. Shapes: 1 publisher × 10, 100 and 500
// viewers, 20 publishers × 10 viewers. Reported per shape and server:
// forwarded video packets per second (as received by the viewers), per
// server CPU-second, the server's cores in use, loss, the p99 over viewers
// of their inter-arrival jitter, and the server's RSS per viewer.
//
//	go test -run '^$' -bench ForwardingProcess -benchtime 1x -timeout 30m ./mediaserver/bench/
func BenchmarkForwardingProcess(b *testing.B) {
	server := mediaproc.Binary(b, mediaproc.Build{})
	relay := buildRelay(b)
	shapes := []struct{ publishers, viewers int }{{1, 10}, {1, 100}, {1, 500}, {20, 10}}
	startServer := func(b *testing.B) *mediaproc.Proc {
		return mediaproc.Start(b, server, mediaproc.Options{Env: []string{"MAX_SESSIONS=100000", "LOG_LEVEL=error",
			"ICE_UDP_MUX_PORT=" + strconv.Itoa(freeUDPPort(b))}})
	}
	for _, sh := range shapes {
		name := fmt.Sprintf("%dx%d", sh.publishers, sh.viewers)
		b.Run("pion-relay/"+name, func(b *testing.B) {
			url, pid := startRelay(b, relay)
			forwardProcess(b, url, "", pid, sh.publishers, sh.viewers, nil)
		})
		b.Run("mediaserver/"+name, func(b *testing.B) {
			p := startServer(b)
			forwardProcess(b, p.URL, p.AdminURL, p.Cmd.Process.Pid, sh.publishers, sh.viewers, nil)
		})
	}
	// Simulcast: real VP8 in three layers, every viewer with its own
	// bandwidth estimate choosing its layer (the plain relay cannot do
	// this; the figure is the price of estimation and layer selection).
	ivf, err := os.ReadFile("../web/testdata/camera.ivf")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("mediaserver/simulcast-1x100", func(b *testing.B) {
		p := startServer(b)
		forwardProcess(b, p.URL, p.AdminURL, p.Cmd.Process.Pid, 1, 100, func(ctx context.Context, base, room string, opts client.Options) (*client.Session, error) {
			return client.PublishSimulcastIVF(ctx, base, room, ivf, []string{"q", "h", "f"}, opts)
		})
	})
}

// buildRelay builds hack/pionrelay once.
func buildRelay(b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "pionrelay")
	cmd := exec.Command("go", "build", "-o", out, "github.com/mediafleet/mediafleet/hack/pionrelay")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("build pionrelay: %v", err)
	}
	return out
}

// startRelay runs the relay on a free loopback port until the benchmark
// ends.
func startRelay(b *testing.B, bin string) (string, int) {
	b.Helper()
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		b.Fatalf("pionrelay said %q: %v", line, err)
	}
	return "http://" + addr, cmd.Process.Pid
}

// procCPU is a process's user+system CPU time (/proc/<pid>/stat fields 14
// and 15, in clock ticks of 1/100 s) and its resident set size in bytes.
func procCPU(b *testing.B, pid int) (time.Duration, int64) {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: fields count from ")".
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, rss * int64(os.Getpagesize())
}

// forwardProcess drives one server. With BENCH_PROFILE_DIR set and an
// admin URL, it saves the server's CPU profile of the measured window
// there (go tool pprof -top FILE).
// publish, when set, replaces the synthetic publisher (its loss is then
// not computed: its packets per layer differ).
func forwardProcess(b *testing.B, base, admin string, pid, publishers, viewers int,
	publish func(ctx context.Context, base, room string, opts client.Options) (*client.Session, error)) {
	api, err := client.NewAPI()
	if err != nil {
		b.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 60 * time.Second}, Retries: 5}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var pubs, views []*client.Session
	defer func() {
		for _, s := range append(views, pubs...) {
			_ = s.Close()
		}
	}()
	for p := 0; p < publishers; p++ {
		var pub *client.Session
		if publish != nil {
			pub, err = publish(ctx, base, fmt.Sprintf("fwd-%d", p), opts)
		} else {
			pub, err = client.Publish(ctx, base, fmt.Sprintf("fwd-%d", p), opts)
		}
		if err != nil {
			b.Fatal(err)
		}
		pubs = append(pubs, pub)
		if err := client.WaitConnected(ctx, pub.PC); err != nil {
			b.Fatal(err)
		}
		if publish == nil {
			pub.SendRTP(procPPS, procPayload)
		}
	}
	for p := 0; p < publishers; p++ {
		for v := 0; v < viewers; v++ {
			var view *client.Session
			// The room's feed appears with the publisher's first packet.
			if wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
				view, err = client.Play(ctx, base, fmt.Sprintf("fwd-%d", p), opts)
				return err == nil, nil
			}) != nil {
				b.Fatal(err)
			}
			views = append(views, view)
		}
	}
	for _, v := range views {
		if err := client.WaitConnected(ctx, v.PC); err != nil {
			b.Fatal(err)
		}
	}
	video := func(n uint64) uint64 { return n - n*50/(procPPS+50) } // Opus is 50 packets/s
	if publish != nil {
		video = func(n uint64) uint64 { return n } // video only
	}
	received := func() uint64 {
		var n uint64
		for _, v := range views {
			n += v.Received.Packets.Load()
		}
		return video(n)
	}
	sent := func() uint64 {
		var n uint64
		for _, p := range pubs {
			n += p.Sent.Load()
		}
		return n
	}
	time.Sleep(2 * time.Second) // warm up: keyframes, NACK windows, the first reports
	s0, r0, t0 := sent(), received(), time.Now()
	c0, _ := procCPU(b, pid)
	profiled := make(chan struct{})
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" && admin != "" {
		go func() {
			defer close(profiled)
			saveProfile(b, admin, filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".pprof"), procWindow-time.Second)
		}()
	} else {
		close(profiled)
	}
	time.Sleep(procWindow)
	<-profiled
	s1, r1 := sent(), received()
	c1, rss := procCPU(b, pid)
	el := time.Since(t0).Seconds()
	cpu := (c1 - c0).Seconds()
	fwd := float64(r1-r0) / el
	b.ReportMetric(fwd, "fwd-pkts/s")
	b.ReportMetric(fwd*el/math.Max(cpu, 0.01), "fwd-pkts/server-cpu-s")
	b.ReportMetric(cpu/el, "server-cores")
	if exp := float64(s1-s0) * float64(viewers); exp > 0 && publish == nil {
		b.ReportMetric(math.Max(0, 100*(1-float64(r1-r0)/exp)), "loss-%")
	}
	var jit []float64
	for _, v := range views {
		jit = append(jit, v.Received.JitterMs())
	}
	sort.Float64s(jit)
	b.ReportMetric(jit[min(len(jit)-1, len(jit)*99/100)], "p99-jitter-ms")
	b.ReportMetric(float64(rss)/1024/float64(len(views)), "server-rss-KiB/viewer")
}

// saveProfile fetches the server's CPU profile over d into path.
func saveProfile(b *testing.B, admin, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, int(d.Seconds())))
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Logf("profile: %v", err)
	}
	b.Logf("CPU profile of the window: %s", path)
}
