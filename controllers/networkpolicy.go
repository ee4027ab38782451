package controllers

import (
	"context"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mediafleet/mediafleet/controllers/desired"
)

func (r *MediaServiceReconciler) reconcileNetworkPolicy(ctx context.Context, sc *scope) (ctrl.Result, error) {
	ms := sc.ms
	if !desired.NetworkPolicyEnabled(ms) {
		return result(r.deleteOwned(ctx, ms, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: desired.NetworkPolicyName(ms), Namespace: ms.Namespace}}))
	}
	return result(applyChild(ctx, r, sc, "NetworkPolicy", &networkingv1.NetworkPolicy{}, desired.NetworkPolicy(ms, r.Options.builders()), extractNetworkPolicy))
}

func extractNetworkPolicy(o *networkingv1.NetworkPolicy) (runtime.ApplyConfiguration, error) {
	return networkingv1ac.ExtractNetworkPolicy(o, FieldOwner)
}
