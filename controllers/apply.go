package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// Event reasons.
// FieldOwner is the server-side apply field manager of every object the
// operator writes.
const FieldOwner = "mediafleet"

const (
	ReasonCreated     = "Created"
	ReasonUpdated     = "Updated"
	ReasonApplyFailed = "ApplyFailed"
)

// namedApply is what every typed apply configuration offers.
type namedApply interface {
	runtime.ApplyConfiguration
	GetName() *string
	GetNamespace() *string
}

// applyChild applies desired with server-side apply unless the fields this
// operator owns on the cached object already say exactly that. Extracting
// our managed fields (instead of comparing whole objects) ignores what other
// managers and the API server's defaulting own, and still notices drift: a
// field someone else overwrote leaves our field set, so it differs.
func applyChild[T client.Object](ctx context.Context, r *MediaServiceReconciler, sc *scope,
	kind string, existing T, desired namedApply, extract func(T) (runtime.ApplyConfiguration, error)) error {
	key := types.NamespacedName{Namespace: *desired.GetNamespace(), Name: *desired.GetName()}
	found := true
	if err := r.Get(ctx, key, existing); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get %s %s: %w", kind, key.Name, err)
		}
		found = false
	}
	if found {
		current, err := extract(existing)
		if err != nil {
			return fmt.Errorf("extract %s %s: %w", kind, key.Name, err)
		}
		same, err := sameApply(current, desired)
		if err != nil {
			return err
		}
		if same {
			return nil
		}
		if l := log.FromContext(ctx).V(1); l.Enabled() {
			cur, _ := json.Marshal(current)
			want, _ := json.Marshal(desired)
			l.Info("applying drifted child", "kind", kind, "name", key.Name, "current", string(cur), "desired", string(want))
		}
	}
	if err := r.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, key.Name, err)
	}
	sc.applied.record(found, kind, key.Name)
	return nil
}

// appliedLog gathers what one reconcile created or updated, so that it
// becomes one Event (per verb) instead of one per child.
type appliedLog struct {
	created, updated []string
}

func (l *appliedLog) record(existed bool, kind, name string) {
	if existed {
		l.updated = append(l.updated, kind+" "+name)
	} else {
		l.created = append(l.created, kind+" "+name)
	}
}

// emit sends the gathered Events.
func (l *appliedLog) emit(r *MediaServiceReconciler, ms *mediav1alpha1.MediaService) {
	if len(l.created) > 0 {
		r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonCreated, "Create", "Created %s", strings.Join(l.created, "; Created "))
	}
	if len(l.updated) > 0 {
		r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonUpdated, "Update", "Updated %s", strings.Join(l.updated, "; Updated "))
	}
}

// sameApply compares two apply configurations by their JSON form.
func sameApply(a, b runtime.ApplyConfiguration) (bool, error) {
	var am, bm any
	for _, p := range []struct {
		in  runtime.ApplyConfiguration
		out *any
	}{{a, &am}, {b, &bm}} {
		raw, err := json.Marshal(p.in)
		if err != nil {
			return false, fmt.Errorf("marshal apply configuration: %w", err)
		}
		if err := json.Unmarshal(raw, p.out); err != nil {
			return false, fmt.Errorf("unmarshal apply configuration: %w", err)
		}
	}
	return reflect.DeepEqual(am, bm), nil
}

func extractDeployment(o *appsv1.Deployment) (runtime.ApplyConfiguration, error) {
	return appsv1ac.ExtractDeployment(o, FieldOwner)
}

func extractService(o *corev1.Service) (runtime.ApplyConfiguration, error) {
	return corev1ac.ExtractService(o, FieldOwner)
}

func extractServiceAccount(o *corev1.ServiceAccount) (runtime.ApplyConfiguration, error) {
	return corev1ac.ExtractServiceAccount(o, FieldOwner)
}

func extractConfigMap(o *corev1.ConfigMap) (runtime.ApplyConfiguration, error) {
	return corev1ac.ExtractConfigMap(o, FieldOwner)
}

func extractPDB(o *policyv1.PodDisruptionBudget) (runtime.ApplyConfiguration, error) {
	return policyv1ac.ExtractPodDisruptionBudget(o, FieldOwner)
}
