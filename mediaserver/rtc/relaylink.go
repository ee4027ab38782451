package rtc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Relay links cascade a room over pods. The owner pod of a room holds its
// publishers; a relay pod serves viewers (and WebSocket participants) of
// the room the owner has no room for, and pulls the room's feeds from the
// owner over one PeerConnection per (room, relay pod): the link. Every
// layer of a simulcast feed travels as its own track, so the relay pod
// picks layers per viewer as the owner does. A relay pod's own WebSocket
// participants publish up the same link; the owner publishes what arrives
// on it into the room like any participant's feed, and passes it to every
// other member but the link it came from: a tree with the owner at the
// root, no loops, no duplicates.
//
// The relay pod always makes the offer (its recvonly m-lines name the
// owner's feed and layer each wants, its send m-lines carry its own
// feeds); the owner answers and tells the relay pod when its feeds
// change. One side offering means no glare.
const (
	// KindRelay is the owner's end of a link (one per relay pod).
	KindRelay Kind = "relay"
	// KindUpstream is a relay pod's end of a link (one per relayed room).
	KindUpstream Kind = "upstream"
)

// LinkMsg is one control message of a link.
type LinkMsg struct {
	// Type: "feeds" (owner → relay: what the room publishes), "offer"
	// (relay → owner), "answer" (owner → relay), "error".
	Type  string      `json:"type"`
	Feeds []LinkFeed  `json:"feeds,omitempty"`
	SDP   string      `json:"sdp,omitempty"`
	Recv  []LinkTrack `json:"recv,omitempty"`
	Error string      `json:"error,omitempty"`
}

// LinkFeed describes one of the owner's feeds.
type LinkFeed struct {
	ID        string                    `json:"id"`
	Kind      string                    `json:"kind"` // audio or video
	Codec     webrtc.RTPCodecCapability `json:"codec"`
	Simulcast bool                      `json:"simulcast,omitempty"`
	// Layers are the rids that carry packets now ("" for a plain track).
	Layers []string `json:"layers"`
}

// LinkTrack names what one of the relay pod's recvonly m-lines wants.
type LinkTrack struct {
	Mid  string `json:"mid"`
	Feed string `json:"feed"`
	RID  string `json:"rid"`
}

// LinkConn carries a link's control messages (a WebSocket on the admin
// port, authenticated with the admin token). Send may be called from
// several goroutines.
type LinkConn interface {
	Send(LinkMsg) error
	Recv() (LinkMsg, error)
	Close() error
}

// Bounds of what a link's peer may ask for.
const (
	maxLinkFeeds  = 256
	maxLinkTracks = 3 * maxLinkFeeds
)

// ErrNoLink: a relayed room has no link to its owner.
var ErrNoLink = errors.New("no relay link to the room's owner")

// newLinkSession makes the PeerConnection of one end of a link. It is not
// a client session: it is not in the registry and counts against no
// session limit.
func (e *Engine) newLinkSession(kind Kind, roomName, peer string) (*Session, error) {
	s := e.blankSession(kind)
	pc, err := e.apis.Full.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	s.pc = pc
	s.log = e.log.With("link", s.ID, "room", roomName, "kind", string(kind), "peer", peer)
	s.wire(roomName)
	e.metrics.RelayLinks.WithLabelValues(linkRole(kind)).Inc()
	return s, nil
}

func linkRole(k Kind) string {
	if k == KindRelay {
		return "owner"
	}
	return "relay"
}

func (s *Session) isLink() bool { return s.Kind == KindRelay || s.Kind == KindUpstream }

// ---- the owner's end ----

// ownerLink is the owner's state of one link.
type ownerLink struct {
	conn LinkConn
	// sendMu orders feeds messages; queued says one is due (a change
	// after the last one was computed).
	sendMu sync.Mutex
	queued atomic.Bool

	feeds map[*Feed]struct{}           // the room's feeds this link may carry
	byMid map[string]*webrtc.RTPSender // what each m-line carries
}

