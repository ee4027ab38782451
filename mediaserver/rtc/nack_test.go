package rtc

import (
	"slices"
	"testing"
	"time"
)

func TestNackGen(t *testing.T) {
	ms := func(n int) int64 { return int64(n) * int64(time.Millisecond) }
	var g nackGen
	for _, s := range []uint16{65530, 65531, 65532} {
		g.add(s, 0)
	}
	if got := g.due(0); len(got) != 0 {
		t.Fatalf("no gap, asked for %v", got)
	}
	// A gap across the wrap: 65533..65535, 0 missing.
	g.add(1, ms(1))
	if got := g.due(ms(1)); !slices.Equal(got, []uint16{65533, 65534, 65535, 0}) {
		t.Fatalf("gap across the wrap: asked for %v", got)
	}
	// Not again before the retry interval.
	if got := g.due(ms(50)); len(got) != 0 {
		t.Fatalf("asked again after 49 ms: %v", got)
	}
	// Two repaired (late or on RTX): never asked for again.
	g.add(65534, ms(60))
	g.add(0, ms(60))
	if got := g.due(ms(101)); !slices.Equal(got, []uint16{65533, 65535}) {
		t.Fatalf("after repairs: asked for %v", got)
	}
	// At most nackMaxTries asks per packet.
	asks := 2
	for i := 2; i < 20; i++ {
		if got := g.due(ms(101 + 100*i)); len(got) > 0 {
			asks++
		}
	}
	if asks != nackMaxTries {
		t.Fatalf("a packet that never comes was asked for %d times, want %d", asks, nackMaxTries)
	}
	if len(g.pending) != 0 {
		t.Fatalf("given-up packets still pending: %+v", g.pending)
	}
	// A jump (new stream, sender restart) is not loss.
	g.add(1+nackMaxGap+1, ms(3000))
	if got := g.due(ms(3000)); len(got) != 0 {
		t.Fatalf("a jump of %d asked for %d packets", nackMaxGap+1, len(got))
	}
	// A gap of exactly nackMaxGap-1 is asked for whole; duplicates and
	// the newest change nothing.
	top := uint16(1 + nackMaxGap + 1)
	g.add(top+nackMaxGap, ms(3001))
	g.add(top+nackMaxGap, ms(3001))
	if got := g.due(ms(3001)); len(got) != nackMaxGap-1 || got[0] != top+1 {
		t.Fatalf("a gap of %d: asked for %d from %v", nackMaxGap-1, len(got), got[:1])
	}
	// A sender that starts its numbering over (far behind): followed from
	// there, its next gap asked for.
	g.pending = g.pending[:0]
	restart := g.top - nackMaxBack - 100
	g.add(restart, ms(3001))
	g.add(restart+2, ms(3001))
	if got := g.due(ms(3001)); !slices.Equal(got, []uint16{restart + 1}) {
		t.Fatalf("after a restart: asked for %v, want [%d]", got, restart+1)
	}
	// The pending list stays bounded however long the loss lasts.
	for i := 0; i < 10; i++ {
		top = g.top + nackMaxGap
		g.add(top, ms(3002+i))
	}
	if len(g.pending) > nackMaxGap {
		t.Fatalf("%d pending", len(g.pending))
	}
}
