package fleet

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Forwarder carries signalling for rooms another pod owns to that pod, so
// that a client keeps its one public URL: WHIP/WHEP requests through a
// reverse proxy, WebSocket connections through a relay. Media never goes
// through it: the owner's answer carries the owner's candidates.
type Forwarder struct {
	// Router says which pod serves a room.
	Router interface {
		Route(ctx context.Context, room string) (string, error)
	}
	// Self names this pod in the forwarding header.
	Self string
	// Token (the admin token every pod of the MediaService shares) goes
	// beside the forwarding header; it is what makes a forwarded request
	// recognised as such.
	Token string
	// PeerTLS, when set, makes forwarding use https/wss with this client
	// configuration (the pods serve TLS on the signalling port).
	PeerTLS *tls.Config
	// Refuse answers a request that cannot be served now (503 with
	// Retry-After, in the signalling server's format).
	Refuse func(w http.ResponseWriter, msg string)
	Log    *slog.Logger

	once sync.Once
	rt   http.RoundTripper
}

// MaxForwardedAnswer bounds an owner's answer read before it is passed on.
const MaxForwardedAnswer = 1 << 20

// Forwarded says whether r was forwarded by another pod of the
// MediaService: the forwarding header counts only beside a valid pod token,
// so a client cannot switch routing off by sending it.
func (f *Forwarder) Forwarded(r *http.Request) bool {
	if f == nil || f.Token == "" || r.Header.Get(statusapi.ForwardedByHeader) == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(statusapi.PodTokenHeader)), []byte(f.Token)) == 1
}

// mark sets the forwarding headers on a request to another pod (replacing
// whatever a client sent in them).
func (f *Forwarder) mark(h http.Header) {
	h.Set(statusapi.ForwardedByHeader, f.Self)
	h.Set(statusapi.PodTokenHeader, f.Token)
	h.Del(RelayOwnerHeader) // only this pod may ask for a relay
}

// scheme is the scheme of another pod's signalling port.
func (f *Forwarder) scheme(websocket bool) string {
	switch {
	case f.PeerTLS != nil && websocket:
		return "wss"
	case f.PeerTLS != nil:
		return "https"
	case websocket:
		return "ws"
	default:
		return "http"
	}
}

// Owner returns the address of the pod serving room, or "" when it is this
// pod or r already was forwarded (a forwarded request is never forwarded
// again). A nil Forwarder serves every room here.
func (f *Forwarder) Owner(r *http.Request, room string) (string, error) {
	if f == nil || f.Forwarded(r) {
		return "", nil
	}
	return f.Router.Route(r.Context(), room)
}

// Route is Owner for an HTTP handler: it answers 503 itself when no pod
// can take the room (ok false).
func (f *Forwarder) Route(w http.ResponseWriter, r *http.Request, room string) (addr string, ok bool) {
	addr, err := f.Owner(r, room)
	if err != nil {
		f.Refuse(w, "no pod can take room "+room+" now; retry")
		return "", false
	}
	return addr, true
}

// Proxy forwards r, whose body the caller read whole, to the owner pod
// unchanged but for the forwarding headers. Holding the body lets a retry
// on a keep-alive connection the owner just closed send it again; the
// owner's answer is read whole before anything reaches the client, so a
// client never gets a 201 whose body stops half-way. When the answer
// cannot be read whole, the session it created on the owner is deleted:
// nothing is left orphaned there.
func (f *Forwarder) Proxy(w http.ResponseWriter, r *http.Request, addr string, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	rp := &httputil.ReverseProxy{
		Transport: f.transport(),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: f.scheme(false), Host: addr})
			pr.Out.Host = pr.In.Host
			f.mark(pr.Out.Header)
		},
		ModifyResponse: func(resp *http.Response) error {
			answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxForwardedAnswer+1))
			resp.Body.Close()
			if err == nil && len(answer) > MaxForwardedAnswer {
				err = fmt.Errorf("answer over %d bytes", MaxForwardedAnswer)
			}
			if err != nil {
				if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusCreated && loc != "" {
					f.deleteOrphan(addr, loc, r.Header.Get("Authorization"))
				}
				return fmt.Errorf("read the owner's answer: %w", err)
			}
			resp.Body = io.NopCloser(bytes.NewReader(answer))
			resp.ContentLength = int64(len(answer))
			resp.Header.Set("Content-Length", strconv.Itoa(len(answer)))
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			f.Log.Warn("owner pod unreachable", "owner", addr, "err", err)
			f.Refuse(w, "the pod that owns this room is unreachable; retry")
		},
	}
	rp.ServeHTTP(w, r)
}

// deleteOrphan ends a session the owner created for an answer that could
// not be passed on.
func (f *Forwarder) deleteOrphan(addr, location, auth string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, f.scheme(false)+"://"+addr+location, nil)
	if err != nil {
		return
	}
	f.mark(req.Header)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.transport().RoundTrip(req)
	if err != nil {
		f.Log.Warn("could not delete the owner's session of a lost answer", "owner", addr, "session", location, "err", err)
		return
	}
	resp.Body.Close()
}

// transport carries signalling to other pods: its own keep-alive pool
// (idle connections closed well before the owner's 2-minute idle timeout,
// so a reused connection is rarely one the owner is closing), TLS when the
// pods serve it.
func (f *Forwarder) transport() http.RoundTripper {
	f.once.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		t.IdleConnTimeout = 30 * time.Second
		t.ForceAttemptHTTP2 = false
		t.TLSClientConfig = f.PeerTLS
		f.rt = t
	})
	return f.rt
}

// relayWriteTimeout bounds one message written to the owner.
const relayWriteTimeout = 5 * time.Second

// Relay is a WebSocket connection to the owner pod on behalf of a client.
type Relay struct {
	conn *websocket.Conn
	mu   sync.Mutex // one writer at a time
}

// Relay dials the owner's /ws for the client whose upgrade request is
// client (marked as forwarded, with the client's token) and replays the
// client's join message. readLimit bounds each message from the owner.
// relayOf, when set, asks that pod to serve the client as a relay of the
// named owner (cascading rooms).
func (f *Forwarder) Relay(addr, relayOf string, client *http.Request, join []byte, readLimit int64) (*Relay, error) {
	u := f.scheme(true) + "://" + addr + "/ws"
	if tok := client.URL.Query().Get("token"); tok != "" {
		u += "?token=" + url.QueryEscape(tok)
	}
	h := http.Header{}
	f.mark(h)
	if relayOf != "" {
		h.Set(RelayOwnerHeader, relayOf)
	}
	if a := client.Header.Get("Authorization"); a != "" {
		h.Set("Authorization", a)
	}
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second, TLSClientConfig: f.PeerTLS}
	up, resp, err := d.Dial(u, h)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, err
	}
	up.SetReadLimit(readLimit)
	if err := up.WriteMessage(websocket.TextMessage, join); err != nil {
		up.Close()
		return nil, err
	}
	return &Relay{conn: up}, nil
}

// Send passes one client message to the owner.
func (r *Relay) Send(data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.conn.SetWriteDeadline(time.Now().Add(relayWriteTimeout))
	return r.conn.WriteMessage(websocket.TextMessage, data)
}

// Pump passes the owner's messages to deliver until the owner closes, a
// read fails or deliver returns false.
func (r *Relay) Pump(deliver func([]byte) bool) {
	for {
		_, data, err := r.conn.ReadMessage()
		if err != nil || !deliver(data) {
			return
		}
	}
}

// Close closes the connection to the owner.
func (r *Relay) Close() error { return r.conn.Close() }
