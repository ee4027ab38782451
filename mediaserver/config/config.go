// Package config holds the mediaserver's one Config: loaded from the
// environment (names in package podenv, shared with the operator) and
// flags, validated and defaulted in one place.
package config

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/podenv"
)

// TURNServer is one TURN server with its credentials.
type TURNServer struct {
	URLs     []string
	Username string
	Password string
	// Secret, instead of Username/Password, is the TURN server's shared
	// secret: every session gets its own short-lived credentials (the TURN
	// REST API scheme), and the secret never leaves the pod.
	Secret string
	// TTL of minted credentials (default 1h).
	TTL time.Duration
	// ClientsOnly: announced to clients but not used by the server's own
	// PeerConnections (the MediaService's own TURN gateway, which relays
	// to the media pods directly on the pod network).
	ClientsOnly bool
}

// Credentials returns what a session named id (or a client) uses with this
// TURN server at now: the static pair, or with a shared secret the TURN
// REST API's ephemeral pair, username "<expiry unix time>:<id>" and
// password base64(HMAC-SHA1(secret, username)).
func (t TURNServer) Credentials(now time.Time, id string) (username, password string) {
	if t.Secret == "" {
		return t.Username, t.Password
	}
	username = strconv.FormatInt(now.Add(t.TTL).Unix(), 10) + ":" + id
	mac := hmac.New(sha1.New, []byte(t.Secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Config is everything a mediaserver process needs to know.
type Config struct {
	// Addresses.
	ListenHost string // host part for both listeners ("" = all interfaces)
	// AdminListenHost, when set, is where the admin port binds instead of
	// ListenHost. Without an AdminToken it is forced to loopback.
	AdminListenHost string
	Port            int
	AdminPort       int
	// AdminToken guards the admin port (all but /healthz, /readyz,
	// /metrics) and authenticates forwarding between pods.
	AdminToken string

	// Signalling.
	AllowedOrigins []string
	AuthToken      string
	// TLSCertFile and TLSKeyFile make the signalling port serve HTTPS/WSS;
	// the files are re-read when they change (TLSReloadInterval).
	TLSCertFile, TLSKeyFile string
	TLSReloadInterval       time.Duration

	// ICE.
	ICEPortMin, ICEPortMax int
	UDPMuxPort             int
	STUNServers            []string
	// BroadcastRooms: rooms (names, or prefixes ending in '*') whose
	// viewers are served by relay pods first.
	BroadcastRooms []string
	TURNServers    []TURNServer
	PublicIPs      []string
	PublicIPFile   string
	// ICEIPs limits the local addresses ICE gathers on (empty = all).
	ICEIPs []string
	// ICEInterfaces limits the interfaces ICE gathers on (empty = all).
	ICEInterfaces []string
	// ICELoopback lets ICE gather loopback candidates (tests, local runs).
	ICELoopback bool

	// Limits.
	// HeaderTimeout and BodyTimeout bound reading a request's headers and
	// then its body (10 s each by default; tests shorten them).
	HeaderTimeout, BodyTimeout time.Duration
	// MaxConnections caps the public listener's open connections (0: four
	// per session, at least 1024).
	MaxConnections   int
	MaxSessions      int
	MaxICECandidates int
	WSSendBuffer     int
	WSSendTimeout    time.Duration
	DrainTimeout     time.Duration
	ConnectTimeout   time.Duration
	MaxBodyBytes     int64
	WSReadLimit      int64

	// Leak detection: how often goroutines and resources are sampled.
	SampleInterval     time.Duration
	LeakBaselineWindow time.Duration
	LeakThresholdRatio int

	// Logging.
	LogLevel  string
	LogFormat string

	// Identity.
	PodName, Namespace, ServiceName string
}

// Default returns the configuration of a process with no environment.
func Default() Config {
	return Config{
		Port:               8080,
		AdminPort:          9090,
		MaxSessions:        500,
		MaxICECandidates:   50,
		WSSendBuffer:       256,
		WSSendTimeout:      time.Second,
		DrainTimeout:       30 * time.Second,
		ConnectTimeout:     30 * time.Second,
		MaxBodyBytes:       64 << 10,
		WSReadLimit:        64 << 10,
		SampleInterval:     5 * time.Second,
		LeakBaselineWindow: 5 * time.Minute,
		LeakThresholdRatio: 3,
		LogLevel:           "info",
		LogFormat:          "json",
	}
}

// Loopback is Default bound to 127.0.0.1 on ephemeral ports, with ICE on
// the loopback interface only: an in-process server for tests, benchmarks
// and local runs that nothing outside this machine can reach.
func Loopback() Config {
	c := Default()
	c.ListenHost = "127.0.0.1"
	c.Port, c.AdminPort = 0, 0
	c.ICELoopback = true
	c.ICEInterfaces = []string{"lo"}
	return c
}

// FromEnv reads the podenv variables over Default. lookup is os.LookupEnv in
// production. The first malformed variable is reported by name.
func FromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	var errs []error
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok {
			*dst = strings.TrimSpace(v)
		}
	}
	num := func(name string, dst *int) {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
				return
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration (e.g. 30s)", name, v))
				return
			}
			*dst = d
		}
	}
	boolean := func(name string, dst *bool) {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not true or false", name, v))
				return
			}
			*dst = b
		}
	}
	list := func(name string, dst *[]string) {
		if v, ok := lookup(name); ok {
			*dst = SplitList(v)
		}
	}
	num(podenv.Port, &c.Port)
	num(podenv.AdminPort, &c.AdminPort)
	str(podenv.AdminToken, &c.AdminToken)
	str(podenv.ListenHost, &c.ListenHost)
	str(podenv.AdminListenHost, &c.AdminListenHost)
	list(podenv.AllowedOrigins, &c.AllowedOrigins)
	str(podenv.AuthToken, &c.AuthToken)
	str(podenv.TLSCertFile, &c.TLSCertFile)
	str(podenv.TLSKeyFile, &c.TLSKeyFile)
	num(podenv.ICEPortMin, &c.ICEPortMin)
	num(podenv.ICEPortMax, &c.ICEPortMax)
	num(podenv.ICEUDPMuxPort, &c.UDPMuxPort)
	list(podenv.STUNServers, &c.STUNServers)
	list(podenv.BroadcastRooms, &c.BroadcastRooms)
	list(podenv.PublicIPs, &c.PublicIPs)
	list(podenv.ICEIPs, &c.ICEIPs)
	str(podenv.PublicIPFile, &c.PublicIPFile)
	num(podenv.MaxSessions, &c.MaxSessions)
	num(podenv.MaxConnections, &c.MaxConnections)
	num(podenv.MaxICECandidates, &c.MaxICECandidates)
	num(podenv.WSSendBuffer, &c.WSSendBuffer)
	dur(podenv.WSSendTimeout, &c.WSSendTimeout)
	dur(podenv.DrainTimeout, &c.DrainTimeout)
	dur(podenv.LeakBaselineWindow, &c.LeakBaselineWindow)
	dur(podenv.SampleInterval, &c.SampleInterval)
	num(podenv.LeakThresholdRatio, &c.LeakThresholdRatio)
	str(podenv.LogLevel, &c.LogLevel)
	str(podenv.LogFormat, &c.LogFormat)
	str(podenv.PodName, &c.PodName)
	str(podenv.PodNamespace, &c.Namespace)
	str(podenv.ServiceName, &c.ServiceName)

	var turnCount int
	num(podenv.TURNServerCount, &turnCount)
	if turnCount < 0 || turnCount > 16 {
		errs = append(errs, fmt.Errorf("%s=%d: must be between 0 and 16", podenv.TURNServerCount, turnCount))
		turnCount = 0
	}
	for i := 0; i < turnCount; i++ {
		var t TURNServer
		list(podenv.TURNURLs(i), &t.URLs)
		str(podenv.TURNUsername(i), &t.Username)
		str(podenv.TURNPassword(i), &t.Password)
		str(podenv.TURNSecret(i), &t.Secret)
		dur(podenv.TURNTTL(i), &t.TTL)
		boolean(podenv.TURNClientsOnly(i), &t.ClientsOnly)
		c.TURNServers = append(c.TURNServers, t)
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	return c, nil
}

