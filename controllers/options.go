package controllers

import (
	"time"

	"github.com/mediafleet/mediafleet/controllers/desired"
)

// Options are the operator-wide settings the builders need. They come from
// manager flags; builders never read the environment.
type Options struct {
	// MediaserverImage is used when a MediaService leaves spec.image empty.
	MediaserverImage string
	// DeletionCostInterval is the least time between two writes of one
	// pod's deletion cost (default 15s).
	DeletionCostInterval time.Duration
	// MonitoringRecheck is how often missing Prometheus Operator CRDs are
	// looked for again (default 30s).
	MonitoringRecheck time.Duration
	// MaxConcurrentReconciles is how many MediaServices reconcile at once
	// (default 4).
	MaxConcurrentReconciles int
	// OperatorNamespace is where the operator runs: its pods may reach the
	// media pods' admin port through the generated NetworkPolicy.
	OperatorNamespace string
}

// builders returns what the pure builders need of the options.
func (o Options) builders() desired.Options {
	return desired.Options{MediaserverImage: o.MediaserverImage, OperatorNamespace: o.OperatorNamespace}
}
