//go:build !faultinject

package server

import "net/http"

// faultRoutes adds nothing: fault injection exists only in builds with the
// faultinject tag (tests and the end-to-end image), never in releases.
func faultRoutes(*http.ServeMux) {}
