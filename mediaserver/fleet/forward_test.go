package fleet

import (
	"net/http/httptest"
	"testing"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// TestForwardedNeedsThePodToken: the forwarding header alone (what any
// client can send) does not count; beside the wrong token neither; a nil
// Forwarder (no forwarding) never sees a forwarded request.
func TestForwardedNeedsThePodToken(t *testing.T) {
	f := &Forwarder{Self: "pod-a", Token: "secret-token"}
	cases := []struct {
		name      string
		by, token string
		forwarded bool
	}{
		{"plain client", "", "", false},
		{"header alone", "pod-b", "", false},
		{"wrong token", "pod-b", "guess", false},
		{"token without header", "", "secret-token", false},
		{"another pod", "pod-b", "secret-token", true},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("POST", "/whip/room", nil)
		if tc.by != "" {
			r.Header.Set(statusapi.ForwardedByHeader, tc.by)
		}
		if tc.token != "" {
			r.Header.Set(statusapi.PodTokenHeader, tc.token)
		}
		if got := f.Forwarded(r); got != tc.forwarded {
			t.Errorf("%s: forwarded %v", tc.name, got)
		}
		if (*Forwarder)(nil).Forwarded(r) {
			t.Errorf("%s: a nil forwarder saw a forwarded request", tc.name)
		}
	}
	r := httptest.NewRequest("POST", "/whip/room", nil)
	r.Header.Set(statusapi.ForwardedByHeader, "pod-b")
	if (&Forwarder{Self: "pod-a"}).Forwarded(r) {
		t.Error("a forwarder without a token took a request as forwarded")
	}
}