// Load reads the process environment.
func Load() (Config, error) { return FromEnv(os.LookupEnv) }

// SplitList splits a comma-separated list, trimming blanks and dropping
// empty entries (the form of every list variable of podenv).
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// loopbackOf is the loopback address to bind instead of host (IPv6
// loopback for an IPv6 host).
func loopbackOf(hosts ...string) string {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsLoopback() {
				return h
			}
			if ip.To4() == nil {
				return "::1"
			}
		}
	}
	return "127.0.0.1"
}

// AdminHost is where the admin port binds.
func (c *Config) AdminHost() string {
	if c.AdminListenHost != "" {
		return c.AdminListenHost
	}
	return c.ListenHost
}

// Validate checks the configuration and fills what is derived. Each error
// names the variable a user sets.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	port := func(name string, p int, allowZero bool) {
		if (p == 0 && !allowZero) || p < 0 || p > 65535 {
			bad("%s=%d: not a port (1-65535)", name, p)
		}
	}
	port(podenv.Port, c.Port, true)
	port(podenv.AdminPort, c.AdminPort, true)
	if c.Port != 0 && c.Port == c.AdminPort {
		bad("%s and %s must differ (both %d)", podenv.Port, podenv.AdminPort, c.Port)
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		bad("%s is too short (%d bytes): use at least 16 random bytes", podenv.AdminToken, len(c.AdminToken))
	}
	for name, h := range map[string]string{podenv.ListenHost: c.ListenHost, podenv.AdminListenHost: c.AdminListenHost} {
		if h != "" && net.ParseIP(h) == nil {
			bad("%s=%q: not an IP address", name, h)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("%s and %s go together (both set for HTTPS, or neither)", podenv.TLSCertFile, podenv.TLSKeyFile)
	}
	rangeSet := c.ICEPortMin != 0 || c.ICEPortMax != 0
	if rangeSet {
		port(podenv.ICEPortMin, c.ICEPortMin, false)
		port(podenv.ICEPortMax, c.ICEPortMax, false)
		if c.ICEPortMin > c.ICEPortMax {
			bad("%s=%d must be <= %s=%d", podenv.ICEPortMin, c.ICEPortMin, podenv.ICEPortMax, c.ICEPortMax)
		}
	}
	if c.UDPMuxPort != 0 {
		port(podenv.ICEUDPMuxPort, c.UDPMuxPort, false)
		if rangeSet {
			bad("%s and %s/%s are mutually exclusive", podenv.ICEUDPMuxPort, podenv.ICEPortMin, podenv.ICEPortMax)
		}
	}
	if len(c.BroadcastRooms) > MaxBroadcastRooms {
		bad("%s: %d entries, at most %d", podenv.BroadcastRooms, len(c.BroadcastRooms), MaxBroadcastRooms)
	}
	for _, r := range c.BroadcastRooms {
		if !broadcastRoom.MatchString(r) {
			bad("%s: %q is not a room name or a prefix ending in '*'", podenv.BroadcastRooms, r)
		}
	}
	for _, u := range c.STUNServers {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") {
			bad("%s: %q is not a stun: or stuns: URL", podenv.STUNServers, u)
		}
	}
	for i, t := range c.TURNServers {
		if len(t.URLs) == 0 {
			bad("%s: no URL", podenv.TURNURLs(i))
		}
		for _, u := range t.URLs {
			if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				bad("%s: %q is not a turn: or turns: URL", podenv.TURNURLs(i), u)
			}
		}
		static := t.Username != "" || t.Password != ""
		switch {
		case t.Secret != "" && static:
			bad("%s and %s/%s are mutually exclusive: a shared secret mints credentials", podenv.TURNSecret(i), podenv.TURNUsername(i), podenv.TURNPassword(i))
		case t.Secret == "" && (t.Username == "" || t.Password == ""):
			bad("%s/%s (or %s): TURN credentials missing", podenv.TURNUsername(i), podenv.TURNPassword(i), podenv.TURNSecret(i))
		}
		if t.TTL < 0 || t.TTL > 24*time.Hour {
			bad("%s=%s: must be within 0..24h", podenv.TURNTTL(i), t.TTL)
		}
		if t.Secret != "" && t.TTL == 0 {
			c.TURNServers[i].TTL = time.Hour
		}
	}
	for _, ip := range c.PublicIPs {
		if net.ParseIP(ip) == nil {
			bad("%s: %q is not an IP address", podenv.PublicIPs, ip)
		}
	}
	for _, ip := range c.ICEIPs {
		if net.ParseIP(ip) == nil {
			bad("%s: %q is not an IP address", podenv.ICEIPs, ip)
		}
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("%s: %q is not an origin (scheme://host[:port])", podenv.AllowedOrigins, o)
		}
	}
	positive := func(name string, v int) {
		if v <= 0 {
			bad("%s=%d: must be positive", name, v)
		}
	}
	positive(podenv.MaxSessions, c.MaxSessions)
	positive(podenv.MaxICECandidates, c.MaxICECandidates)
	positive(podenv.WSSendBuffer, c.WSSendBuffer)
	if c.LeakThresholdRatio < 2 {
		bad("%s=%d: must be at least 2", podenv.LeakThresholdRatio, c.LeakThresholdRatio)
	}
	for name, d := range map[string]time.Duration{podenv.WSSendTimeout: c.WSSendTimeout, podenv.DrainTimeout: c.DrainTimeout, podenv.LeakBaselineWindow: c.LeakBaselineWindow, podenv.SampleInterval: c.SampleInterval} {
		if d <= 0 {
			bad("%s=%s: must be positive", name, d)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("%s=%q: want debug, info, warn or error", podenv.LogLevel, c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("%s=%q: want json or text", podenv.LogFormat, c.LogFormat)
	}
	if c.AdminToken == "" {
		// Nothing authenticates the admin port: nothing but this machine
		// may reach it.
		c.AdminListenHost = loopbackOf(c.AdminListenHost, c.ListenHost)
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.MaxConnections < 0 {
		bad("%s=%d: must not be negative", podenv.MaxConnections, c.MaxConnections)
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = max(1024, 4*c.MaxSessions)
	}
	if c.TLSReloadInterval <= 0 {
		c.TLSReloadInterval = 5 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.WSReadLimit <= 0 {
		c.WSReadLimit = 64 << 10
	}
	return errors.Join(errs...)
}

// MaxBroadcastRooms bounds BROADCAST_ROOMS.
const MaxBroadcastRooms = 32

// broadcastRoom is a room name (1-64 letters, digits, '_', '.', '-'),
// optionally ending in '*' (a prefix), or '*' alone.
var broadcastRoom = regexp.MustCompile(`^([A-Za-z0-9_.-]{1,64}\*?|\*)$`)

// IsBroadcastRoom says whether room is one of BroadcastRooms.
func (c *Config) IsBroadcastRoom(room string) bool {
	for _, b := range c.BroadcastRooms {
		if prefix, ok := strings.CutSuffix(b, "*"); ok {
			if strings.HasPrefix(room, prefix) {
				return true
			}
		} else if room == b {
			return true
		}
	}
	return false
}
