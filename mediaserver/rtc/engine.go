package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/metrics"
	"github.com/mediafleet/mediafleet/mediaserver/registry"
)

// Errors the signalling layer maps to HTTP statuses and protocol errors.
var (
	ErrFull           = errors.New("session limit reached")
	ErrDraining       = errors.New("server is draining")
	ErrBadOffer       = errors.New("invalid SDP offer")
	ErrBadAnswer      = errors.New("invalid SDP answer")
	ErrNotPublished   = errors.New("nothing is published in this room")
	ErrCandidateLimit = errors.New("ICE candidate limit reached")
	ErrBadCandidate   = errors.New("invalid ICE candidate")
	ErrClosed         = errors.New("session closed")
)

// Kind says how a session was opened.
type Kind string

const (
	KindWHIP Kind = "whip"
	KindWHEP Kind = "whep"
	KindWS   Kind = "ws"
)

// Engine owns the sessions and rooms of one process.
type Engine struct {
	apis    APIs
	cfg     *config.Config
	metrics *metrics.Metrics
	log     *slog.Logger

	sessions registry.Registry[*Session]
	roomsMu  sync.Mutex
	rooms    map[string]*Room
	draining atomic.Bool

	// links: the relay pod's end of each relayed room's link.
	linksMu sync.Mutex
	links   map[string]*upstream

	// idle is signalled whenever the last session closes (for draining).
	idleMu sync.Mutex
	idle   chan struct{}
}

// NewEngine wires an engine around the APIs built by NewAPIs.
func NewEngine(apis APIs, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) *Engine {
	return &Engine{
		apis:     apis,
		cfg:      cfg,
		metrics:  m,
		log:      log,
		sessions: registry.NewSharded[*Session](),
		rooms:    map[string]*Room{},
		links:    map[string]*upstream{},
		idle:     make(chan struct{}),
	}
}

// SessionCount is the number of open sessions.
func (e *Engine) SessionCount() int { return e.sessions.Len() }

// RoomCount is the number of rooms with members.
func (e *Engine) RoomCount() int {
	e.roomsMu.Lock()
	defer e.roomsMu.Unlock()
	return len(e.rooms)
}

// Session looks a session up by id.
func (e *Engine) Session(id string) (*Session, bool) { return e.sessions.Get(id) }

// Sessions lists open sessions (a snapshot, shard by shard).
func (e *Engine) Sessions() []*Session {
	var out []*Session
	e.sessions.Range(func(_ string, s *Session) bool { out = append(out, s); return true })
	return out
}

// SetDraining refuses new sessions from now on.
func (e *Engine) SetDraining() { e.draining.Store(true) }

// Draining reports whether new sessions are refused.
func (e *Engine) Draining() bool { return e.draining.Load() }

// AtCapacity reports whether the next session would be refused for the limit.
func (e *Engine) AtCapacity() bool { return e.sessions.Len() >= e.cfg.MaxSessions }

