package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// prometheusOperatorVersion is the release whose CRDs the tests install.
const prometheusOperatorVersion = "v0.85.0"

// promCRDsInstalled: TestEnvtestMonitoring has installed the Prometheus
// Operator's CRDs into this process's API server.
var promCRDsInstalled bool

// prometheusOperatorCRDs returns the directory of the real Prometheus
// Operator CRDs, shipped in its Go module (fetched through the proxy).
func prometheusOperatorCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/prometheus-operator/prometheus-operator@"+prometheusOperatorVersion).Output()
	if err != nil {
		t.Fatalf("download prometheus-operator %s: %v", prometheusOperatorVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("module dir: %v %s", err, out)
	}
	return filepath.Join(mod.Dir, "example", "prometheus-operator-crd")
}

// TestEnvtestMonitoring runs the monitoring story against the real API
// server in order: without the Prometheus Operator's CRDs the MediaService
// says so and nothing fails; once the real CRDs are installed the
// PodMonitor and PrometheusRule appear without a restart, owned, accepted by
// the CRDs' schemas; spec changes update them; switching pieces off removes
// them.
func TestEnvtestMonitoring(t *testing.T) {
	requireEnvtest(t)
	runClock(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "mon")
	ms.Spec.Monitoring.Rules.Labels = map[string]string{"prometheus": "media"}
	createMS(t, ms)

	// The CRDs stay installed for the rest of the process: a repeated run
	// (go test -count=N) starts from the second act.
	if !promCRDsInstalled {
		eventually(t, waitFor, "MonitoringReady False without CRDs",
			conditionIs(ns, "mon", mediav1alpha1.ConditionMonitoringReady, metav1.ConditionFalse, ReasonCRDsNotInstalled))
	}
	eventually(t, waitFor, "Available condition still computed", conditionIs(ns, "mon", mediav1alpha1.ConditionDegraded, metav1.ConditionFalse, ""))
	cm := &corev1.ConfigMap{}
	eventually(t, waitFor, "dashboard ConfigMap", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon-dashboard"}, cm)
	})
	if cm.Labels["grafana_dashboard"] != "1" || !strings.Contains(cm.Data["mediafleet-"+ns+"-mon.json"], `"title": "Active sessions"`) {
		t.Errorf("dashboard ConfigMap labels %v, keys %d", cm.Labels, len(cm.Data))
	}

	// The real CRDs appear; the running operator picks them up.
	if _, err := envtest.InstallCRDs(testCfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(prometheusOperatorCRDs(t), "monitoring.coreos.com_podmonitors.yaml"),
			filepath.Join(prometheusOperatorCRDs(t), "monitoring.coreos.com_prometheusrules.yaml")},
		ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install Prometheus Operator CRDs: %v", err)
	}
	promCRDsInstalled = true
	eventually(t, 60*time.Second, "MonitoringReady True after the CRDs appear",
		conditionIs(ns, "mon", mediav1alpha1.ConditionMonitoringReady, metav1.ConditionTrue, ReasonMonitoringApplied))
	owner := getMS(t, ns, "mon")
	pm := &monitoringv1.PodMonitor{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pm); err != nil {
		t.Fatal(err)
	}
	if ref := metav1.GetControllerOf(pm); ref == nil || ref.UID != owner.UID {
		t.Errorf("PodMonitor not owned by the MediaService: %+v", pm.OwnerReferences)
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if *ep.Port != "admin" || ep.Path != "/metrics" || ep.Interval != "30s" || ep.RelabelConfigs[0].TargetLabel != "mediaservice" {
		t.Errorf("PodMonitor endpoint %+v", ep)
	}
	pr := &monitoringv1.PrometheusRule{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pr); err != nil {
		t.Fatal(err)
	}
	if pr.Labels["prometheus"] != "media" || metav1.GetControllerOf(pr) == nil {
		t.Errorf("PrometheusRule labels %v owners %v", pr.Labels, pr.OwnerReferences)
	}
	alerts := map[string]monitoringv1.Rule{}
	for _, r := range pr.Spec.Groups[0].Rules {
		alerts[r.Alert] = r
	}
	for _, name := range []string{"GoroutineLeak", "HighErrorRate", "HighLatency", "SessionCapacityNearlyExhausted", "MediaPodDown", "HighPacketLoss"} {
		r, ok := alerts[name]
		if !ok {
			t.Errorf("alert %s missing", name)
			continue
		}
		if !strings.Contains(r.Expr.String(), `namespace="`+ns+`",mediaservice="mon"`) || r.Annotations["runbook_url"] == "" {
			t.Errorf("alert %s not scoped to this MediaService: %s", name, r.Expr.String())
		}
	}

	// Spec changes update the objects.
	eventually(t, waitFor, "spec update", func() error {
		m := getMS(t, ns, "mon")
		m.Spec.Monitoring.PodMonitor.Interval = "15s"
		m.Spec.Monitoring.Rules.HighErrorRate.Threshold = 10
		m.Spec.Monitoring.Rules.PacketLoss.Disabled = true
		return k8s.Update(ctx, m)
	})
	eventually(t, waitFor, "objects updated", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pm); err != nil {
			return err
		}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pr); err != nil {
			return err
		}
		var exprs []string
		for _, r := range pr.Spec.Groups[0].Rules {
			exprs = append(exprs, r.Alert+": "+r.Expr.String())
		}
		all := strings.Join(exprs, "\n")
		if pm.Spec.PodMetricsEndpoints[0].Interval != "15s" || !strings.Contains(all, "* 100 > 10") || strings.Contains(all, "HighPacketLoss") {
			return fmt.Errorf("interval %s, rules:\n%s", pm.Spec.PodMetricsEndpoints[0].Interval, all)
		}
		return nil
	})

	// Drift in a generated object is corrected.
	pm.Spec.PodMetricsEndpoints[0].Path = "/elsewhere"
	if err := k8s.Update(ctx, pm, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "PodMonitor drift corrected", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pm); err != nil {
			return err
		}
		if pm.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
			return fmt.Errorf("path %s", pm.Spec.PodMetricsEndpoints[0].Path)
		}
		return nil
	})

	// Steady: no writes.
	settle(t, ns, "mon", 0)
	before := writes.writesIn(ns)
	reconcileFully(t, ns, "mon")
	if n := writes.writesIn(ns) - before; n != 0 {
		t.Errorf("steady reconcile with monitoring made %d writes", n)
	}

	// Switching pieces off removes them.
	eventually(t, waitFor, "disable", func() error {
		m := getMS(t, ns, "mon")
		off := false
		m.Spec.Monitoring.PodMonitor.Enabled = &off
		m.Spec.Monitoring.Dashboard.Enabled = &off
		return k8s.Update(ctx, m)
	})
	eventually(t, waitFor, "PodMonitor and dashboard removed", func() error {
		for _, obj := range []client.Object{&monitoringv1.PodMonitor{}, &corev1.ConfigMap{}} {
			name := "mon"
			if _, ok := obj.(*corev1.ConfigMap); ok {
				name = "mon-dashboard"
			}
			if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T still there (%v)", obj, err)
			}
		}
		return nil
	})
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mon"}, pr); err != nil {
		t.Errorf("the PrometheusRule must stay: %v", err)
	}
}
