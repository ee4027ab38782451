// Command soak runs one mediaserver process under continuous session churn
// and records, every sample interval, what would show a slow leak:
// goroutines, heap, RSS, open file descriptors, sessions and the session
// setup p99. `make soak DURATION=1h` runs it (default 10m).
//
// Churn: WHIP publishers, WHEP viewers of the rooms that have a publisher,
// WebSocket participants and a few slow WebSocket readers (they join and
// never read) open at a set rate up to a bound of live sessions, each for a
// random lifetime; some leave politely (DELETE, leave), some vanish
// (sockets closed without a goodbye, as a killed process would). After the
// churn every client goes, sessions drain, and the idle figures are
// compared with the first idle sample.
//
// Output: a CSV and a PNG chart in -out, and a verdict on stdout: after
// the drain goroutines, open fds and heap are within 2% of the first idle
// sample (at least one goroutine or fd, 1 MiB of heap, of slack: measuring
// allocates), no leak alarm was raised
// while the count was explained by sessions, and the setup p99 of the last
// window is within 20% of the first. Exit 1 when the verdict fails.
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

type options struct {
	server, out            string
	duration, sample       time.Duration
	rate                   float64
	maxLive, rooms         int
	vanish, slow           float64
	minLife, maxLife, wind time.Duration
	warmup                 time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", "bin/mediaserver", "the mediaserver binary")
	flag.StringVar(&o.out, "out", "bin/soak", "where the CSV and the chart go")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the churn runs")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "sampling interval")
	flag.Float64Var(&o.rate, "rate", 4, "sessions opened per second")
	flag.IntVar(&o.maxLive, "max-live", 60, "bound of live sessions")
	flag.IntVar(&o.rooms, "rooms", 8, "rooms the sessions spread over")
	flag.Float64Var(&o.vanish, "vanish", 0.2, "share of sessions that end without a goodbye")
	flag.Float64Var(&o.slow, "slow", 0.05, "share of sessions that are slow WebSocket readers")
	flag.DurationVar(&o.minLife, "min-life", 5*time.Second, "shortest session")
	flag.DurationVar(&o.maxLife, "max-life", 40*time.Second, "longest session")
	flag.DurationVar(&o.warmup, "warmup", time.Minute, "churn before the first idle sample")
	flag.DurationVar(&o.wind, "window", 10*time.Minute, "the first and last windows whose setup p99 are compared (at most a third of -duration)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is one row of the CSV.
type sample struct {
	At         time.Duration
	Goroutines int
	HeapBytes  float64
	RSSBytes   int64
	FDs        int
	Sessions   int
	Live       int
	SetupP99Ms float64
	Leak       bool
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

const adminToken = "soak-admin-token"

// adminHTTP reads the admin port without keep-alive: an idle connection
// of the soak's own would hold a goroutine and an fd in the server and
// count against the idle figures.
var adminHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func run(o options) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(o.server, "-listen-host=127.0.0.1", "-ice-loopback", "-ice-interfaces=lo")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "ADMIN_PORT="+strconv.Itoa(adminPort), "ADMIN_TOKEN="+adminToken,
		"ADMIN_LISTEN_HOST=127.0.0.1", "MAX_SESSIONS=5000", "LOG_LEVEL=error", "DRAIN_TIMEOUT=5s")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if err := waitFor(30*time.Second, func() bool { return get(admin+"/readyz") == nil }); err != nil {
		return fmt.Errorf("mediaserver not ready: %w", err)
	}
	m := &monitor{admin: admin, pid: cmd.Process.Pid}
	api, err := client.NewAPI()
	if err != nil {
		return err
	}
	newChurn := func() *churn {
		return &churn{o: o, base: base, opts: client.Options{API: api, HTTP: &http.Client{Timeout: 20 * time.Second}, Retries: 3}}
	}
	// A warm-up of the same churn first: what the process builds once and
	// keeps (lazily started loops, the runtime's goroutine descriptors up
	// to the peak count, grown maps) is then part of the idle baseline,
	// and what remains to compare is what grows with time.
	warm := newChurn()
	wctx, wstop := context.WithTimeout(context.Background(), o.warmup)
	warm.run(wctx)
	wstop()
	if err := m.settle(warm, -1); err != nil {
		return err
	}
	idle0, err := m.idle()
	if err != nil {
		return err
	}
	fmt.Printf("idle before (after a %s warm-up): %d goroutines, %d fds, heap %.1f MiB, RSS %.1f MiB\n", o.warmup, idle0.Goroutines, idle0.FDs, idle0.HeapBytes/(1<<20), float64(idle0.RSSBytes)/(1<<20))

	ch := newChurn()
	start := time.Now()
	ctx, stop := context.WithTimeout(context.Background(), o.duration)
	defer stop()
	var rows []sample
	var rowsMu sync.Mutex
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(o.sample)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			s, err := m.sample(time.Since(start), ch)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sample:", err)
				continue
			}
			rowsMu.Lock()
			rows = append(rows, s)
			rowsMu.Unlock()
			fmt.Printf("%6s  goroutines %5d  sessions %4d  live %4d  heap %6.1f MiB  rss %6.1f MiB  fds %4d  setup p99 %6.1f ms%s\n",
				s.At.Round(time.Second), s.Goroutines, s.Sessions, s.Live, s.HeapBytes/(1<<20), float64(s.RSSBytes)/(1<<20), s.FDs, s.SetupP99Ms,
				map[bool]string{true: "  LEAK SUSPECTED", false: ""}[s.Leak])
		}
	}()
	ch.run(ctx)
	<-samplerDone
	fmt.Printf("churn over after %s: %d sessions opened (%d failed to set up), %d vanished\n",
		time.Since(start).Round(time.Second), ch.opened.Load(), ch.failed.Load(), ch.vanished.Load())
	if err := m.settle(ch, idle0.Goroutines); err != nil {
		return err
	}
	idle1, err := m.idle()
	if err != nil {
		return err
	}
	fmt.Printf("idle after:  %d goroutines, %d fds, heap %.1f MiB, RSS %.1f MiB\n", idle1.Goroutines, idle1.FDs, idle1.HeapBytes/(1<<20), float64(idle1.RSSBytes)/(1<<20))
	// The profiles that explain whatever did not come back.
	for name, what := range map[string]string{"heap-after.pb.gz": "heap", "goroutines-after.txt": "goroutine?debug=1"} {
		if raw, err := m.profile(what); err == nil {
			_ = os.WriteFile(filepath.Join(o.out, name), raw, 0o644)
		}
	}

	rowsMu.Lock()
	defer rowsMu.Unlock()
	if err := writeCSV(filepath.Join(o.out, "soak.csv"), idle0, rows, idle1); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(o.out, "soak.png"), rows, o); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(o.out, "soak.csv"), filepath.Join(o.out, "soak.png"))
	return verdict(o, idle0, idle1, rows, ch)
}