// WaitIdle blocks until no session is open or ctx ends.
func (e *Engine) WaitIdle(ctx context.Context) error {
	for {
		e.idleMu.Lock()
		ch := e.idle
		e.idleMu.Unlock()
		if e.sessions.Len() == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CloseAll closes every session with reason.
func (e *Engine) CloseAll(reason string) {
	for _, s := range e.Sessions() {
		s.Close(reason)
	}
}

func newID() string { return NewID() }

// NewID is a random 128-bit identifier in hex (sessions, credential ids).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// room returns the room by name, creating it.
func (e *Engine) room(name string) *Room {
	e.roomsMu.Lock()
	defer e.roomsMu.Unlock()
	r, ok := e.rooms[name]
	if !ok {
		r = newRoom(name, e)
		e.rooms[name] = r
	}
	return r
}

// dropRoomIfEmpty forgets a room with no members.
func (e *Engine) dropRoomIfEmpty(r *Room) {
	e.roomsMu.Lock()
	defer e.roomsMu.Unlock()
	if r.empty() && e.rooms[r.name] == r {
		delete(e.rooms, r.name)
	}
}

// blankSession is a session of kind with a fresh id, before its
// PeerConnection.
func (e *Engine) blankSession(kind Kind) *Session {
	return &Session{
		ID:      newID(),
		Kind:    kind,
		engine:  e,
		created: time.Now(),
		done:    make(chan struct{}),
		senders: map[*Feed]*webrtc.RTPSender{},
	}
}

// newSession creates a PeerConnection and registers it, enforcing drain and
// the session limit before anything is allocated.
func (e *Engine) newSession(kind Kind, roomName string) (*Session, error) {
	if e.draining.Load() {
		return nil, ErrDraining
	}
	s := e.blankSession(kind)
	if e.cfg.PodName != "" && e.Relayed(roomName) {
		// Requests for a session served as a relay must find this pod
		// from any other: its id names it.
		s.ID = e.cfg.PodName + "." + s.ID
	}
	if err := e.sessions.Add(s.ID, s, e.cfg.MaxSessions); err != nil {
		if errors.Is(err, registry.ErrFull) {
			return nil, ErrFull
		}
		return nil, fmt.Errorf("register session: %w", err)
	}
	// Viewers of a room with a simulcast feed get a bandwidth estimate
	// (it picks their layer); others do without its cost.
	bwe := kind != KindWHIP && e.room(roomName).hasSimulcast()
	api := e.apis.Full
	switch {
	case kind == KindWHIP:
		api = e.apis.Publish
	case kind == KindWHEP && bwe && e.apis.SubscribeBWE != nil:
		api = e.apis.SubscribeBWE
	case kind == KindWHEP:
		api = e.apis.Subscribe
	case bwe && e.apis.FullBWE != nil:
		api = e.apis.FullBWE
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		ICEServers:   ICEServers(e.cfg, s.ID, s.created, true),
		BundlePolicy: webrtc.BundlePolicyMaxBundle,
	})
	if err != nil {
		e.sessions.Remove(s.ID)
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	s.pc = pc
	if e.apis.estimators != nil {
		if est, ok := e.apis.estimators.LoadAndDelete(pc.ID()); ok {
			s.watchBandwidth(est.(cc.BandwidthEstimator))
		}
	}
	s.log = e.log.With("session", s.ID, "room", roomName, "kind", string(kind))
	e.metrics.ActiveSessions.WithLabelValues(string(kind)).Inc()
	e.metrics.SessionsCreated.WithLabelValues(string(kind)).Inc()
	s.wire(roomName)
	s.log.Debug("session created")
	return s, nil
}

// wire puts a session with its PeerConnection into its room: the ICE
// state metric, reaping if it never connects (a timer, no goroutine of its
// own), and the PeerConnection's callbacks.
func (s *Session) wire(roomName string) {
	e := s.engine
	s.room = e.room(roomName)
	s.state.Store(int32(webrtc.ICEConnectionStateNew))
	e.metrics.ICEConnectionState.WithLabelValues("new").Inc()
	s.reap = time.AfterFunc(e.cfg.ConnectTimeout, func() {
		if !s.connected.Load() {
			s.Close("connect-timeout")
		}
	})
	s.pc.OnICEConnectionStateChange(s.onICEState)
	s.pc.OnTrack(s.onTrack)
}

// sessionClosed is called once per session after its PeerConnection closed.
func (e *Engine) sessionClosed(s *Session, reason string) {
	if s.isLink() {
		e.metrics.RelayLinks.WithLabelValues(linkRole(s.Kind)).Dec()
		return
	}
	e.sessions.Remove(s.ID)
	e.metrics.ActiveSessions.WithLabelValues(string(s.Kind)).Dec()
	e.metrics.SessionsClosed.WithLabelValues(string(s.Kind), reason).Inc()
	e.metrics.SessionDuration.WithLabelValues(string(s.Kind)).Observe(time.Since(s.created).Seconds())
	if e.sessions.Len() == 0 {
		e.idleMu.Lock()
		close(e.idle)
		e.idle = make(chan struct{})
		e.idleMu.Unlock()
	}
}

// waitGathering waits until ICE gathering completes so the answer carries
// every candidate (WHIP/WHEP clients need not support server trickle).
func waitGathering(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
}

// Publish opens a WHIP session: the offer's tracks are published into room.
func (e *Engine) Publish(ctx context.Context, room, offer string) (*Session, string, error) {
	s, err := e.newSession(KindWHIP, room)
	if err != nil {
		return nil, "", err
	}
	s.room.join(s)
	answer, err := s.answer(ctx, offer, nil)
	if err != nil {
		s.Close("bad-offer")
		return nil, "", err
	}
	s.announceFeeds()
	return s, answer, nil
}

// Subscribe opens a WHEP session that receives what room publishes.
func (e *Engine) Subscribe(ctx context.Context, room, offer string) (*Session, string, error) {
	r := e.room(room)
	if !r.hasFeeds() {
		e.dropRoomIfEmpty(r)
		return nil, "", ErrNotPublished
	}
	s, err := e.newSession(KindWHEP, room)
	if err != nil {
		return nil, "", err
	}
	answer, err := s.answer(ctx, offer, func() error {
		// Attach after the offer so the senders reuse its recvonly m-lines.
		s.room.join(s)
		return nil
	})
	if err != nil {
		s.Close("bad-offer")
		return nil, "", err
	}
	return s, answer, nil
}

// Signaller carries server-originated messages to a WebSocket participant.
type Signaller interface {
	SendOffer(sdp string) error
	SendCandidate(c webrtc.ICECandidateInit) error
}

// Join opens a WebSocket participant session: it may publish (one audio and
// one video track) and receives every other member's tracks, renegotiated
// by the server.
// before runs once the session exists, before the room is joined and the
// first offer is sent (the signalling layer announces the session id).
func (e *Engine) Join(room string, sig Signaller, before func(*Session)) (*Session, error) {
	s, err := e.newSession(KindWS, room)
	if err != nil {
		return nil, err
	}
	s.sig = sig
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := s.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			s.Close("internal-error")
			return nil, fmt.Errorf("add %s transceiver: %w", k, err)
		}
	}
	s.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		if err := sig.SendCandidate(c.ToJSON()); err != nil {
			s.log.Debug("send candidate", "err", err)
		}
	})
	if before != nil {
		before(s)
	}
	s.room.join(s)
	s.negotiate()
	return s, nil
}

// RoomSessions is how many sessions room holds here, its owner (0: not
// here, or only relayed here).
func (e *Engine) RoomSessions(name string) int {
	if e.Relayed(name) {
		return 0
	}
	return e.roomMembers(name)
}

// roomMembers counts a room's members here, links included.
func (e *Engine) roomMembers(name string) int {
	e.roomsMu.Lock()
	r, ok := e.rooms[name]
	e.roomsMu.Unlock()
	if !ok {
		return 0
	}
	return r.size()
}
