package controllers

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// Monitoring condition reasons.
const (
	ReasonMonitoringApplied  = "Applied"
	ReasonMonitoringDisabled = "Disabled"
	ReasonCRDsNotInstalled   = "CRDsNotInstalled"
	defaultMonitoringRecheck = 30 * time.Second
)

func (r *MediaServiceReconciler) monitoringRecheck() time.Duration {
	if r.Options.MonitoringRecheck > 0 {
		return r.Options.MonitoringRecheck
	}
	return defaultMonitoringRecheck
}

// monitoringState remembers whether the Prometheus Operator's CRDs are
// served (a negative answer is kept for Options.MonitoringRecheck) and whether the
// controller already watches PodMonitors and PrometheusRules.
type monitoringState struct {
	mu        sync.Mutex
	served    bool
	checkedAt time.Time
	watching  bool
	ctrl      controller.Controller
	cache     cache.Cache
}

// monitoringServed reports whether PodMonitor and PrometheusRule are served
// now. The manager's RESTMapper rediscovers a group it does not know, so
// CRDs installed after the operator started are found without a restart.
func (r *MediaServiceReconciler) monitoringServed() bool {
	m := &r.monitoring
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.served {
		return true
	}
	now := r.clock().Now()
	if !m.checkedAt.IsZero() && now.Sub(m.checkedAt) < r.monitoringRecheck() {
		return false
	}
	m.checkedAt = now
	mapper := r.RESTMapper()
	for _, kind := range []string{monitoringv1.PodMonitorsKind, monitoringv1.PrometheusRuleKind} {
		if _, err := mapper.RESTMapping(schema.GroupKind{Group: monitoringv1.SchemeGroupVersion.Group, Kind: kind}, "v1"); err != nil {
			return false
		}
	}
	m.served = true
	return true
}

// ensureMonitoringWatches starts watching the generated PodMonitors and
// PrometheusRules once their CRDs are served.
func (r *MediaServiceReconciler) ensureMonitoringWatches() error {
	m := &r.monitoring
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watching || m.ctrl == nil {
		return nil
	}
	owner := &mediav1alpha1.MediaService{}
	if err := m.ctrl.Watch(source.Kind(m.cache, &monitoringv1.PodMonitor{},
		handler.TypedEnqueueRequestForOwner[*monitoringv1.PodMonitor](r.Scheme(), r.RESTMapper(), owner, handler.OnlyControllerOwner()))); err != nil {
		return fmt.Errorf("watch PodMonitors: %w", err)
	}
	if err := m.ctrl.Watch(source.Kind(m.cache, &monitoringv1.PrometheusRule{},
		handler.TypedEnqueueRequestForOwner[*monitoringv1.PrometheusRule](r.Scheme(), r.RESTMapper(), owner, handler.OnlyControllerOwner()))); err != nil {
		return fmt.Errorf("watch PrometheusRules: %w", err)
	}
	m.watching = true
	return nil
}

