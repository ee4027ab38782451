package signal

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
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
	log      *slog.Logger
	upgrader websocket.Upgrader

	wsMu    sync.Mutex
	wsConns map[*wsConn]struct{}
	extra   []route

	router RoomRouter
	self   string
	// podToken proves forwarded signalling comes from a pod of the fleet.
	podToken string
	// peerTLS, when set, makes forwarding to other pods use https/wss.
	peerTLS  *tls.Config
	peerOnce sync.Once
	peerRT   http.RoundTripper
}

// RoomRouter says which pod serves a room: "" for this one, else the
// owner's signalling address (host:port).
type RoomRouter interface {
	Route(ctx context.Context, room string) (string, error)
}

// SetRouter makes the server forward signalling for rooms another pod owns.
// self names this pod in the forwarding header; podToken (the admin token
// every pod of the fleet shares) goes beside it and is what makes another
// pod's forwarded request recognised as such.
func (s *Server) SetRouter(r RoomRouter, self, podToken string) {
	s.router, s.self, s.podToken = r, self, podToken
}

// forwarded says whether r was forwarded by another pod of the fleet: the
// forwarding header counts only beside a valid pod token, so a client
// cannot switch routing off by sending it.
func (s *Server) forwarded(r *http.Request) bool {
	if s.podToken == "" || r.Header.Get(statusapi.ForwardedByHeader) == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(statusapi.PodTokenHeader)), []byte(s.podToken)) == 1
}

// markForwarded sets the forwarding headers on a request to another pod
// (replacing whatever a client sent in them).
func (s *Server) markForwarded(h http.Header) {
	h.Set(statusapi.ForwardedByHeader, s.self)
	h.Set(statusapi.PodTokenHeader, s.podToken)
}

// SetPeerTLS makes signalling forwarded to other pods go over TLS with
// this client configuration (the pods serve HTTPS on the signalling port).
func (s *Server) SetPeerTLS(cfg *tls.Config) { s.peerTLS = cfg }

// peerScheme is the scheme of another pod's signalling port ("http" or
// "https"; "ws"/"wss" with websocket true).
func (s *Server) peerScheme(websocket bool) string {
	switch {
	case s.peerTLS != nil && websocket:
		return "wss"
	case s.peerTLS != nil:
		return "https"
	case websocket:
		return "ws"
	default:
		return "http"
	}
}

// routeRemote returns the owner's address when room is served elsewhere
// and this request may be forwarded; it answers 503 itself when no owner
// can be reached (ok false).
func (s *Server) routeRemote(w http.ResponseWriter, r *http.Request, room string) (addr string, ok bool) {
	if s.router == nil || s.forwarded(r) {
		return "", true
	}
	addr, err := s.router.Route(r.Context(), room)
	if err != nil {
		unavailable(w, "no pod can take room "+room+" now; retry")
		return "", false
	}
	return addr, true
}

// maxForwardedAnswer bounds an owner's answer read before it is passed on.
const maxForwardedAnswer = 1 << 20

// proxy forwards the request to the owner pod unchanged but for the
// forwarding headers; the client keeps its one public URL. The request
// body (at most MaxSDPBytes) is read before it is sent, so a retry of a
// request on a keep-alive connection the owner just closed can resend it;
// the owner's answer is read whole before anything reaches the client, so
// a client never gets a 201 whose body stops half-way. When the answer
// cannot be read whole, the session it created on the owner is deleted:
// nothing is left orphaned there.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request, addr string) {
	body, ok := readBody(w, r, MaxSDPBytes)
	if !ok {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	rp := &httputil.ReverseProxy{
		Transport: s.peerTransport(),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: s.peerScheme(false), Host: addr})
			pr.Out.Host = pr.In.Host
			s.markForwarded(pr.Out.Header)
		},
		ModifyResponse: func(resp *http.Response) error {
			answer, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedAnswer+1))
			resp.Body.Close()
			if err == nil && len(answer) > maxForwardedAnswer {
				err = fmt.Errorf("answer over %d bytes", maxForwardedAnswer)
			}
			if err != nil {
				if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusCreated && loc != "" {
					s.deleteOrphan(addr, loc, r.Header.Get("Authorization"))
				}
				return fmt.Errorf("read the owner's answer: %w", err)
			}
			resp.Body = io.NopCloser(bytes.NewReader(answer))
			resp.ContentLength = int64(len(answer))
			resp.Header.Set("Content-Length", strconv.Itoa(len(answer)))
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.log.Warn("owner pod unreachable", "owner", addr, "err", err)
			unavailable(w, "the pod that owns this room is unreachable; retry")
		},
	}
	rp.ServeHTTP(w, r)
}

