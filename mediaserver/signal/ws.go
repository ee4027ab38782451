package signal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
)

const (
	wsWriteTimeout = 5 * time.Second
	wsPongWait     = 60 * time.Second
	wsPingEvery    = 25 * time.Second
	// wsKernelSendBuffer bounds the socket send buffer of each WebSocket.
	wsKernelSendBuffer = 64 << 10
)

// wsConn is one WebSocket client: the handler goroutine reads, one writer
// goroutine drains a bounded queue. A client whose queue stays full for the
// send timeout is disconnected so it cannot slow anyone else.
type wsConn struct {
	srv  *Server
	conn *websocket.Conn
	log  *slog.Logger
	send chan []byte // nil entry: flush, then close

	closeOnce sync.Once
	done      chan struct{}
	sessMu    sync.Mutex
	sess      *rtc.Session

	req      *http.Request // the upgrade request (token, forwarding)
	upstream *fleet.Relay  // set when the room's owner is another pod
	upMu     sync.Mutex
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r, true) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mediafleet"`)
		httpError(w, http.StatusUnauthorized, "a valid bearer token is required")
		return
	}
	if s.engine.Draining() {
		unavailable(w, "server is draining; retry on another pod")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered (403 for a refused origin)
	}
	c := &wsConn{
		srv:  s,
		req:  r,
		conn: conn,
		log:  s.log.With("remote", r.RemoteAddr),
		send: make(chan []byte, s.cfg.WSSendBuffer),
		done: make(chan struct{}),
	}
	// A small kernel send buffer keeps what a stalled client can hold up
	// bounded (64 KiB plus the message queue), so a client that stops
	// reading hits the send timeout quickly instead of after megabytes.
	if tcp, ok := conn.NetConn().(*net.TCPConn); ok {
		_ = tcp.SetWriteBuffer(wsKernelSendBuffer)
	}
	conn.SetReadLimit(s.cfg.WSReadLimit)
	_ = conn.SetReadDeadline(time.Now().Add(wsPongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(wsPongWait)) })

	s.wsMu.Lock()
	s.wsConns[c] = struct{}{}
	s.wsMu.Unlock()
	m := s.metrics
	m.WSConnections.Inc()
	defer func() {
		s.wsMu.Lock()
		delete(s.wsConns, c)
		s.wsMu.Unlock()
		m.WSConnections.Dec()
	}()

	go c.writeLoop()
	c.readLoop()
	c.shutdown("client-disconnect")
}

// NotifyDraining tells every WebSocket client that the pod is draining.
func (s *Server) NotifyDraining() {
	s.wsMu.Lock()
	conns := make([]*wsConn, 0, len(s.wsConns))
	for c := range s.wsConns {
		conns = append(conns, c)
	}
	s.wsMu.Unlock()
	for _, c := range conns {
		c.safeSend(&Message{Type: TypeDraining, RetryAfter: RetryAfterSeconds})
	}
}

// WebSocketCount is the number of open WebSocket connections.
func (s *Server) WebSocketCount() int {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return len(s.wsConns)
}

func (c *wsConn) readLoop() {
	m := c.srv.metrics
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.log.Warn("websocket message over the read limit", "limit", c.srv.cfg.WSReadLimit)
			}
			return
		}
		m.WSMessageSize.WithLabelValues("in").Observe(float64(len(data)))
		if up := c.relaying(); up != nil {
			if err := up.Send(data); err != nil {
				c.sendError(CodeUnavailable, "lost the pod that owns this room; reconnect")
				return
			}
			m.WSMessages.WithLabelValues("in", "relayed").Inc()
			continue
		}
		msg, err := DecodeMessage(data)
		if err != nil {
			m.WSMessages.WithLabelValues("in", "invalid").Inc()
			var pe *ProtocolError
			if errors.As(err, &pe) {
				c.sendError(pe.Code, pe.Msg)
			}
			continue
		}
		m.WSMessages.WithLabelValues("in", msg.Type).Inc()
		if !c.handle(msg, data) {
			return
		}
	}
}

func (c *wsConn) relaying() *fleet.Relay {
	c.upMu.Lock()
	defer c.upMu.Unlock()
	return c.upstream
}

