package signal

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/metrics"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
)

const (
	contentTypeSDP     = "application/sdp"
	contentTypeTrickle = "application/trickle-ice-sdpfrag"
	maxTrickleBytes    = 16 << 10
	// RetryAfterSeconds is what a full or draining pod asks clients to wait.
	RetryAfterSeconds = 5
	answerTimeout     = 15 * time.Second
)

// Server serves the public signalling endpoints.
type Server struct {
	engine   *rtc.Engine
	cfg      *config.Config
	metrics  *metrics.Metrics
	log      *slog.Logger
	upgrader websocket.Upgrader

	wsMu    sync.Mutex
	wsConns map[*wsConn]struct{}
	extra   []route

	// fwd carries signalling for rooms other pods own (nil: none).
	fwd *fleet.Forwarder
}

// SetForwarder makes the server forward signalling for rooms another pod
// owns (nil: every room is served here).
func (s *Server) SetForwarder(f *fleet.Forwarder) {
	if f != nil && f.Refuse == nil {
		f.Refuse = unavailable
	}
	if f != nil && f.Log == nil {
		f.Log = s.log
	}
	s.fwd = f
}

type route struct {
	pattern string
	handler http.Handler
}

// New returns the signalling server of engine, configured by cfg and
// counted in m.
func New(engine *rtc.Engine, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) *Server {
	s := &Server{engine: engine, cfg: cfg, metrics: m, log: log, wsConns: map[*wsConn]struct{}{}}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		CheckOrigin:     s.originAllowed,
	}
	return s
}

// Handle adds a route to the public mux (the demo page).
func (s *Server) Handle(pattern string, h http.Handler) { s.extra = append(s.extra, route{pattern, h}) }

// Handler returns the public mux wrapped in the metrics middleware.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	m := s.metrics
	handle := func(pattern string, okStatus int, h http.HandlerFunc) {
		mux.HandleFunc(pattern, h)
		InitRoute(m, pattern, okStatus)
	}
	for _, kind := range []rtc.Kind{rtc.KindWHIP, rtc.KindWHEP} {
		base := "/" + string(kind) + "/{room}"
		handle("POST "+base, http.StatusCreated, s.offer(kind))
		handle("PATCH "+base+"/{id}", http.StatusNoContent, s.patch(kind))
		handle("DELETE "+base+"/{id}", http.StatusOK, s.delete(kind))
		handle("OPTIONS "+base, http.StatusNoContent, s.preflight)
		if kind == rtc.KindWHEP {
			handle("POST "+base+"/{id}/layer", http.StatusNoContent, s.setLayer)
		}
		handle("OPTIONS "+base+"/{id}", http.StatusNoContent, s.preflight)
	}
	handle("GET /ws", http.StatusSwitchingProtocols, s.websocket)
	for _, r := range s.extra {
		mux.Handle(r.pattern, r.handler)
		InitRoute(m, r.pattern, http.StatusOK)
	}
	return Instrument(s.metrics, mux)
}

// originAllowed implements the origin check of WebSocket upgrades and
// cross-origin WHIP/WHEP: no Origin (a non-browser client), the same
// origin, "*", or a listed origin.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// authorized checks the bearer token, when one is configured.
func (s *Server) authorized(r *http.Request, allowQuery bool) bool {
	if s.cfg.AuthToken == "" {
		return true
	}
	got := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		got = strings.TrimPrefix(h, "Bearer ")
	} else if allowQuery {
		got = r.URL.Query().Get("token")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AuthToken)) == 1
}

// guard runs the checks every WHIP/WHEP request shares and writes CORS
// headers; it returns false after writing an error.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) bool {
	if !s.originAllowed(r) {
		httpError(w, http.StatusForbidden, "origin %q is not allowed", r.Header.Get("Origin"))
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Add("Vary", "Origin")
		w.Header().Set("Access-Control-Expose-Headers", "Location, Link, Retry-After")
	}
	if !s.authorized(r, false) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mediafleet"`)
		httpError(w, http.StatusUnauthorized, "a valid bearer token is required")
		return false
	}
	if !ValidRoom(r.PathValue("room")) {
		httpError(w, http.StatusBadRequest, "room must be 1-64 letters, digits, '_', '.' or '-'")
		return false
	}
	return true
}

