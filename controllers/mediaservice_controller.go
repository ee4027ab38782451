package controllers

import (
	"context"
	"fmt"

	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

// MediaServiceReconciler keeps each MediaService's children converged and
// its status true.
type MediaServiceReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Options  Options
	// Observer reads the media pods' /status; nil disables the observed pod status,
	// deletion cost, autoscaling and leak remediation.
	Observer *Observer
	// Clock times the autoscaler's stabilization window; tests inject a
	// fake one. Nil is the real clock.
	Clock clock.PassiveClock

	recommendations recommendationStore
	// turnRecommendations: the same for the TURN gateway's replicas.
	turnRecommendations recommendationStore
	costs               costLedger
	monitoring          monitoringState
}

func (r *MediaServiceReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// +kubebuilder:rbac:groups=media.mediafleet.io,resources=mediaservices,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=media.mediafleet.io,resources=mediaservices/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=media.mediafleet.io,resources=mediaservices/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors;prometheusrules,verbs=get;list;watch;create;update;patch;delete

// Reconcile is a thin shell: fetch, run the phases, write status once.
func (r *MediaServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	sc, err := r.newScope(ctx, req.NamespacedName)
	if sc == nil || err != nil {
		return ctrl.Result{}, err
	}
	defer func() { res, retErr = r.finish(ctx, sc, res, retErr) }()
	for _, p := range r.phases() {
		next, err := p.run(ctx, sc)
		if err != nil {
			r.Recorder.Eventf(sc.ms, nil, corev1.EventTypeWarning, ReasonApplyFailed, "Reconcile", "%s: %v", p.name, err)
			return ctrl.Result{}, fmt.Errorf("%s: %w", p.name, err)
		}
		res = requeueSooner(res, next.RequeueAfter)
	}
	return res, nil
}

// forget drops what the reconciler remembers of a MediaService that is
// gone (or going).
func (r *MediaServiceReconciler) forget(key types.NamespacedName) {
	r.recommendations.forget(key)
	r.turnRecommendations.forget(key)
	r.costs.forget(key)
}

// heldIn is how many MediaServices of a namespace the reconciler holds
// state for (tests prove it is pruned).
func (r *MediaServiceReconciler) heldIn(namespace string) int {
	held := map[types.NamespacedName]bool{}
	for _, k := range append(append(r.recommendations.keys(), r.turnRecommendations.keys()...), r.costs.keys()...) {
		if k.Namespace == namespace {
			held[k] = true
		}
	}
	return len(held)
}

// newScope reads the MediaService and lists its pods once for every phase
// and the status write; nil when there is nothing to reconcile (gone, or
// being deleted: owner references garbage-collect the children).
func (r *MediaServiceReconciler) newScope(ctx context.Context, key types.NamespacedName) (*scope, error) {
	ms := &mediav1alpha1.MediaService{}
	if err := r.Get(ctx, key, ms); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
		}
		return nil, client.IgnoreNotFound(err)
	}
	if !ms.DeletionTimestamp.IsZero() {
		r.forget(key)
		return nil, nil
	}
	pods, err := r.mediaPods(ctx, ms)
	if err != nil {
		return nil, err
	}
	return &scope{ms: ms, before: ms.Status.DeepCopy(), pods: pods, reports: r.podReports(pods)}, nil
}

// finish emits what the phases applied as one Event and writes status once
// (whatever the phases returned); a member list not yet delivered asks for
// a retry.
func (r *MediaServiceReconciler) finish(ctx context.Context, sc *scope, res ctrl.Result, retErr error) (ctrl.Result, error) {
	sc.applied.emit(r, sc.ms)
	if sc.monitoring != nil {
		meta.SetStatusCondition(&sc.ms.Status.Conditions, *sc.monitoring)
	}
	if sc.turnDone {
		sc.ms.Status.TURN = sc.turn
	}
	undelivered, err := r.writeStatus(ctx, sc.ms, sc.before, sc.pods, sc.reports, retErr)
	if err != nil {
		log.FromContext(ctx).Error(err, "write status")
		if retErr == nil {
			retErr = err
		}
	}
	if undelivered && retErr == nil {
		// EndpointSlice and pod changes arrive by watch; an undelivered
		// member list is retried here.
		res = requeueSooner(res, servingRetry)
	}
	return res, retErr
}

