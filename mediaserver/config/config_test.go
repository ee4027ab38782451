package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestFromEnvAndValidate(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{"defaults", nil, "", func(t *testing.T, c Config) {
			if c.Port != 8080 || c.AdminPort != 9090 || c.MaxSessions != 500 || c.MaxICECandidates != 50 || c.WSSendBuffer != 256 ||
				c.WSSendTimeout != time.Second || c.DrainTimeout != 30*time.Second {
				t.Errorf("defaults %+v", c)
			}
		}},
		{"seed names", map[string]string{"PORT": "8000", "STUN_SERVERS": "stun:a.example.test:3478, stuns:b.example.test", "ICE_PORT_MIN": "50000", "ICE_PORT_MAX": "50100"}, "",
			func(t *testing.T, c Config) {
				if c.Port != 8000 || len(c.STUNServers) != 2 || c.ICEPortMin != 50000 || c.ICEPortMax != 50100 {
					t.Errorf("%+v", c)
				}
			}},
		{"turn", map[string]string{"ICE_UDP_MUX_PORT": "3478", "TURN_SERVER_COUNT": "1", "TURN_0_URLS": "turn:t.example.test:3478", "TURN_0_USERNAME": "u", "TURN_0_PASSWORD": "p"}, "",
			func(t *testing.T, c Config) {
				if len(c.TURNServers) != 1 || c.TURNServers[0].Username != "u" || c.UDPMuxPort != 3478 {
					t.Errorf("%+v", c)
				}
			}},
		{"broadcast rooms", map[string]string{"BROADCAST_ROOMS": "webinar-*, town-hall"}, "", func(t *testing.T, c Config) {
			for room, want := range map[string]bool{"webinar-1": true, "webinar-": true, "town-hall": true, "town-hall-2": false, "meeting": false} {
				if got := c.IsBroadcastRoom(room); got != want {
					t.Errorf("IsBroadcastRoom(%q) = %v, want %v", room, got, want)
				}
			}
		}},
		{"bad broadcast room", map[string]string{"BROADCAST_ROOMS": "webinar-*,a b"}, `BROADCAST_ROOMS: "a b" is not a room name or a prefix ending in '*'`, nil},
		{"not a number", map[string]string{"MAX_SESSIONS": "lots"}, `MAX_SESSIONS="lots": not an integer`, nil},
		{"not a duration", map[string]string{"DRAIN_TIMEOUT": "30"}, `DRAIN_TIMEOUT="30": not a duration`, nil},
		{"range reversed", map[string]string{"ICE_PORT_MIN": "60000", "ICE_PORT_MAX": "50000"}, "ICE_PORT_MIN=60000 must be <= ICE_PORT_MAX=50000", nil},
		{"range and mux", map[string]string{"ICE_PORT_MIN": "50000", "ICE_PORT_MAX": "50010", "ICE_UDP_MUX_PORT": "50000"}, "mutually exclusive", nil},
		{"bad stun", map[string]string{"STUN_SERVERS": "http://x"}, `STUN_SERVERS: "http://x" is not a stun: or stuns: URL`, nil},
		{"turn without creds", map[string]string{"TURN_SERVER_COUNT": "1", "TURN_0_URLS": "turn:t.example.test"}, "TURN credentials missing", nil},
		{"bad ICE ip", map[string]string{"ICE_IPS": "198.18.0.1,eth0"}, `ICE_IPS: "eth0" is not an IP address`, nil},
		{"bad public ip", map[string]string{"PUBLIC_IPS": "example.test"}, `PUBLIC_IPS: "example.test" is not an IP address`, nil},
		{"same ports", map[string]string{"PORT": "9090"}, "PORT and ADMIN_PORT must differ", nil},
		{"bad origin", map[string]string{"ALLOWED_ORIGINS": "example.test"}, `ALLOWED_ORIGINS: "example.test" is not an origin`, nil},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, `LOG_LEVEL="loud"`, nil},
		{"zero sessions", map[string]string{"MAX_SESSIONS": "0"}, "MAX_SESSIONS=0: must be positive", nil},
		{"turn secret and password", map[string]string{"TURN_SERVER_COUNT": "1", "TURN_0_URLS": "turn:t.example.test", "TURN_0_SECRET": "s",
			"TURN_0_USERNAME": "u", "TURN_0_PASSWORD": "p"}, "TURN_0_SECRET and TURN_0_USERNAME/TURN_0_PASSWORD are mutually exclusive", nil},
		{"turn ttl too long", map[string]string{"TURN_SERVER_COUNT": "1", "TURN_0_URLS": "turn:t.example.test", "TURN_0_SECRET": "s", "TURN_0_TTL": "48h"},
			"TURN_0_TTL=48h0m0s: must be within 0..24h", nil},
		{"turn shared secret", map[string]string{"TURN_SERVER_COUNT": "1", "TURN_0_URLS": "turn:t.example.test", "TURN_0_SECRET": "s"}, "", func(t *testing.T, c Config) {
			if c.TURNServers[0].TTL != time.Hour {
				t.Errorf("default TTL %s", c.TURNServers[0].TTL)
			}
			now := time.Unix(1_800_000_000, 0)
			u, p := c.TURNServers[0].Credentials(now, "sess")
			// base64(HMAC-SHA1("s", "1800003600:sess")), computed with Python's hmac.
			if u != "1800003600:sess" || p != "rM9dWEAwkCPYUx23HgkGX/vHllQ=" {
				t.Errorf("credentials %q %q", u, p)
			}
		}},
		{"too short admin token", map[string]string{"ADMIN_TOKEN": "abc"}, "ADMIN_TOKEN is too short", nil},
		{"admin listen host not an IP", map[string]string{"ADMIN_LISTEN_HOST": "pod.local"}, `ADMIN_LISTEN_HOST="pod.local": not an IP address`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(env(tc.env))
			if err == nil {
				err = c.Validate()
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
