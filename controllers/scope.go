package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// scope is what one reconcile of one MediaService works on, handed to every
// phase (the way cluster-api passes its scope): the object, its status as
// read, the pods listed once, their last observations, what the phases
// created or updated (one Event at the end) and the monitoring condition.
type scope struct {
	ms         *mediav1alpha1.MediaService
	before     *mediav1alpha1.MediaServiceStatus
	pods       []corev1.Pod
	reports    []podReport
	applied    appliedLog
	monitoring *metav1.Condition
	// The TURN gateway as the turn phase found it (turnDone: it ran).
	turn           *mediav1alpha1.TURNStatus
	turnURLs       []string
	turnSecretHash string
	turnDone       bool
	// adminTokenHash: of the token the admin-token phase ensured.
	adminTokenHash string
}

// phase is one step of a reconcile. A phase asks to be run again after
// RequeueAfter; the soonest request wins.
type phase struct {
	name string
	run  func(context.Context, *scope) (ctrl.Result, error)
}

// phases are run in order; the first error stops the reconcile (status is
// still written).
func (r *MediaServiceReconciler) phases() []phase {
	return []phase{
		{"membership", r.reconcileMembership},
		{"autoscaling", r.reconcileAutoscaling},
		{"serviceaccount", r.reconcileServiceAccount},
		{"admin-token", r.reconcileAdminToken},
		{"node-addresses", r.reconcileNodeAddresses},
		{"turn", r.reconcileTURN},
		{"deployment", r.reconcileDeployment},
		{"services", r.reconcileServices},
		{"poddisruptionbudget", r.reconcilePDB},
		{"networkpolicy", r.reconcileNetworkPolicy},
		{"monitoring", r.reconcileMonitoringPhase},
		{"deletion-cost", r.reconcileDeletionCostPhase},
		{"remediation", r.reconcileRemediation},
	}
}

// done is a phase's "nothing to ask for".
var done = ctrl.Result{}

// result turns a phase's error into its result.
func result(err error) (ctrl.Result, error) { return done, err }

// reconcileMembership: pods learn their member list as soon as their
// readiness changes, not at the next observation pass.
func (r *MediaServiceReconciler) reconcileMembership(ctx context.Context, sc *scope) (ctrl.Result, error) {
	if r.Observer != nil {
		gateways := &corev1.PodList{}
		if desired.TURNEnabled(sc.ms) {
			if err := r.List(ctx, gateways, client.InNamespace(sc.ms.Namespace), client.MatchingLabels(desired.TURNSelectorLabels(sc.ms))); err != nil {
				return done, fmt.Errorf("list TURN gateway pods: %w", err)
			}
		}
		r.Observer.DeliverMembershipFor(ctx, client.ObjectKeyFromObject(sc.ms), sc.pods, gateways.Items)
	}
	return done, nil
}

func (r *MediaServiceReconciler) reconcileAutoscaling(ctx context.Context, sc *scope) (ctrl.Result, error) {
	if r.Observer == nil {
		return done, nil
	}
	next, err := r.autoscale(ctx, sc.ms, sc.reports)
	return ctrl.Result{RequeueAfter: next}, err
}

func (r *MediaServiceReconciler) reconcileMonitoringPhase(ctx context.Context, sc *scope) (ctrl.Result, error) {
	next, cond, err := r.reconcileMonitoring(ctx, sc)
	if err != nil {
		return done, err
	}
	sc.monitoring = &cond
	return ctrl.Result{RequeueAfter: next}, nil
}

func (r *MediaServiceReconciler) reconcileDeletionCostPhase(ctx context.Context, sc *scope) (ctrl.Result, error) {
	if r.Observer == nil {
		return done, nil
	}
	next, err := r.reconcileDeletionCost(ctx, sc.ms, sc.reports)
	return ctrl.Result{RequeueAfter: next}, err
}

func (r *MediaServiceReconciler) reconcileRemediation(ctx context.Context, sc *scope) (ctrl.Result, error) {
	if r.Observer == nil {
		return done, nil
	}
	return result(r.restartIdleLeakingPod(ctx, sc.ms, sc.reports))
}