// ServeLink runs the owner's end of a link for room until the relay pod
// goes (its control connection fails) or ctx ends. peer names the relay
// pod (logs).
func (e *Engine) ServeLink(ctx context.Context, room, peer string, conn LinkConn) error {
	if e.RoomSessions(room) == 0 {
		return fmt.Errorf("room %q is not served here", room)
	}
	s, err := e.newLinkSession(KindRelay, room, peer)
	if err != nil {
		return err
	}
	s.owner = &ownerLink{conn: conn, feeds: map[*Feed]struct{}{}, byMid: map[string]*webrtc.RTPSender{}}
	defer s.Close("link-closed")
	s.room.join(s)
	s.linkFeedsChanged()
	go func() {
		select {
		case <-ctx.Done():
			s.Close("shutdown")
		case <-s.done:
		}
		_ = conn.Close()
	}()
	for {
		msg, err := conn.Recv()
		if err != nil {
			return nil
		}
		if msg.Type != "offer" {
			_ = conn.Send(LinkMsg{Type: "error", Error: "the owner takes only offers"})
			continue
		}
		answer, err := s.linkAnswer(ctx, msg)
		if err != nil && s.closed.Load() {
			return nil
		}
		if err != nil {
			s.log.Warn("relay link offer refused", "err", err)
			_ = conn.Send(LinkMsg{Type: "error", Error: err.Error()})
			continue
		}
		if err := conn.Send(LinkMsg{Type: "answer", SDP: answer}); err != nil {
			return nil
		}
	}
}

// sendFeeds tells the relay pod what the room publishes (all but what
// came up this link). Called with s.owner.sendMu held: messages go out in
// the order their contents were read, the last one the newest.
func (s *Session) sendFeeds() {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return
	}
	feeds := make([]LinkFeed, 0, len(s.owner.feeds))
	for f := range s.owner.feeds {
		lf := LinkFeed{ID: f.ID, Kind: f.Kind.String(), Codec: f.codec, Simulcast: f.simulcastOffered || f.simulcast()}
		for _, l := range f.layers.load() {
			lf.Layers = append(lf.Layers, l.rid)
		}
		if len(lf.Layers) == 0 && !lf.Simulcast {
			lf.Layers = []string{""}
		}
		feeds = append(feeds, lf)
	}
	s.mu.Unlock()
	slices.SortFunc(feeds, func(a, b LinkFeed) int { return strings.Compare(a.ID, b.ID) })
	if err := s.owner.conn.Send(LinkMsg{Type: "feeds", Feeds: feeds}); err != nil {
		s.log.Debug("send feeds", "err", err)
	}
}

// linkAnswer applies the relay pod's offer: each recvonly m-line gets a
// down-track pinned to the feed and layer it names; the answer comes back
// once gathering is done.
func (s *Session) linkAnswer(ctx context.Context, msg LinkMsg) (string, error) {
	if len(msg.Recv) > maxLinkTracks {
		return "", fmt.Errorf("%w: %d tracks asked for, at most %d", ErrBadOffer, len(msg.Recv), maxLinkTracks)
	}
	if err := s.checkRemoteSDP(msg.SDP, true, ErrBadOffer); err != nil {
		return "", err
	}
	want := make(map[string]LinkTrack, len(msg.Recv))
	for _, t := range msg.Recv {
		want[t.Mid] = t
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return "", ErrClosed
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: msg.SDP}); err != nil {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	byID := make(map[string]*Feed, len(s.owner.feeds))
	for f := range s.owner.feeds {
		byID[f.ID] = f
	}
	for _, tr := range s.pc.GetTransceivers() {
		mid := tr.Mid()
		t, wanted := want[mid]
		if sender := s.owner.byMid[mid]; sender != nil {
			d := s.downs[sender]
			if wanted && d != nil && d.feed == byID[t.Feed] && d.pinRID == t.RID {
				continue // unchanged
			}
			s.dropLinkSender(mid, sender)
		}
		f := byID[t.Feed]
		if !wanted || f == nil || tr.Kind() != f.Kind {
			continue
		}
		d, err := newDownTrack(f)
		if err != nil {
			continue
		}
		d.pinned, d.pinRID = true, t.RID
		sender, err := s.engine.apis.Full.NewRTPSender(d.local, s.pc.SCTP().Transport())
		if err != nil {
			s.log.Warn("relay link sender", "err", err)
			continue
		}
		if err := tr.SetSender(sender, d.local); err != nil {
			s.log.Warn("relay link sender", "err", err)
			continue
		}
		if s.downs == nil {
			s.downs = map[*webrtc.RTPSender]*DownTrack{}
		}
		s.owner.byMid[mid] = sender
		s.downs[sender] = d
		f.addDown(d)
		go s.readRTCP(sender)
	}
	gathered, err := s.answerLocked()
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	if err := waitGathering(ctx, gathered); err != nil {
		return "", err
	}
	// Each new down-track starts at a keyframe of its layer.
	s.requestKeyframes()
	return s.pc.LocalDescription().SDP, nil
}

