// Package client is a pion-based WebRTC client for mediafleet endpoints:
// WHIP publishers, WHEP viewers and WebSocket room participants that send
// synthetic RTP and count what they receive. The integration tests and the
// load generator use it.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// NewAPI returns a client API that gathers only on the named interfaces
// (loopback when none are named: tests and load runs target this machine)
// and never uses mDNS.
func NewAPI(interfaces ...string) (*webrtc.API, error) {
	return NewAPIWith(nil, interfaces...)
}

// APIOption adjusts the API NewAPIWith builds (tests).
type APIOption func(*apiBuild)

type apiBuild struct {
	se         *webrtc.SettingEngine
	ir         *interceptor.Registry
	noTWCC     bool
	noRTX      bool
	extensions []string
}

// WithoutRTX offers VP8 and Opus without RTX: the server then retransmits
// on the media stream itself.
func WithoutRTX() APIOption { return func(b *apiBuild) { b.noRTX = true } }

// WithHeaderExtension offers a video RTP header extension (e.g.
// abs-send-time, which browsers offer).
func WithHeaderExtension(uri string) APIOption {
	return func(b *apiBuild) {
		b.extensions = append(b.extensions, uri)
	}
}

// WithoutTWCC leaves out transport-wide congestion control feedback: the
// client then tells the server its bandwidth only by REMB, if at all.
func WithoutTWCC() APIOption { return func(b *apiBuild) { b.noTWCC = true } }

// WithInterceptor places an interceptor nearest the network, before NACK
// and reports (tests use one to lose packets on purpose, or to count the
// RTCP a peer gets).
func WithInterceptor(f interceptor.Factory) APIOption {
	return func(b *apiBuild) { b.ir.Add(f) }
}

// WithoutSRTPReplayProtection lets SRTP accept a packet index it has seen:
// a test that loses a packet after decryption (in an interceptor) gets the
// retransmission through, as a packet really lost on the way would.
func WithoutSRTPReplayProtection() APIOption {
	return func(b *apiBuild) { b.se.DisableSRTPReplayProtection(true) }
}

// NewAPIWith is NewAPI adjusted by opts.
func NewAPIWith(opts []APIOption, interfaces ...string) (*webrtc.API, error) {
	if len(interfaces) == 0 {
		interfaces = []string{"lo"}
	}
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(slices.Contains(interfaces, "lo"))
	se.SetInterfaceFilter(func(name string) bool { return slices.Contains(interfaces, name) })
	me := &webrtc.MediaEngine{}
	ir := &interceptor.Registry{}
	build := apiBuild{se: &se, ir: ir}
	for _, o := range opts {
		o(&build)
	}
	if build.noRTX {
		for _, c := range []struct {
			kind webrtc.RTPCodecType
			p    webrtc.RTPCodecParameters
		}{
			{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}},
			{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}},
		} {
			if err := me.RegisterCodec(c.p, c.kind); err != nil {
				return nil, err
			}
		}
	} else if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return nil, err
	}
	for _, uri := range build.extensions {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if err := webrtc.ConfigureNack(me, ir); err != nil {
		return nil, err
	}
	// Transport-wide congestion control feedback, as browsers send it:
	// the server's bandwidth estimate towards this client rests on it.
	if !build.noTWCC {
		if err := webrtc.ConfigureTWCCSender(me, ir); err != nil {
			return nil, err
		}
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir)), nil
}

// Options configure a client.
type Options struct {
	API   *webrtc.API
	Token string
	// HTTP carries WHIP/WHEP requests; nil means a client with TLS (or
	// http.DefaultClient when TLS is nil too).
	HTTP *http.Client
	// TLS configures https:// and wss:// signalling (which CAs to trust).
	TLS *tls.Config
	// Header is added to every signalling request.
	Header http.Header
	// Retries is how many times an offer or a join refused with 503 and
	// Retry-After (a full, draining or not yet routable pod) is tried
	// again, after the wait the server asks for (at most MaxRetryWait).
	// Zero: never.
	Retries int
	// MaxRetryWait caps one wait between retries (default 5s).
	MaxRetryWait time.Duration
	// ICEServers for the client's PeerConnection (e.g. from the server's
	// Link headers, ICEServersFromLinks); RelayOnly makes it use TURN
	// relays only (iceTransportPolicy "relay").
	ICEServers []webrtc.ICEServer
	RelayOnly  bool
	// Query is added to the WHIP/WHEP endpoint (mode=broadcast on a
	// publisher's, layer=h on a viewer's).
	Query url.Values
	// OnRTP, when set, sees every RTP packet a viewer receives, with its
	// arrival time (benchmarks: per-packet latency).
	OnRTP func(kind webrtc.RTPCodecType, h *rtp.Header, at time.Time)
}

