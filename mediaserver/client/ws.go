package client

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// WSMessage is the client's view of the WebSocket protocol (see package
// signal for the reference).
type WSMessage struct {
	Type       string                   `json:"type"`
	Room       string                   `json:"room,omitempty"`
	SDP        string                   `json:"sdp,omitempty"`
	Candidate  *webrtc.ICECandidateInit `json:"candidate,omitempty"`
	SessionID  string                   `json:"sessionId,omitempty"`
	RetryAfter int                      `json:"retryAfter,omitempty"`
	Code       string                   `json:"code,omitempty"`
	Message    string                   `json:"message,omitempty"`
	Reason     string                   `json:"reason,omitempty"`
}

// Participant is a WebSocket room member that publishes synthetic media and
// counts what it receives from the others.
type Participant struct {
	PC        *webrtc.PeerConnection
	Conn      *websocket.Conn
	SessionID string
	Received  Counter
	Sent      atomic.Uint64

	// Events receives every server message that is not offer/candidate.
	Events chan WSMessage
	// Offers counts offers answered (renegotiations).
	Offers atomic.Int32
	// Retried is how many joins were refused as unavailable before this
	// one was taken.
	Retried int32

	writeMu  sync.Mutex
	video    *webrtc.TrackLocalStaticRTP
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	joined   chan struct{}
	readDone chan struct{}
	reading  bool
	early    []webrtc.ICECandidateInit
	mu       sync.Mutex
	haveDesc bool
}

// Join dials wsURL (ws://host/ws or wss://host/ws), joins room and
// publishes one VP8 track (when publish is true). It returns once the
// server acknowledged the join. A join refused with a retryAfter (no pod
// can take the room yet, full, draining) is tried again on a new
// connection, up to opts.Retries times.
func Join(ctx context.Context, wsURL, room string, publish bool, opts Options) (*Participant, error) {
	for attempt := 1; ; attempt++ {
		p, err := join(ctx, wsURL, room, publish, opts)
		var refused *JoinRefusedError
		if err == nil || !errors.As(err, &refused) || refused.RetryAfter <= 0 {
			if p != nil {
				p.Retried = int32(attempt - 1)
			}
			return p, err
		}
		wait, again := opts.retryWait(attempt, strconv.Itoa(refused.RetryAfter))
		if !again || refused.RetryAfter <= 0 {
			return nil, err
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, errors.Join(refused, err)
		}
	}
}

// JoinRefusedError is the server's error message in answer to a join.
type JoinRefusedError struct {
	Code       string
	Message    string
	RetryAfter int
}

func (e *JoinRefusedError) Error() string { return "join refused: " + e.Code + ": " + e.Message }

func join(ctx context.Context, wsURL, room string, publish bool, opts Options) (*Participant, error) {
	h := http.Header{}
	for k, v := range opts.Header {
		h[k] = v
	}
	if opts.Token != "" {
		h.Set("Authorization", "Bearer "+opts.Token)
	}
	dialer := *websocket.DefaultDialer
	dialer.TLSClientConfig = opts.TLS
	conn, resp, err := dialer.DialContext(ctx, wsURL, h)
	if err != nil {
		if resp != nil {
			return nil, &HTTPError{Status: resp.StatusCode, Body: err.Error()}
		}
		return nil, err
	}
	pc, err := opts.API.NewPeerConnection(opts.rtcConfig())
	if err != nil {
		return nil, errors.Join(err, conn.Close())
	}
	p := &Participant{PC: pc, Conn: conn, Events: make(chan WSMessage, 64), stop: make(chan struct{}), joined: make(chan struct{}), readDone: make(chan struct{})}
	if publish {
		p.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "ws-"+room)
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		sender, err := pc.AddTrack(p.video)
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				if _, _, err := sender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) { p.Received.receive(t, r) })
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			ci := c.ToJSON()
			_ = p.Send(WSMessage{Type: "candidate", Candidate: &ci})
		}
	})
	p.reading = true
	go p.readLoop()
	if err := p.Send(WSMessage{Type: "join", Room: room}); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	select {
	case <-p.joined:
		return p, nil
	case ev := <-p.Events:
		_ = p.Close()
		return nil, &JoinRefusedError{Code: ev.Code, Message: ev.Message, RetryAfter: ev.RetryAfter}
	case <-ctx.Done():
		_ = p.Close()
		return nil, ctx.Err()
	}
}

// Send writes one message.
func (p *Participant) Send(m WSMessage) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return p.Conn.WriteJSON(m)
}

func (p *Participant) readLoop() {
	defer close(p.readDone)
	defer close(p.Events)
	for {
		var m WSMessage
		if err := p.Conn.ReadJSON(&m); err != nil {
			return
		}
		switch m.Type {
		case "joined":
			p.SessionID = m.SessionID
			close(p.joined)
		case "offer":
			if err := p.answer(m.SDP); err != nil {
				p.event(WSMessage{Type: "client-error", Message: err.Error()})
			}
		case "candidate":
			p.mu.Lock()
			if !p.haveDesc {
				p.early = append(p.early, *m.Candidate)
				p.mu.Unlock()
				continue
			}
			p.mu.Unlock()
			_ = p.PC.AddICECandidate(*m.Candidate)
		default:
			p.event(m)
		}
	}
}

func (p *Participant) event(m WSMessage) {
	select {
	case p.Events <- m:
	default: // a test that does not read events must not block the client
	}
}

func (p *Participant) answer(sdp string) error {
	if err := p.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return err
	}
	p.mu.Lock()
	p.haveDesc = true
	early := p.early
	p.early = nil
	p.mu.Unlock()
	for _, c := range early {
		_ = p.PC.AddICECandidate(c)
	}
	ans, err := p.PC.CreateAnswer(nil)
	if err != nil {
		return err
	}
	if err := p.PC.SetLocalDescription(ans); err != nil {
		return err
	}
	p.Offers.Add(1)
	return p.Send(WSMessage{Type: "answer", SDP: ans.SDP})
}

// SendRTP starts synthetic video at pps packets per second.
func (p *Participant) SendRTP(pps, payload int) {
	if p.video == nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		sendSynthetic(p.stop, p.video, nil, pps, payload, &p.Sent)
	}()
}

// Leave asks the server to end the session.
func (p *Participant) Leave() error { return p.Send(WSMessage{Type: "leave"}) }

// Close stops media, the WebSocket and then the PeerConnection: the reader
// must be gone before the PeerConnection closes, or a late candidate would
// make pion start a new ICE agent on the closed connection.
func (p *Participant) Close() error {
	p.stopOnce.Do(func() { close(p.stop) })
	err := p.Conn.Close()
	if p.reading {
		<-p.readDone
	}
	err = errors.Join(err, p.PC.Close())
	p.wg.Wait()
	return err
}