// deleteOrphan ends a session the owner created for an answer that could
// not be passed on.
func (s *Server) deleteOrphan(addr, location, auth string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.peerScheme(false)+"://"+addr+location, nil)
	if err != nil {
		return
	}
	s.markForwarded(req.Header)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.peerTransport().RoundTrip(req)
	if err != nil {
		s.log.Warn("could not delete the owner's session of a lost answer", "owner", addr, "session", location, "err", err)
		return
	}
	resp.Body.Close()
}

// peerTransport carries signalling to other pods: its own keep-alive pool
// (idle connections closed well before the owner's 2-minute idle timeout,
// so a reused connection is rarely one the owner is closing), TLS when the
// pods serve it.
func (s *Server) peerTransport() http.RoundTripper {
	s.peerOnce.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		t.IdleConnTimeout = 30 * time.Second
		t.ForceAttemptHTTP2 = false
		t.TLSClientConfig = s.peerTLS
		s.peerRT = t
	})
	return s.peerRT
}

type route struct {
	pattern string
	handler http.Handler
}

// New returns the signalling server of engine.
func New(engine *rtc.Engine, log *slog.Logger) *Server {
	s := &Server{engine: engine, cfg: engine.Config(), log: log, wsConns: map[*wsConn]struct{}{}}
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
	m := s.engine.Metrics()
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
		handle("OPTIONS "+base+"/{id}", http.StatusNoContent, s.preflight)
	}
	handle("GET /ws", http.StatusSwitchingProtocols, s.websocket)
	for _, r := range s.extra {
		mux.Handle(r.pattern, r.handler)
		InitRoute(m, r.pattern, http.StatusOK)
	}
	return Instrument(s.engine.Metrics(), mux)
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
		if addr, ok := s.routeRemote(w, r, r.PathValue("room")); !ok {
			return
		} else if addr != "" {
			s.proxy(w, r, addr)
			return
		}
		if s.engine.Draining() {
			unavailable(w, "server is draining; retry on another pod")
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
		room := r.PathValue("room")
		var (
			sess   *rtc.Session
			answer string
			err    error
		)
		if kind == rtc.KindWHIP {
			sess, answer, err = s.engine.Publish(ctx, room, string(body))
		} else {
			sess, answer, err = s.engine.Subscribe(ctx, room, string(body))
		}
		if err != nil {
			s.sessionError(w, err)
			return
		}
		s.writeLinks(w, true, sess.ID) // guard() checked the token
		w.Header().Set("Content-Type", contentTypeSDP)
		w.Header().Set("Location", "/"+string(kind)+"/"+url.PathEscape(room)+"/"+sess.ID)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, answer)
	}
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

func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	httpError(w, http.StatusServiceUnavailable, "%s", msg)
}

// lookup finds the session a resource URL names, of the right kind and room.
// A session of another pod is reached by forwarding (handled true, found
// false).
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, kind rtc.Kind) (*rtc.Session, bool) {
	if _, local := s.engine.Session(r.PathValue("id")); !local {
		if addr, ok := s.routeRemote(w, r, r.PathValue("room")); !ok {
			return nil, false
		} else if addr != "" {
			s.proxy(w, r, addr)
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