// endpoint is the WHIP or WHEP URL of room.
func (o *Options) endpoint(base, kind, room string) string {
	u := base + "/" + kind + "/" + url.PathEscape(room)
	if len(o.Query) > 0 {
		u += "?" + o.Query.Encode()
	}
	return u
}

// rtcConfig is the PeerConnection configuration the options ask for.
func (o *Options) rtcConfig() webrtc.Configuration {
	c := webrtc.Configuration{ICEServers: o.ICEServers}
	if o.RelayOnly {
		c.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return c
}

// linkRe matches one Link header value announcing an ICE server.
var linkRe = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="ice-server"(.*)`)
var linkParamRe = regexp.MustCompile(`([a-z-]+)="([^"]*)"`)

// ICEServersFromLinks reads the ICE servers a WHIP/WHEP answer or preflight
// announces (RFC 9725 section 4.6), with their credentials.
func ICEServersFromLinks(h http.Header) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, v := range h.Values("Link") {
		for _, part := range strings.Split(v, ", <") {
			if !strings.HasPrefix(part, "<") {
				part = "<" + part
			}
			m := linkRe.FindStringSubmatch(part)
			if m == nil {
				continue
			}
			srv := webrtc.ICEServer{URLs: []string{m[1]}}
			for _, p := range linkParamRe.FindAllStringSubmatch(m[2], -1) {
				switch p[1] {
				case "username":
					srv.Username = p[2]
				case "credential":
					srv.Credential = p[2]
				}
			}
			out = append(out, srv)
		}
	}
	return out
}

func (o *Options) httpClient() *http.Client {
	if o.HTTP != nil {
		return o.HTTP
	}
	if o.TLS != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = o.TLS
		o.HTTP = &http.Client{Transport: t}
		return o.HTTP
	}
	return http.DefaultClient
}

// retryWait is how long to wait before retry number attempt (from 1) of a
// refusal that asked for retryAfter ("" or seconds), or false when no
// retry is left.
func (o *Options) retryWait(attempt int, retryAfter string) (time.Duration, bool) {
	if attempt > o.Retries {
		return 0, false
	}
	limit := o.MaxRetryWait
	if limit <= 0 {
		limit = 5 * time.Second
	}
	d := time.Second
	if n, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	}
	return min(d, limit), true
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HTTPError is a non-2xx signalling answer.
type HTTPError struct {
	Status     int
	Body       string
	RetryAfter string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// Counter counts RTP received on one or more tracks.
type Counter struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64
	Tracks  atomic.Int32
	// SeqJumps counts packets whose sequence number is not the one after
	// the previous packet of their track (loss, reordering, or a server
	// that does not keep a track's numbering continuous).
	SeqJumps atomic.Uint64
	// Keyframes counts VP8 keyframes (their first packets): where a
	// decoder can start.
	Keyframes atomic.Uint64
	// gapMax is the longest time between two packets of a track since
	// the last ResetMaxGap, in nanoseconds.
	gapMax  atomic.Int64
	onRTP   func(kind webrtc.RTPCodecType, h *rtp.Header, at time.Time)
	first   sync.Once
	firstAt atomic.Int64
	// jitterMicros is the largest RFC 3550 interarrival jitter of the
	// counted tracks, in microseconds.
	jitterMicros atomic.Int64
}

// MaxGap is the longest time between two packets of one track since the
// last ResetMaxGap.
func (c *Counter) MaxGap() time.Duration { return time.Duration(c.gapMax.Load()) }

// ResetMaxGap starts a new MaxGap window.
func (c *Counter) ResetMaxGap() { c.gapMax.Store(0) }

// JitterMs is the largest interarrival jitter (RFC 3550) over the tracks.
func (c *Counter) JitterMs() float64 { return float64(c.jitterMicros.Load()) / 1000 }

