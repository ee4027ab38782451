package rtc

import "sync"

// maxRTPPacket bounds one cached packet (what a UDP read of the publisher
// can return on a 1500-byte MTU path).
const maxRTPPacket = 1500

// packetCache keeps a feed's last packets as the publisher sent them, by
// sequence number, so that viewers' NACKs are answered by the SFU without
// asking the publisher. One cache per feed, shared by all its viewers: a
// viewer costs no retransmission buffer of its own (pion's NACK responder
// keeps one per stream).
type packetCache struct {
	mu    sync.Mutex
	slots []cachedPacket
	mask  uint16
}

type cachedPacket struct {
	seq   uint16
	valid bool
	n     int
	buf   []byte
}

// newPacketCache keeps size packets (a power of two, at most 32768).
func newPacketCache(size int) *packetCache {
	if size <= 0 || size > 1<<15 || size&(size-1) != 0 {
		panic("packet cache size must be a power of two up to 32768")
	}
	c := &packetCache{slots: make([]cachedPacket, size), mask: uint16(size - 1)}
	backing := make([]byte, size*maxRTPPacket)
	for i := range c.slots {
		c.slots[i].buf = backing[i*maxRTPPacket : (i+1)*maxRTPPacket : (i+1)*maxRTPPacket]
	}
	return c
}

// put stores a copy of one packet (its raw bytes) under seq.
func (c *packetCache) put(seq uint16, raw []byte) {
	if len(raw) > maxRTPPacket {
		return
	}
	c.mu.Lock()
	s := &c.slots[seq&c.mask]
	s.seq, s.valid, s.n = seq, true, copy(s.buf, raw)
	c.mu.Unlock()
}

// get copies packet seq into dst and returns it, or nil when the cache no
// longer (or never) held it.
func (c *packetCache) get(seq uint16, dst []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.slots[seq&c.mask]
	if !s.valid || s.seq != seq {
		return nil
	}
	return append(dst[:0], s.buf[:s.n]...)
}
