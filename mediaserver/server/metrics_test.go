package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mediafleet/mediafleet/mediaserver/client"
)

// TestMetricsAfterRealSessions scrapes /metrics after WHIP, WHEP and
// WebSocket sessions carried media, and checks every family the seed
// service had, with sane values and no unbounded label.
func TestMetricsAfterRealSessions(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	opts := clientOpts(t)
	ctx := ctxT(t, 40*time.Second)
	pub, err := client.Publish(ctx, s.PublicURL(), "metrics", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(300, 800)
	var view *client.Session
	waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "metrics", opts); return err })
	defer view.Close()
	p, err := client.Join(ctx, "ws"+s.PublicURL()[4:]+"/ws", "metrics", true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SendRTP(100, 300)
	// Quality histograms are sampled per 5 s window of each feed, and
	// viewers send receiver reports about once a second.
	waitFor(t, 20*time.Second, "quality samples", func() error {
		fams := scrape(t, s)
		for _, name := range []string{"media_video_frame_rate", "media_video_bitrate_bps", "media_packet_loss_ratio", "media_jitter_milliseconds", "media_rtt_milliseconds"} {
			if f := fams[name]; f == nil || f.Metric[0].GetHistogram().GetSampleCount() == 0 {
				return fmt.Errorf("%s has no sample yet", name)
			}
		}
		return nil
	})
	// One failed request for the status label.
	do(t, "POST", s.PublicURL()+"/whip/metrics", "text/plain", "x", nil)

	fams := scrape(t, s)
	sum := func(name string, labels map[string]string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("family %s missing", name)
		}
		var v float64
	metric:
		for _, m := range f.Metric {
			for k, want := range labels {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == k && lp.GetValue() == want {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
		return v
	}
	checks := []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"media_active_sessions", nil, func(v float64) bool { return v == 3 }, "3 (whip, whep, ws)"},
		{"media_active_sessions", map[string]string{"kind": "whep"}, func(v float64) bool { return v == 1 }, "1 whep"},
		{"media_sessions_created_total", nil, func(v float64) bool { return v >= 3 }, ">= 3"},
		{"media_sessions_closed_total", nil, func(v float64) bool { return v >= 0 }, "present"},
		{"media_session_duration_seconds", nil, func(v float64) bool { return v >= 0 }, "present"},
		{"media_ice_connection_state", map[string]string{"state": "connected"}, func(v float64) bool { return v == 3 }, "3 connected"},
		{"media_ice_candidates_added_total", nil, func(v float64) bool { return v >= 0 }, "present"},
		{"media_ice_connection_time_milliseconds", nil, func(v float64) bool { return v >= 3 }, ">= 3 observations"},
		{"media_video_frame_rate", nil, func(v float64) bool { return v >= 1 }, ">= 1 observation"},
		{"media_video_bitrate_bps", nil, func(v float64) bool { return v >= 1 }, ">= 1 observation"},
		{"media_packet_loss_ratio", nil, func(v float64) bool { return v >= 1 }, ">= 1 observation"},
		{"media_rtt_milliseconds", nil, func(v float64) bool { return v >= 1 }, ">= 1 observation (viewers read the sender reports, so their receiver reports carry LSR)"},
		{"media_jitter_milliseconds", nil, func(v float64) bool { return v >= 1 }, ">= 1 observation"},
		{"media_http_requests_total", map[string]string{"route": "POST /whip/{room}", "status": "201"}, func(v float64) bool { return v == 1 }, "1 created"},
		{"media_http_requests_total", map[string]string{"route": "POST /whip/{room}", "status": "415"}, func(v float64) bool { return v == 1 }, "1 refused"},
		{"media_http_duration_seconds", map[string]string{"route": "POST /whep/{room}"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"media_http_requests_in_flight", nil, func(v float64) bool { return v == 2 }, "2: the open WebSocket and this scrape"},
		{"media_websocket_connections", nil, func(v float64) bool { return v == 1 }, "1"},
		{"media_websocket_messages_total", map[string]string{"direction": "in", "type": "join"}, func(v float64) bool { return v == 1 }, "1 join"},
		{"media_websocket_message_size_bytes", nil, func(v float64) bool { return v >= 2 }, ">= 2"},
		{"media_memory_usage_bytes", nil, func(v float64) bool { return v > 1<<20 }, "> 1 MiB"},
		{"media_goroutine_count", nil, func(v float64) bool { return v > 10 }, "> 10"},
		{"media_goroutine_count_max", nil, func(v float64) bool { return v > 10 }, "> 10"},
		{"media_potential_goroutine_leak", nil, func(v float64) bool { return v == 0 }, "0"},
		{"media_forwarded_packets_total", nil, func(v float64) bool { return v >= 0 }, "present"},
		{"go_goroutines", nil, func(v float64) bool { return v > 0 }, "Go collector"},
		{"process_resident_memory_bytes", nil, func(v float64) bool { return v > 0 }, "process collector"},
	}
	for _, c := range checks {
		if v := sum(c.name, c.labels); !c.ok(v) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
		}
	}
	// No label carries a session id, room name or address.
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				v := lp.GetValue()
				if v == "metrics" || len(v) == 32 || (len(v) > 6 && v[:4] == "127.") {
					t.Errorf("%s has an unbounded label %s=%q", name, lp.GetName(), v)
				}
			}
		}
	}
}

