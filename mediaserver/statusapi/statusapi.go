// Package statusapi is the second contract between the operator and the
// mediaserver: the JSON report served at GET /status on the admin port. It
// has no dependencies so that both halves can import it.
//
// The report is versioned by APIVersion. A reader must ignore unknown fields
// and refuse an APIVersion it does not know; a writer adds fields within a
// version only when old readers can ignore them.
package statusapi

import "time"

// APIVersion is the version of the report this package describes.
const APIVersion = "status.mediafleet.io/v1"

// Path is where the admin server serves the report.
const Path = "/status"

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
