// Package rtc is the mediaserver's session engine: one pion/webrtc API built
// from configuration, sessions (one PeerConnection each) in a sharded
// registry, and rooms that forward RTP from publishers to subscribers
// without transcoding.
package rtc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/config"
)

// APIs are the webrtc.APIs of one process, built once from configuration
// and sharing its ICE sockets. They differ only in interceptors, so that a
// session runs just the loops its direction needs: publishers receive
// (receiver reports; the feeds ask for lost packets themselves), viewers
// send (sender reports; the feeds' caches answer their NACKs), WebSocket
// participants do both.
type APIs struct {
	Publish, Subscribe, Full *webrtc.API
	// SubscribeBWE and FullBWE add a bandwidth estimate per PeerConnection
	// (TWCC, Google congestion control): for viewers of rooms with a
	// simulcast feed, where the estimate picks the layer. Elsewhere it
	// would only cost: about 40% of forwarding throughput per CPU-second
	// in the process benchmark.
	SubscribeBWE, FullBWE *webrtc.API
	// batch is the UDP mux's socket with batched writes (nil without a
	// mux: every PeerConnection then has its own socket).
	batch *batchConn
	// estimators holds each sending PeerConnection's bandwidth estimator
	// by PeerConnection id until its session takes it.
	estimators *sync.Map
}

// The send-side estimate's start, floor and ceiling, in bits per second.
const (
	bweInitial = 1_000_000
	bweMin     = 30_000
	bweMax     = 20_000_000
)

// NewAPI builds the full API (both directions); see NewAPIs.
func NewAPI(cfg *config.Config) (*webrtc.API, io.Closer, error) {
	apis, closer, err := NewAPIs(cfg)
	if err != nil {
		return nil, nil, err
	}
	return apis.Full, closer, nil
}