func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		httpError(w, http.StatusForbidden, "origin %q is not allowed", r.Header.Get("Origin"))
		return
	}
	h := w.Header()
	if o := r.Header.Get("Origin"); o != "" {
		h.Set("Access-Control-Allow-Origin", o)
		h.Add("Vary", "Origin")
	}
	h.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, Link, Retry-After")
	h.Set("Access-Control-Max-Age", "600")
	// TURN credentials only to a caller the server would let publish: a
	// browser's preflight carries no token, so it learns the STUN servers
	// only and gets the TURN ones with the answer to its POST.
	s.writeLinks(w, s.authorized(r, false), "preflight-"+rtc.NewID())
	w.WriteHeader(http.StatusNoContent)
}

// writeLinks announces ICE servers (RFC 9725 section 4.6); TURN servers
// (with credentials: static ones, or minted for id with a shared secret)
// only when withTURN.
func (s *Server) writeLinks(w http.ResponseWriter, withTURN bool, id string) {
	for _, u := range s.cfg.STUNServers {
		w.Header().Add("Link", fmt.Sprintf("<%s>; rel=\"ice-server\"", u))
	}
	if !withTURN {
		return
	}
	now := time.Now()
	for _, t := range s.cfg.TURNServers {
		user, pass := t.Credentials(now, id)
		for _, u := range t.URLs {
			w.Header().Add("Link", fmt.Sprintf("<%s>; rel=\"ice-server\"; username=%q; credential=%q; credential-type=\"password\"", u, user, pass))
		}
	}
}

func hasContentType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

// readBody reads at most limit bytes, answering 413 beyond it.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", limit)
		} else {
			httpError(w, http.StatusBadRequest, "read body: %v", err)
		}
		return nil, false
	}
	return body, true
}

// offer handles POST /whip/{room} and POST /whep/{room}.
func (s *Server) offer(kind rtc.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.guard(w, r) {
			return
		}
		if !hasContentType(r, contentTypeSDP) {
			httpError(w, http.StatusUnsupportedMediaType, "Content-Type must be %s", contentTypeSDP)
			return
		}
		room := r.PathValue("room")
		mode := r.URL.Query().Get("mode")
		if mode != "" && (kind != rtc.KindWHIP || mode != "broadcast") {
			httpError(w, http.StatusBadRequest, "mode=%s: a WHIP publisher may mark its room mode=broadcast", truncate(mode, 16))
			return
		}
		relayOf, ownerAddr, located := "", "", false
		if kind == rtc.KindWHEP {
			// A viewer of a room whose owner is full, or of a broadcast
			// room, is served by a relay pod.
			if relayOf = s.fwd.RelayOwner(r); relayOf != "" && relayOf == s.fwd.Self {
				relayOf = "" // the room is this pod's own: serve it as its owner
			} else if relayOf == "" {
				var done bool
				if relayOf, ownerAddr, located, done = s.placeViewer(w, r, room); done {
					return
				}
			}
		}
		if relayOf == "" {
			addr := ownerAddr
			if !located { // one ownership probe per request: placeViewer's if it ran
				var ok bool
				if addr, ok = s.fwd.Route(w, r, room); !ok {
					return
				}
			}
			if addr != "" {
				s.forward(w, r, addr)
				return
			}
		}
		if s.engine.Draining() {
			unavailable(w, "server is draining; retry on another pod")
			return
		}
		layer := r.URL.Query().Get("layer")
		if _, ok := rtc.RankOf(layer); layer != "" && (kind != rtc.KindWHEP || !ok) {
			httpError(w, http.StatusBadRequest, "layer=%s: a WHEP viewer may cap its simulcast layer at q, h or f", truncate(layer, 16))
			return
		}
		body, ok := readBody(w, r, MaxSDPBytes)
		if !ok {
			return
		}
		if len(strings.TrimSpace(string(body))) == 0 {
			httpError(w, http.StatusBadRequest, "empty SDP offer")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), answerTimeout)
		defer cancel()
		var (
			sess   *rtc.Session
			answer string
			err    error
		)
		if relayOf != "" {
			if s.engine.AtCapacity() {
				unavailable(w, fmt.Sprintf("session limit reached (%d per pod); retry later", s.cfg.MaxSessions))
				return
			}
			if err := s.openUpstream(ctx, room, relayOf); err != nil {
				s.log.Warn("relay link to the room's owner failed", "owner", relayOf, "err", err)
				unavailable(w, "the pod that owns this room is unreachable; retry")
				return
			}
		}
		if kind == rtc.KindWHIP {
			sess, answer, err = s.engine.Publish(ctx, room, string(body))
			if err == nil && mode == "broadcast" {
				s.engine.SetBroadcast(room)
			}
		} else {
			sess, answer, err = s.engine.Subscribe(ctx, room, string(body))
		}
		if err != nil {
			s.sessionError(w, err)
			return
		}
		if layer != "" {
			_ = sess.SetLayerCap("", layer) // checked above
		}
		s.writeLinks(w, true, sess.ID) // guard() checked the token
		w.Header().Set("Content-Type", contentTypeSDP)
		w.Header().Set("Location", "/"+string(kind)+"/"+url.PathEscape(room)+"/"+sess.ID)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, answer)
	}
}