// FirstPacket is when the first packet arrived (zero if none).
func (c *Counter) FirstPacket() time.Time {
	if n := c.firstAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// receive counts a remote track's RTP and reads its receiver's RTCP until
// the track ends. The sender reports must be read: only then do this
// client's receiver reports carry LSR/DLSR, from which the server measures
// the round-trip time (a browser does the same).
func (c *Counter) receive(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	go func() {
		for {
			if _, _, err := r.ReadRTCP(); err != nil {
				return
			}
		}
	}()
	c.consume(t)
}

// vp8Keyframe says whether a VP8 RTP payload starts a keyframe: the start
// of partition 0 (RFC 7741 descriptor) whose frame header has the
// inverse key-frame bit clear.
func vp8Keyframe(payload []byte) bool {
	var p codecs.VP8Packet
	if _, err := p.Unmarshal(payload); err != nil {
		return false
	}
	return p.S == 1 && p.PID == 0 && len(p.Payload) > 0 && p.Payload[0]&0x01 == 0
}

// consume reads a remote track until it ends, counting packets.
func (c *Counter) consume(t *webrtc.TrackRemote) {
	c.Tracks.Add(1)
	buf := make([]byte, 1500)
	clock := float64(t.Codec().ClockRate)
	if clock == 0 {
		clock = 90000
	}
	vp8 := strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeVP8)
	var (
		pkt         rtp.Packet
		jitter      float64 // in timestamp units
		lastTransit float64
		have        bool
		lastSeq     uint16
		start       = time.Now()
		lastAt      int64
	)
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		c.first.Do(func() { c.firstAt.Store(now) })
		if lastAt != 0 {
			for g := now - lastAt; g > c.gapMax.Load(); {
				if c.gapMax.CompareAndSwap(c.gapMax.Load(), g) {
					break
				}
			}
		}
		lastAt = now
		c.Packets.Add(1)
		c.Bytes.Add(uint64(n))
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		if have && pkt.SequenceNumber != lastSeq+1 {
			c.SeqJumps.Add(1)
		}
		if c.onRTP != nil {
			c.onRTP(t.Kind(), &pkt.Header, time.Unix(0, now))
		}
		if vp8 && vp8Keyframe(pkt.Payload) {
			c.Keyframes.Add(1)
		}
		lastSeq = pkt.SequenceNumber
		arrival := time.Since(start).Seconds() * clock
		transit := arrival - float64(pkt.Timestamp)
		if have {
			d := transit - lastTransit
			if d < 0 {
				d = -d
			}
			if d < clock { // ignore timestamp jumps (new source, wrap)
				jitter += (d - jitter) / 16
			}
		}
		lastTransit, have = transit, true
		if us := int64(jitter / clock * 1e6); us > c.jitterMicros.Load() {
			c.jitterMicros.Store(us)
		}
	}
}

// Session is a WHIP or WHEP client session.
type Session struct {
	PC       *webrtc.PeerConnection
	Resource string // absolute resource URL from Location
	Answer   string
	Received Counter
	opts     Options
	video    *webrtc.TrackLocalStaticRTP
	audio    *webrtc.TrackLocalStaticRTP
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	Sent     atomic.Uint64
	// Retried counts offers sent again after a 503 with Retry-After.
	Retried atomic.Int32
	// KeyframeRequests counts the PLIs a publisher received.
	KeyframeRequests atomic.Int32
}

// Publish opens a WHIP session publishing one VP8 video and one Opus audio
// track into room. Call SendRTP to start media.
func Publish(ctx context.Context, base, room string, opts Options) (*Session, error) {
	s := &Session{opts: opts, stop: make(chan struct{})}
	pc, err := opts.API.NewPeerConnection(opts.rtcConfig())
	if err != nil {
		return nil, err
	}
	s.PC = pc
	s.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "pub")
	if err != nil {
		return nil, errors.Join(err, pc.Close())
	}
	s.audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "pub")
	if err != nil {
		return nil, errors.Join(err, pc.Close())
	}
	for _, t := range []webrtc.TrackLocal{s.video, s.audio} {
		sender, err := pc.AddTrack(t)
		if err != nil {
			return nil, errors.Join(err, pc.Close())
		}
		s.drainRTCP(sender)
	}
	if err := s.negotiate(ctx, opts.endpoint(base, "whip", room)); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// Play opens a WHEP session receiving room's tracks.
func Play(ctx context.Context, base, room string, opts Options) (*Session, error) {
	s := &Session{opts: opts, stop: make(chan struct{})}
	pc, err := opts.API.NewPeerConnection(opts.rtcConfig())
	if err != nil {
		return nil, err
	}
	s.PC = pc
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return nil, errors.Join(err, pc.Close())
		}
	}
	s.Received.onRTP = opts.OnRTP
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) { s.Received.receive(t, r) })
	if err := s.negotiate(ctx, opts.endpoint(base, "whep", room)); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func (s *Session) drainRTCP(sender *webrtc.RTPSender) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			pkts, _, err := sender.ReadRTCP()
			if err != nil {
				return
			}
			for _, p := range pkts {
				if _, ok := p.(*rtcp.PictureLossIndication); ok {
					s.KeyframeRequests.Add(1)
				}
			}
		}
	}()
}