// NewAPIs builds the process's APIs. The returned closer releases the shared
// UDP mux socket, if any.
//
// Per-session cost is kept low: mDNS is off (no multicast goroutines),
// only UDP4 is gathered, no TWCC or stats interceptor, and interceptors by
// direction (see APIs).
func NewAPIs(cfg *config.Config) (APIs, io.Closer, error) {
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	se.SetIncludeLoopbackCandidate(cfg.ICELoopback)
	if len(cfg.ICEInterfaces) > 0 {
		allowed := map[string]bool{}
		for _, i := range cfg.ICEInterfaces {
			allowed[i] = true
		}
		se.SetInterfaceFilter(func(name string) bool { return allowed[name] })
	}
	var iceIPs []net.IP
	for _, s := range cfg.ICEIPs {
		if ip := net.ParseIP(s); ip != nil {
			iceIPs = append(iceIPs, ip)
		}
	}
	if len(iceIPs) > 0 {
		se.SetIPFilter(func(ip net.IP) bool {
			return slices.ContainsFunc(iceIPs, ip.Equal)
		})
	}

	var closer io.Closer = nopCloser{}
	var batch *batchConn
	switch {
	case cfg.UDPMuxPort != 0:
		ip := net.IPv4zero
		if len(iceIPs) == 1 {
			// Gathering on one address: the shared socket needs no other.
			ip = iceIPs[0]
		} else if cfg.ListenHost != "" {
			if ip = net.ParseIP(cfg.ListenHost); ip == nil {
				return APIs{}, nil, fmt.Errorf("listen host %q is not an IP", cfg.ListenHost)
			}
		}
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: cfg.UDPMuxPort})
		if err != nil {
			return APIs{}, nil, fmt.Errorf("ICE_UDP_MUX_PORT %d: %w", cfg.UDPMuxPort, err)
		}
		batch = newBatchConn(conn)
		mux := webrtc.NewICEUDPMux(nil, batch)
		se.SetICEUDPMux(mux)
		closer = closerFunc(func() error { return errors.Join(mux.Close(), conn.Close()) })
	case cfg.ICEPortMin != 0:
		if err := se.SetEphemeralUDPPortRange(uint16(cfg.ICEPortMin), uint16(cfg.ICEPortMax)); err != nil {
			return APIs{}, nil, fmt.Errorf("ICE_PORT_MIN/ICE_PORT_MAX: %w", err)
		}
	}

	publicIPs, err := publicAddresses(cfg)
	if err != nil {
		return APIs{}, nil, err
	}
	if len(publicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        publicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			return APIs{}, nil, fmt.Errorf("PUBLIC_IPS: %w", err)
		}
	}

	estimators := &sync.Map{}
	build := func(recv, send, bwe bool) (*webrtc.API, error) {
		me := &webrtc.MediaEngine{}
		if err := me.RegisterDefaultCodecs(); err != nil {
			return nil, fmt.Errorf("register codecs: %w", err)
		}
		ir := &interceptor.Registry{}
		// NACK feedback is negotiated either way. Where media comes in,
		// the feeds' read loops ask for lost packets themselves (nackGen:
		// pion's generator keeps asking for packets repaired on RTX);
		// where it goes out, the feeds' packet caches answer viewers'
		// NACKs (one cache per feed, not a buffer per viewer as pion's
		// responder keeps).
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
		if recv {
			// Simulcast in: the mid, rid and repaired-rid header
			// extensions (RFC 8853) tell a publisher's layers apart.
			if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
				return nil, fmt.Errorf("simulcast header extensions: %w", err)
			}
			rr, err := report.NewReceiverInterceptor()
			if err != nil {
				return nil, fmt.Errorf("receiver reports: %w", err)
			}
			ir.Add(rr)
		}
		if send {
			// abs-send-time, written per viewer where it negotiated it
			// (browsers offer it; their receive-side estimate and REMB
			// rest on it).
			if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.ABSSendTimeURI}, webrtc.RTPCodecTypeVideo); err != nil {
				return nil, fmt.Errorf("abs-send-time: %w", err)
			}
			sr, err := report.NewSenderInterceptor()
			if err != nil {
				return nil, fmt.Errorf("sender reports: %w", err)
			}
			ir.Add(sr)
		}
		if send && bwe {
			// Bandwidth estimation per viewer: transport-wide sequence
			// numbers out, the viewer's TWCC feedback in, Google
			// congestion control's send-side estimate (no pacer: packets
			// leave when the fan-out writes them; the estimate picks
			// the simulcast layer instead).
			for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
				me.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, k)
			}
			est, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
				return gcc.NewSendSideBWE(gcc.SendSideBWEInitialBitrate(bweInitial), gcc.SendSideBWEMinBitrate(bweMin),
					gcc.SendSideBWEMaxBitrate(bweMax), gcc.SendSideBWEPacer(gcc.NewNoOpPacer()))
			})
			if err != nil {
				return nil, fmt.Errorf("bandwidth estimation: %w", err)
			}
			est.OnNewPeerConnection(func(id string, e cc.BandwidthEstimator) { estimators.Store(id, e) })
			ir.Add(est)
			if err := webrtc.ConfigureTWCCHeaderExtensionSender(me, ir); err != nil {
				return nil, fmt.Errorf("transport-wide sequence numbers: %w", err)
			}
		}
		return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir)), nil
	}
	apis := APIs{batch: batch, estimators: estimators}
	for _, b := range []struct {
		api             **webrtc.API
		recv, send, bwe bool
	}{
		{&apis.Publish, true, false, false}, {&apis.Subscribe, false, true, false}, {&apis.Full, true, true, false},
		{&apis.SubscribeBWE, false, true, true}, {&apis.FullBWE, true, true, true},
	} {
		if *b.api, err = build(b.recv, b.send, b.bwe); err != nil {
			return APIs{}, nil, errors.Join(err, closer.Close())
		}
	}
	return apis, closer, nil
}

// publicAddresses resolves PUBLIC_IPS, or reads PUBLIC_IP_FILE (published
// by the operator; it may appear a little after the pod starts).
func publicAddresses(cfg *config.Config) ([]string, error) {
	if len(cfg.PublicIPs) > 0 || cfg.PublicIPFile == "" {
		return cfg.PublicIPs, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := os.ReadFile(cfg.PublicIPFile)
		if err == nil {
			ip := strings.TrimSpace(string(raw))
			if net.ParseIP(ip) == nil {
				return nil, fmt.Errorf("PUBLIC_IP_FILE %s: %q is not an IP address", cfg.PublicIPFile, ip)
			}
			return []string{ip}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("PUBLIC_IP_FILE %s: %w", cfg.PublicIPFile, err)
		}
		time.Sleep(time.Second)
	}
}

// ICEServers turns the configured STUN and TURN servers into pion's form,
// with the credentials of one session (id): a TURN server with a shared
// secret gets credentials minted for it, valid for the server's TTL. For
// the server's own PeerConnections (forServer) the clients-only ones are
// left out.
func ICEServers(cfg *config.Config, id string, now time.Time, forServer bool) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	if len(cfg.STUNServers) > 0 {
		out = append(out, webrtc.ICEServer{URLs: cfg.STUNServers})
	}
	for _, t := range cfg.TURNServers {
		if forServer && t.ClientsOnly {
			continue
		}
		user, pass := t.Credentials(now, id)
		out = append(out, webrtc.ICEServer{URLs: t.URLs, Username: user, Credential: pass})
	}
	return out
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