// relay hands the connection to the pod that owns the room and copies
// messages both ways. Media goes straight between the client and the
// owner: its candidates carry the owner's address.
func (c *wsConn) relay(addr, relayOf string, join []byte) error {
	up, err := c.srv.fwd.Relay(addr, relayOf, c.req, join, c.srv.cfg.WSReadLimit*4)
	if err != nil {
		return err
	}
	c.upMu.Lock()
	c.upstream = up
	c.upMu.Unlock()
	go func() {
		defer c.shutdown("owner-closed")
		toldClosed := false
		up.Pump(func(data []byte) bool {
			toldClosed = toldClosed || bytes.Contains(data, []byte(`"type":"closed"`))
			return c.safeSendRaw(data)
		})
		if !toldClosed {
			// The pod serving the participant went away without a word
			// (killed): say so, so that the client reconnects.
			c.safeSend(&Message{Type: TypeClosed, Reason: "pod-gone"})
			c.closeAfterFlush()
			select { // the writer flushes it, then closes
			case <-c.done:
			case <-time.After(wsWriteTimeout):
			}
		}
	}()
	c.log.Info("websocket relayed to the room's owner", "owner", addr)
	return nil
}

// handle acts on one message; false ends the connection.
func (c *wsConn) handle(msg *Message, raw []byte) bool {
	c.sessMu.Lock()
	sess := c.sess
	c.sessMu.Unlock()
	if msg.Type != TypeJoin && sess == nil {
		c.sendError(CodeNotJoined, "send a join message first")
		return true
	}
	switch msg.Type {
	case TypeJoin:
		if sess != nil {
			c.sendError(CodeAlreadyJoined, "this connection already joined room "+sess.RoomName())
			return true
		}
		if owner := c.srv.fwd.RelayOwner(c.req); owner != "" {
			c.joinRelayed(msg.Room, owner) // another pod placed this participant here
			return true
		}
		loc, located, err := c.srv.fwd.Locate(c.req, msg.Room)
		if err != nil {
			c.sendError(CodeUnavailable, "no pod can take room "+msg.Room+" now; retry in 5 s")
			return true
		}
		if located && loc.Full && c.placeRelayed(msg.Room, loc.Name, raw) {
			return true
		}
		if addr := loc.Addr; addr != "" {
			if err := c.relay(addr, "", raw); err != nil {
				c.log.Warn("owner pod unreachable", "owner", addr, "err", err)
				c.sendError(CodeUnavailable, "the pod that owns room "+msg.Room+" is unreachable; retry in 5 s")
			}
			return true
		}
		c.join(msg.Room)
	case TypeAnswer:
		if err := sess.HandleAnswer(msg.SDP); err != nil {
			c.sendError(CodeBadAnswer, err.Error())
		}
	case TypeCandidate:
		if err := sess.AddCandidate(*msg.Candidate); err != nil {
			code := CodeBadCandidate
			if errors.Is(err, rtc.ErrCandidateLimit) {
				code = CodeCandidateLimit
			}
			c.sendError(code, err.Error())
		}
	case TypeLeave:
		sess.Close("client-leave")
		return false
	case TypeLayer:
		if err := sess.SetLayerCap(msg.Feed, msg.Max); err != nil {
			c.sendError(CodeBadLayer, err.Error())
		}
	}
	return true
}

// placeRelayed serves a participant of a room whose owner is full on a
// relay pod: this one when it has room (the participant's media then
// flows here, the room's through the relay link), else the next pod in
// the room's order, to which the connection is relayed. False when no pod
// can.
func (c *wsConn) placeRelayed(room, owner string, join []byte) bool {
	for _, m := range c.srv.fwd.RelayPods(room, owner) {
		if m.Name == c.srv.fwd.Self {
			if !c.srv.engine.AtCapacity() && !c.srv.engine.Draining() {
				c.joinRelayed(room, owner)
				return true
			}
			continue
		}
		if err := c.relay(m.Address, owner, join); err == nil {
			return true
		}
	}
	return false
}

// joinRelayed joins a room relayed from owner, opening the link first.
func (c *wsConn) joinRelayed(room, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	if err := c.srv.openUpstream(ctx, room, owner); err != nil {
		c.log.Warn("relay link to the room's owner failed", "owner", owner, "err", err)
		c.sendError(CodeUnavailable, "the pod that owns room "+room+" is unreachable; retry in 5 s")
		return
	}
	c.join(room)
}

