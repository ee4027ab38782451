package desired

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// Grafana dashboard model: only what the panels need.
type gDashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	Tags          []string    `json:"tags"`
	Timezone      string      `json:"timezone"`
	SchemaVersion int         `json:"schemaVersion"`
	Refresh       string      `json:"refresh"`
	Time          gTime       `json:"time"`
	Templating    gTemplating `json:"templating"`
	Panels        []gPanel    `json:"panels"`
}

type gTime struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type gTemplating struct {
	List []gVariable `json:"list"`
}

type gVariable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query string `json:"query"`
	Label string `json:"label"`
}

type gPanel struct {
	ID          int          `json:"id"`
	Title       string       `json:"title"`
	Type        string       `json:"type"`
	Datasource  gDatasource  `json:"datasource"`
	GridPos     gGrid        `json:"gridPos"`
	Targets     []gTarget    `json:"targets"`
	FieldConfig gFieldConfig `json:"fieldConfig"`
}

type gDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gGrid struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type gTarget struct {
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	RefID        string      `json:"refId"`
	Datasource   gDatasource `json:"datasource"`
}

type gFieldConfig struct {
	Defaults struct {
		Unit string `json:"unit"`
	} `json:"defaults"`
}

// dashboardJSON renders the fleet's Grafana dashboard: the panels the seed
// service asked for plus ICE and quality.
func dashboardJSON(ms *mediav1alpha1.MediaService) (string, error) {
	sel := fmt.Sprintf(`namespace=%q,%s=%q`, ms.Namespace, LabelMediaServiceSeries, ms.Name)
	ds := gDatasource{Type: "prometheus", UID: "${datasource}"}
	type q struct{ expr, legend string }
	type panel struct {
		title, unit string
		queries     []q
	}
	panels := []panel{
		{"Active sessions", "short", []q{{fmt.Sprintf(`sum by (kind) (media_active_sessions{%s})`, sel), "{{kind}}"},
			{fmt.Sprintf(`sum(media_session_capacity{%s})`, sel), "capacity"}}},
		{"Request rate", "reqps", []q{{fmt.Sprintf(`sum by (route) (rate(media_http_requests_total{%s}[5m]))`, sel), "{{route}}"}}},
		{"Latency p50 / p90 / p99", "s", []q{
			{fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(media_http_duration_seconds_bucket{%s,route!="GET /ws"}[5m])))`, sel), "p50"},
			{fmt.Sprintf(`histogram_quantile(0.9, sum by (le) (rate(media_http_duration_seconds_bucket{%s,route!="GET /ws"}[5m])))`, sel), "p90"},
			{fmt.Sprintf(`histogram_quantile(0.99, sum by (le) (rate(media_http_duration_seconds_bucket{%s,route!="GET /ws"}[5m])))`, sel), "p99"}}},
		{"Error rate (5xx share)", "percentunit", []q{{fmt.Sprintf(`(sum(rate(media_http_requests_total{%[1]s,status=~"5.."}[5m])) or vector(0)) / sum(rate(media_http_requests_total{%[1]s}[5m]))`, sel), "5xx"}}},
		{"Goroutines", "short", []q{{fmt.Sprintf(`media_goroutine_count{%s}`, sel), "{{pod}}"},
			{fmt.Sprintf(`media_goroutine_baseline{%s}`, sel), "{{pod}} baseline"},
			{fmt.Sprintf(`media_potential_goroutine_leak{%s}`, sel), "{{pod}} leak suspected"}}},
		{"Memory", "bytes", []q{{fmt.Sprintf(`media_memory_usage_bytes{%s}`, sel), "{{pod}} heap"}}},
		{"WebSocket connections", "short", []q{{fmt.Sprintf(`sum(media_websocket_connections{%s})`, sel), "connections"},
			{fmt.Sprintf(`sum by (direction) (rate(media_websocket_messages_total{%s}[5m]))`, sel), "messages {{direction}}/s"}}},
		{"ICE", "short", []q{{fmt.Sprintf(`sum by (state) (media_ice_connection_state{%s})`, sel), "{{state}}"},
			{fmt.Sprintf(`histogram_quantile(0.9, sum by (le) (rate(media_ice_connection_time_milliseconds_bucket{%s}[5m])))`, sel), "p90 time to connect (ms)"}}},
		{"Quality", "short", []q{
			{fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(media_video_frame_rate_bucket{%s}[5m])))`, sel), "median frame rate"},
			{fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(media_packet_loss_ratio_bucket{%s}[5m]))) * 100`, sel), "median loss %"},
			{fmt.Sprintf(`histogram_quantile(0.9, sum by (le) (rate(media_rtt_milliseconds_bucket{%s}[5m])))`, sel), "p90 RTT ms"},
			{fmt.Sprintf(`histogram_quantile(0.9, sum by (le) (rate(media_jitter_milliseconds_bucket{%s}[5m])))`, sel), "p90 jitter ms"}}},
		{"Forwarded media", "Bps", []q{{fmt.Sprintf(`sum(rate(media_forwarded_bytes_total{%s}[5m]))`, sel), "bytes/s"}}},
		{"Retransmissions and layers", "short", []q{
			{fmt.Sprintf(`sum by (result) (rate(media_nack_packets_total{%s}[5m]))`, sel), "NACKed packets {{result}}/s"},
			{fmt.Sprintf(`sum(rate(media_nack_requested_packets_total{%s}[5m]))`, sel), "packets asked of publishers/s"},
			{fmt.Sprintf(`sum(rate(media_keyframe_requests_total{%s}[5m]))`, sel), "keyframe requests/s"},
			{fmt.Sprintf(`sum(rate(media_layer_switches_total{%s}[5m]))`, sel), "simulcast layer switches/s"},
			{fmt.Sprintf(`sum by (layer) (rate(media_layer_seconds_total{%s}[5m]))`, sel), "viewers on layer {{layer}}"}}},
		{"Cascaded rooms (relay links)", "short", []q{
			{fmt.Sprintf(`sum by (role) (media_relay_links{%s})`, sel), "links ({{role}} end)"},
			{fmt.Sprintf(`sum(rate(media_relay_link_packets_total{%s}[5m]))`, sel), "packets over links/s"},
			// 0 while no relay pod measures (a fleet without cascaded rooms).
			{fmt.Sprintf(`(histogram_quantile(0.99, sum by (le) (rate(media_relay_link_delay_seconds_bucket{%[1]s}[5m]))) * 1000 and on() sum(rate(media_relay_link_delay_seconds_count{%[1]s}[5m])) > 0) or on() vector(0)`, sel), "p99 link delay (ms)"}}},
	}
	if TURNEnabled(ms) {
		tsel := fmt.Sprintf(`namespace=%q,%s=%q`, ms.Namespace, LabelTURNGatewaySeries, ms.Name)
		panels = append(panels,
			panel{"TURN gateway: allocations and refusals", "short", []q{
				{fmt.Sprintf(`turn_allocations{%s}`, tsel), "{{pod}} allocations"},
				{fmt.Sprintf(`turn_allocations_limit{%s}`, tsel), "{{pod}} limit"},
				{fmt.Sprintf(`sum by (reason) (rate(turn_refused_permissions_total{%s}[5m]))`, tsel), "refused {{reason}}/s"},
				{fmt.Sprintf(`sum by (reason) (rate(turn_auth_failures_total{%s}[5m]))`, tsel), "auth failures {{reason}}/s"},
				{fmt.Sprintf(`sum by (reason) (rate(turn_quota_refused_total{%s}[5m]))`, tsel), "quota refusals {{reason}}/s"}}},
			panel{"TURN gateway: relayed traffic", "Bps", []q{
				{fmt.Sprintf(`sum by (direction) (rate(turn_relayed_bytes_total{%s}[5m]))`, tsel), "{{direction}}"},
				{fmt.Sprintf(`sum by (direction) (rate(turn_over_budget_packets_total{%s}[5m]))`, tsel), "over budget {{direction}} (pkts/s)"}}})
	}
	d := gDashboard{
		UID:   "mediafleet-" + shortHash(ms.Namespace+"/"+ms.Name),
		Title: "mediafleet / " + ms.Namespace + " / " + ms.Name, Tags: []string{"mediafleet", "webrtc"},
		Timezone: "browser", SchemaVersion: 39, Refresh: "30s", Time: gTime{From: "now-1h", To: "now"},
		Templating: gTemplating{List: []gVariable{{Name: "datasource", Type: "datasource", Query: "prometheus", Label: "Data source"}}},
	}
	for i, p := range panels {
		gp := gPanel{ID: i + 1, Title: p.title, Type: "timeseries", Datasource: ds,
			GridPos: gGrid{H: 8, W: 12, X: (i % 2) * 12, Y: (i / 2) * 8}}
		gp.FieldConfig.Defaults.Unit = p.unit
		for j, qq := range p.queries {
			gp.Targets = append(gp.Targets, gTarget{Expr: qq.expr, LegendFormat: qq.legend, RefID: string(rune('A' + j)), Datasource: ds})
		}
		d.Panels = append(d.Panels, gp)
	}
	raw, err := json.MarshalIndent(d, "", "  ")
	return string(raw), err
}

func shortHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// Dashboard is the dashboard ConfigMap for the Grafana sidecar.
func Dashboard(ms *mediav1alpha1.MediaService) (*corev1ac.ConfigMapApplyConfiguration, error) {
	raw, err := dashboardJSON(ms)
	if err != nil {
		return nil, err
	}
	labels := ms.Spec.Monitoring.Dashboard.Labels
	if labels == nil {
		labels = map[string]string{"grafana_dashboard": "1"}
	}
	return corev1ac.ConfigMap(DashboardConfigMapName(ms), ms.Namespace).
		WithLabels(withLabels(CommonLabels(ms), labels)).
		WithOwnerReferences(ownerRef(ms)).
		WithData(map[string]string{"mediafleet-" + ms.Namespace + "-" + ms.Name + ".json": raw}), nil
}