// reconcileMonitoring applies or removes the dashboard ConfigMap, the
// PodMonitor and the PrometheusRule, and says how that went as the
// MonitoringReady condition. It returns when to look again for missing CRDs.
func (r *MediaServiceReconciler) reconcileMonitoring(ctx context.Context, sc *scope) (time.Duration, metav1.Condition, error) {
	ms := sc.ms
	mon := ms.Spec.Monitoring
	cond := metav1.Condition{Type: mediav1alpha1.ConditionMonitoringReady, ObservedGeneration: ms.Generation}
	var done []string

	if desired.Enabled(mon.Dashboard.Enabled) {
		cm, err := desired.Dashboard(ms)
		if err != nil {
			return 0, cond, err
		}
		if err := applyChild(ctx, r, sc, "ConfigMap", &corev1.ConfigMap{}, cm, extractConfigMap); err != nil {
			return 0, cond, err
		}
		done = append(done, "dashboard ConfigMap "+desired.DashboardConfigMapName(ms))
	} else if err := r.deleteOwned(ctx, ms, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: desired.DashboardConfigMapName(ms), Namespace: ms.Namespace}}); err != nil {
		return 0, cond, err
	}

	pmOn, rulesOn := desired.Enabled(mon.PodMonitor.Enabled), desired.Enabled(mon.Rules.Enabled)
	if !r.monitoringServed() {
		if !pmOn && !rulesOn {
			cond.Status, cond.Reason = metav1.ConditionTrue, ReasonMonitoringDisabled
			cond.Message = "PodMonitor and PrometheusRule are switched off"
			return 0, cond, nil
		}
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonCRDsNotInstalled
		cond.Message = "the Prometheus Operator's CRDs (monitoring.coreos.com/v1 PodMonitor, PrometheusRule) are not installed; " +
			"mediafleet creates the objects once they are, without a restart"
		return r.monitoringRecheck(), cond, nil
	}
	if err := r.ensureMonitoringWatches(); err != nil {
		return 0, cond, err
	}
	if pmOn {
		if err := r.applyTyped(ctx, sc, &monitoringv1.PodMonitor{}, desired.PodMonitor(ms)); err != nil {
			return 0, cond, err
		}
		done = append(done, "PodMonitor "+desired.PodMonitorName(ms))
	} else if err := r.deleteOwned(ctx, ms, &monitoringv1.PodMonitor{ObjectMeta: metav1.ObjectMeta{Name: desired.PodMonitorName(ms), Namespace: ms.Namespace}}); err != nil {
		return 0, cond, err
	}
	if pmOn && desired.TURNEnabled(ms) {
		if err := r.applyTyped(ctx, sc, &monitoringv1.PodMonitor{}, desired.TURNPodMonitor(ms)); err != nil {
			return 0, cond, err
		}
		done = append(done, "PodMonitor "+desired.TURNPodMonitorName(ms))
	} else if err := r.deleteOwned(ctx, ms, &monitoringv1.PodMonitor{ObjectMeta: metav1.ObjectMeta{Name: desired.TURNPodMonitorName(ms), Namespace: ms.Namespace}}); err != nil {
		return 0, cond, err
	}
	if rulesOn {
		if err := r.applyTyped(ctx, sc, &monitoringv1.PrometheusRule{}, desired.PrometheusRule(ms)); err != nil {
			return 0, cond, err
		}
		done = append(done, "PrometheusRule "+desired.PrometheusRuleName(ms))
	} else if err := r.deleteOwned(ctx, ms, &monitoringv1.PrometheusRule{ObjectMeta: metav1.ObjectMeta{Name: desired.PrometheusRuleName(ms), Namespace: ms.Namespace}}); err != nil {
		return 0, cond, err
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, ReasonMonitoringApplied
	if len(done) == 0 {
		cond.Reason, cond.Message = ReasonMonitoringDisabled, "every monitoring object is switched off"
	} else {
		cond.Message = "applied " + strings.Join(done, ", ")
	}
	return 0, cond, nil
}

// applyTyped applies a typed object (one without apply configurations)
// with server-side apply unless everything it sets already holds on the
// cached object.
func (r *MediaServiceReconciler) applyTyped(ctx context.Context, sc *scope, existing, desired client.Object) error {
	kind := desired.GetObjectKind().GroupVersionKind().Kind
	want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return fmt.Errorf("convert %s: %w", kind, err)
	}
	delete(want, "status")
	if md, ok := want["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	found := true
	if err := r.Get(ctx, client.ObjectKeyFromObject(desired), existing); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get %s %s: %w", kind, desired.GetName(), err)
		}
		found = false
	}
	if found {
		live, err := runtime.DefaultUnstructuredConverter.ToUnstructured(existing)
		if err != nil {
			return fmt.Errorf("convert live %s: %w", kind, err)
		}
		if subsetOf(want, live) {
			return nil
		}
	}
	u := &unstructured.Unstructured{Object: want}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, desired.GetName(), err)
	}
	sc.applied.record(found, kind, desired.GetName())
	return nil
}

// subsetOf reports whether every value want sets is the same in have. Maps
// may hold more keys in have (defaults, other managers); lists must match
// element by element; an empty map or list in want matches a missing key.
func subsetOf(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		for k, wv := range w {
			hv, present := h[k]
			if !present {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !subsetOf(wv, hv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		if len(w) != len(h) {
			return false
		}
		for i := range w {
			if !subsetOf(w[i], h[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(normalizeNumber(want), normalizeNumber(have))
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case string:
		return x == ""
	case bool:
		return !x
	}
	return false
}

func normalizeNumber(v any) any {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case int:
		return float64(x)
	}
	return v
}
