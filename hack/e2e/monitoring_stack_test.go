//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// The monitoring stack of make dev (hack/monitoring.sh): fixed ClusterIPs
// reached from the host through kube-proxy.
const (
	prometheusURL = "http://198.18.16.90:9090"
	receiverURL   = "http://198.18.16.92:9095"
)

// requireMonitoringStack skips when make dev ran with MONITORING=0 and
// fails when the stack should be there but Prometheus does not answer.
func requireMonitoringStack(t *testing.T) {
	t.Helper()
	if os.Getenv("MONITORING") == "0" {
		t.Skip("make dev MONITORING=0: no monitoring stack")
	}
	eventually(t, 2*time.Minute, "Prometheus ready at "+prometheusURL, func() (bool, string) {
		resp, err := httpc.Get(prometheusURL + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

// promAPI GETs a Prometheus API path and decodes its data.
func promAPI(path string, params url.Values, data any) error {
	resp, err := httpc.Get(prometheusURL + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if out.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, out.Error)
	}
	return json.Unmarshal(out.Data, data)
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func promQuery(q string) ([]promSample, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	if err := promAPI("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s", data.ResultType)
	}
	return data.Result, nil
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func promAlerts(t *testing.T) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := promAPI("/api/v1/alerts", nil, &data); err != nil {
		t.Fatal(err)
	}
	return data.Alerts
}

// firing lists the firing alerts named name.
func firing(t *testing.T, name string) []promAlert {
	var out []promAlert
	for _, a := range promAlerts(t) {
		if a.Labels["alertname"] == name && a.State == "firing" {
			out = append(out, a)
		}
	}
	return out
}

// webhookAlert is one alert of an Alertmanager webhook notification.
type webhookAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// received lists the alerts of every notification the receiver recorded.
func received(t *testing.T) []webhookAlert {
	t.Helper()
	resp, err := httpc.Get(receiverURL + "/notifications")
	if err != nil {
		t.Fatalf("the alert receiver: %v", err)
	}
	defer resp.Body.Close()
	var ns []struct {
		Payload struct {
			Alerts []webhookAlert `json:"alerts"`
		} `json:"payload"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ns); err != nil {
		t.Fatalf("the alert receiver's notifications: %v", err)
	}
	var out []webhookAlert
	for _, n := range ns {
		out = append(out, n.Payload.Alerts...)
	}
	return out
}

// waitReceived waits until the receiver got alert name for pod in
// namespace with the given status ("firing" or "resolved").
func waitReceived(t *testing.T, name, namespace, pod, status string) webhookAlert {
	t.Helper()
	var got webhookAlert
	eventually(t, 2*time.Minute, fmt.Sprintf("%s %s notification for %s/%s at the receiver", status, name, namespace, pod), func() (bool, string) {
		var seen []string
		for _, a := range received(t) {
			if a.Labels["alertname"] == name && a.Labels["namespace"] == namespace && a.Labels["pod"] == pod && a.Status == status {
				got = a
				return true, ""
			}
			seen = append(seen, a.Labels["alertname"]+"/"+a.Labels["namespace"]+"/"+a.Labels["pod"]+":"+a.Status)
		}
		return false, fmt.Sprint(seen)
	})
	return got
}

// containerd pauses and resumes a media pod's container (the cgroup
// freezer: the process stops answering, as with SIGSTOP) through the local
// cluster's containerd.
func containerd(t *testing.T, verb string, pod *corev1.Pod) error {
	t.Helper()
	if len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", pod.Name)
	}
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	root, _ := filepath.Abs("../..")
	sock := filepath.Join(envOr("MEDIAFLEET_DEV_DIR", filepath.Join(root, "bin/dev")), "containerd", "containerd.sock")
	out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "tasks", verb, id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr tasks %s %s: %v: %s", verb, id, err, out)
	}
	return nil
}

// dashboardQueries are the PromQL queries of a MediaService's generated
// Grafana dashboard, by panel title.
func dashboardQueries(t *testing.T, namespace, name string) map[string][]string {
	t.Helper()
	var cm corev1.ConfigMap
	eventually(t, time.Minute, "dashboard ConfigMap", func() (bool, string) {
		c, err := cs.CoreV1().ConfigMaps(namespace).Get(ctxFor(t, 10*time.Second), name+"-dashboard", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cm = *c
		return true, ""
	})
	out := map[string][]string{}
	for _, raw := range cm.Data {
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			t.Fatalf("dashboard JSON: %v", err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				// The only template variable is the data source.
				if strings.Contains(tg.Expr, "$") {
					t.Errorf("panel %q: unexpected template variable in %s", p.Title, tg.Expr)
				}
				out[p.Title] = append(out[p.Title], tg.Expr)
			}
		}
	}
	if len(out) < 8 {
		t.Fatalf("dashboard has %d panels", len(out))
	}
	return out
}

// selectorsScopedTo parses q with Prometheus itself (/api/v1/parse_query)
// and checks that every series selector in it matches namespace and
// mediaservice exactly: the query cannot see another MediaService's series.
func selectorsScopedTo(q, namespace, name string) error {
	var ast any
	if err := promAPI("/api/v1/parse_query", url.Values{"query": {q}}, &ast); err != nil {
		return err
	}
	var errs []string
	selectors := 0
	var walk func(any)
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			if typ, _ := n["type"].(string); typ == "vectorSelector" || typ == "matrixSelector" {
				selectors++
				want := map[string]string{"namespace": namespace, "mediaservice": name}
				ms, _ := n["matchers"].([]any)
				for _, m := range ms {
					mm, _ := m.(map[string]any)
					if mm["type"] == "=" && want[fmt.Sprint(mm["name"])] == fmt.Sprint(mm["value"]) {
						delete(want, fmt.Sprint(mm["name"]))
					}
				}
				if len(want) > 0 {
					errs = append(errs, fmt.Sprintf("selector %v lacks %v", n["name"], want))
				}
			}
			for _, v := range n {
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	walk(ast)
	if selectors == 0 {
		errs = append(errs, "no series selector found")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// carrySessions starts a WHIP publisher with two WHEP viewers and a
// three-party WebSocket room through a MediaService's Service, all sending
// RTP until the test ends.
func carrySessions(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	pub, err := mfclient.Publish(ctx, base, "stage", clientOpts())
	if err != nil {
		t.Fatalf("WHIP: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 600)
	for i := 0; i < 2; i++ {
		v, err := mfclient.Play(ctx, base, "stage", clientOpts())
		if err != nil {
			t.Fatalf("WHEP %d: %v", i, err)
		}
		t.Cleanup(func() { _ = v.Close() })
		waitPackets(t, fmt.Sprintf("viewer %d", i), &v.Received, 100, 30*time.Second)
	}
	wsBase := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	for i := 0; i < 3; i++ {
		p, err := mfclient.Join(ctx, wsBase, "huddle", true, clientOpts())
		if err != nil {
			t.Fatalf("WebSocket join %d: %v", i, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		p.SendRTP(50, 500)
	}
}

// 12. The real Prometheus Operator, Prometheus and Alertmanager of make
// dev pick up what mediafleet generates: targets up with the relabelled
// labels, the rules loaded, GoroutineLeak and MediaPodDown firing for
// exactly the pod concerned and reaching the webhook receiver through
// Alertmanager (and resolving), every dashboard query answering, and two
// MediaServices of one name in two namespaces kept apart.
func TestPrometheusStackEndToEnd(t *testing.T) {
	phase(t)
	requireMonitoringStack(t)
	checkLeaks(t)
	const name = "prom"
	other := ns + "-b"
	if _, err := cs.CoreV1().Namespaces().Create(ctxFor(t, 10*time.Second), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), other, metav1.DeleteOptions{}) })
	spec := func() mediav1alpha1.MediaServiceSpec {
		return mediav1alpha1.MediaServiceSpec{
			Replicas:        ptr.To[int32](2),
			Image:           "mediafleet/mediaserver:e2e",
			ImagePullPolicy: corev1.PullNever,
			LeakDetection:   mediav1alpha1.LeakDetectionSpec{BaselineWindow: metav1.Duration{Duration: 5 * time.Second}},
			Monitoring: mediav1alpha1.MonitoringSpec{
				PodMonitor: mediav1alpha1.PodMonitorSpec{Interval: "5s"},
				Rules: mediav1alpha1.RulesSpec{
					GoroutineLeak: mediav1alpha1.AlertSpec{For: "10s"},
					PodDown:       mediav1alpha1.AlertSpec{For: "10s"},
				},
			},
		}
	}
	createMS(t, name, spec())
	t.Cleanup(func() { deleteMS(t, name) })
	createMSIn(t, other, name, spec())
	waitAvailable(t, name, 2, 3*time.Minute)
	waitAvailableIn(t, other, name, 2, 3*time.Minute)
	ready := time.Now()
	pods := mediaPods(t, name)

	t.Run("1 targets up with namespace, pod and mediaservice", func(t *testing.T) {
		eventually(t, 3*time.Minute, "every media pod a target with up == 1", func() (bool, string) {
			got, err := promQuery(fmt.Sprintf(`up{namespace=%q,mediaservice=%q}`, ns, name))
			if err != nil {
				return false, err.Error()
			}
			up := map[string]bool{}
			for _, s := range got {
				up[s.Metric["pod"]] = s.value() == 1
			}
			for _, p := range pods {
				if !up[p.Name] {
					return false, fmt.Sprintf("pod %s not up: %v", p.Name, got)
				}
			}
			return len(got) == len(pods), fmt.Sprint(got)
		})
		t.Logf("every pod scraped with up == 1 %s after Available (PodMonitor interval 5s; includes the operator's config reload)", time.Since(ready).Round(100*time.Millisecond))
	})

	t.Run("2 the rules are loaded and healthy", func(t *testing.T) {
		group := "mediafleet." + ns + "." + name
		eventually(t, 2*time.Minute, "rule group "+group+" loaded, every alert health ok", func() (bool, string) {
			var data struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			}
			if err := promAPI("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
				return false, err.Error()
			}
			for _, g := range data.Groups {
				if g.Name != group {
					continue
				}
				var names, bad []string
				for _, r := range g.Rules {
					names = append(names, r.Name)
					if r.Health != "ok" || r.LastError != "" {
						bad = append(bad, fmt.Sprintf("%s health %q %s", r.Name, r.Health, r.LastError))
					}
				}
				slices.Sort(names)
				want := []string{"GoroutineLeak", "HighErrorRate", "HighLatency", "HighPacketLoss", "MediaPodDown", "SessionCapacityNearlyExhausted"}
				return slices.Equal(names, want) && len(bad) == 0, fmt.Sprintf("alerts %v, unhealthy %v", names, bad)
			}
			return false, "group not loaded yet"
		})
	})

	leaking := pods[0]
	t.Run("3 GoroutineLeak fires for the pod, reaches the receiver and resolves", func(t *testing.T) {
		eventually(t, time.Minute, "baseline learned", func() (bool, string) {
			r := podReport(t, &leaking, 9090)
			return r.Goroutines.Baseline > 0, fmt.Sprintf("%+v", r.Goroutines)
		})
		fault := func(q string) {
			code, body, err := adminDo(&leaking, 9090, http.MethodPost, "/debug/fault/leak?"+q, adminToken(t, &leaking))
			if err != nil || code != http.StatusOK {
				t.Fatalf("fault hook: %d %v %s", code, err, body)
			}
		}
		fault("n=400")
		start := time.Now()
		eventually(t, 3*time.Minute, "GoroutineLeak firing in Prometheus", func() (bool, string) {
			f := firing(t, "GoroutineLeak")
			return len(f) > 0, fmt.Sprint(f)
		})
		t.Logf("GoroutineLeak firing %s after the injection", time.Since(start).Round(100*time.Millisecond))
		for _, a := range firing(t, "GoroutineLeak") {
			if a.Labels["namespace"] != ns || a.Labels["mediaservice"] != name || a.Labels["pod"] != leaking.Name {
				t.Errorf("GoroutineLeak firing for %v, want only %s/%s pod %s", a.Labels, ns, name, leaking.Name)
			}
		}
		n := waitReceived(t, "GoroutineLeak", ns, leaking.Name, "firing")
		if u := n.Annotations["runbook_url"]; !strings.Contains(u, "#runbook-goroutineleak") {
			t.Errorf("notification runbook_url %q", u)
		}
		t.Logf("notification at the receiver %s after the injection: %v", time.Since(start).Round(100*time.Millisecond), n.Annotations["summary"])
		fault("release=1")
		waitReceived(t, "GoroutineLeak", ns, leaking.Name, "resolved")
		t.Logf("resolved notification %s after the injection", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("4 MediaPodDown fires for a frozen pod and resolves", func(t *testing.T) {
		frozen := mediaPods(t, name)[1]
		if err := containerd(t, "pause", &frozen); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				// The kubelet may have restarted the container meanwhile
				// (liveness): then there is nothing left to resume.
				if err := containerd(t, "resume", &frozen); err != nil {
					t.Logf("resume: %v", err)
				}
			}
		}
		t.Cleanup(resume)
		start := time.Now()
		eventually(t, 3*time.Minute, "MediaPodDown firing for "+frozen.Name, func() (bool, string) {
			for _, a := range firing(t, "MediaPodDown") {
				if a.Labels["namespace"] == ns && a.Labels["pod"] == frozen.Name {
					return true, ""
				}
			}
			return false, fmt.Sprint(firing(t, "MediaPodDown"))
		})
		for _, a := range firing(t, "MediaPodDown") {
			if a.Labels["namespace"] != ns || a.Labels["pod"] != frozen.Name {
				t.Errorf("MediaPodDown firing for %v too", a.Labels)
			}
		}
		t.Logf("MediaPodDown firing %s after the freeze", time.Since(start).Round(100*time.Millisecond))
		waitReceived(t, "MediaPodDown", ns, frozen.Name, "firing")
		resume()
		waitReceived(t, "MediaPodDown", ns, frozen.Name, "resolved")
		t.Logf("resolved %s after the freeze", time.Since(start).Round(100*time.Millisecond))
		waitAvailable(t, name, 2, 3*time.Minute)
	})

	t.Run("5 every dashboard query answers with a value while sessions run", func(t *testing.T) {
		ctx := ctxFor(t, 5*time.Minute)
		carrySessions(t, ctx, serviceURL(t, name))
		for title, qs := range dashboardQueries(t, ns, name) {
			for _, q := range qs {
				// A series whose value is NaN (a quantile of nothing)
				// draws nothing in Grafana either: it does not count.
				eventually(t, 2*time.Minute, fmt.Sprintf("panel %q returns a series with a value", title), func() (bool, string) {
					got, err := promQuery(q)
					if err != nil {
						t.Fatalf("panel %q: %s: %v", title, q, err)
					}
					for _, s := range got {
						if !math.IsNaN(s.value()) {
							return true, ""
						}
					}
					return false, fmt.Sprintf("%d series, none with a value, for %s", len(got), q)
				})
			}
		}
	})

	t.Run("6 two MediaServices of one name in two namespaces stay apart", func(t *testing.T) {
		for _, target := range []string{ns, other} {
			for title, qs := range dashboardQueries(t, target, name) {
				for _, q := range qs {
					if err := selectorsScopedTo(q, target, name); err != nil {
						t.Errorf("dashboard of %s/%s, panel %q: %s: %v", target, name, title, q, err)
					}
					got, err := promQuery(q)
					if err != nil {
						t.Fatalf("%s: %v", q, err)
					}
					for _, s := range got {
						if v, ok := s.Metric["namespace"]; ok && v != target {
							t.Errorf("dashboard of %s/%s, panel %q returns a series of namespace %s: %v", target, name, title, v, s.Metric)
						}
					}
				}
			}
		}
		// The rules of each namespace select only their own series.
		var data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name  string `json:"name"`
					Query string `json:"query"`
				} `json:"rules"`
			} `json:"groups"`
		}
		eventually(t, 2*time.Minute, "both rule groups loaded", func() (bool, string) {
			if err := promAPI("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
				return false, err.Error()
			}
			found := 0
			for _, g := range data.Groups {
				if g.Name == "mediafleet."+ns+"."+name || g.Name == "mediafleet."+other+"."+name {
					found++
				}
			}
			return found == 2, fmt.Sprintf("%d of 2 groups", found)
		})
		for _, g := range data.Groups {
			for _, target := range []string{ns, other} {
				if g.Name != "mediafleet."+target+"."+name {
					continue
				}
				for _, r := range g.Rules {
					if err := selectorsScopedTo(r.Query, target, name); err != nil {
						t.Errorf("alert %s of %s: %s: %v", r.Name, target, r.Query, err)
					}
				}
			}
		}
		// Nothing alerted in the other namespace: the leak and the frozen
		// pod were this namespace's.
		for _, a := range received(t) {
			if a.Labels["namespace"] == other {
				t.Errorf("a notification for the other namespace: %v", a.Labels)
			}
		}
	})
}
