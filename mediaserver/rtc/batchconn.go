package rtc

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
)

// batchSize is the most datagrams one sendmmsg carries.
const batchSize = 64

// batchConn is the UDP mux's socket with batched writes: while a feed's
// fan-out round is open (begin … end), the datagrams every viewer gets are
// queued and sent with one sendmmsg(2) per batchSize (what most of a busy
// server's CPU went to was one sendto per packet per viewer). Outside a
// round, a write goes out at once, as before. Reads are the socket's own.
type batchConn struct {
	*net.UDPConn
	pc *ipv4.PacketConn

	mu    sync.Mutex
	open  int // rounds in progress
	n     int // datagrams queued
	msgs  []ipv4.Message
	bufs  [][]byte
	addrs []net.UDPAddr
	ips   [][4]byte
}

func newBatchConn(c *net.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c, pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batchSize),
		bufs: make([][]byte, batchSize), addrs: make([]net.UDPAddr, batchSize), ips: make([][4]byte, batchSize)}
	backing := make([]byte, batchSize*maxRTPPacket)
	for i := range b.msgs {
		b.bufs[i] = backing[i*maxRTPPacket : (i+1)*maxRTPPacket : (i+1)*maxRTPPacket]
		b.msgs[i].Buffers = [][]byte{nil}
	}
	return b
}

// ReadFromAddrPort and WriteToAddrPort let the ICE mux use the socket
// without allocating an address per packet.
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return b.UDPConn.ReadFromUDPAddrPort(p)
}

func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	b.mu.Lock()
	if b.open == 0 || len(p) > maxRTPPacket || !addr.Addr().Is4() {
		b.mu.Unlock()
		return b.UDPConn.WriteToUDPAddrPort(p, addr)
	}
	i := b.n
	b.msgs[i].Buffers[0] = b.bufs[i][:copy(b.bufs[i], p)]
	b.ips[i] = addr.Addr().As4()
	b.addrs[i] = net.UDPAddr{IP: b.ips[i][:], Port: int(addr.Port())}
	b.msgs[i].Addr = &b.addrs[i]
	b.n++
	if b.n == batchSize {
		b.flushLocked()
	}
	b.mu.Unlock()
	return len(p), nil
}

func (b *batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return b.WriteToAddrPort(p, ua.AddrPort())
	}
	return b.UDPConn.WriteTo(p, addr)
}

// begin opens a fan-out round.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.open++
	b.mu.Unlock()
}

// end closes a round and sends what is queued.
func (b *batchConn) end() {
	b.mu.Lock()
	b.open--
	b.flushLocked()
	b.mu.Unlock()
}

// flushLocked sends the queued datagrams. UDP is best effort: a batch the
// kernel refuses is dropped like a datagram lost on the way.
func (b *batchConn) flushLocked() {
	msgs := b.msgs[:b.n]
	for len(msgs) > 0 {
		sent, err := b.pc.WriteBatch(msgs, 0)
		if err != nil || sent <= 0 {
			break
		}
		msgs = msgs[sent:]
	}
	b.n = 0
}
