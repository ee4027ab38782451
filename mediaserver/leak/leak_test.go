package leak

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// sim drives a detector with a fake clock and injected goroutine counts.
type sim struct {
	now   time.Time
	g     int
	stack string
	d     *Detector
}

func newSim(window time.Duration) *sim {
	s := &sim{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.d = New(Config{BaselineWindow: window, ThresholdRatio: 3,
		Now: func() time.Time { return s.now }, Goroutines: func() int { return s.g },
		Stacks: func() []byte { return []byte(s.stack) }})
	return s
}

func (s *sim) step(interval time.Duration, g, sessions int) State {
	s.now = s.now.Add(interval)
	s.g = g
	s.d.Sample(sessions, 0)
	return s.d.State()
}

const (
	base   = 30 // idle goroutines of a mediaserver
	perSes = 20 // honest goroutines per session
	tick   = 10 * time.Second
)

// TestRampTo200SessionsRaisesNoAlarm: honest load, noisy counts, a ramp to
// 200 sessions, a plateau and a ramp down never look like a leak.
func TestRampTo200SessionsRaisesNoAlarm(t *testing.T) {
	s := newSim(5 * time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func() int { return rng.IntN(7) - 3 }
	for i := 0; i < 30; i++ { // 5 min baseline, idle
		s.step(tick, base+noise(), 0)
	}
	sessions := 0
	for phase, target := range []int{200, 200, 0, 120, 0} {
		for i := 0; i < 60; i++ { // 10 minutes per phase
			switch {
			case sessions < target:
				sessions = min(target, sessions+rng.IntN(8))
			case sessions > target:
				sessions = max(target, sessions-rng.IntN(8))
			}
			// Sessions mid-setup or mid-close make the count wobble by a
			// few goroutines each.
			churn := rng.IntN(5) * perSes / 2
			st := s.step(tick, base+sessions*perSes+churn+noise(), sessions)
			if st.Suspected {
				t.Fatalf("phase %d, %d sessions, %d goroutines: false alarm (baseline %d, per session %.1f, excess %d)",
					phase, sessions, st.Current, st.Baseline, st.PerSession, st.Excess)
			}
		}
	}
	st := s.d.State()
	if st.Baseline < base-3 || st.Baseline > base+3 {
		t.Errorf("baseline %d, want about %d", st.Baseline, base)
	}
	if st.PerSession < perSes*0.8 || st.PerSession > perSes*1.1 {
		t.Errorf("learnt %.1f goroutines per session, want about %d", st.PerSession, perSes)
	}
}

// TestLeakPerClosedSessionIsFlagged: sessions churn around 10-20 while each
// closed session leaves 3 goroutines behind. The bound: the alarm is raised
// two samples after the leaked goroutines exceed (threshold−1)×baseline plus
// 25% of what open sessions explain — here 60 + 0.25×20×20 = 160 goroutines,
// about 54 closed sessions.
func TestLeakPerClosedSessionIsFlagged(t *testing.T) {
	s := newSim(5 * time.Minute)
	s.stack = stackDump(map[string]int{"main.main": 1, "net/http.(*Server).Serve": base - 1})
	for i := 0; i < 30; i++ {
		s.step(tick, base, 0)
	}
	// Learn honest sessions first (no leak yet).
	s.stack = stackDump(map[string]int{"main.main": 1, "net/http.(*Server).Serve": base - 1,
		"github.com/pion/ice/v4.(*Agent).startConnectivityChecks": 15 * perSes})
	for i := 0; i < 6; i++ {
		s.step(tick, base+15*perSes, 15)
	}
	if s.d.State().Suspected {
		t.Fatal("alarm before any leak")
	}
	const leakPerClose = 3
	sessions, closed := 15, 0
	flaggedAt := -1
	for i := 0; i < 300 && flaggedAt < 0; i++ {
		// Every sample 4 sessions close and 4 open, alternating the count
		// between 10 and 20.
		closed += 4
		if i%2 == 0 {
			sessions = 10
		} else {
			sessions = 20
		}
		leaked := closed * leakPerClose
		s.stack = stackDump(map[string]int{"main.main": 1, "net/http.(*Server).Serve": base - 1,
			"github.com/example/leaky.(*Session).watch": leaked, "github.com/pion/ice/v4.(*Agent).startConnectivityChecks": sessions * perSes})
		st := s.step(tick, base+sessions*perSes+leaked, sessions)
		if st.Suspected {
			flaggedAt = closed
			if len(st.TopGrowth) != 1 || st.TopGrowth[0].Function != "github.com/example/leaky.(*Session).watch" || st.TopGrowth[0].Growth != closed*leakPerClose {
				t.Errorf("top growth %+v, want only the leaking site (honest session goroutines are expected)", st.TopGrowth)
			}
			if st.Since.IsZero() {
				t.Error("suspected without since")
			}
		}
	}
	if flaggedAt < 0 {
		t.Fatal("leak of 3 goroutines per closed session never flagged")
	}
	if flaggedAt > 70 {
		t.Errorf("flagged after %d closed sessions, want within about 54 + 2 samples", flaggedAt)
	}
	t.Logf("flagged after %d closed sessions (%d leaked goroutines)", flaggedAt, flaggedAt*leakPerClose)
}

// TestSeedRuleWithoutSessions: no sessions, goroutines above 3× baseline.
func TestSeedRuleWithoutSessionsAndClearing(t *testing.T) {
	s := newSim(time.Minute)
	for i := 0; i < 7; i++ {
		s.step(tick, base, 0)
	}
	if st := s.step(tick, 3*base-5, 0); st.Suspected {
		t.Fatal("suspected below the threshold")
	}
	s.step(tick, 3*base+20, 0)
	if st := s.step(tick, 3*base+20, 0); !st.Suspected {
		t.Fatalf("not suspected at %d goroutines over a baseline of %d", st.Current, st.Baseline)
	}
	s.step(tick, base, 0)
	if st := s.step(tick, base, 0); st.Suspected || st.TopGrowth != nil {
		t.Fatalf("still suspected after goroutines returned: %+v", st)
	}
}

// TestLearningTakesTheWindow: nothing is judged before the window ends.
func TestLearningTakesTheWindow(t *testing.T) {
	s := newSim(5 * time.Minute)
	for i := 0; i < 29; i++ {
		if st := s.step(tick, base*10, 0); st.Suspected || st.Baseline != 0 {
			t.Fatalf("judged during learning: %+v", st)
		}
	}
}

func TestSitesOfRealDump(t *testing.T) {
	done := make(chan struct{})
	for i := 0; i < 5; i++ {
		go func() { <-done }()
	}
	defer close(done)
	sites := sitesOf(allStacks())
	var found bool
	for fn, n := range sites {
		if strings.Contains(fn, "TestSitesOfRealDump") && n >= 5 {
			found = true
		}
	}
	if !found {
		t.Errorf("creation site of 5 goroutines not found in %v", sites)
	}
}

func stackDump(sites map[string]int) string {
	var b strings.Builder
	id := 1
	for fn, n := range sites {
		for i := 0; i < n; i++ {
			id++
			if fn == "main.main" {
				fmt.Fprintf(&b, "goroutine %d [running]:\nmain.main()\n\t/x.go:1\n\n", id)
				continue
			}
			fmt.Fprintf(&b, "goroutine %d [select]:\nsome.func()\n\t/x.go:1\ncreated by %s in goroutine 1\n\t/y.go:2 +0x1\n\n", id, fn)
		}
	}
	return b.String()
}

func BenchmarkSample(b *testing.B) {
	d := New(Config{BaselineWindow: time.Nanosecond})
	d.Sample(0, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Sample(10, 0)
	}
}

// TestOpenConnectionsExplainGoroutines: 300 idle connections (slow
// clients, no session) hold ~2 goroutines each; they raise no alarm,
// while the same goroutines left behind with no connection do.
func TestOpenConnectionsExplainGoroutines(t *testing.T) {
	s := newSim(time.Minute)
	for i := 0; i < 7; i++ {
		s.step(tick, base, 0)
	}
	stepConns := func(g, conns int) State {
		s.now = s.now.Add(tick)
		s.g = g
		s.d.Sample(0, conns)
		return s.d.State()
	}
	for i := 0; i < 6; i++ {
		if st := stepConns(base+2*300, 300); st.Suspected {
			t.Fatalf("300 open connections raised the alarm: %+v", st)
		}
	}
	var st State
	for i := 0; i < 3; i++ {
		st = stepConns(base+2*300, 0) // the connections are gone, the goroutines are not
	}
	if !st.Suspected {
		t.Fatalf("600 goroutines nothing explains raised no alarm: %+v", st)
	}
}
