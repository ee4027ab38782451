package rtc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Session is one PeerConnection and what it is doing in its room.
type Session struct {
	ID   string
	Kind Kind

	engine  *Engine
	pc      *webrtc.PeerConnection
	room    *Room
	log     *slog.Logger
	created time.Time
	reap    *time.Timer
	sig     Signaller

	candidates atomic.Int32 // distinct remote candidates (len of candSeen)
	candMu     sync.Mutex
	candSeen   map[string]struct{}
	estimate   atomic.Int64 // bandwidth estimate towards the viewer, bits/s
	twccSeen   atomic.Bool  // the viewer sends TWCC feedback (else REMB counts)
	connected  atomic.Bool
	state      atomic.Int32
	closeOnce  sync.Once
	closed     atomic.Bool
	done       chan struct{}

	// mu serialises negotiation and guards what follows.
	mu         sync.Mutex
	negPending bool
	early      []webrtc.ICECandidateInit // candidates that came before the answer
	// deferredDetach: feeds that ended while a WHEP answer was being made.
	deferredDetach []*Feed
	senders        map[*Feed]*webrtc.RTPSender
	downs          map[*webrtc.RTPSender]*DownTrack            // what each sender carries (or last carried)
	idle           map[webrtc.RTPCodecType][]*webrtc.RTPSender // WHEP senders whose feed ended
	onClose        []func(reason string)
	announced      map[string]*Feed // by mid, WHIP feeds published at answer time

	owner *ownerLink // the owner's end of a relay link (KindRelay)
	up    *upstream  // a relay pod's end of a relay link (KindUpstream)
}

// RoomName is the room the session belongs to.
func (s *Session) RoomName() string { return s.room.name }

// Done is closed when the session has closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Connected reports whether ICE has connected.
func (s *Session) Connected() bool { return s.connected.Load() }

// PeerConnection exposes the session's PeerConnection (tests, stats).
func (s *Session) PeerConnection() *webrtc.PeerConnection { return s.pc }

// OnClose registers fn to run once the session closes.
func (s *Session) OnClose(fn func(reason string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClose = append(s.onClose, fn)
}

// Close ends the session: it leaves its room (its feeds end), its
// PeerConnection closes and every goroutine it started returns.
func (s *Session) Close(reason string) {
	s.closeOnce.Do(func() {
		// Set under mu: whoever holds mu and sees the session open may
		// still use the PeerConnection (pion creates a fresh ICE agent if
		// a candidate is added after Close, and that agent would leak).
		s.mu.Lock()
		s.closed.Store(true)
		s.mu.Unlock()
		s.reap.Stop()
		s.releaseDownTracks()
		s.room.leave(s)
		if err := s.pc.Close(); err != nil {
			s.log.Debug("close peer connection", "err", err)
		}
		s.setICEMetric(webrtc.ICEConnectionStateClosed)
		s.engine.sessionClosed(s, reason)
		s.engine.dropRoomIfEmpty(s.room)
		if s.Kind != KindUpstream {
			s.engine.closeIdleLink(s.room)
		}
		close(s.done)
		s.mu.Lock()
		hooks := s.onClose
		s.onClose = nil
		s.mu.Unlock()
		for _, fn := range hooks {
			fn(reason)
		}
		s.log.Info("session closed", "reason", reason, "duration", time.Since(s.created).Round(time.Millisecond).String())
	})
}

func (s *Session) setICEMetric(st webrtc.ICEConnectionState) {
	old := webrtc.ICEConnectionState(s.state.Swap(int32(st)))
	if old == st {
		return
	}
	m := s.engine.metrics.ICEConnectionState
	m.WithLabelValues(old.String()).Dec()
	if st != webrtc.ICEConnectionStateClosed {
		m.WithLabelValues(st.String()).Inc()
	}
}

func (s *Session) onICEState(st webrtc.ICEConnectionState) {
	if s.closed.Load() {
		return
	}
	s.setICEMetric(st)
	switch st {
	case webrtc.ICEConnectionStateConnected:
		if s.connected.CompareAndSwap(false, true) {
			s.reap.Stop()
			s.engine.metrics.ICEConnectionTime.Observe(float64(time.Since(s.created).Milliseconds()))
			s.log.Info("session connected")
			// A new viewer can only start decoding at a keyframe.
			go s.requestKeyframes()
		}
	case webrtc.ICEConnectionStateFailed:
		go s.Close("ice-failed")
	case webrtc.ICEConnectionStateClosed:
		go s.Close("ice-closed")
	}
}

// onTrack publishes a remote track into the room and forwards its RTP until
// the track ends. It runs on the goroutine pion starts for the track.
func (s *Session) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	if s.Kind == KindWHEP || s.closed.Load() {
		return
	}
	if s.up != nil {
		s.up.onTrack(remote, receiver)
		return
	}
	// A feed announced at answer time (announceFeeds) is used when its
	// codec is what actually arrives.
	// The layers of a simulcast track (one per rid) arrive as tracks of
	// one m-line: they join that m-line's feed.
	mid := receiverMid(s.pc, receiver)
	s.mu.Lock()
	f := s.announced[mid]
	if f != nil && f.codec.MimeType != remote.Codec().MimeType {
		delete(s.announced, mid)
		s.mu.Unlock()
		s.room.unpublish(f)
		s.mu.Lock()
		f = nil
	}
	fresh := f == nil
	if fresh {
		f = newFeed(s.ID+"/"+remote.ID(), remote.Kind(), s, remote.Codec().RTPCodecCapability, remote.ID(), "room-"+s.ID[:8])
		if s.announced == nil {
			s.announced = map[string]*Feed{}
		}
		s.announced[mid] = f
	}
	s.mu.Unlock()
	l := f.addLayer(remote.RID())
	if fresh {
		s.room.publish(f)
	} else {
		s.room.layersChanged(f)
	}
	defer func() {
		if f.removeLayer(l) == 0 {
			s.room.unpublish(f)
		} else {
			s.room.layersChanged(f)
		}
	}()
	f.forward(s.engine.metrics, l, remote)
}