// dropLinkSender stops what an m-line of the link carries. Called with
// s.mu held.
func (s *Session) dropLinkSender(mid string, sender *webrtc.RTPSender) {
	delete(s.owner.byMid, mid)
	if d := s.downs[sender]; d != nil {
		d.feed.removeDown(d)
	}
	delete(s.downs, sender)
	_ = sender.ReplaceTrack(nil)
}

// linkFeedsChanged: a feed was attached to or detached from the owner's
// end of a link (or gained a layer); the relay pod hears of it and offers
// again.
func (s *Session) linkFeedsChanged() {
	if s.owner.queued.Swap(true) {
		return // the queued message will carry this change too
	}
	go func() {
		s.owner.sendMu.Lock()
		defer s.owner.sendMu.Unlock()
		s.owner.queued.Store(false) // a change from now on queues another
		s.sendFeeds()
	}()
}

// ---- the relay pod's end ----

// upstream is a relay pod's link to the owner of one room.
type upstream struct {
	s     *Session
	conn  LinkConn
	owner string
	ready chan struct{} // closed once the first feeds are published here
	// markReady closes ready (once).
	markReady func()

	// guarded by s.mu
	feeds map[string]*Feed                             // by the owner's feed id
	want  map[*webrtc.RTPTransceiver]LinkTrack         // recvonly m-lines (Mid filled at offer time)
	have  map[string]map[string]*webrtc.RTPTransceiver // feed id → rid → m-line
}

// linkReadyTimeout bounds how long a viewer waits for a new link's first
// feeds.
const linkReadyTimeout = 5 * time.Second

