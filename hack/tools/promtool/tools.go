//go:build tools

// Package promtool pins the Prometheus commands this module builds:
// promtool for the alert-rule tests, prometheus for the local cluster's
// monitoring stack.
package promtool

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
