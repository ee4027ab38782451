package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/config"
)

const turnBenchSecret = "turn-bench-shared-secret-0123456789"

// gatewayProc runs `mediaserver turn` as its own process relaying to the
// peers (host:port) and waits until it is ready.
func gatewayProc(b *testing.B, listeners int, peers ...string) (udpAddr string, pid int) {
	b.Helper()
	bin := mediaproc.Binary(b, mediaproc.Build{})
	port := freeUDPPort(b)
	p := mediaproc.StartNoWait(b, bin, mediaproc.Options{Args: []string{"turn"}, Token: "bench-admin", Env: []string{
		"RELAY_SECRET=" + turnBenchSecret, "POD_IP=127.0.0.1", "LISTEN_HOST=127.0.0.1", "ADMIN_LISTEN_HOST=127.0.0.1",
		"RELAY_UDP_PORT=" + strconv.Itoa(port), "RELAY_UDP_LISTENERS=" + strconv.Itoa(listeners),
		"RELAY_MAX_ALLOCATIONS=100000", "RELAY_USER_ALLOCATIONS=64", "LOG_LEVEL=error", "RELAY_ALLOW_LOOPBACK_PEERS=true",
	}})
	var members []string
	for i, a := range peers {
		members = append(members, fmt.Sprintf(`{"name":"m%d","address":%q}`, i, a))
	}
	body := fmt.Sprintf(`{"apiVersion":"status.mediafleet.io/v1","generation":%d,"members":[%s]}`, time.Now().UnixNano(), joinComma(members))
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		req, _ := http.NewRequest(http.MethodPut, p.AdminURL+"/membership", bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer bench-admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent, nil
	})
	if err != nil {
		b.Fatalf("gateway never took its member list: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), p.Cmd.Process.Pid
}

func joinComma(s []string) string {
	var buf bytes.Buffer
	for i, x := range s {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(x)
	}
	return buf.String()
}

// benchAllocation is one client's relay (a pion/turn client on its own
// socket).
type benchAllocation struct {
	client *turn.Client
	conn   net.PacketConn
	relay  net.PacketConn
}

func allocateBench(server, session string) (*benchAllocation, error) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	user, pass := config.TURNServer{Secret: turnBenchSecret, TTL: time.Hour}.Credentials(time.Now(), session)
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: "mediafleet"})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		_ = conn.Close()
		return nil, err
	}
	relay, err := c.Allocate()
	if err != nil {
		c.Close()
		_ = conn.Close()
		return nil, err
	}
	return &benchAllocation{client: c, conn: conn, relay: relay}, nil
}