// setLayer caps a WHEP viewer's simulcast layers: POST
// /whep/{room}/{id}/layer?max=q|h|f (&feed=ID for one feed only).
func (s *Server) setLayer(w http.ResponseWriter, r *http.Request) {
	if !s.guard(w, r) {
		return
	}
	sess, ok := s.lookup(w, r, rtc.KindWHEP)
	if !ok {
		return
	}
	q := r.URL.Query()
	if len(q.Get("feed")) > 128 {
		httpError(w, http.StatusBadRequest, "feed id longer than 128 bytes")
		return
	}
	if err := sess.SetLayerCap(q.Get("feed"), q.Get("max")); err != nil {
		httpError(w, http.StatusBadRequest, "max=%s: %v", truncate(q.Get("max"), 16), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) sessionError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, rtc.ErrFull):
		unavailable(w, fmt.Sprintf("session limit reached (%d per pod); retry later", s.cfg.MaxSessions))
	case errors.Is(err, rtc.ErrDraining):
		unavailable(w, "server is draining; retry on another pod")
	case errors.Is(err, rtc.ErrCandidateLimit):
		httpError(w, http.StatusUnprocessableEntity, "%v", err)
	case errors.Is(err, rtc.ErrBadOffer):
		httpError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, rtc.ErrNotPublished):
		w.Header().Set("Retry-After", "2")
		httpError(w, http.StatusNotFound, "nothing is published in this room yet")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		httpError(w, http.StatusServiceUnavailable, "timed out preparing the answer")
	default:
		s.log.Error("session setup failed", "err", err)
		httpError(w, http.StatusInternalServerError, "session setup failed")
	}
}

// placeViewer serves a WHEP viewer through a relay pod when the room's
// owner is full or the room is a broadcast: this pod (relayOf names the
// owner, the caller serves it) or another one (done: answered). Neither
// when the owner takes the viewer itself or no pod can relay: the caller
// routes to the owner as usual.
// ownerAddr (located true) is where the owner is, for the caller to route
// to without asking again.
func (s *Server) placeViewer(w http.ResponseWriter, r *http.Request, room string) (relayOf, ownerAddr string, located, done bool) {
	loc, ok, err := s.fwd.Locate(r, room)
	if !ok || err != nil {
		return "", "", false, false // no fleet, or Route answers the error
	}
	local := loc.Addr == ""
	if !loc.Full && !(loc.Broadcast && !local) {
		return "", loc.Addr, true, false
	}
	body, ok := readBody(w, r, MaxSDPBytes)
	if !ok {
		return "", "", false, true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	for _, m := range s.fwd.RelayPods(room, loc.Name) {
		if m.Name == s.fwd.Self {
			if !s.engine.AtCapacity() && !s.engine.Draining() {
				return loc.Name, "", false, false
			}
			continue
		}
		if s.fwd.TryRelay(w, r, m.Address, loc.Name, body) {
			return "", "", false, true
		}
	}
	return "", loc.Addr, true, false
}

// openUpstream makes sure this pod holds a relay link of room to its
// owner.
func (s *Server) openUpstream(ctx context.Context, room, owner string) error {
	m, ok := s.fwd.Member(owner)
	if !ok || m.AdminAddress == "" {
		return fmt.Errorf("owner %q is not a member", owner)
	}
	return s.engine.Upstream(ctx, room, owner, func(ctx context.Context) (rtc.LinkConn, error) {
		return s.fwd.DialLink(ctx, m.AdminAddress, room)
	})
}

// forward passes a request to the owner pod at addr; its body (at most
// MaxSDPBytes) is read first.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, addr string) {
	body, ok := readBody(w, r, MaxSDPBytes)
	if !ok {
		return
	}
	s.fwd.Proxy(w, r, addr, body)
}