// Upstream returns the link of a relayed room, opening it (dial reaches
// the owner's end) when there is none. It returns once the room's feeds
// are published here, so that a viewer answered now has their m-lines.
func (e *Engine) Upstream(ctx context.Context, room, owner string, dial func(context.Context) (LinkConn, error)) error {
	e.linksMu.Lock()
	u := e.links[room]
	if u == nil {
		if e.roomMembers(room) > 0 {
			e.linksMu.Unlock()
			return fmt.Errorf("room %q is owned here", room)
		}
		s, err := e.newLinkSession(KindUpstream, room, owner)
		if err != nil {
			e.linksMu.Unlock()
			return err
		}
		u = &upstream{s: s, owner: owner, ready: make(chan struct{}), feeds: map[string]*Feed{},
			want: map[*webrtc.RTPTransceiver]LinkTrack{}, have: map[string]map[string]*webrtc.RTPTransceiver{}}
		u.markReady = sync.OnceFunc(func() { close(u.ready) })
		s.up = u
		s.sig = u
		e.links[room] = u
		e.linksMu.Unlock()
		go u.run(dial)
	} else {
		e.linksMu.Unlock()
	}
	t := time.NewTimer(linkReadyTimeout)
	defer t.Stop()
	select {
	case <-u.ready:
		if u.s.closed.Load() {
			return ErrNoLink
		}
		return nil
	case <-u.s.done:
		return ErrNoLink
	case <-t.C:
		return fmt.Errorf("%w: no feeds from the owner within %s", ErrNoLink, linkReadyTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetBroadcast marks a room owned here as a broadcast: its viewers are
// served by relay pods first. It lasts as long as the room.
func (e *Engine) SetBroadcast(room string) { e.room(room).broadcast.Store(true) }

// RoomInfo is what the owner says of a room: its members here (links
// included), whether it takes more sessions, whether it is a broadcast.
func (e *Engine) RoomInfo(name string) (members int, full, broadcast bool) {
	e.roomsMu.Lock()
	r, ok := e.rooms[name]
	e.roomsMu.Unlock()
	if !ok || e.Relayed(name) {
		return 0, false, false
	}
	return r.size(), e.AtCapacity() || e.Draining(), r.broadcast.Load() || e.cfg.IsBroadcastRoom(name)
}

// Relayed says whether room is served here through a link.
func (e *Engine) Relayed(room string) bool {
	e.linksMu.Lock()
	defer e.linksMu.Unlock()
	return e.links[room] != nil
}

// run dials the owner and serves the link's control messages until either
// side goes. A lost owner ends the room here: every local member is told
// (closed) and may come back through the Service.
func (u *upstream) run(dial func(context.Context) (LinkConn, error)) {
	s := u.s
	defer func() {
		u.markReady()
		s.Close("owner-gone")
		s.engine.linksMu.Lock()
		if s.engine.links[s.room.name] == u {
			delete(s.engine.links, s.room.name)
		}
		s.engine.linksMu.Unlock()
		for _, m := range s.room.memberList() {
			m.Close("owner-gone")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), linkReadyTimeout)
	conn, err := dial(ctx)
	cancel()
	if err != nil {
		s.log.Warn("relay link: owner unreachable", "err", err)
		return
	}
	u.conn = conn
	go func() {
		<-s.done
		_ = conn.Close()
	}()
	s.room.join(s) // the room's local feeds go up the link
	for {
		msg, err := conn.Recv()
		if err != nil {
			return
		}
		switch msg.Type {
		case "feeds":
			if err := u.applyFeeds(msg.Feeds); err != nil {
				s.log.Warn("relay link: bad feeds from the owner", "err", err)
				return
			}
			u.markReady()
		case "answer":
			if err := s.HandleAnswer(msg.SDP); err != nil {
				s.log.Warn("relay link: answer refused", "err", err)
				return
			}
		case "error":
			// The offer was refused: back to stable, so that the next
			// change offers again.
			s.log.Warn("relay link: the owner refused", "err", msg.Error)
			s.mu.Lock()
			if s.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
				_ = s.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback})
			}
			s.mu.Unlock()
		}
	}
}

// applyFeeds publishes the owner's feeds here (a WHEP viewer needs them
// before its answer), unpublishes the ones gone, and asks for every layer
// not yet carried.
func (u *upstream) applyFeeds(feeds []LinkFeed) error {
	if len(feeds) > maxLinkFeeds {
		return fmt.Errorf("%d feeds, at most %d", len(feeds), maxLinkFeeds)
	}
	s := u.s
	seen := map[string]bool{}
	var publish, unpublish []*Feed
	s.mu.Lock()
	for _, lf := range feeds {
		kind := webrtc.NewRTPCodecType(lf.Kind)
		if kind == 0 || lf.ID == "" || len(lf.Layers) > 8 {
			s.mu.Unlock()
			return fmt.Errorf("feed %q: kind %q, %d layers", lf.ID, lf.Kind, len(lf.Layers))
		}
		seen[lf.ID] = true
		f := u.feeds[lf.ID]
		if f == nil {
			f = newFeed(lf.ID, kind, s, lf.Codec, lf.ID, "relay-"+shortID(lf.ID))
			f.simulcastOffered = lf.Simulcast
			u.feeds[lf.ID] = f
			publish = append(publish, f)
		}
		if u.have[lf.ID] == nil {
			u.have[lf.ID] = map[string]*webrtc.RTPTransceiver{}
		}
		for _, rid := range lf.Layers {
			if u.have[lf.ID][rid] != nil {
				continue
			}
			tr, err := s.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
			if err != nil {
				s.mu.Unlock()
				return err
			}
			u.have[lf.ID][rid] = tr
			u.want[tr] = LinkTrack{Feed: lf.ID, RID: rid}
		}
	}
	for id, f := range u.feeds {
		if seen[id] {
			continue
		}
		unpublish = append(unpublish, f)
		delete(u.feeds, id)
		for _, tr := range u.have[id] {
			delete(u.want, tr)
			_ = tr.Stop()
		}
		delete(u.have, id)
	}
	s.mu.Unlock()
	for _, f := range unpublish {
		s.room.unpublish(f)
	}
	for _, f := range publish {
		s.room.publish(f)
	}
	s.negotiate()
	return nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// SendOffer implements Signaller for the relay pod's end: the offer goes
// to the owner once gathering is done, with what each recvonly m-line
// wants. Called with s.mu held.
func (u *upstream) SendOffer(string) error {
	s := u.s
	var recv []LinkTrack
	for tr, t := range u.want {
		if mid := tr.Mid(); mid != "" {
			t.Mid = mid
			recv = append(recv, t)
		}
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	go func() {
		select {
		case <-gathered:
		case <-s.done:
			return
		}
		if u.conn == nil {
			return
		}
		if err := u.conn.Send(LinkMsg{Type: "offer", SDP: s.pc.LocalDescription().SDP, Recv: recv}); err != nil {
			s.log.Debug("relay link: send offer", "err", err)
		}
	}()
	return nil
}

// SendCandidate implements Signaller: the offer carries every candidate.
func (u *upstream) SendCandidate(webrtc.ICECandidateInit) error { return nil }

// onTrack forwards one of the owner's layers into the local feed it
// belongs to.
func (u *upstream) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	s := u.s
	s.mu.Lock()
	var t LinkTrack
	found := false
	for tr, w := range u.want {
		if tr.Receiver() == receiver {
			t, found = w, true
			break
		}
	}
	f := u.feeds[t.Feed]
	s.mu.Unlock()
	if !found || f == nil {
		return
	}
	l := f.addLayer(t.RID)
	for _, x := range receiver.GetParameters().HeaderExtensions {
		if x.URI == sdp.ABSSendTimeURI {
			l.linkAbsID = uint8(x.ID)
		}
	}
	defer f.removeLayer(l)
	f.forward(s.engine.metrics, l, remote)
}

// memberList is a snapshot of the room's members.
func (r *Room) memberList() []*Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Session, 0, len(r.members))
	for m := range r.members {
		out = append(out, m)
	}
	return out
}

