package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// turnSecretBytes is the gateway's shared secret's entropy.
const turnSecretBytes = 32

// reconcileTURN runs the MediaService's TURN gateway (spec.turn.enabled):
// its shared secret (made once by the operator, never logged), Deployment,
// Service and PDB, and works out the URLs clients get. Disabled, it
// removes them. It runs before the media Deployment, whose pods announce
// the gateway.
func (r *MediaServiceReconciler) reconcileTURN(ctx context.Context, sc *scope) (ctrl.Result, error) {
	ms := sc.ms
	if !desired.TURNEnabled(ms) {
		meta := metav1.ObjectMeta{Name: desired.TURNName(ms), Namespace: ms.Namespace}
		for _, obj := range []client.Object{
			&appsv1.Deployment{ObjectMeta: meta}, &corev1.Service{ObjectMeta: meta}, &policyv1.PodDisruptionBudget{ObjectMeta: meta},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: desired.TURNSecretName(ms), Namespace: ms.Namespace}},
		} {
			if err := r.deleteOwned(ctx, ms, obj); err != nil {
				return done, err
			}
		}
		sc.turn, sc.turnURLs, sc.turnDone = nil, nil, true
		return done, nil
	}
	secret, err := r.ensureTURNSecret(ctx, sc)
	if err != nil {
		return done, err
	}
	key := types.NamespacedName{Namespace: ms.Namespace, Name: desired.TURNName(ms)}
	dep := &appsv1.Deployment{}
	if err := r.Get(ctx, key, dep); err != nil {
		if !apierrors.IsNotFound(err) {
			return done, fmt.Errorf("get TURN Deployment: %w", err)
		}
		dep = nil
	}
	replicas, allocations, next, err := r.turnReplicas(ctx, ms, dep)
	if err != nil {
		return done, err
	}
	if err := applyChild(ctx, r, sc, "Deployment", &appsv1.Deployment{}, desired.TURNDeployment(ms, r.Options.builders(), tokenHash(secret), replicas), extractDeployment); err != nil {
		return done, err
	}
	if err := applyChild(ctx, r, sc, "Service", &corev1.Service{}, desired.TURNService(ms), extractService); err != nil {
		return done, err
	}
	if err := applyChild(ctx, r, sc, "PodDisruptionBudget", &policyv1.PodDisruptionBudget{}, desired.TURNPDB(ms), extractPDB); err != nil {
		return done, err
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, key, svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return done, fmt.Errorf("get TURN Service: %w", err)
		}
		svc = nil
	}
	st := &mediav1alpha1.TURNStatus{Address: desired.TURNAddress(ms, svc), Allocations: allocations}
	st.URLs = desired.TURNURLs(ms, svc, st.Address)
	if dep != nil {
		st.Replicas, st.ReadyReplicas = dep.Status.Replicas, dep.Status.ReadyReplicas
	}
	if len(st.URLs) == 0 {
		st.Address = ""
	}
	sc.turn, sc.turnURLs, sc.turnSecretHash, sc.turnDone = st, st.URLs, tokenHash(secret), true
	return ctrl.Result{RequeueAfter: next}, nil
}

// turnReplicas is how many gateway pods to run: spec.turn.replicas, or
// with spec.turn.autoscaling ceil(allocations / target) within min..max,
// up at once and down only after the stabilization window (as the media
// pods' autoscaler). It also returns the allocations observed and when the
// window next lets a lower count through. Nothing observed: hold.
func (r *MediaServiceReconciler) turnReplicas(ctx context.Context, ms *mediav1alpha1.MediaService, dep *appsv1.Deployment) (replicas, allocations int32, next time.Duration, err error) {
	key := client.ObjectKeyFromObject(ms)
	current := desired.TURNReplicas(ms)
	if dep != nil && dep.Spec.Replicas != nil {
		current = *dep.Spec.Replicas
	}
	if r.Observer == nil {
		return desired.TURNReplicas(ms), 0, 0, nil
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(ms.Namespace), client.MatchingLabels(desired.TURNSelectorLabels(ms))); err != nil {
		return 0, 0, 0, fmt.Errorf("list TURN gateway pods: %w", err)
	}
	allocations, reporting := r.Observer.GatewayAllocations(ms.Namespace, pods.Items)
	as := ms.Spec.TURN.Autoscaling
	if as == nil {
		r.turnRecommendations.forget(key)
		return desired.TURNReplicas(ms), allocations, 0, nil
	}
	if reporting == 0 {
		return current, allocations, 0, nil
	}
	rec := turnRecommend(as, allocations)
	want, next := r.turnRecommendations.decide(key, r.clock().Now(), current, rec, as.ScaleDownStabilization.Duration)
	if want != current {
		r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, ReasonAutoscaled, "Scale",
			"TURN gateway autoscaling: %d → %d replicas (%d allocations on %d pods, target %d per pod)", current, want, allocations, reporting, as.TargetAllocationsPerPod)
	}
	return want, allocations, next, nil
}

// turnRecommend is ceil(allocations / target) within min..max.
func turnRecommend(as *mediav1alpha1.TURNAutoscalingSpec, allocations int32) int32 {
	rec := int32(math.Ceil(float64(allocations) / float64(max(as.TargetAllocationsPerPod, 1))))
	return min(max(rec, as.MinReplicas, 1), as.MaxReplicas)
}

// ensureTURNSecret makes the gateway's shared secret once and returns it
// (like the admin token: created, never applied, never logged).
func (r *MediaServiceReconciler) ensureTURNSecret(ctx context.Context, sc *scope) (string, error) {
	return r.ensureGeneratedSecret(ctx, sc, generatedSecret{
		name: desired.TURNSecretName(sc.ms), key: desired.TURNSecretKey, what: "TURN",
		labels: desired.TURNLabels(sc.ms), minLen: 32, generate: newTURNSecret,
	})
}

func newTURNSecret() (string, error) {
	b := make([]byte, turnSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("TURN secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
