package relay

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/podenv"
)

// Config is everything a TURN gateway process needs to know (podenv.Relay*
// variables, set by the operator).
type Config struct {
	// Listeners: UDP and TCP carry plain TURN, TLS carries TURN over TLS
	// (turns:). A port of 0 with its listener enabled takes any free
	// port (tests).
	ListenHost       string
	UDP, TCP, TLS    bool
	UDPPort, TCPPort int
	// UDPListeners is how many UDP sockets share the UDP port
	// (SO_REUSEPORT: the kernel spreads clients over them by address, and
	// each has its own read loop).
	UDPListeners       int
	TLSPort            int
	TLSCertFile        string
	TLSKeyFile         string
	AdminListenHost    string
	AdminPort          int
	AdminToken         string
	Realm              string
	Secret             string
	RelayIP            net.IP // the address relayed packets leave from (the pod's IP)
	PeerPorts          []PortRange
	MaxAllocations     int           // whole server
	UserAllocations    int           // per username (one session)
	AllocationBPS      int           // per allocation and direction; 0: unlimited
	MaxConnections     int           // open TCP + TLS connections
	IdleTimeout        time.Duration // a TCP/TLS connection with nothing read for this long is closed
	HandshakeTimeout   time.Duration
	DrainTimeout       time.Duration
	MaxUsernameLength  int
	LogLevel           string
	LogFormat          string
	AllowLoopbackPeers bool // tests: media servers on 127.0.0.1
}

// PortRange is an inclusive range of peer ports.
type PortRange struct{ Min, Max int }

// Default is the configuration the operator starts from.
func Default() Config {
	return Config{
		UDP: true, UDPPort: 3478, UDPListeners: min(max(runtime.GOMAXPROCS(0), 1), 8),
		AdminPort:         9090,
		Realm:             "mediafleet",
		MaxAllocations:    1000,
		UserAllocations:   4,
		MaxConnections:    2048,
		IdleTimeout:       2 * time.Minute,
		HandshakeTimeout:  10 * time.Second,
		DrainTimeout:      30 * time.Second,
		MaxUsernameLength: 256,
		LogLevel:          "info",
		LogFormat:         "json",
	}
}

// FromEnv reads the podenv variables over Default.
func FromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	var errs []error
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		return strings.TrimSpace(v), ok && strings.TrimSpace(v) != ""
	}
	str := func(name string, dst *string) {
		if v, ok := get(name); ok {
			*dst = v
		}
	}
	num := func(name string, dst *int) {
		if v, ok := get(name); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
				return
			}
			*dst = n
		}
	}
	port := func(name string, on *bool, dst *int) {
		if v, ok := get(name); ok {
			if v == "off" {
				*on = false
				return
			}
			*on = true
			num(name, dst)
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v, ok := get(name); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration", name, v))
				return
			}
			*dst = d
		}
	}
	str(podenv.ListenHost, &c.ListenHost)
	port(podenv.RelayUDPPort, &c.UDP, &c.UDPPort)
	port(podenv.RelayTCPPort, &c.TCP, &c.TCPPort)
	port(podenv.RelayTLSPort, &c.TLS, &c.TLSPort)
	str(podenv.TLSCertFile, &c.TLSCertFile)
	str(podenv.TLSKeyFile, &c.TLSKeyFile)
	str(podenv.AdminListenHost, &c.AdminListenHost)
	num(podenv.AdminPort, &c.AdminPort)
	str(podenv.AdminToken, &c.AdminToken)
	str(podenv.RelayRealm, &c.Realm)
	str(podenv.RelaySecret, &c.Secret)
	if v, ok := get(podenv.PodIP); ok {
		if c.RelayIP = net.ParseIP(v); c.RelayIP == nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an IP address", podenv.PodIP, v))
		}
	}
	if v, ok := get(podenv.RelayPeerPorts); ok {
		pr, err := ParsePortRanges(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", podenv.RelayPeerPorts, err))
		}
		c.PeerPorts = pr
	}
	num(podenv.RelayUDPListeners, &c.UDPListeners)
	num(podenv.RelayMaxAllocations, &c.MaxAllocations)
	num(podenv.RelayUserAllocations, &c.UserAllocations)
	num(podenv.RelayAllocationBPS, &c.AllocationBPS)
	num(podenv.MaxConnections, &c.MaxConnections)
	dur(podenv.DrainTimeout, &c.DrainTimeout)
	if v, ok := get(podenv.RelayAllowLoopbackPeers); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not true or false", podenv.RelayAllowLoopbackPeers, v))
		}
		c.AllowLoopbackPeers = b
	}
	str(podenv.LogLevel, &c.LogLevel)
	str(podenv.LogFormat, &c.LogFormat)
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ParsePortRanges reads "50000" or "40000-40999,50000".
func ParsePortRanges(s string) ([]PortRange, error) {
	var out []PortRange
	parts := strings.Split(s, ",")
	if len(parts) > 16 {
		return nil, fmt.Errorf("%d port ranges: at most 16", len(parts))
	}
	for _, p := range parts {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(p), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("%q is not a port or a range", p)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("%q is not a port or a range", p)
			}
		}
		if a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("%q: ports are 1-65535, low to high", p)
		}
		out = append(out, PortRange{a, b})
	}
	return out, nil
}

