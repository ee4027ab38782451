package rtc

import (
	"math"
	"testing"
	"time"
)

func TestSeqTrackerCountsLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []uint16
		lost uint64
	}{
		{"in order", []uint16{1, 2, 3, 4}, 0},
		{"one gap of two", []uint16{1, 2, 5, 6}, 2},
		{"reordered, then filled", []uint16{1, 3, 2, 4}, 1}, // 2 counted lost when 3 came; late 2 counts nothing
		{"wrap around", []uint16{65534, 65535, 0, 2}, 1},
		{"restart is not loss", []uint16{10, 11, 20000, 20001}, 0},
		{"duplicate", []uint16{5, 5, 6}, 0},
	} {
		var tr seqTracker
		var lost uint64
		for _, s := range tc.seqs {
			lost += tr.add(s)
		}
		if lost != tc.lost {
			t.Errorf("%s: %d lost, want %d", tc.name, lost, tc.lost)
		}
	}
}

func TestJitterMillis(t *testing.T) {
	if got := jitterMillis(900, 90000); got != 10 {
		t.Errorf("900 units at 90 kHz = %v ms, want 10", got)
	}
	if got := jitterMillis(480, 48000); got != 10 {
		t.Errorf("480 units at 48 kHz = %v ms, want 10", got)
	}
	if got := jitterMillis(900, 0); got != 10 {
		t.Errorf("an unknown clock rate is taken as 90 kHz: %v", got)
	}
}

func TestRTTMillis(t *testing.T) {
	now := ntpMiddle(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	lsr := now - 2*65536        // sent 2 s ago
	dlsr := uint32(1.5 * 65536) // the viewer held it 1.5 s
	ms, ok := rttMillis(now, lsr, dlsr)
	if !ok || math.Abs(ms-500) > 0.1 {
		t.Errorf("RTT %v ms (%v), want 500", ms, ok)
	}
	if _, ok := rttMillis(now, 0, 0); ok {
		t.Error("an RTT without a sender report")
	}
	if _, ok := rttMillis(now, now, 65536); ok {
		t.Error("a negative RTT was accepted")
	}
	// Across the 32-bit wrap of the middle NTP bits.
	if ms, ok := rttMillis(100, math.MaxUint32-65536+101, 0); !ok || math.Abs(ms-1000) > 0.1 {
		t.Errorf("RTT across the wrap %v (%v), want 1000", ms, ok)
	}
	// ntpMiddle advances by 65536 per second.
	a, b := ntpMiddle(time.Unix(1000, 0)), ntpMiddle(time.Unix(1001, 0))
	if b-a != 65536 {
		t.Errorf("one second is %d units", b-a)
	}
}
