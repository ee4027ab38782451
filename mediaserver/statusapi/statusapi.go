// Package statusapi is the second contract between the operator and the
// mediaserver: the JSON report served at GET /status on the admin port. It
// has no dependencies so that both halves can import it.
//
// The report is versioned by APIVersion. A reader must ignore unknown fields
// and refuse an APIVersion it does not know; a writer adds fields within a
// version only when old readers can ignore them.
package statusapi

import (
	"crypto/subtle"
	"net/http"
	"time"
)

// APIVersion is the version of the report this package describes.
const APIVersion = "status.mediafleet.io/v1"

// Path is where the admin server serves the report.
const Path = "/status"

// Authentication on the admin port and between pods. Every admin endpoint
// but /healthz, /readyz and /metrics needs
// "Authorization: Bearer <ADMIN_TOKEN>" (podenv.AdminToken); without it
// the answer is 401.
const (
	// ForwardedByHeader names the pod that forwarded a signalling request
	// to the room's owner. It counts only beside a valid PodTokenHeader: a
	// client cannot switch routing off by sending it.
	ForwardedByHeader = "X-Mediafleet-Forwarded-By"
	// PodTokenHeader carries ADMIN_TOKEN on signalling forwarded between
	// pods; the client's own Authorization goes along unchanged.
	PodTokenHeader = "X-Mediafleet-Pod-Token"
)

// Report is what a media pod says about itself.
type Report struct {
	APIVersion string `json:"apiVersion"`
	// Pod identity, from the downward API.
	PodName   string `json:"podName,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Version of the mediaserver binary.
	Version string `json:"version"`
	// StartedAt is when the process started; UptimeSeconds is derived from it.
	StartedAt     time.Time `json:"startedAt"`
	UptimeSeconds int64     `json:"uptimeSeconds"`

	// Ready is true when the pod accepts new sessions.
	Ready bool `json:"ready"`
	// Draining is true once the pod has been asked to stop.
	Draining bool `json:"draining"`

	Sessions   Sessions   `json:"sessions"`
	Goroutines Goroutines `json:"goroutines"`
	Leak       Leak       `json:"leak"`
	// MembershipGeneration is the generation of the member list the pod
	// holds (0: none yet); MembershipSize its number of members.
	MembershipGeneration int64 `json:"membershipGeneration,omitempty"`
	MembershipSize       int   `json:"membershipSize,omitempty"`

	// Rooms are the largest rooms here (at most MaxReportedRooms, most
	// members first): whether this pod owns each or relays it, and its
	// relay links.
	Rooms []RoomStatus `json:"rooms,omitempty"`
}

// MaxReportedRooms bounds Report.Rooms.
const MaxReportedRooms = 20

// Room roles in a pod's report.
const (
	RoomOwner = "owner" // the room is owned here (its publishers are here)
	RoomRelay = "relay" // the room is relayed here from its owner
)

// RoomStatus is one room of a pod's report.
type RoomStatus struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Owner is the owner pod of a relayed room.
	Owner string `json:"owner,omitempty"`
	// Members are the room's sessions here (viewers, publishers,
	// participants; links not counted).
	Members int `json:"members"`
	// Links: an owner's relay links (one per relay pod); a relay's is 1.
	Links int `json:"links,omitempty"`
	// LinkState is a relay's link to its owner (ICE state).
	LinkState string `json:"linkState,omitempty"`
}

// Sessions counts PeerConnections.
type Sessions struct {
	Active   int `json:"active"`
	Capacity int `json:"capacity"`
	Rooms    int `json:"rooms"`
}

// Goroutines summarises the goroutine-leak detector's view.
type Goroutines struct {
	Current  int `json:"current"`
	Baseline int `json:"baseline"`
	Max      int `json:"max"`
}

// Leak is the detector's verdict.
type Leak struct {
	Suspected bool       `json:"suspected"`
	Since     *time.Time `json:"since,omitempty"`
	// Excess is how many goroutines exceed what sessions explain.
	Excess int `json:"excess,omitempty"`
	// TopGrowth lists goroutine creation sites by growth since the baseline.
	TopGrowth []GrowthSite `json:"topGrowth,omitempty"`
}

// GrowthSite is one goroutine creation site and how much it grew.
type GrowthSite struct {
	Function string `json:"function"`
	Count    int    `json:"count"`
	Growth   int    `json:"growth"`
}

// MembershipPath is where the admin server accepts the member list
// (PUT, JSON Membership).
const MembershipPath = "/membership"

// Membership is the list of a MediaService's media pods that the operator
// delivers to each of them whenever it changes. Pods never call the
// Kubernetes API: this is how they learn their peers.
//
// Protocol: the operator PUTs the whole list to every pod's admin port with
// a Generation that only grows (it is derived from the clock, so it keeps
// growing across operator restarts). A pod answers 204 and keeps the list
// when Generation is not lower than the one it holds, and 409 Conflict
// (keeping its list) when it is lower: a stale list never replaces a newer
// one. Until a pod has a list it serves every room itself.
type Membership struct {
	APIVersion string   `json:"apiVersion"`
	Generation int64    `json:"generation"`
	Members    []Member `json:"members"`
}

// Member is one media pod.
type Member struct {
	// Name is the pod's name.
	Name string `json:"name"`
	// Address is host:port of the pod's signalling port on its pod IP.
	Address string `json:"address"`
	// AdminAddress is host:port of the pod's admin port.
	AdminAddress string `json:"adminAddress"`
	Ready        bool   `json:"ready"`
	Draining     bool   `json:"draining"`
}

// OpenAdminPaths are what kubelet probes and Prometheus scrapes on an
// admin port: they reveal nothing that needs guarding.
var OpenAdminPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// RequireAdminToken answers 401 to every request but OpenAdminPaths unless
// it carries "Authorization: Bearer <token>" (compared in constant time).
// An empty token guards nothing (an admin port on loopback only).
func RequireAdminToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if OpenAdminPaths[r.URL.Path] || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="mediafleet-admin"`)
		http.Error(w, "the admin API needs Authorization: Bearer <ADMIN_TOKEN>", http.StatusUnauthorized)
	})
}

// GatewayReport is a TURN gateway pod's GET /status document (admin
// token): what the operator reads to deliver member lists (which one the
// gateway holds) and to scale the gateway (its allocations).
type GatewayReport struct {
	APIVersion  string `json:"apiVersion"`
	Ready       bool   `json:"ready"`
	Draining    bool   `json:"draining"`
	Allocations int    `json:"allocations"`
	Peers       int    `json:"peers"`
	// PeerAddresses are the media pod addresses relayed to, sorted.
	PeerAddresses        []string `json:"peerAddresses,omitempty"`
	MembershipGeneration int64    `json:"membershipGeneration"`
}
