// Package desired holds the pure builders of everything the operator
// writes for a MediaService: spec in, object out, no client, no clock. The
// reconciler applies what they return; tests (and anyone else) can call
// them from outside.
package desired
