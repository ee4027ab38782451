// Package leak is the mediaserver's goroutine-leak detector.
//
// The seed service's rule was: learn a baseline over the first
// baselineWindow, then suspect a leak when goroutines exceed threshold ×
// baseline. A raw count rises with honest load (a session costs ~20
// goroutines), so this detector judges goroutines against the sessions that
// explain them:
//
//	excess = goroutines − baseline − explained(sessions)
//	explained(s) = s × perSession × 1.25
//
// perSession is learnt as the lowest goroutines-per-session ratio seen on
// settled samples (the session count unchanged since the previous sample and
// at least 5 sessions): honest sessions keep that ratio flat, while leaked
// goroutines only ever raise it, so the minimum tracks the honest cost. Until
// it is learnt, a generous 40 per session is assumed. A leak is suspected
// when excess > (threshold − 1) × baseline (the seed rule when no session is
// open) on two consecutive samples, and cleared after two samples below it.
//
// Goroutines left behind by closed sessions therefore raise the alarm, while
// a ramp to hundreds of honest sessions does not. When a leak is suspected
// the detector records the goroutine creation sites that grew most since the
// baseline, from a full stack dump (taken at most once a minute).
package leak

import (
	"bytes"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

const (
	defaultPerSession = 40
	explainMargin     = 1.25
	minSettledSess    = 5
	confirmSamples    = 2
	minExcess         = 10
	siteDumpEvery     = time.Minute
	refDumpEvery      = 10 * time.Minute
	topSites          = 5
)

// Config of a detector.
type Config struct {
	BaselineWindow time.Duration
	ThresholdRatio int
	// Now, Goroutines and Stacks are injected by tests; nil means the real
	// clock, runtime.NumGoroutine and a full runtime.Stack dump.
	Now        func() time.Time
	Goroutines func() int
	Stacks     func() []byte
}

// Detector samples goroutines and sessions and keeps a verdict.
type Detector struct {
	cfg   Config
	start time.Time

	mu          sync.Mutex
	baseline    int // 0 while learning
	learnMin    int
	perSession  float64 // 0 until learnt
	lastSess    int
	over, under int
	suspected   bool
	since       time.Time
	current     int
	max         int
	excess      int
	baseSites   map[string]int
	refSites    map[string]int // a healthy dump with refSessions open
	refSessions int
	lastRef     time.Time
	sites       []statusapi.GrowthSite
	lastDump    time.Time
}

// New returns a detector that starts learning now.
func New(cfg Config) *Detector {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Goroutines == nil {
		cfg.Goroutines = runtime.NumGoroutine
	}
	if cfg.Stacks == nil {
		cfg.Stacks = allStacks
	}
	if cfg.ThresholdRatio < 2 {
		cfg.ThresholdRatio = 3
	}
	return &Detector{cfg: cfg, start: cfg.Now(), lastSess: -1}
}

// perConnection is what an open HTTP or WebSocket connection explains: its
// serving goroutine, a background reader, a WebSocket writer.
const perConnection = 3

// Sample records the goroutine count beside the open sessions and
// connections and updates the verdict. Connections explain goroutines
// like sessions do, so that idle or slow clients (no session at all)
// cannot raise the alarm. It costs one runtime.NumGoroutine call unless the
// verdict needs creation sites.
func (d *Detector) Sample(sessions, connections int) {
	// What open connections explain comes off the count first: the rest
	// is judged against sessions and the baseline as before.
	raw := d.cfg.Goroutines()
	g := raw - connections*perConnection
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.current = raw
	if raw > d.max {
		d.max = raw
	}
	settled := sessions == d.lastSess
	d.lastSess = sessions

	if d.baseline == 0 {
		// Learning: the baseline is the lowest session-free count seen, or
		// failing that the lowest count less what sessions explain.
		idle := g - int(float64(sessions)*defaultPerSession)
		if sessions == 0 {
			idle = g
		}
		if idle > 0 && (d.learnMin == 0 || idle < d.learnMin) {
			d.learnMin = idle
		}
		if now.Sub(d.start) < d.cfg.BaselineWindow {
			return
		}
		d.baseline = max(d.learnMin, 1)
		d.baseSites = sitesOf(d.cfg.Stacks())
	}

	if settled && sessions >= minSettledSess {
		if r := float64(g-d.baseline) / float64(sessions); r > 0 && (d.perSession == 0 || r < d.perSession) {
			d.perSession = r
		}
	}
	per := d.perSession
	if per == 0 {
		per = defaultPerSession
	}
	d.excess = g - d.baseline - int(float64(sessions)*per*explainMargin)
	limit := max((d.cfg.ThresholdRatio-1)*d.baseline, minExcess)
	if d.excess > limit {
		d.over++
		d.under = 0
	} else {
		d.under++
		d.over = 0
	}
	// A healthy reference dump with sessions open lets growth be judged
	// per site against what that many sessions create.
	if !d.suspected && d.over == 0 && settled && sessions >= minSettledSess && (d.refSites == nil || now.Sub(d.lastRef) >= refDumpEvery) {
		d.refSites, d.refSessions, d.lastRef = sitesOf(d.cfg.Stacks()), sessions, now
	}
	switch {
	case !d.suspected && d.over >= confirmSamples:
		d.suspected = true
		d.since = now
		d.recordSites(now, sessions)
	case d.suspected && d.under >= confirmSamples:
		d.suspected = false
		d.since = time.Time{}
		d.sites = nil
	case d.suspected && now.Sub(d.lastDump) >= siteDumpEvery:
		d.recordSites(now, sessions)
	}
}

// recordSites ranks creation sites by growth beyond what is expected: the
// baseline count plus, when a healthy reference dump exists, that dump's
// per-session share scaled to the sessions open now.
func (d *Detector) recordSites(now time.Time, sessions int) {
	d.lastDump = now
	cur := sitesOf(d.cfg.Stacks())
	var out []statusapi.GrowthSite
	for fn, n := range cur {
		expected := float64(d.baseSites[fn])
		if d.refSessions > 0 {
			if perSess := float64(d.refSites[fn]-d.baseSites[fn]) / float64(d.refSessions); perSess > 0 {
				expected += perSess * float64(sessions)
			}
		}
		if grow := n - int(expected+0.5); grow > 0 {
			out = append(out, statusapi.GrowthSite{Function: fn, Count: n, Growth: grow})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Growth != out[j].Growth {
			return out[i].Growth > out[j].Growth
		}
		return out[i].Function < out[j].Function
	})
	if len(out) > topSites {
		out = out[:topSites]
	}
	d.sites = out
}

// State is a snapshot of the detector.
type State struct {
	Current, Max, Baseline int
	PerSession             float64
	Excess                 int
	Suspected              bool
	Since                  time.Time
	TopGrowth              []statusapi.GrowthSite
}

// State returns the current verdict.
func (d *Detector) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return State{Current: d.current, Max: d.max, Baseline: d.baseline, PerSession: d.perSession,
		Excess: d.excess, Suspected: d.suspected, Since: d.since, TopGrowth: append([]statusapi.GrowthSite(nil), d.sites...)}
}

func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// sitesOf counts goroutines by the function that created them ("created by
// F in goroutine N" in a stack dump); goroutines without one count as "main".
func sitesOf(dump []byte) map[string]int {
	out := map[string]int{}
	for _, g := range bytes.Split(dump, []byte("\n\n")) {
		if len(bytes.TrimSpace(g)) == 0 {
			continue
		}
		site := "main"
		if i := bytes.LastIndex(g, []byte("\ncreated by ")); i >= 0 {
			line := string(g[i+len("\ncreated by "):])
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			if j := strings.Index(line, " in goroutine "); j >= 0 {
				line = line[:j]
			}
			site = line
		}
		out[site]++
	}
	return out
}