func scrape(t *testing.T, s *Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(s.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// TestMembershipEndpoint: the admin port takes the operator's member list,
// refuses a stale or malformed one, and reports the generation in /status.
func TestMembershipEndpoint(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	put := func(body string) int {
		code, _, _ := do(t, "PUT", s.AdminURL()+"/membership", "application/json", body, nil)
		return code
	}
	list := func(gen int) string {
		return fmt.Sprintf(`{"apiVersion":"status.mediafleet.io/v1","generation":%d,"members":[{"name":"a","address":"198.18.0.1:8080","ready":true},{"name":"b","address":"198.18.0.2:8080","ready":true}]}`, gen)
	}
	if code := put(list(100)); code != http.StatusNoContent {
		t.Fatalf("first list: %d", code)
	}
	if code := put(list(99)); code != http.StatusConflict {
		t.Errorf("stale list: %d, want 409", code)
	}
	if code := put(`{"apiVersion":"status.mediafleet.io/v1","generation":101,"members":[{"name":"a"}]}`); code != http.StatusBadRequest {
		t.Errorf("member without address: %d, want 400", code)
	}
	if code := put(`not json`); code != http.StatusBadRequest {
		t.Errorf("garbage: %d, want 400", code)
	}
	if st := getStatus(t, s); st.MembershipGeneration != 100 || st.MembershipSize != 2 {
		t.Errorf("status membership %d/%d, want 100/2", st.MembershipGeneration, st.MembershipSize)
	}
}

// TestEveryFamilyOnAFreshPod (item 13): dashboards and absent() alerts
// need every media_ family on the first scrape of a pod that has served
// nothing yet.
func TestEveryFamilyOnAFreshPod(t *testing.T) {
	s := testServer(t, nil)
	_, _, body := do(t, "GET", s.AdminURL()+"/metrics", "", "", nil)
	var missing []string
	for _, fam := range []string{
		"media_active_sessions", "media_session_capacity", "media_sessions_created_total", "media_sessions_closed_total",
		"media_session_duration_seconds", "media_ice_connection_state", "media_ice_candidates_added_total",
		"media_ice_connection_time_milliseconds", "media_video_frame_rate", "media_video_bitrate_bps", "media_packet_loss_ratio",
		"media_rtt_milliseconds", "media_jitter_milliseconds", "media_forwarded_packets_total", "media_forwarded_bytes_total",
		"media_http_requests_total", "media_http_duration_seconds", "media_http_requests_in_flight",
		"media_websocket_connections", "media_websocket_messages_total", "media_websocket_message_size_bytes",
		"media_memory_usage_bytes", "media_goroutine_count", "media_goroutine_count_max", "media_potential_goroutine_leak",
		"media_goroutine_baseline", "media_draining", "media_open_connections", "media_connections_refused_total",
	} {
		if !strings.Contains(body, "\n"+fam+"{") && !strings.Contains(body, "\n"+fam+" ") && !strings.Contains(body, "\n"+fam+"_bucket{") {
			missing = append(missing, fam)
		}
	}
	if len(missing) > 0 {
		t.Errorf("families missing on a fresh pod's first scrape: %v", missing)
	}
}