func receiverMid(pc *webrtc.PeerConnection, r *webrtc.RTPReceiver) string {
	for _, t := range pc.GetTransceivers() {
		if t.Receiver() == r {
			return t.Mid()
		}
	}
	return ""
}

// announceFeeds publishes a WHIP session's tracks into the room as soon as
// they are negotiated, before their first packet, so that a WHEP viewer
// arriving at once gets audio and video even though it cannot renegotiate.
func (s *Session) announceFeeds() {
	simulcast := map[string]bool{}
	if rd := s.pc.RemoteDescription(); rd != nil {
		simulcast = simulcastMids(rd.SDP)
	}
	for _, t := range s.pc.GetTransceivers() {
		if t.Direction() != webrtc.RTPTransceiverDirectionRecvonly || t.Mid() == "" {
			continue
		}
		codecs := t.Receiver().GetParameters().Codecs
		if len(codecs) == 0 {
			continue
		}
		f := newFeed(s.ID+"/"+t.Mid(), t.Kind(), s, codecs[0].RTPCodecCapability, t.Kind().String()+"-"+t.Mid(), "room-"+s.ID[:8])
		f.simulcastOffered = simulcast[t.Mid()]
		s.mu.Lock()
		if s.announced == nil {
			s.announced = map[string]*Feed{}
		}
		s.announced[t.Mid()] = f
		s.mu.Unlock()
		s.room.publish(f)
	}
}

// answer applies a remote offer, runs attach (if any) and returns the
// complete answer once ICE gathering is done.
func (s *Session) answer(ctx context.Context, offer string, attach func() error) (string, error) {
	if err := s.checkRemoteSDP(offer, true, ErrBadOffer); err != nil {
		return "", err
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	if attach != nil {
		if err := attach(); err != nil {
			return "", err
		}
	}
	// A feed that ends while the answer is made must not take its track
	// out from under CreateAnswer/SetLocalDescription (pion refuses a
	// sender whose track became nil): detach waits for s.mu and defers
	// itself until the answer is set.
	s.mu.Lock()
	gathered, err := s.answerLocked()
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	deferred := s.deferredDetach
	s.deferredDetach = nil
	for _, f := range deferred {
		s.detachLocked(f)
	}
	s.mu.Unlock()
	if err := waitGathering(ctx, gathered); err != nil {
		return "", err
	}
	return s.pc.LocalDescription().SDP, nil
}

// answerLocked creates and sets the answer to the remote offer; the
// channel closes when gathering is done. Called with s.mu held.
func (s *Session) answerLocked() (<-chan struct{}, error) {
	ans, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(ans); err != nil {
		return nil, fmt.Errorf("set local description: %w", err)
	}
	return gathered, nil
}

// requestKeyframes asks the publishers of every feed this session receives
// for a keyframe (rate-limited per feed).
func (s *Session) requestKeyframes() {
	s.mu.Lock()
	feeds := make([]*Feed, 0, len(s.senders))
	for f := range s.senders {
		feeds = append(feeds, f)
	}
	s.mu.Unlock()
	for _, f := range feeds {
		f.RequestKeyframe()
	}
}

// AddCandidate adds one remote ICE candidate, within the per-session limit.
// Candidates that arrive before the remote description are kept until it
// is set.
func (s *Session) AddCandidate(c webrtc.ICECandidateInit) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if c.Candidate == "" { // end of candidates
		return nil
	}
	raw := strings.TrimPrefix(c.Candidate, "a=")
	if !strings.HasPrefix(raw, "candidate:") {
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("invalid").Inc()
		return fmt.Errorf("%w: %q does not start with \"candidate:\"", ErrBadCandidate, truncate(c.Candidate, 64))
	}
	// pion's own parser decides what a candidate is, before it counts.
	if _, err := ice.UnmarshalCandidate(raw); err != nil {
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("invalid").Inc()
		return fmt.Errorf("%w: %q: %v", ErrBadCandidate, truncate(c.Candidate, 64), err)
	}
	if _, ok := s.countCandidates([]string{raw}); !ok {
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("refused").Inc()
		return fmt.Errorf("%w: at most %d candidates per session", ErrCandidateLimit, s.engine.cfg.MaxICECandidates)
	}
	c.Candidate = raw
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		s.forgetCandidate(raw)
		return ErrClosed
	}
	if s.pc.RemoteDescription() == nil {
		s.early = append(s.early, c)
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("queued").Inc()
		return nil
	}
	if err := s.pc.AddICECandidate(c); err != nil {
		s.forgetCandidate(raw)
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("invalid").Inc()
		return fmt.Errorf("%w: %v", ErrBadCandidate, err)
	}
	s.engine.metrics.ICECandidatesAdded.WithLabelValues("added").Inc()
	return nil
}

