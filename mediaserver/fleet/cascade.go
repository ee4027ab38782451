package fleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Cascading rooms: a viewer of a room whose owner is full (or a broadcast
// room) is served by a relay pod, which pulls the room from the owner over
// one link per (room, relay pod) (see rtc's relay links). The pod that
// received the signalling picks the relay pod: itself when it has room,
// else the members in the room's rendezvous order; the client keeps its
// one public URL.

// RelayOwnerHeader, on a forwarded request (valid pod token), asks the pod
// to serve the viewer as a relay of the named owner pod.
const RelayOwnerHeader = "X-Mediafleet-Relay-Owner"

// LinkPath is the owner's admin endpoint a relay pod's link dials
// (WebSocket, admin token).
const LinkPath = "/relay/"

// Cascader is what the forwarder needs of its router to cascade rooms.
type Cascader interface {
	Locate(ctx context.Context, room string) (Location, error)
	RelayPods(room, owner string) []statusapi.Member
	Member(name string) (statusapi.Member, bool)
}

func (f *Forwarder) cascader() Cascader {
	if f == nil {
		return nil
	}
	c, _ := f.Router.(Cascader)
	return c
}

// RelayOwner is the owner a forwarded request asks this pod to relay
// ("" when it asks nothing, or was not forwarded by a pod).
func (f *Forwarder) RelayOwner(r *http.Request) string {
	if !f.Forwarded(r) {
		return ""
	}
	return r.Header.Get(RelayOwnerHeader)
}

// Locate says where room is owned, for a request that was not forwarded
// (ok false: forwarded, or no fleet; the room is served here).
func (f *Forwarder) Locate(r *http.Request, room string) (loc Location, ok bool, err error) {
	c := f.cascader()
	if c == nil || f.Forwarded(r) {
		return Location{}, false, nil
	}
	loc, err = c.Locate(r.Context(), room)
	return loc, err == nil, err
}

// RelayPods lists the pods that may relay room for owner, best first.
func (f *Forwarder) RelayPods(room, owner string) []statusapi.Member {
	if c := f.cascader(); c != nil {
		return c.RelayPods(room, owner)
	}
	return nil
}

// Member is a member of the list by name.
func (f *Forwarder) Member(name string) (statusapi.Member, bool) {
	if c := f.cascader(); c != nil {
		return c.Member(name)
	}
	return statusapi.Member{}, false
}

// TryRelay forwards a viewer's request (its body read whole) to the pod at
// addr, to be served there as a relay of owner. False, with nothing
// written, when that pod cannot take it (503, unreachable): the caller
// tries the next.
func (f *Forwarder) TryRelay(w http.ResponseWriter, r *http.Request, addr, owner string, body []byte) bool {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, f.scheme(false)+"://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return false
	}
	for _, h := range []string{"Content-Type", "Authorization", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Host = r.Host
	f.mark(req.Header)
	req.Header.Set(RelayOwnerHeader, owner)
	resp, err := f.transport().RoundTrip(req)
	if err != nil {
		f.Log.Debug("relay pod unreachable", "pod", addr, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		return false
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxForwardedAnswer+1))
	if err != nil || len(answer) > MaxForwardedAnswer {
		if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusCreated && loc != "" {
			f.deleteOrphan(addr, loc, r.Header.Get("Authorization"))
		}
		f.Refuse(w, "the relay pod's answer was lost; retry")
		return true
	}
	for _, h := range []string{"Content-Type", "Location", "Link", "Retry-After", "ETag", "Accept-Patch"} {
		for _, v := range resp.Header.Values(h) {
			w.Header().Add(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
	return true
}

// SessionPod is the pod a session id names: a session served as a relay
// has an id "<pod>.<random>", so that requests for it reach that pod
// whichever pod they land on.
func SessionPod(id string) string {
	if i := strings.IndexByte(id, '.'); i > 0 {
		return id[:i]
	}
	return ""
}

// DialLink opens a relay link's control connection to the owner's admin
// address.
func (f *Forwarder) DialLink(ctx context.Context, adminAddr, room string) (rtc.LinkConn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+f.Token)
	h.Set(statusapi.ForwardedByHeader, f.Self)
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	c, resp, err := d.DialContext(ctx, "ws://"+adminAddr+LinkPath+url.PathEscape(room), h)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("relay link to %s: %s", adminAddr, resp.Status)
		}
		return nil, fmt.Errorf("relay link to %s: %w", adminAddr, err)
	}
	return NewLinkConn(c), nil
}

// MaxLinkMessage bounds one control message of a link (an SDP with a few
// hundred m-lines).
const MaxLinkMessage = 1 << 20

// linkWriteTimeout bounds one control message written.
const linkWriteTimeout = 5 * time.Second

// wsLink is a link's control connection over a WebSocket.
type wsLink struct {
	c  *websocket.Conn
	mu sync.Mutex
}

// NewLinkConn wraps a WebSocket as a link's control connection.
func NewLinkConn(c *websocket.Conn) rtc.LinkConn {
	c.SetReadLimit(MaxLinkMessage)
	_ = c.NetConn().SetDeadline(time.Time{}) // a link lives as long as the room
	return &wsLink{c: c}
}

func (l *wsLink) Send(m rtc.LinkMsg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.c.SetWriteDeadline(time.Now().Add(linkWriteTimeout))
	return l.c.WriteJSON(m)
}

func (l *wsLink) Recv() (rtc.LinkMsg, error) {
	var m rtc.LinkMsg
	err := l.c.ReadJSON(&m)
	return m, err
}

func (l *wsLink) Close() error { return l.c.Close() }
