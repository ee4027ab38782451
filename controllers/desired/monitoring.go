package desired

import (
	"fmt"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// LabelMediaServiceSeries is the label every scraped series carries with the
// MediaService's name (set by the PodMonitor's relabeling), so that alerts
// and dashboards can tell fleets apart.
const LabelMediaServiceSeries = "mediaservice"

func PodMonitorName(ms *mediav1alpha1.MediaService) string         { return ms.Name }
func PrometheusRuleName(ms *mediav1alpha1.MediaService) string     { return ms.Name }
func DashboardConfigMapName(ms *mediav1alpha1.MediaService) string { return ms.Name + "-dashboard" }

func Enabled(b *bool) bool { return b == nil || *b }

func ownerRefTyped(ms *mediav1alpha1.MediaService) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: mediav1alpha1.GroupVersion.String(), Kind: "MediaService", Name: ms.Name,
		UID: ms.UID, Controller: &t, BlockOwnerDeletion: &t}
}

func withLabels(base, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range extra {
		out[k] = v
	}
	for k, v := range base { // ours win
		out[k] = v
	}
	return out
}

// PodMonitor scrapes /metrics on every media pod's admin port and
// puts the MediaService's name on every series as "mediaservice".
func PodMonitor(ms *mediav1alpha1.MediaService) *monitoringv1.PodMonitor {
	pm := ms.Spec.Monitoring.PodMonitor
	interval := pm.Interval
	if interval == "" {
		interval = "30s"
	}
	port := PortNameAdmin
	return &monitoringv1.PodMonitor{
		TypeMeta: metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.PodMonitorsKind},
		ObjectMeta: metav1.ObjectMeta{Name: PodMonitorName(ms), Namespace: ms.Namespace,
			Labels: withLabels(CommonLabels(ms), pm.Labels), OwnerReferences: []metav1.OwnerReference{ownerRefTyped(ms)}},
		Spec: monitoringv1.PodMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: SelectorLabels(ms)},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{
				Port:     &port,
				Path:     "/metrics",
				Interval: monitoringv1.Duration(interval),
				RelabelConfigs: []monitoringv1.RelabelConfig{{
					SourceLabels: []monitoringv1.LabelName{monitoringv1.LabelName("__meta_kubernetes_pod_label_" + sanitizeLabel(LabelMediaService))},
					TargetLabel:  LabelMediaServiceSeries,
					Action:       "replace",
				}},
			}},
		},
	}
}

// LabelTURNGatewaySeries carries the MediaService's name on its TURN
// gateway's series (not "mediaservice": the media pods' alerts, such as
// MediaPodDown, must not fire for a gateway pod).
const LabelTURNGatewaySeries = "turn_gateway"

func TURNPodMonitorName(ms *mediav1alpha1.MediaService) string { return TURNName(ms) }

// TURNPodMonitor scrapes the gateway pods' /metrics.
func TURNPodMonitor(ms *mediav1alpha1.MediaService) *monitoringv1.PodMonitor {
	pm := PodMonitor(ms)
	pm.Name = TURNPodMonitorName(ms)
	pm.Labels = withLabels(TURNLabels(ms), ms.Spec.Monitoring.PodMonitor.Labels)
	pm.Spec.Selector = metav1.LabelSelector{MatchLabels: TURNSelectorLabels(ms)}
	pm.Spec.PodMetricsEndpoints[0].RelabelConfigs = []monitoringv1.RelabelConfig{{
		SourceLabels: []monitoringv1.LabelName{monitoringv1.LabelName("__meta_kubernetes_pod_label_" + sanitizeLabel(LabelTURNGateway))},
		TargetLabel:  LabelTURNGatewaySeries,
		Action:       "replace",
	}}
	return pm
}