// within says whether after is within pct of before, with at least slack.
func within(before, after, pct, slack float64) bool {
	d := after - before
	if d < 0 {
		d = -d
	}
	return d <= max(before*pct, slack)
}

func verdict(o options, idle0, idle1 sample, rows []sample, ch *churn) error {
	var fails []string
	check := func(ok bool, format string, a ...any) {
		line := fmt.Sprintf(format, a...)
		if ok {
			fmt.Println("ok    " + line)
		} else {
			fmt.Println("FAIL  " + line)
			fails = append(fails, line)
		}
	}
	check(within(float64(idle0.Goroutines), float64(idle1.Goroutines), 0.02, 1), "goroutines back to idle: %d → %d", idle0.Goroutines, idle1.Goroutines)
	check(within(float64(idle0.FDs), float64(idle1.FDs), 0.02, 1), "open fds back to idle: %d → %d", idle0.FDs, idle1.FDs)
	// Heap: 2%, with 1 MiB of slack (measuring allocates: the heap
	// profile that runs the GC, the HTTP exchanges).
	check(within(idle0.HeapBytes, idle1.HeapBytes, 0.02, 1<<20), "heap back to idle: %.2f → %.2f MiB", idle0.HeapBytes/(1<<20), idle1.HeapBytes/(1<<20))
	alarms := 0
	for _, r := range rows {
		if r.Leak {
			alarms++
		}
	}
	check(alarms == 0, "no leak alarm during the churn (%d of %d samples)", alarms, len(rows))
	win := min(o.wind, o.duration/3)
	first, last := ch.setupP99(0, win), ch.setupP99(o.duration-win, o.duration+time.Minute)
	check(last <= first*1.2 || last < 20, "setup p99 of the last %s within 20%% of the first: %.1f → %.1f ms", win, first, last)
	if len(fails) > 0 {
		return errors.New(strings.Join(fails, "; "))
	}
	return nil
}

// monitor reads the server's state.
type monitor struct {
	admin string
	pid   int
}

func (m *monitor) report() (statusapi.Report, error) {
	c := statusapi.Client{Token: adminToken, HTTP: adminHTTP}
	return c.Report(context.Background(), m.admin)
}