func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	httpError(w, http.StatusServiceUnavailable, "%s", msg)
}

// lookup finds the session a resource URL names, of the right kind and room.
// A session of another pod is reached by forwarding (handled true, found
// false).
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, kind rtc.Kind) (*rtc.Session, bool) {
	if _, local := s.engine.Session(r.PathValue("id")); !local {
		// A session served as a relay names its pod.
		if pod := fleet.SessionPod(r.PathValue("id")); pod != "" && s.fwd != nil && pod != s.fwd.Self && !s.fwd.Forwarded(r) {
			if m, ok := s.fwd.Member(pod); ok && m.Address != "" {
				s.forward(w, r, m.Address)
				return nil, false
			}
			httpError(w, http.StatusNotFound, "no such session")
			return nil, false
		}
		if addr, ok := s.fwd.Route(w, r, r.PathValue("room")); !ok {
			return nil, false
		} else if addr != "" {
			s.forward(w, r, addr)
			return nil, false
		}
	}
	sess, ok := s.engine.Session(r.PathValue("id"))
	if !ok || sess.Kind != kind || sess.RoomName() != r.PathValue("room") {
		httpError(w, http.StatusNotFound, "no such session")
		return nil, false
	}
	return sess, true
}

// patch handles trickle ICE: PATCH /{whip,whep}/{room}/{id}.
func (s *Server) patch(kind rtc.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.guard(w, r) {
			return
		}
		if !hasContentType(r, contentTypeTrickle) {
			httpError(w, http.StatusUnsupportedMediaType, "Content-Type must be %s", contentTypeTrickle)
			return
		}
		sess, ok := s.lookup(w, r, kind)
		if !ok {
			return
		}
		body, ok := readBody(w, r, maxTrickleBytes)
		if !ok {
			return
		}
		frag, err := ParseTrickleFrag(body)
		if err != nil {
			httpError(w, http.StatusBadRequest, "malformed trickle-ice-sdpfrag: %v", err)
			return
		}
		if frag.Ufrag != "" && frag.Ufrag != remoteUfrag(sess) {
			httpError(w, http.StatusUnprocessableEntity, "ICE restart is not supported: ice-ufrag does not match the session")
			return
		}
		for i, c := range frag.Candidates {
			if err := sess.AddCandidate(c); err != nil {
				switch {
				case errors.Is(err, rtc.ErrCandidateLimit):
					httpError(w, http.StatusUnprocessableEntity, "%v (%d of %d candidates in this request added); the session stays up", err, i, len(frag.Candidates))
				case errors.Is(err, rtc.ErrClosed):
					httpError(w, http.StatusNotFound, "no such session")
				default:
					httpError(w, http.StatusBadRequest, "%v", err)
				}
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// remoteUfrag is the ICE username fragment of the session's remote
// description (session level, or the first media section's).
func remoteUfrag(sess *rtc.Session) string {
	rd := sess.PeerConnection().RemoteDescription()
	if rd == nil {
		return ""
	}
	d, err := rd.Unmarshal()
	if err != nil {
		return ""
	}
	if v, ok := d.Attribute("ice-ufrag"); ok {
		return v
	}
	for _, m := range d.MediaDescriptions {
		if v, ok := m.Attribute("ice-ufrag"); ok {
			return v
		}
	}
	return ""
}

func (s *Server) delete(kind rtc.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.guard(w, r) {
			return
		}
		sess, ok := s.lookup(w, r, kind)
		if !ok {
			return
		}
		sess.Close("client-delete")
		w.WriteHeader(http.StatusOK)
	}
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, format+"\n", args...)
}