// closeIdleLink closes a relayed room's link once no one but the link is
// left in it.
func (e *Engine) closeIdleLink(r *Room) {
	e.linksMu.Lock()
	u := e.links[r.name]
	e.linksMu.Unlock()
	if u == nil {
		return
	}
	for _, m := range r.memberList() {
		if m != u.s {
			return
		}
	}
	u.s.Close("no-viewers")
}

// CloseLinks closes every relay link here, of either end (shutdown).
func (e *Engine) CloseLinks() {
	e.roomsMu.Lock()
	rooms := make([]*Room, 0, len(e.rooms))
	for _, r := range e.rooms {
		rooms = append(rooms, r)
	}
	e.roomsMu.Unlock()
	for _, r := range rooms {
		for _, m := range r.memberList() {
			if m.isLink() {
				m.Close("shutdown")
			}
		}
	}
}

// RoomStat describes a room here: owned or relayed, its members and
// relay links (/status).
type RoomStat struct {
	Room string
	// Role: "owner" (the room's publishers are here; Links relay pods pull
	// from here) or "relay" (this pod pulls the room from Owner).
	Role    string
	Owner   string
	Links   int
	Members int
	State   string
}

// RoomStats lists the rooms here, most members first, at most limit (0:
// all).
func (e *Engine) RoomStats(limit int) []RoomStat {
	e.roomsMu.Lock()
	rooms := make([]*Room, 0, len(e.rooms))
	for _, r := range e.rooms {
		rooms = append(rooms, r)
	}
	e.roomsMu.Unlock()
	out := make([]RoomStat, 0, len(rooms))
	for _, r := range rooms {
		info := RoomStat{Room: r.name, Role: "owner"}
		for _, m := range r.memberList() {
			switch m.Kind {
			case KindRelay:
				info.Links++
			case KindUpstream:
				info.Role, info.Owner, info.Links = "relay", m.up.owner, 1
				info.State = webrtc.ICEConnectionState(m.state.Load()).String()
			default:
				info.Members++
			}
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b RoomStat) int {
		if a.Members != b.Members {
			return b.Members - a.Members
		}
		return strings.Compare(a.Room, b.Room)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

var _ Signaller = (*upstream)(nil)
