package desired

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

func TestDesiredPodMonitor(t *testing.T) {
	ms := defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.Monitoring.PodMonitor = mediav1alpha1.PodMonitorSpec{Interval: "15s", Labels: map[string]string{"release": "prom", labelInstance: "nope"}}
	})
	pm := PodMonitor(ms)
	ep := pm.Spec.PodMetricsEndpoints[0]
	if *ep.Port != "admin" || ep.Path != "/metrics" || ep.Interval != "15s" {
		t.Errorf("endpoint %+v", ep)
	}
	rl := ep.RelabelConfigs[0]
	if string(rl.SourceLabels[0]) != "__meta_kubernetes_pod_label_media_mediafleet_io_service" || rl.TargetLabel != "mediaservice" {
		t.Errorf("relabeling %+v", rl)
	}
	if pm.Labels["release"] != "prom" || pm.Labels[labelInstance] != "demo" || pm.Spec.Selector.MatchLabels[labelInstance] != "demo" {
		t.Errorf("labels %v selector %v", pm.Labels, pm.Spec.Selector)
	}
	if len(pm.OwnerReferences) != 1 || !*pm.OwnerReferences[0].Controller {
		t.Errorf("owner %+v", pm.OwnerReferences)
	}
}

func TestDesiredPrometheusRule(t *testing.T) {
	cases := []struct {
		name  string
		mut   func(*mediav1alpha1.MediaService)
		check func(t *testing.T, alerts map[string]string, severities map[string]string)
	}{
		{"defaults: six alerts scoped to the MediaService", nil, func(t *testing.T, alerts, sev map[string]string) {
			if len(alerts) != 6 {
				t.Fatalf("%d alerts", len(alerts))
			}
			for name, expr := range alerts {
				if !strings.Contains(expr, `namespace="media",mediaservice="demo"`) {
					t.Errorf("%s not scoped: %s", name, expr)
				}
			}
			if !strings.Contains(alerts["HighErrorRate"], "* 100 > 5") || sev["HighErrorRate"] != "critical" {
				t.Errorf("HighErrorRate %s %s", alerts["HighErrorRate"], sev["HighErrorRate"])
			}
			if !strings.Contains(alerts["HighLatency"], `route!="GET /ws"`) || !strings.Contains(alerts["HighLatency"], "* 1000 > 500") {
				t.Errorf("HighLatency %s", alerts["HighLatency"])
			}
			if alerts["GoroutineLeak"] != `max by (namespace, mediaservice, pod) (media_potential_goroutine_leak{namespace="media",mediaservice="demo"}) == 1` {
				t.Errorf("GoroutineLeak %s", alerts["GoroutineLeak"])
			}
		}},
		{"thresholds, severities and disabling", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.Monitoring.Rules.HighLatency = mediav1alpha1.AlertSpec{Threshold: 250, Severity: "critical", For: "10m"}
			ms.Spec.Monitoring.Rules.PodDown.Disabled = true
		}, func(t *testing.T, alerts, sev map[string]string) {
			if _, ok := alerts["MediaPodDown"]; ok || len(alerts) != 5 {
				t.Errorf("disabled alert rendered: %v", alerts)
			}
			if !strings.Contains(alerts["HighLatency"], "> 250") || sev["HighLatency"] != "critical" {
				t.Errorf("HighLatency %s %s", alerts["HighLatency"], sev["HighLatency"])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms := defaulted(tc.mut)
			pr := PrometheusRule(ms)
			alerts, sev := map[string]string{}, map[string]string{}
			for _, r := range pr.Spec.Groups[0].Rules {
				alerts[r.Alert] = r.Expr.String()
				sev[r.Alert] = r.Labels["severity"]
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" ||
					!strings.HasSuffix(r.Annotations["runbook_url"], "#runbook-"+strings.ToLower(r.Alert)) || r.For == nil {
					t.Errorf("%s: annotations %v for %v", r.Alert, r.Annotations, r.For)
				}
			}
			tc.check(t, alerts, sev)
		})
	}
}

func TestDashboard(t *testing.T) {
	ms := defaulted(nil)
	cm, err := Dashboard(ms)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v", cm.Labels)
	}
	var d gDashboard
	if err := json.Unmarshal([]byte(cm.Data["mediafleet-media-demo.json"]), &d); err != nil {
		t.Fatal(err)
	}
	want := []string{"Active sessions", "Request rate", "Latency p50 / p90 / p99", "Error rate (5xx share)", "Goroutines", "Memory", "WebSocket connections", "ICE", "Quality", "Forwarded media", "Retransmissions and layers"}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		titles[p.Title] = true
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `mediaservice="demo"`) {
				t.Errorf("panel %s query not scoped: %s", p.Title, tg.Expr)
			}
		}
	}
	for _, w := range want {
		if !titles[w] {
			t.Errorf("panel %q missing", w)
		}
	}
}

// TestRunbookAnchorsExist: every alert's runbook_url (with the default
// base) names a section of docs/runbooks.md, and the CRD's default is the
// one the code falls back to.
func TestRunbookAnchorsExist(t *testing.T) {
	raw, err := os.ReadFile("../../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, l := range strings.Split(string(raw), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			// GitHub's anchor: lower case, spaces to '-', punctuation dropped.
			a := strings.Map(func(r rune) rune {
				switch {
				case r == ' ':
					return '-'
				case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
					return unicode.ToLower(r)
				}
				return -1
			}, h)
			anchors[a] = true
		}
	}
	ms := defaulted(nil)
	ms.Spec.Monitoring.Rules.RunbookBaseURL = ""
	rule := PrometheusRule(ms)
	n := 0
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			url := r.Annotations["runbook_url"]
			base, anchor, ok := strings.Cut(url, "#")
			if !ok || base != mediav1alpha1.DefaultRunbookBaseURL || !anchors[anchor] {
				t.Errorf("alert %s: runbook_url %q has no section in docs/runbooks.md (sections: %v)", r.Alert, url, anchors)
			}
			n++
		}
	}
	if n < 6 {
		t.Fatalf("%d alerts checked", n)
	}
	crd, err := os.ReadFile("../../config/crd/bases/media.mediafleet.io_mediaservices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(crd), "default: "+mediav1alpha1.DefaultRunbookBaseURL) {
		t.Error("the CRD's runbookBaseURL default differs from DefaultRunbookBaseURL")
	}
}