func (s *Session) do(ctx context.Context, method, target, contentType string, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range s.opts.Header {
		req.Header[k] = vs
	}
	if s.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.Token)
	}
	resp, err := s.opts.httpClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, data, err
}

// negotiate sends a complete offer (gathering done) and applies the answer.
func (s *Session) negotiate(ctx context.Context, endpoint string) error {
	offer, err := s.PC.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(s.PC)
	if err := s.PC.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	}
	var (
		resp *http.Response
		body []byte
	)
	for attempt := 1; ; attempt++ {
		resp, body, err = s.do(ctx, http.MethodPost, endpoint, "application/sdp", []byte(s.PC.LocalDescription().SDP))
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusCreated {
			break
		}
		herr := &HTTPError{Status: resp.StatusCode, Body: string(body), RetryAfter: resp.Header.Get("Retry-After")}
		wait, again := s.opts.retryWait(attempt, herr.RetryAfter)
		if resp.StatusCode != http.StatusServiceUnavailable || herr.RetryAfter == "" || !again {
			return herr
		}
		s.Retried.Add(1)
		if err := sleepCtx(ctx, wait); err != nil {
			return errors.Join(herr, err)
		}
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("bad Location: %w", err)
	}
	s.Resource = loc.String()
	s.Answer = string(body)
	return s.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.Answer})
}

// Patch sends a trickle-ice-sdpfrag to the session resource and returns
// the status and body.
func (s *Session) Patch(ctx context.Context, frag string) (int, string, error) {
	resp, body, err := s.do(ctx, http.MethodPatch, s.Resource, "application/trickle-ice-sdpfrag", []byte(frag))
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(body), nil
}

// WaitConnected waits for ICE to connect.
func WaitConnected(ctx context.Context, pc *webrtc.PeerConnection) error {
	return waitState(ctx, "ICE", func(ok func()) {
		pc.OnICEConnectionStateChange(func(st webrtc.ICEConnectionState) {
			if st == webrtc.ICEConnectionStateConnected {
				ok()
			}
		})
	}, func() string { return pc.ICEConnectionState().String() }, webrtc.ICEConnectionStateConnected.String())
}

// WaitPeerConnected waits until the PeerConnection is connected, ICE and
// DTLS both: the media path is up.
func WaitPeerConnected(ctx context.Context, pc *webrtc.PeerConnection) error {
	return waitState(ctx, "peer connection", func(ok func()) {
		pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
			if st == webrtc.PeerConnectionStateConnected {
				ok()
			}
		})
	}, func() string { return pc.ConnectionState().String() }, webrtc.PeerConnectionStateConnected.String())
}

// waitState waits for a state: watch registers the callback that reports
// it (pion keeps one handler per event: this replaces it), state reads it
// now.
func waitState(ctx context.Context, what string, watch func(ok func()), state func() string, want string) error {
	ch := make(chan struct{}, 1)
	watch(func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if state() == want {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s not connected (state %s): %w", what, state(), ctx.Err())
	}
}

// SendRTP sends synthetic VP8 frames (pps packets per second, payload bytes
// each, a frame every 3 packets) and Opus packets at 50 pps until Close.
func (s *Session) SendRTP(pps, payload int) {
	if pps <= 0 {
		pps = 300
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sendSynthetic(s.stop, s.video, s.audio, pps, payload, &s.Sent)
	}()
}

func sendSynthetic(stop <-chan struct{}, video, audio *webrtc.TrackLocalStaticRTP, pps, payload int, sent *atomic.Uint64) {
	buf := make([]byte, payload)
	_, _ = rand.Read(buf)
	buf[0] = 0x10 // VP8 payload descriptor: start of partition
	interval := time.Second / time.Duration(pps)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	vp := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}, Payload: buf}
	ap := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SSRC: 2}, Payload: buf[:min(len(buf), 120)]}
	var i uint64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		i++
		vp.SequenceNumber++
		vp.Marker = i%3 == 0
		if vp.Marker {
			vp.Timestamp += 3000
		}
		if err := video.WriteRTP(vp); err == nil {
			sent.Add(1)
		}
		if audio != nil && i%uint64(max(1, pps/50)) == 0 {
			ap.SequenceNumber++
			ap.Timestamp += 960
			_ = audio.WriteRTP(ap)
		}
	}
}

// Delete ends the session on the server.
func (s *Session) Delete(ctx context.Context) (int, error) {
	resp, _, err := s.do(ctx, http.MethodDelete, s.Resource, "", nil)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// Close stops media and closes the PeerConnection (without DELETE).
func (s *Session) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	var err error
	if s.PC != nil {
		err = s.PC.Close()
	}
	s.wg.Wait()
	return err
}