func (r *MediaServiceReconciler) concurrency() int {
	if r.Options.MaxConcurrentReconciles > 0 {
		return r.Options.MaxConcurrentReconciles
	}
	return 4
}

func requeueSooner(res ctrl.Result, d time.Duration) ctrl.Result {
	if d > 0 && (res.RequeueAfter == 0 || d < res.RequeueAfter) {
		res.RequeueAfter = d
	}
	return res
}

// mediaPods lists the MediaService's pods from the cache.
func (r *MediaServiceReconciler) mediaPods(ctx context.Context, ms *mediav1alpha1.MediaService) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(ms.Namespace), client.MatchingLabels(desired.SelectorLabels(ms))); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return pods.Items, nil
}

func (r *MediaServiceReconciler) reconcileServiceAccount(ctx context.Context, sc *scope) (ctrl.Result, error) {
	return result(applyChild(ctx, r, sc, "ServiceAccount", &corev1.ServiceAccount{}, desired.ServiceAccount(sc.ms), extractServiceAccount))
}

func (r *MediaServiceReconciler) reconcileDeployment(ctx context.Context, sc *scope) (ctrl.Result, error) {
	// The admin-token phase ran first and ensured the token.
	return result(applyChild(ctx, r, sc, "Deployment", &appsv1.Deployment{}, desired.Deployment(sc.ms, r.Options.builders(), sc.adminTokenHash, desired.Gateway{URLs: sc.turnURLs, SecretHash: sc.turnSecretHash}), extractDeployment))
}

func (r *MediaServiceReconciler) reconcileServices(ctx context.Context, sc *scope) (ctrl.Result, error) {
	if err := applyChild(ctx, r, sc, "Service", &corev1.Service{}, desired.SignalingService(sc.ms), extractService); err != nil {
		return done, err
	}
	return result(applyChild(ctx, r, sc, "Service", &corev1.Service{}, desired.HeadlessService(sc.ms), extractService))
}

func (r *MediaServiceReconciler) reconcilePDB(ctx context.Context, sc *scope) (ctrl.Result, error) {
	return result(applyChild(ctx, r, sc, "PodDisruptionBudget", &policyv1.PodDisruptionBudget{}, desired.PDB(sc.ms), extractPDB))
}

// reconcileNodeAddresses publishes node ExternalIPs for
// publicAddress.source NodeExternalIP, and removes the ConfigMap otherwise.
func (r *MediaServiceReconciler) reconcileNodeAddresses(ctx context.Context, sc *scope) (ctrl.Result, error) {
	ms := sc.ms
	if !desired.UsesNodeExternalIP(ms) {
		return result(r.deleteOwned(ctx, ms, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: desired.NodeAddressesConfigMapName(ms), Namespace: ms.Namespace}}))
	}
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return done, fmt.Errorf("list nodes: %w", err)
	}
	return result(applyChild(ctx, r, sc, "ConfigMap", &corev1.ConfigMap{}, desired.NodeAddresses(ms, nodes.Items), extractConfigMap))
}

// deleteOwned deletes a child this MediaService controls, if it exists.
func (r *MediaServiceReconciler) deleteOwned(ctx context.Context, ms *mediav1alpha1.MediaService, obj client.Object) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, ms) {
		return nil
	}
	if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// writeStatus computes status from the cached Deployment and the pods this
