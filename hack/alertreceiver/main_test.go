package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReceiverRecordsAndBounds(t *testing.T) {
	srv := httptest.NewServer(handler(&store{}, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	post := func(body string) int {
		resp, err := http.Post(srv.URL+"/alerts", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(`{"status":"firing","alerts":[{"labels":{"alertname":"GoroutineLeak"}}]}`); c != 200 {
		t.Fatalf("valid notification: %d", c)
	}
	if c := post(`not json`); c != 400 {
		t.Errorf("not JSON: %d", c)
	}
	if c := post(`"` + strings.Repeat("x", maxBody) + `"`); c != 413 {
		t.Errorf("over 1 MiB: %d", c)
	}
	for i := 0; i < maxNotifications+5; i++ {
		post(`{}`)
	}
	resp, err := http.Get(srv.URL + "/notifications")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []notification
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != maxNotifications {
		t.Fatalf("%d notifications kept, want the last %d", len(got), maxNotifications)
	}
}