// settle waits for a churn's sessions to end and drain in the server
// (vanished ones end at their ICE timeout) and for its goroutine count to
// hold still (down to target, when one is given).
func (m *monitor) settle(ch *churn, target int) error {
	ch.closeAll()
	if err := waitFor(2*time.Minute, func() bool {
		r, err := m.report()
		return err == nil && r.Sessions.Active == 0
	}); err != nil {
		return fmt.Errorf("sessions did not drain: %w", err)
	}
	last := -1
	_ = waitFor(time.Minute, func() bool {
		r, err := m.report()
		if err != nil {
			return false
		}
		same := r.Goroutines.Current == last
		last = r.Goroutines.Current
		return same && (target < 0 || r.Goroutines.Current <= target)
	})
	return nil
}

// idle takes a sample after garbage collections (the heap profile
// endpoint runs one first; two, so that sync.Pool's victim cache goes too).
func (m *monitor) idle() (sample, error) {
	for i := 0; i < 2; i++ {
		if _, err := m.profile("heap?gc=1"); err != nil {
			return sample{}, err
		}
	}
	return m.sample(0, nil)
}

// profile reads one of the server's pprof endpoints.
func (m *monitor) profile(what string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, m.admin+"/debug/pprof/"+what, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pprof %s: %d", what, resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

func (m *monitor) sample(at time.Duration, ch *churn) (sample, error) {
	r, err := m.report()
	if err != nil {
		return sample{}, err
	}
	s := sample{At: at, Goroutines: r.Goroutines.Current, Sessions: r.Sessions.Active, Leak: r.Leak.Suspected}
	// The heap the last collection marked live (the idle samples force
	// two first): what a leak grows. heap_alloc would also count what was
	// allocated since, such as the buffers of the heap profile itself.
	if s.HeapBytes, err = metric(m.admin+"/metrics", "go_gc_heap_live_bytes"); err != nil {
		return s, err
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", m.pid))
	if err != nil {
		return s, err
	}
	if f := strings.Fields(string(raw)); len(f) > 1 {
		pages, _ := strconv.ParseInt(f[1], 10, 64)
		s.RSSBytes = pages * int64(os.Getpagesize())
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", m.pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	if ch != nil {
		s.Live = int(ch.live.Load())
		s.SetupP99Ms = ch.setupP99(max(at-30*time.Second, 0), at) // the last 30 s
	}
	return s, nil
}

func metric(url, name string) (float64, error) {
	resp, err := adminHTTP.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, url)
}

func get(url string) error {
	resp, err := adminHTTP.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}

// waitFor polls cond every 200 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) error {
	return wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
}

// churn opens and ends sessions.
type churn struct {
	o     options
	base  string
	opts  client.Options
	start time.Time

	live, opened, failed, vanished atomic.Int64

	mu      sync.Mutex
	setups  []setup        // when and how long each setup took
	rooms   map[string]int // rooms with a live publisher
	closers map[int]func() // live sessions, ended at the end
	nextID  int
	wg      sync.WaitGroup
}

type setup struct {
	at  time.Duration
	dur time.Duration
}

func (c *churn) run(ctx context.Context) {
	c.start = time.Now()
	c.rooms, c.closers = map[string]int{}, map[int]func(){}
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.o.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if int(c.live.Load()) >= c.o.maxLive {
			continue
		}
		c.live.Add(1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.live.Add(-1)
			c.session(ctx)
		}()
	}
}

// session opens one session of a random kind, keeps it for a random
// lifetime (or until the churn ends) and ends it politely or not.
func (c *churn) session(ctx context.Context) {
	life := c.o.minLife + time.Duration(rand.Int64N(int64(c.o.maxLife-c.o.minLife)+1))
	vanish := rand.Float64() < c.o.vanish
	room := fmt.Sprintf("soak-%d", rand.IntN(c.o.rooms))
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	var end func()
	switch p := rand.Float64(); {
	case p < c.o.slow:
		end = c.slowReader(sctx, room)
	case p < c.o.slow+0.3:
		end = c.participant(sctx, room, vanish)
	case p < c.o.slow+0.55 || !c.hasPublisher(room):
		end = c.publisher(sctx, room, vanish)
	default:
		end = c.viewer(sctx, room, vanish)
	}
	if end == nil {
		c.failed.Add(1)
		return
	}
	c.opened.Add(1)
	c.mu.Lock()
	c.setups = append(c.setups, setup{at: time.Since(c.start), dur: time.Since(t0)})
	id := c.nextID
	c.nextID++
	c.closers[id] = end
	c.mu.Unlock()
	select {
	case <-time.After(life):
	case <-ctx.Done():
	}
	c.mu.Lock()
	f, ok := c.closers[id]
	delete(c.closers, id)
	c.mu.Unlock()
	if ok {
		f()
		if vanish {
			c.vanished.Add(1)
		}
	}
}