func mustAllocate(b *testing.B, server, session string) *benchAllocation {
	b.Helper()
	a, err := allocateBench(server, session)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func (a *benchAllocation) close() {
	_ = a.relay.Close()
	a.client.Close()
	_ = a.conn.Close()
}

// BenchmarkTURNRelayProcess measures the TURN gateway alone: `mediaserver
// turn` in its own process (CPU from /proc/<pid>/stat), pion/turn clients in
// this one, each with its own allocation sending 1,000-byte packets through
// a channel to a sink (the "media pod", a UDP socket here). Reported:
// relayed packets per second and per gateway CPU-second, the gateway's
// cores, loss; with one UDP listener and with two on one port
// (SO_REUSEPORT). Then the hop's latency (round trips through the relay
// against the same round trips direct, p50/p99) and allocations per
// second.
//
//	go test -run '^$' -bench TURNRelayProcess -benchtime 1x -timeout 20m ./mediaserver/bench/
func BenchmarkTURNRelayProcess(b *testing.B) {
	for _, listeners := range []int{1, 2} {
		for _, rate := range []int{20_000, 60_000, 120_000} {
			b.Run(fmt.Sprintf("throughput/listeners=%d/offered=%dk", listeners, rate/1000), func(b *testing.B) {
				turnThroughput(b, listeners, 40, rate)
			})
		}
	}
	b.Run("latency", turnLatency)
	b.Run("allocations", turnAllocations)
}

func turnThroughput(b *testing.B, listeners, clients, rate int) {
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	_ = sink.(*net.UDPConn).SetReadBuffer(8 << 20)
	server, pid := gatewayProc(b, listeners, sink.LocalAddr().String())
	var allocs []*benchAllocation
	for i := 0; i < clients; i++ {
		a := mustAllocate(b, server, fmt.Sprintf("s%d", i))
		defer a.close()
		allocs = append(allocs, a)
	}
	var received atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	// Warm up: every allocation's channel bound (the first packets go as
	// Send indications while pion binds the channel).
	payload := make([]byte, procPayload)
	for _, a := range allocs {
		for i := 0; i < 5; i++ {
			_, _ = a.relay.WriteTo(payload, sink.LocalAddr())
		}
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return received.Load() >= int64(len(allocs)*5), nil
	}); err != nil {
		b.Fatalf("warm-up: %d of %d packets relayed", received.Load(), len(allocs)*5)
	}
	perClient := rate / clients
	ctx, cancel := context.WithTimeout(context.Background(), procWindow)
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	cpu0, _ := procCPU(b, pid)
	recv0, start := received.Load(), time.Now()
	for _, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A few packets every 2 ms keep the offered rate without a
			// timer per packet (and without bursts a socket buffer drops).
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			burst := max(perClient/500, 1)
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					for i := 0; i < burst; i++ {
						if _, err := a.relay.WriteTo(payload, sink.LocalAddr()); err == nil {
							sent.Add(1)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Let what is in flight arrive.
	_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 2*time.Second, true, func(context.Context) (bool, error) {
		return received.Load()-recv0 >= sent.Load(), nil
	})
	cpu1, _ := procCPU(b, pid)
	got := received.Load() - recv0
	cpu := (cpu1 - cpu0).Seconds()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "relayed-pkts/s")
	b.ReportMetric(float64(got)/max(cpu, 0.01), "relayed-pkts/gateway-cpu-s")
	b.ReportMetric(cpu/elapsed.Seconds(), "gateway-cores")
	b.ReportMetric(100*float64(sent.Load()-got)/float64(max(sent.Load(), 1)), "loss-%")
	b.ReportMetric(float64(sent.Load())/elapsed.Seconds(), "sent-pkts/s")
}

// turnLatency: 2,000 round trips, one at a time, through the relay (client
// → gateway → sink, echoed back sink → gateway → client) and the same
// direct (client → sink → client).
func turnLatency(b *testing.B) {
	echo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	server, _ := gatewayProc(b, 1, echo.LocalAddr().String())
	a := mustAllocate(b, server, "latency")
	defer a.close()
	direct, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	rtts := func(conn net.PacketConn) []time.Duration {
		buf := make([]byte, procPayload)
		out := make([]time.Duration, 0, 2000)
		for i := 0; i < 2200; i++ {
			binary.BigEndian.PutUint64(buf, uint64(i))
			t0 := time.Now()
			if _, err := conn.WriteTo(buf, echo.LocalAddr()); err != nil {
				b.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				n, _, err := conn.ReadFrom(buf)
				if err != nil {
					b.Fatalf("round trip %d: %v", i, err)
				}
				if n >= 8 && binary.BigEndian.Uint64(buf) == uint64(i) {
					break
				}
			}
			if i >= 200 { // the first ones bind the channel
				out = append(out, time.Since(t0))
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	relayed, plain := rtts(a.relay), rtts(direct)
	q := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) }
	b.ReportMetric(q(relayed, 0.5), "relayed-rtt-p50-µs")
	b.ReportMetric(q(relayed, 0.99), "relayed-rtt-p99-µs")
	b.ReportMetric(q(plain, 0.5), "direct-rtt-p50-µs")
	b.ReportMetric(q(plain, 0.99), "direct-rtt-p99-µs")
}

// turnAllocations: allocations made and released per second by 8
// concurrent clients for 5 s (each: the 401 round, Allocate, Refresh 0).
func turnAllocations(b *testing.B) {
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	server, pid := gatewayProc(b, 1, sink.LocalAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n, failed atomic.Int64
	var wg sync.WaitGroup
	cpu0, _ := procCPU(b, pid)
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				a, err := allocateBench(server, fmt.Sprintf("w%d-%d", w, i))
				if err != nil {
					failed.Add(1)
					continue
				}
				a.close()
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	cpu1, _ := procCPU(b, pid)
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "allocations/s")
	b.ReportMetric(float64(n.Load())/max((cpu1-cpu0).Seconds(), 0.01), "allocations/gateway-cpu-s")
	b.ReportMetric(float64(failed.Load()), "failed-allocations")
}