func (c *wsConn) join(room string) {
	sess, err := c.srv.engine.Join(room, c, func(sess *rtc.Session) {
		c.sessMu.Lock()
		c.sess = sess
		c.sessMu.Unlock()
		c.log = c.log.With("session", sess.ID, "room", room)
		c.safeSend(&Message{Type: TypeJoined, SessionID: sess.ID, Room: room, ICEServers: rtc.ICEServers(c.srv.cfg, sess.ID, time.Now(), false)})
		sess.OnClose(func(reason string) {
			c.safeSend(&Message{Type: TypeClosed, Reason: reason})
			c.closeAfterFlush()
		})
	})
	switch {
	case errors.Is(err, rtc.ErrFull):
		c.sendError(CodeFull, "session limit reached; retry later")
	case errors.Is(err, rtc.ErrDraining):
		c.sendError(CodeDraining, "server is draining; retry on another pod")
	case err != nil:
		c.log.Error("join failed", "err", err)
		c.sendError(CodeBadMessage, "join failed")
	default:
		_ = sess
	}
}

// SendOffer implements rtc.Signaller.
func (c *wsConn) SendOffer(sdp string) error {
	if !c.safeSend(&Message{Type: TypeOffer, SDP: sdp}) {
		return errors.New("websocket closed")
	}
	return nil
}

// SendCandidate implements rtc.Signaller.
func (c *wsConn) SendCandidate(ci webrtc.ICECandidateInit) error {
	if !c.safeSend(&Message{Type: TypeCandidate, Candidate: &ci}) {
		return errors.New("websocket closed")
	}
	return nil
}

func (c *wsConn) sendError(code, msg string) {
	m := &Message{Type: TypeError, Code: code, Message: msg}
	switch code {
	case CodeUnavailable, CodeFull, CodeDraining:
		// Worth another try, as a 503 with Retry-After says over HTTP.
		m.RetryAfter = RetryAfterSeconds
	}
	c.safeSend(m)
}

// safeSend queues msg. When the queue is full it waits up to the send
// timeout, then disconnects the client. It reports whether msg was queued.
func (c *wsConn) safeSend(msg *Message) bool {
	data, err := json.Marshal(msg)
	if err != nil {
		return false
	}
	if !c.safeSendRaw(data) {
		return false
	}
	c.count(msg.Type, len(data))
	return true
}

// safeSendRaw is safeSend for an already encoded message (one relayed from
// the room's owner).
func (c *wsConn) safeSendRaw(data []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.send <- data:
		return true
	default:
	}
	t := time.NewTimer(c.srv.cfg.WSSendTimeout)
	defer t.Stop()
	select {
	case c.send <- data:
		return true
	case <-c.done:
		return false
	case <-t.C:
		c.log.Warn("websocket client too slow; disconnecting", "queue", cap(c.send), "timeout", c.srv.cfg.WSSendTimeout.String())
		go c.shutdown("slow-client")
		return false
	}
}

func (c *wsConn) count(typ string, n int) {
	m := c.srv.metrics
	m.WSMessages.WithLabelValues("out", typ).Inc()
	m.WSMessageSize.WithLabelValues("out").Observe(float64(n))
}

func (c *wsConn) closeAfterFlush() {
	select {
	case c.send <- nil:
	case <-c.done:
	default:
		go c.shutdown("closed")
	}
}

// shutdown closes the connection and the session, once.
func (c *wsConn) shutdown(reason string) {
	c.closeOnce.Do(func() {
		close(c.done)
		_ = c.conn.Close()
		c.upMu.Lock()
		if c.upstream != nil {
			_ = c.upstream.Close()
		}
		c.upMu.Unlock()
		c.sessMu.Lock()
		sess := c.sess
		c.sessMu.Unlock()
		if sess != nil {
			sess.Close(reason)
		}
	})
}

func (c *wsConn) writeLoop() {
	ping := time.NewTicker(wsPingEvery)
	defer ping.Stop()
	for {
		select {
		case <-c.done:
			return
		case data := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
			if data == nil {
				_ = c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "session closed"))
				c.shutdown("closed")
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
				c.shutdown("write-error")
				return
			}
		case <-ping.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				c.shutdown("write-error")
				return
			}
		}
	}
}