// sanitizeLabel is how Prometheus turns a Kubernetes label name into a meta
// label suffix.
func sanitizeLabel(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// alertDefaults fill what the API server's defaulting would, so that the
// builder is total for objects built in code.
var alertDefaults = map[string]mediav1alpha1.AlertSpec{
	"GoroutineLeak":                  {For: "5m", Severity: "warning"},
	"HighErrorRate":                  {For: "2m", Severity: "critical", Threshold: 5},
	"HighLatency":                    {For: "5m", Severity: "warning", Threshold: 500},
	"SessionCapacityNearlyExhausted": {For: "5m", Severity: "warning", Threshold: 90},
	"MediaPodDown":                   {For: "2m", Severity: "critical"},
	"HighPacketLoss":                 {For: "5m", Severity: "warning", Threshold: 5},
	"TURNAllocationsNearQuota":       {For: "5m", Severity: "warning", Threshold: 80},
	"TURNGatewayDown":                {For: "2m", Severity: "critical"},
}

func alertSpec(name string, a mediav1alpha1.AlertSpec) mediav1alpha1.AlertSpec {
	d := alertDefaults[name]
	if a.For == "" {
		a.For = d.For
	}
	if a.Severity == "" {
		a.Severity = d.Severity
	}
	if a.Threshold == 0 {
		a.Threshold = d.Threshold
	}
	return a
}

// PrometheusRule renders the fleet's alerts, each scoped to this
// MediaService by namespace and name.
func PrometheusRule(ms *mediav1alpha1.MediaService) *monitoringv1.PrometheusRule {
	rs := ms.Spec.Monitoring.Rules
	sel := fmt.Sprintf(`namespace=%q,%s=%q`, ms.Namespace, LabelMediaServiceSeries, ms.Name)
	by := "namespace, " + LabelMediaServiceSeries
	runbook := rs.RunbookBaseURL
	if runbook == "" {
		runbook = mediav1alpha1.DefaultRunbookBaseURL
	}
	type def struct {
		name, expr, summary, description string
		spec                             mediav1alpha1.AlertSpec
	}
	fleet := ms.Namespace + "/" + ms.Name
	defs := []def{
		{"GoroutineLeak", fmt.Sprintf(`max by (%s, pod) (media_potential_goroutine_leak{%s}) == 1`, by, sel),
			"Goroutine leak suspected in a media pod of " + fleet,
			"Pod {{ $labels.pod }} has more goroutines than its sessions explain (see kubectl describe msvc " + ms.Name + " for the growth site).",
			rs.GoroutineLeak},
		{"HighErrorRate", fmt.Sprintf(`(sum by (%[1]s) (rate(media_http_requests_total{%[2]s,status=~"5.."}[5m])) / sum by (%[1]s) (rate(media_http_requests_total{%[2]s}[5m]))) * 100 > THRESHOLD`, by, sel),
			"Media signalling errors in " + fleet,
			"{{ $value | humanize }}% of HTTP requests fail with 5xx.",
			rs.HighErrorRate},
		{"HighLatency", fmt.Sprintf(`histogram_quantile(0.99, sum by (%s, le) (rate(media_http_duration_seconds_bucket{%s,route!="GET /ws"}[5m]))) * 1000 > THRESHOLD`, by, sel),
			"Slow media signalling in " + fleet,
			"p99 of HTTP requests is {{ $value | humanize }} ms.",
			rs.HighLatency},
		{"SessionCapacityNearlyExhausted", fmt.Sprintf(`(sum by (%[1]s) (media_active_sessions{%[2]s}) / sum by (%[1]s) (media_session_capacity{%[2]s})) * 100 > THRESHOLD`, by, sel),
			"Media fleet " + fleet + " is nearly full",
			"Sessions use {{ $value | humanize }}% of the fleet's capacity; new sessions will get 503. Scale out or raise maxSessionsPerPod.",
			rs.SessionCapacity},
		{"MediaPodDown", fmt.Sprintf(`up{%s} == 0`, sel),
			"A media pod of " + fleet + " cannot be scraped",
			"Pod {{ $labels.pod }} did not answer on its admin port.",
			rs.PodDown},
		{"HighPacketLoss", fmt.Sprintf(`histogram_quantile(0.5, sum by (%s, le) (rate(media_packet_loss_ratio_bucket{%s}[5m]))) * 100 > THRESHOLD`, by, sel),
			"Sustained packet loss in " + fleet,
			"Median packet loss is {{ $value | humanize }}%.",
			rs.PacketLoss},
	}
	if TURNEnabled(ms) {
		tsel := fmt.Sprintf(`namespace=%q,%s=%q`, ms.Namespace, LabelTURNGatewaySeries, ms.Name)
		defs = append(defs,
			def{"TURNAllocationsNearQuota", fmt.Sprintf(`max by (namespace, %s, pod) (turn_allocations{%s} / turn_allocations_limit{%s}) * 100 > THRESHOLD`, LabelTURNGatewaySeries, tsel, tsel),
				"The TURN gateway of " + fleet + " is nearly full",
				"Gateway pod {{ $labels.pod }} holds {{ $value | humanize }}% of its allocations; new clients that need the relay will be refused (486). Add turn.replicas or raise turn.maxAllocationsPerPod.",
				rs.TURNAllocations},
			def{"TURNGatewayDown", fmt.Sprintf(`up{%s} == 0`, tsel),
				"A TURN gateway pod of " + fleet + " cannot be scraped",
				"Gateway pod {{ $labels.pod }} did not answer on its admin port; clients that need the relay may not connect.",
				rs.TURNGatewayDown})
	}
	var rules []monitoringv1.Rule
	for _, d := range defs {
		spec := alertSpec(d.name, d.spec)
		if spec.Disabled {
			continue
		}
		f := monitoringv1.Duration(spec.For)
		rules = append(rules, monitoringv1.Rule{
			Alert: d.name,
			Expr:  intstr.FromString(strings.ReplaceAll(d.expr, "THRESHOLD", fmt.Sprint(spec.Threshold))),
			For:   &f,
			Labels: map[string]string{"severity": spec.Severity, "namespace": ms.Namespace,
				LabelMediaServiceSeries: ms.Name},
			Annotations: map[string]string{
				"summary":     d.summary,
				"description": d.description,
				"runbook_url": runbook + "#runbook-" + strings.ToLower(d.name),
			},
		})
	}
	return &monitoringv1.PrometheusRule{
		TypeMeta: metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.PrometheusRuleKind},
		ObjectMeta: metav1.ObjectMeta{Name: PrometheusRuleName(ms), Namespace: ms.Namespace,
			Labels: withLabels(CommonLabels(ms), rs.Labels), OwnerReferences: []metav1.OwnerReference{ownerRefTyped(ms)}},
		Spec: monitoringv1.PrometheusRuleSpec{Groups: []monitoringv1.RuleGroup{{
			Name:  "mediafleet." + ms.Namespace + "." + ms.Name,
			Rules: rules,
		}}},
	}
}