// Validate reports every inconsistency at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !c.UDP && !c.TCP && !c.TLS {
		bad("no listener: enable %s, %s or %s", podenv.RelayUDPPort, podenv.RelayTCPPort, podenv.RelayTLSPort)
	}
	for _, p := range []struct {
		on   bool
		name string
		v    int
	}{{c.UDP, podenv.RelayUDPPort, c.UDPPort}, {c.TCP, podenv.RelayTCPPort, c.TCPPort}, {c.TLS, podenv.RelayTLSPort, c.TLSPort}, {true, podenv.AdminPort, c.AdminPort}} {
		if p.on && (p.v < 0 || p.v > 65535) {
			bad("%s=%d: not a port", p.name, p.v)
		}
	}
	if c.UDPListeners < 1 || c.UDPListeners > 16 {
		bad("%s=%d: must be 1-16", podenv.RelayUDPListeners, c.UDPListeners)
	}
	if c.TLS && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		bad("the TLS listener needs %s and %s", podenv.TLSCertFile, podenv.TLSKeyFile)
	}
	if len(c.Secret) < 16 {
		bad("%s: the shared secret must be at least 16 bytes", podenv.RelaySecret)
	}
	if c.RelayIP == nil {
		bad("%s: the address to relay from is missing", podenv.PodIP)
	}
	if c.Realm == "" || len(c.Realm) > 128 {
		bad("%s: a realm of 1-128 bytes", podenv.RelayRealm)
	}
	if c.MaxAllocations < 1 || c.MaxAllocations > 100_000 {
		bad("%s=%d: must be 1-100000", podenv.RelayMaxAllocations, c.MaxAllocations)
	}
	if c.UserAllocations < 1 || c.UserAllocations > 64 {
		bad("%s=%d: must be 1-64", podenv.RelayUserAllocations, c.UserAllocations)
	}
	if c.AllocationBPS < 0 {
		bad("%s=%d: must not be negative", podenv.RelayAllocationBPS, c.AllocationBPS)
	}
	if c.MaxConnections < 1 {
		bad("%s=%d: must be positive", podenv.MaxConnections, c.MaxConnections)
	}
	if c.DrainTimeout < 0 || c.DrainTimeout > time.Hour {
		bad("%s=%s: must be within 0..1h", podenv.DrainTimeout, c.DrainTimeout)
	}
	if c.AdminToken == "" && c.AdminListenHost != "" && c.AdminListenHost != "127.0.0.1" {
		bad("%s is needed when the admin port is not on loopback", podenv.AdminToken)
	}
	return errors.Join(errs...)
}