func (c *churn) hasPublisher(room string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[room] > 0
}

// connected opens a WHIP/WHEP session and returns it once its
// PeerConnection is connected (nil, and closed, otherwise).
func connected(ctx context.Context, open func() (*client.Session, error)) *client.Session {
	s, err := open()
	if err != nil {
		return nil
	}
	if client.WaitPeerConnected(ctx, s.PC) != nil {
		_ = s.Close()
		return nil
	}
	return s
}

func (c *churn) publisher(ctx context.Context, room string, vanish bool) func() {
	s := connected(ctx, func() (*client.Session, error) { return client.Publish(ctx, c.base, room, c.opts) })
	if s == nil {
		return nil
	}
	s.SendRTP(50, 600)
	c.mu.Lock()
	c.rooms[room]++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.rooms[room]--
		c.mu.Unlock()
		c.endSession(s, vanish)
	}
}

func (c *churn) viewer(ctx context.Context, room string, vanish bool) func() {
	s := connected(ctx, func() (*client.Session, error) { return client.Play(ctx, c.base, room, c.opts) })
	if s == nil {
		return nil
	}
	return func() { c.endSession(s, vanish) }
}

func (c *churn) endSession(s *client.Session, vanish bool) {
	if !vanish {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = s.Delete(ctx)
		cancel()
	}
	_ = s.Close()
}

func (c *churn) participant(ctx context.Context, room string, vanish bool) func() {
	p, err := client.Join(ctx, "ws"+strings.TrimPrefix(c.base, "http")+"/ws", "ws-"+room, true, c.opts)
	if err != nil {
		return nil
	}
	if client.WaitPeerConnected(ctx, p.PC) != nil {
		_ = p.Close()
		return nil
	}
	p.SendRTP(50, 600)
	return func() {
		if !vanish {
			_ = p.Leave()
		}
		_ = p.Close()
	}
}

// slowReader joins a room over WebSocket and never reads: the server's
// send queue to it fills and the server cuts it off.
func (c *churn) slowReader(ctx context.Context, room string) func() {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(c.base, "http")+"/ws", nil)
	if err != nil {
		return nil
	}
	if err := conn.WriteJSON(map[string]string{"type": "join", "room": "ws-" + room}); err != nil {
		conn.Close()
		return nil
	}
	return func() { conn.Close() }
}

// closeAll waits for every session to end (the churn is over: each ends
// as it planned, politely or not) and closes the clients' idle signalling
// connections, which would otherwise hold a goroutine and an fd each in
// the server.
func (c *churn) closeAll() {
	c.wg.Wait()
	c.opts.HTTP.CloseIdleConnections()
}

// setupP99 is the p99 of the setups that finished in [from, to), in ms.
func (c *churn) setupP99(from, to time.Duration) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d []float64
	for _, s := range c.setups {
		if s.at >= from && s.at < to {
			d = append(d, float64(s.dur.Microseconds())/1000)
		}
	}
	if len(d) == 0 {
		return 0
	}
	sort.Float64s(d)
	return d[int(0.99*float64(len(d)-1))]
}

func writeCSV(path string, idle0 sample, rows []sample, idle1 sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	_ = w.Write([]string{"phase", "seconds", "goroutines", "heap_bytes", "rss_bytes", "fds", "sessions", "live_clients", "setup_p99_ms", "leak_suspected"})
	row := func(phase string, s sample) {
		_ = w.Write([]string{phase, strconv.FormatFloat(s.At.Seconds(), 'f', 0, 64), strconv.Itoa(s.Goroutines), strconv.FormatFloat(s.HeapBytes, 'f', 0, 64),
			strconv.FormatInt(s.RSSBytes, 10), strconv.Itoa(s.FDs), strconv.Itoa(s.Sessions), strconv.Itoa(s.Live),
			strconv.FormatFloat(s.SetupP99Ms, 'f', 1, 64), strconv.FormatBool(s.Leak)})
	}
	row("idle-before", idle0)
	for _, s := range rows {
		row("churn", s)
	}
	row("idle-after", idle1)
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	raw, _ := json.Marshal(map[string]any{"idleBefore": idle0, "idleAfter": idle1, "samples": len(rows)})
	return os.WriteFile(strings.TrimSuffix(path, ".csv")+".json", raw, 0o644)
}
