//go:build tools

// Package promtool pins the promtool command this module builds.
package promtool

import _ "github.com/prometheus/prometheus/cmd/promtool"