// CandidateCount is how many remote candidates the session holds.
func (s *Session) CandidateCount() int { return int(s.candidates.Load()) }

// negotiate sends a fresh offer to a WebSocket participant, or marks one
// pending while an offer is in flight. Negotiation is serialised by s.mu.
func (s *Session) negotiate() {
	if s.Kind == KindRelay {
		s.linkFeedsChanged()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negotiateLocked()
}

func (s *Session) negotiateLocked() {
	if s.sig == nil || s.closed.Load() {
		return
	}
	if s.pc.SignalingState() != webrtc.SignalingStateStable {
		s.negPending = true
		return
	}
	if s.Kind == KindUpstream && len(s.pc.GetTransceivers()) == 0 {
		return // a link with nothing to carry yet offers nothing
	}
	s.negPending = false
	offer, err := s.pc.CreateOffer(nil)
	if err != nil {
		s.log.Warn("create offer", "err", err)
		return
	}
	if err := s.pc.SetLocalDescription(offer); err != nil {
		s.log.Warn("set local offer", "err", err)
		return
	}
	if err := s.sig.SendOffer(offer.SDP); err != nil {
		s.log.Debug("send offer", "err", err)
	}
}

// HandleAnswer applies a WebSocket participant's answer, then any queued
// candidates, then a renegotiation that became due meanwhile.
func (s *Session) HandleAnswer(sdp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return fmt.Errorf("%w: no offer is waiting for an answer", ErrBadAnswer)
	}
	if err := s.checkRemoteSDP(sdp, false, ErrBadAnswer); err != nil {
		return err
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	for _, c := range s.early {
		if err := s.pc.AddICECandidate(c); err != nil {
			s.log.Debug("queued candidate refused", "err", err)
		}
	}
	s.early = nil
	if s.negPending {
		s.negotiateLocked()
	}
	return nil
}

// attach gives this subscriber a down-track of the feed. Called with the
// room lock held; WebSocket participants renegotiate afterwards.
func (s *Session) attach(f *Feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return
	}
	if _, ok := s.senders[f]; ok {
		return
	}
	if s.Kind == KindRelay {
		// The relay pod asks for the feed's layers in its next offer.
		s.owner.feeds[f] = struct{}{}
		return
	}
	d, err := newDownTrack(f)
	if err != nil {
		s.log.Warn("create down-track", "feed", f.ID, "err", err)
		return
	}
	if s.downs == nil {
		s.downs = map[*webrtc.RTPSender]*DownTrack{}
	}
	// A WHEP viewer cannot renegotiate: reuse a sender whose feed ended;
	// the viewer's stream continues where the old feed's ended.
	if idle := s.idle[f.Kind]; s.Kind == KindWHEP && len(idle) > 0 {
		sender := idle[0]
		if prev := s.downs[sender]; prev != nil {
			d.continueFrom(prev)
		}
		if err := sender.ReplaceTrack(d.local); err == nil {
			s.idle[f.Kind] = idle[1:]
			s.senders[f] = sender
			s.downs[sender] = d
			f.addDown(d)
			f.RequestKeyframe()
			return
		}
	}
	if s.Kind == KindWHEP && s.pc.RemoteDescription() != nil && s.pc.SignalingState() == webrtc.SignalingStateStable {
		return // negotiated already; no m-line for a new track
	}
	sender, err := s.pc.AddTrack(d.local)
	if err != nil {
		s.log.Warn("add track", "feed", f.ID, "err", err)
		return
	}
	s.senders[f] = sender
	s.downs[sender] = d
	f.addDown(d)
	go s.readRTCP(sender)
}

