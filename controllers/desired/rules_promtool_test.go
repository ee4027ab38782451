package desired

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// promtool returns the promtool binary built from source by
// hack/promtool.sh (make test sets PROMTOOL).
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	matches, _ := filepath.Glob("../../bin/promtool-*")
	for _, m := range matches {
		if !strings.HasSuffix(m, ".tmp") {
			return m
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PROMTOOL unset in CI: run the tests through make test")
	}
	t.Skip("no promtool: run hack/promtool.sh (make test does)")
	return ""
}

// writeRules writes the rule groups the operator renders, as Prometheus
// reads them.
func writeRules(t *testing.T, path string, rules ...*monitoringv1.PrometheusRule) {
	t.Helper()
	var groups []monitoringv1.RuleGroup
	for _, r := range rules {
		groups = append(groups, r.Spec.Groups...)
	}
	raw, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", args[0]+" "+args[1], bytes.TrimSpace(out))
}

// TestAlertRulesWithPromtool runs the real `promtool test rules` on the
// rules the operator renders for two MediaServices in one namespace: each
// alert fires on series that should fire it, stays quiet on series that
// should not, and fires for one MediaService without touching the other.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool(t)
	dir := t.TempDir()
	withGateway := &mediav1alpha1.TURNSpec{Enabled: true}
	x := defaulted(func(ms *mediav1alpha1.MediaService) { ms.Namespace, ms.Name, ms.Spec.TURN = "media", "x", withGateway })
	y := defaulted(func(ms *mediav1alpha1.MediaService) { ms.Namespace, ms.Name, ms.Spec.TURN = "media", "y", withGateway })
	writeRules(t, filepath.Join(dir, "rules.yaml"), PrometheusRule(x), PrometheusRule(y))

	// x misbehaves in every way, y is healthy; the series differ only by
	// the mediaservice label.
	sel := func(ms string, extra string) string {
		s := `namespace="media",mediaservice="` + ms + `",pod="` + ms + `-1"`
		if extra != "" {
			s += "," + extra
		}
		return "{" + s + "}"
	}
	series := []struct{ name, values string }{
		{"media_potential_goroutine_leak" + sel("x", ""), "1x20"},
		{"media_potential_goroutine_leak" + sel("y", ""), "0x20"},
		// x: 10 requests a minute, 1 of them 5xx (10%); y: 100 a minute, 1 5xx (1%).
		{"media_http_requests_total" + sel("x", `method="POST",route="POST /whip/{room}",status="201"`), "0+9x20"},
		{"media_http_requests_total" + sel("x", `method="POST",route="POST /whip/{room}",status="500"`), "0+1x20"},
		{"media_http_requests_total" + sel("y", `method="POST",route="POST /whip/{room}",status="201"`), "0+99x20"},
		{"media_http_requests_total" + sel("y", `method="POST",route="POST /whip/{room}",status="500"`), "0+1x20"},
		// x: every request between 0.5 s and 1 s (p99 995 ms); y: all under 5 ms.
		{"media_http_duration_seconds_bucket" + sel("x", `method="POST",route="POST /whip/{room}",le="0.005"`), "0x20"},
		{"media_http_duration_seconds_bucket" + sel("x", `method="POST",route="POST /whip/{room}",le="0.5"`), "0x20"},
		{"media_http_duration_seconds_bucket" + sel("x", `method="POST",route="POST /whip/{room}",le="1"`), "0+10x20"},
		{"media_http_duration_seconds_bucket" + sel("x", `method="POST",route="POST /whip/{room}",le="+Inf"`), "0+10x20"},
		{"media_http_duration_seconds_bucket" + sel("y", `method="POST",route="POST /whip/{room}",le="0.005"`), "0+100x20"},
		{"media_http_duration_seconds_bucket" + sel("y", `method="POST",route="POST /whip/{room}",le="0.5"`), "0+100x20"},
		{"media_http_duration_seconds_bucket" + sel("y", `method="POST",route="POST /whip/{room}",le="1"`), "0+100x20"},
		{"media_http_duration_seconds_bucket" + sel("y", `method="POST",route="POST /whip/{room}",le="+Inf"`), "0+100x20"},
		// Long WebSocket connections never count as latency.
		{"media_http_duration_seconds_bucket" + sel("y", `method="GET",route="GET /ws",le="1"`), "0x20"},
		{"media_http_duration_seconds_bucket" + sel("y", `method="GET",route="GET /ws",le="+Inf"`), "0+50x20"},
		// x: 95 of 100 sessions; y: 10 of 100.
		{"media_active_sessions" + sel("x", `kind="ws"`), "95x20"},
		{"media_session_capacity" + sel("x", ""), "100x20"},
		{"media_active_sessions" + sel("y", `kind="ws"`), "10x20"},
		{"media_session_capacity" + sel("y", ""), "100x20"},
		// x's pod is down, y's is up.
		{"up" + sel("x", `job="media/x"`), "0x20"},
		{"up" + sel("y", `job="media/y"`), "1x20"},
		// x: every loss sample between 5% and 10% (median 7.5%); y: none.
		{"media_packet_loss_ratio_bucket" + sel("x", `le="0.05"`), "0x20"},
		{"media_packet_loss_ratio_bucket" + sel("x", `le="0.1"`), "0+12x20"},
		{"media_packet_loss_ratio_bucket" + sel("x", `le="+Inf"`), "0+12x20"},
		{"media_packet_loss_ratio_bucket" + sel("y", `le="0"`), "0+12x20"},
		{"media_packet_loss_ratio_bucket" + sel("y", `le="0.05"`), "0+12x20"},
		{"media_packet_loss_ratio_bucket" + sel("y", `le="+Inf"`), "0+12x20"},
		// The TURN gateways: x's pod holds 900 of 1000 allocations and its
		// other pod is down; y's holds 100 and is up. Their series carry
		// turn_gateway, not mediaservice: MediaPodDown does not fire for
		// x's gateway pod (it expects x-1 alone).
		{`turn_allocations{namespace="media",turn_gateway="x",pod="x-turn-1"}`, "900x20"},
		{`turn_allocations_limit{namespace="media",turn_gateway="x",pod="x-turn-1"}`, "1000x20"},
		{`turn_allocations{namespace="media",turn_gateway="y",pod="y-turn-1"}`, "100x20"},
		{`turn_allocations_limit{namespace="media",turn_gateway="y",pod="y-turn-1"}`, "1000x20"},
		{`up{namespace="media",turn_gateway="x",pod="x-turn-2",job="media/x-turn"}`, "0x20"},
		{`up{namespace="media",turn_gateway="y",pod="y-turn-2",job="media/y-turn"}`, "1x20"},
	}
	runbook := mediav1alpha1.DefaultRunbookBaseURL + "#runbook-"
	type alert struct {
		name      string
		before    string // an eval time before `for` elapsed: nothing fires
		at        string // after: only x fires
		labels    map[string]string
		desc      string
		summaryOf string
	}
	alerts := []alert{
		{"GoroutineLeak", "4m", "6m", map[string]string{"severity": "warning", "pod": "x-1"},
			"Pod x-1 has more goroutines than its sessions explain (see kubectl describe msvc x for the growth site).", "Goroutine leak suspected in a media pod of media/x"},
		{"HighErrorRate", "2m", "4m", map[string]string{"severity": "critical"},
			"10% of HTTP requests fail with 5xx.", "Media signalling errors in media/x"},
		{"HighLatency", "5m", "7m", map[string]string{"severity": "warning"},
			"p99 of HTTP requests is 995 ms.", "Slow media signalling in media/x"},
		{"SessionCapacityNearlyExhausted", "4m", "6m", map[string]string{"severity": "warning"},
			"Sessions use 95% of the fleet's capacity; new sessions will get 503. Scale out or raise maxSessionsPerPod.", "Media fleet media/x is nearly full"},
		{"MediaPodDown", "1m", "3m", map[string]string{"severity": "critical", "pod": "x-1", "job": "media/x"},
			"Pod x-1 did not answer on its admin port.", "A media pod of media/x cannot be scraped"},
		{"HighPacketLoss", "5m", "7m", map[string]string{"severity": "warning"},
			"Median packet loss is 7.5%.", "Sustained packet loss in media/x"},
		{"TURNAllocationsNearQuota", "4m", "6m", map[string]string{"severity": "warning", "pod": "x-turn-1", "turn_gateway": "x"},
			"Gateway pod x-turn-1 holds 90% of its allocations; new clients that need the relay will be refused (486). Add turn.replicas or raise turn.maxAllocationsPerPod.",
			"The TURN gateway of media/x is nearly full"},
		{"TURNGatewayDown", "1m", "3m", map[string]string{"severity": "critical", "pod": "x-turn-2", "turn_gateway": "x", "job": "media/x-turn"},
			"Gateway pod x-turn-2 did not answer on its admin port; clients that need the relay may not connect.",
			"A TURN gateway pod of media/x cannot be scraped"},
	}
	// promtool's unit-test file format, marshalled rather than printed.
	type expAlert struct {
		Labels      map[string]string `json:"exp_labels"`
		Annotations map[string]string `json:"exp_annotations"`
	}
	type alertTest struct {
		EvalTime  string     `json:"eval_time"`
		AlertName string     `json:"alertname"`
		ExpAlerts []expAlert `json:"exp_alerts"`
	}
	type inputSeries struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	type testGroup struct {
		Interval    string        `json:"interval"`
		InputSeries []inputSeries `json:"input_series"`
		AlertTests  []alertTest   `json:"alert_rule_test"`
	}
	group := testGroup{Interval: "1m"}
	for _, s := range series {
		group.InputSeries = append(group.InputSeries, inputSeries{s.name, s.values})
	}
	for _, a := range alerts {
		labels := map[string]string{"namespace": "media", "mediaservice": "x"}
		for k, v := range a.labels {
			labels[k] = v
		}
		group.AlertTests = append(group.AlertTests,
			alertTest{EvalTime: a.before, AlertName: a.name, ExpAlerts: []expAlert{}},
			alertTest{EvalTime: a.at, AlertName: a.name, ExpAlerts: []expAlert{{Labels: labels, Annotations: map[string]string{
				"summary": a.summaryOf, "description": a.desc, "runbook_url": runbook + strings.ToLower(a.name)}}}})
	}
	raw, err := yaml.Marshal(map[string]any{"rule_files": []string{"rules.yaml"}, "evaluation_interval": "1m", "tests": []testGroup{group}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tests.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", filepath.Join(dir, "rules.yaml"))
	runPromtool(t, "test", "rules", filepath.Join(dir, "tests.yaml"))
}

// TestSampleRulesCheck runs `promtool check rules` on the rules rendered
// for every sample MediaService.
func TestSampleRulesCheck(t *testing.T) {
	promtool(t)
	files, _ := filepath.Glob("../../config/samples/media_*.yaml")
	dir := t.TempDir()
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			ms := &mediav1alpha1.MediaService{}
			if err := yaml.UnmarshalStrict([]byte(doc), ms); err != nil || ms.Kind != "MediaService" {
				continue
			}
			ms.Namespace = "default"
			out := filepath.Join(dir, ms.Name+".rules.yaml")
			writeRules(t, out, PrometheusRule(ms))
			runPromtool(t, "check", "rules", out)
			n++
		}
	}
	if n < 3 {
		t.Fatalf("checked %d sample MediaServices, want the 3 samples", n)
	}
}
