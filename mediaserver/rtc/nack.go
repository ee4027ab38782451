package rtc

import (
	"slices"
	"time"
)

// nackGen decides which packets of one incoming layer to ask its sender
// for again (NACK): a publisher, or on a relay pod the room's owner over
// the link.
//
// pion's generator interceptor is not used for this: it counts only the
// packets of the media stream itself, so a packet repaired on the RTX
// stream (what browsers and the owner of a relay link send) stays missing
// to it, and it asks again every 100 ms until the packet leaves its
// 512-packet window (pion/interceptor#320): each lost packet cost the
// sender dozens of retransmissions. nackGen is fed by the feed's read
// loop, which sees repaired packets too, and asks for a packet at most
// nackMaxTries times.
//
// It is owned by one read loop: no locking.
type nackGen struct {
	have    bool
	top     uint16 // the newest sequence number
	pending []nackEntry
	out     []uint16
}

type nackEntry struct {
	seq   uint16
	tries uint8
	next  int64 // unix nanos: when to ask (again)
}

const (
	// nackRetry is the wait between two asks for one packet: a round
	// trip and then some (pion's interval).
	nackRetry = 100 * time.Millisecond
	// nackMaxTries bounds the asks per packet: after half a second a
	// video packet is of no use to a viewer's jitter buffer.
	nackMaxTries = 5
	// nackMaxGap: a jump of more sequence numbers than this is a new
	// stream or a sender restart, not loss; nothing is asked for. It also
	// bounds the pending list.
	nackMaxGap = 256
	// nackMaxBack: a packet this far behind the newest is not a late or
	// repaired one (the senders' caches hold about 1,000) but a sender
	// that started its numbering over.
	nackMaxBack = 4096
)

// add takes the sequence number of a packet that arrived at now (unix
// nanos), in order, late or repaired.
func (g *nackGen) add(seq uint16, now int64) {
	if !g.have {
		g.have, g.top = true, seq
		return
	}
	d := int16(seq - g.top)
	switch {
	case d == 0:
	case d < -nackMaxBack:
		// Far behind anything that could still be repaired: the sender
		// started over.
		g.pending = g.pending[:0]
		g.top = seq
	case d < 0:
		// Late or repaired: no longer missing.
		if i := slices.IndexFunc(g.pending, func(e nackEntry) bool { return e.seq == seq }); i >= 0 {
			g.pending = slices.Delete(g.pending, i, i+1)
		}
	case d > nackMaxGap:
		g.pending = g.pending[:0]
		g.top = seq
	default:
		for s := g.top + 1; s != seq; s++ {
			g.pending = append(g.pending, nackEntry{seq: s, next: now})
		}
		g.top = seq
		if n := len(g.pending) - nackMaxGap; n > 0 {
			g.pending = append(g.pending[:0], g.pending[n:]...)
		}
	}
}

// due returns the sequence numbers to ask for at now (valid until the next
// call) and counts the ask; a packet asked for nackMaxTries times is given
// up.
func (g *nackGen) due(now int64) []uint16 {
	g.out = g.out[:0]
	keep := g.pending[:0]
	for _, e := range g.pending {
		if e.next <= now {
			g.out = append(g.out, e.seq)
			e.tries++
			e.next = now + int64(nackRetry)
		}
		if e.tries < nackMaxTries {
			keep = append(keep, e)
		}
	}
	g.pending = keep
	return g.out
}
