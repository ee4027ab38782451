package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	var gotAuth string
	held := int64(5)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if gotAuth != "Bearer tok" {
			http.Error(w, "the admin API needs Authorization: Bearer <ADMIN_TOKEN>", http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == Path:
			_ = json.NewEncoder(w).Encode(Report{APIVersion: APIVersion, PodName: "p", MembershipGeneration: held})
		case r.Method == http.MethodPut && r.URL.Path == MembershipPath:
			var m Membership
			if err := json.NewDecoder(r.Body).Decode(&m); err != nil || r.Header.Get("Content-Type") != "application/json" {
				http.Error(w, "bad", http.StatusBadRequest)
				return
			}
			if m.Generation < held {
				http.Error(w, "stale", http.StatusConflict)
				return
			}
			held = m.Generation
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := Client{Token: "tok"}
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, a := range []string{addr, srv.URL, srv.URL + "/"} {
		r, err := c.Report(ctx, a)
		if err != nil || r.PodName != "p" || r.MembershipGeneration != 5 {
			t.Fatalf("Report(%q) = %+v, %v", a, r, err)
		}
	}
	var se *StatusError
	if _, err := (&Client{}).Report(ctx, addr); !errors.As(err, &se) || se.Code != http.StatusUnauthorized || !strings.Contains(se.Body, "ADMIN_TOKEN") {
		t.Errorf("without the token: %v", err)
	}
	if err := c.PutMembership(ctx, addr, Membership{APIVersion: APIVersion, Generation: 4}); !errors.Is(err, ErrHoldsNewer) {
		t.Errorf("stale list: %v, want ErrHoldsNewer", err)
	}
	if err := c.PutMembership(ctx, addr, Membership{APIVersion: APIVersion, Generation: 9}); err != nil || held != 9 {
		t.Errorf("newer list: %v (held %d)", err, held)
	}
}

func TestClientRefusesAnUnknownVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"apiVersion":"status.mediafleet.io/v9"}`))
	}))
	defer srv.Close()
	if _, err := (&Client{}).Report(context.Background(), srv.URL); err == nil || !strings.Contains(err.Error(), "unknown apiVersion") {
		t.Errorf("unknown version: %v", err)
	}
}