// reconcile listed, and writes it only when it changed. undelivered: a
// ready pod does not hold its member list yet (try again soon).
func (r *MediaServiceReconciler) writeStatus(ctx context.Context, ms *mediav1alpha1.MediaService, before *mediav1alpha1.MediaServiceStatus,
	pods []corev1.Pod, reports []podReport, reconcileErr error) (undelivered bool, err error) {
	dep := &appsv1.Deployment{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ms.Namespace, Name: desired.DeploymentName(ms)}, dep); err != nil {
		if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("get deployment: %w", err)
		}
		dep = nil
	}
	gaps, undelivered, err := r.servingGaps(ctx, ms, dep, pods)
	if err != nil {
		return false, err
	}
	computeStatus(ms, dep, pods, gaps, reconcileErr)
	if r.Observer != nil {
		computeObservedStatus(ms, reports)
	}
	if sameStatusAtRest(before, &ms.Status) {
		return undelivered, nil
	}
	r.recordTransitions(ms, before)
	r.recordLeakTransitions(ms, before.LeakingPods)
	r.recordRestartTransitions(ms, before.Pods)
	patchBase := &mediav1alpha1.MediaService{ObjectMeta: ms.ObjectMeta, Status: *before}
	if err := r.Status().Patch(ctx, ms, client.MergeFrom(patchBase)); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("patch status: %w", err)
	}
	return undelivered, nil
}

// sameStatusAtRest says whether a status write would change nothing but
// the pods' goroutine counts, which move with every sample: those are
// refreshed with the next write that has a reason, so a steady fleet costs
// zero writes.
func sameStatusAtRest(before, after *mediav1alpha1.MediaServiceStatus) bool {
	if len(before.Pods) != len(after.Pods) {
		return false
	}
	b, a := before.DeepCopy(), after.DeepCopy()
	for i := range a.Pods {
		a.Pods[i].Goroutines = b.Pods[i].Goroutines
	}
	return equality.Semantic.DeepEqual(b, a)
}

// recordTransitions emits an Event for each condition that changed status.
func (r *MediaServiceReconciler) recordTransitions(ms *mediav1alpha1.MediaService, before *mediav1alpha1.MediaServiceStatus) {
	for _, c := range ms.Status.Conditions {
		if c.Type == mediav1alpha1.ConditionGoroutineLeak {
			continue // per-pod events say more (recordLeakTransitions)
		}
		old := meta.FindStatusCondition(before.Conditions, c.Type)
		if old != nil && old.Status == c.Status && old.Reason == c.Reason {
			continue
		}
		eventType := corev1.EventTypeNormal
		if (c.Type == mediav1alpha1.ConditionDegraded && c.Status == metav1.ConditionTrue) ||
			(c.Type == mediav1alpha1.ConditionAvailable && c.Status == metav1.ConditionFalse && old != nil) {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(ms, nil, eventType, c.Reason, "Status", "%s is %s: %s", c.Type, c.Status, c.Message)
	}
}

// SetupWithManager wires the watches: the MediaService, every child kind,
// the media pods (for Degraded reasons and fleet status) and nodes (for
// NodeExternalIP addresses).
func (r *MediaServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Observer != nil {
		if err := mgr.Add(r.Observer); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(r.Observer.Events, &handler.EnqueueRequestForObject{}))
	}
	ctrlr, err := b.
		For(&mediav1alpha1.MediaService{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToMediaService)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(podToMediaService)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeToMediaServices),
			builder.WithPredicates(nodeAddressesChanged())).
		Named("mediaservice").
		WithOptions(controller.Options{MaxConcurrentReconciles: r.concurrency()}).
		Build(r)
	if err != nil {
		return err
	}
	r.monitoring.ctrl, r.monitoring.cache = ctrlr, mgr.GetCache()
	return nil
}

// podToMediaService maps a media pod (or an EndpointSlice of a media
// Service, which carries the Service's labels) to its MediaService by label.
func podToMediaService(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[desired.LabelMediaService]
	if name == "" {
		name = obj.GetLabels()[desired.LabelTURNGateway] // a gateway pod
	}
	if name == "" || obj.GetLabels()[desired.LabelManagedBy] != desired.ManagedByValue {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// nodeToMediaServices maps a node change to the MediaServices that publish
// node addresses.
func (r *MediaServiceReconciler) nodeToMediaServices(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &mediav1alpha1.MediaServiceList{}
	if err := r.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list mediaservices for node change")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if desired.UsesNodeExternalIP(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// nodeAddressesChanged passes node creations, deletions and address changes.
func nodeAddressesChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return ok1 && ok2 && desired.NodeAddress(o) != desired.NodeAddress(n)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