// detach removes a feed from this subscriber. A WHEP viewer still answering
// its offer gets it once the answer is set (see answer).
func (s *Session) detach(f *Feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Kind == KindWHEP && s.pc.SignalingState() == webrtc.SignalingStateHaveRemoteOffer {
		if _, ok := s.senders[f]; ok {
			s.deferredDetach = append(s.deferredDetach, f)
		}
		return
	}
	s.detachLocked(f)
}

func (s *Session) detachLocked(f *Feed) {
	if s.Kind == KindRelay {
		delete(s.owner.feeds, f)
		for mid, sender := range s.owner.byMid {
			if d := s.downs[sender]; d != nil && d.feed == f {
				s.dropLinkSender(mid, sender)
			}
		}
		return
	}
	sender, ok := s.senders[f]
	if !ok || s.closed.Load() {
		return
	}
	delete(s.senders, f)
	if d := s.downs[sender]; d != nil {
		f.removeDown(d)
		s.downs[sender] = d.ended()
	}
	if s.Kind == KindWHEP {
		// The sender stays (a WHEP viewer cannot renegotiate) and so does
		// where its stream stopped, for the next feed to continue from.
		if err := sender.ReplaceTrack(nil); err == nil {
			if s.idle == nil {
				s.idle = map[webrtc.RTPCodecType][]*webrtc.RTPSender{}
			}
			s.idle[f.Kind] = append(s.idle[f.Kind], sender)
		}
		return
	}
	delete(s.downs, sender)
	if err := s.pc.RemoveTrack(sender); err != nil {
		s.log.Debug("remove track", "err", err)
	}
}

// ErrUnknownLayer: a layer cap names no layer rank.
var ErrUnknownLayer = errors.New("unknown layer: use q, h or f")

// SetLayerCap caps the simulcast layers this session gets of feed (every
// feed when feed is "") at the layer named max (q, h or f).
func (s *Session) SetLayerCap(feed, max string) error {
	rank, ok := RankOf(max)
	if !ok {
		return ErrUnknownLayer
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, sender := range s.senders {
		if d := s.downs[sender]; d != nil && (feed == "" || f.ID == feed) {
			d.SetCap(rank)
		}
	}
	return nil
}

// Layers is the layer (rid) this session gets of each feed it receives,
// by feed id ("" for a plain track).
func (s *Session) Layers() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for f, sender := range s.senders {
		if d := s.downs[sender]; d != nil {
			out[f.ID] = d.Layer()
		}
	}
	return out
}

// releaseDownTracks takes this session's down-tracks off their feeds (the
// session is closing: nothing more is written to it).
func (s *Session) releaseDownTracks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, sender := range s.senders {
		if d := s.downs[sender]; d != nil {
			f.removeDown(d)
		}
	}
}

// readRTCP reads RTCP from one sender until it stops: keyframe requests go
// to the publisher, receiver reports feed the quality metrics.
// A WHEP sender may carry several feeds over its life (ReplaceTrack), so the
// feed is looked up per packet.
func (s *Session) readRTCP(sender *webrtc.RTPSender) {
	m := s.engine.metrics
	var seqs []uint16
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		d := s.downTrackOf(sender)
		if d == nil {
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.feed.RequestKeyframe()
			case *rtcp.ReceiverReport:
				s.engine.observeReports(p.Reports, d.feed.codec.ClockRate)
			case *rtcp.TransportLayerCC:
				s.twccSeen.Store(true)
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				// A client without transport-wide feedback (TWCC) says
				// its bandwidth by REMB: that is its estimate then.
				if !s.twccSeen.Load() {
					s.onEstimate(int(p.Bitrate))
				}
			case *rtcp.TransportLayerNack:
				seqs = seqs[:0]
				for _, pair := range p.Nacks {
					seqs = append(seqs, pair.PacketList()...)
				}
				answered, missed := d.retransmit(seqs)
				m.NACKs.WithLabelValues("answered").Add(float64(answered))
				m.NACKs.WithLabelValues("missed").Add(float64(missed))
			}
		}
	}
}

// downTrackOf is the down-track a sender carries now: nil when its feed
// ended (a detached sender's entry is removed, or, for a WHEP sender that
// stays, replaced by what is kept of it, which has no feed).
func (s *Session) downTrackOf(sender *webrtc.RTPSender) *DownTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.downs[sender]; d != nil && d.feed != nil {
		return d
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
