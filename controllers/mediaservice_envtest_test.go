package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
)

const waitFor = 20 * time.Second

func newMS(ns, name string) *mediav1alpha1.MediaService {
	return &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func createMS(t *testing.T, ms *mediav1alpha1.MediaService) *mediav1alpha1.MediaService {
	t.Helper()
	if err := k8s.Create(context.Background(), ms); err != nil {
		t.Fatalf("create mediaservice: %v", err)
	}
	return ms
}

func getDeployment(ns, name string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	return d, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, d)
}

func envOf(d *appsv1.Deployment) map[string]string {
	out := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			out[e.Name] = e.Value
		} else {
			out[e.Name] = "<ref>"
		}
	}
	return out
}

func getMS(t *testing.T, ns, name string) *mediav1alpha1.MediaService {
	t.Helper()
	ms := &mediav1alpha1.MediaService{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, ms); err != nil {
		t.Fatalf("get mediaservice: %v", err)
	}
	return ms
}

func TestEnvtestCreateBuildsEveryChild(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := createMS(t, newMS(ns, "fleet"))

	// Defaults come from the schema.
	got := getMS(t, ns, "fleet")
	if *got.Spec.Replicas != 1 || got.Spec.Signaling.Port != 8080 || got.Spec.AdminPort != 9090 ||
		got.Spec.Limits.MaxSessionsPerPod != 500 || got.Spec.Limits.MaxICECandidatesPerSession != 50 ||
		got.Spec.Limits.DrainTimeout.Duration != 30*time.Second || got.Spec.ICE.UDPMuxPort == nil ||
		got.Spec.LeakDetection.ThresholdRatio != 3 || got.Spec.LeakDetection.Remediation != mediav1alpha1.RemediationNone {
		t.Fatalf("defaults not applied: %+v", got.Spec)
	}

	var dep *appsv1.Deployment
	eventually(t, waitFor, "deployment", func() error {
		var err error
		dep, err = getDeployment(ns, "fleet")
		return err
	})
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != testImage {
		t.Errorf("image = %q, want the operator default %q", img, testImage)
	}
	env := envOf(dep)
	for k, want := range map[string]string{"PORT": "8080", "ADMIN_PORT": "9090", "ICE_UDP_MUX_PORT": "50000", "MAX_SESSIONS": "500", "DRAIN_TIMEOUT": "30s"} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	// The first Deployment already carries the admin token's hash: no
	// second revision rolling the brand-new pods.
	if dep.Spec.Template.Annotations[desired.AnnotationAdminTokenHash] == "" || dep.Generation != 1 {
		t.Errorf("first Deployment: generation %d, token hash %q; want generation 1 with the hash", dep.Generation, dep.Spec.Template.Annotations[desired.AnnotationAdminTokenHash])
	}
	if gp := *dep.Spec.Template.Spec.TerminationGracePeriodSeconds; gp != 40 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 40 (30s drain + 10s)", gp)
	}

	for _, obj := range []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "fleet-pods"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "fleet-media"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}},
		dep,
	} {
		key := types.NamespacedName{Namespace: ns, Name: obj.GetName()}
		eventually(t, waitFor, fmt.Sprintf("%T %s", obj, key.Name), func() error { return k8s.Get(ctx, key, obj) })
		ref := metav1.GetControllerOf(obj)
		if ref == nil || ref.UID != ms.UID || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
			t.Errorf("%T %s: controller reference = %+v, want the MediaService", obj, key.Name, ref)
		}
	}
	svc := &corev1.Service{}
	_ = k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fleet"}, svc)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 {
		t.Errorf("signalling Service ports = %+v, want only 8080 (admin port never public)", svc.Spec.Ports)
	}

	// Status: selector for the scale subresource, conditions, generation.
	eventually(t, waitFor, "status", func() error {
		st := getMS(t, ns, "fleet").Status
		if st.ObservedGeneration != got.Generation || st.Selector == "" ||
			meta.FindStatusCondition(st.Conditions, mediav1alpha1.ConditionAvailable) == nil {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	assertEvent(t, ns, "fleet", ReasonCreated, "Created Deployment fleet")
}

func TestEnvtestSpecChangeRollsDeployment(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	createMS(t, newMS(ns, "roll"))
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "roll"); return err })

	eventually(t, waitFor, "spec update", func() error { // status writes race with us
		ms := getMS(t, ns, "roll")
		ms.Spec.ICE.STUNServers = []string{"stun:stun.example.test:3478"}
		ms.Spec.Limits.DrainTimeout = metav1.Duration{Duration: time.Minute}
		return k8s.Update(ctx, ms)
	})
	eventually(t, waitFor, "rolled template", func() error {
		d, err := getDeployment(ns, "roll")
		if err != nil {
			return err
		}
		if envOf(d)["STUN_SERVERS"] != "stun:stun.example.test:3478" || *d.Spec.Template.Spec.TerminationGracePeriodSeconds != 70 {
			return fmt.Errorf("template not updated: %v", envOf(d))
		}
		return nil
	})
}

func TestEnvtestScaleSubresource(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := createMS(t, newMS(ns, "scaled"))
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "scaled"); return err })

	scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
	if err := k8s.SubResource("scale").Update(ctx, ms, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	eventually(t, waitFor, "deployment scaled to 3", func() error {
		d, err := getDeployment(ns, "scaled")
		if err != nil {
			return err
		}
		if *d.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	got := &autoscalingv1.Scale{}
	eventually(t, waitFor, "scale selector", func() error {
		if err := k8s.SubResource("scale").Get(ctx, ms, got); err != nil {
			return err
		}
		if got.Spec.Replicas != 3 || !strings.Contains(got.Status.Selector, "app.kubernetes.io/instance=scaled") {
			return fmt.Errorf("scale %+v", got)
		}
		return nil
	})
}

func TestEnvtestDriftIsCorrected(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	createMS(t, newMS(ns, "drift"))
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "drift"); return err })

	// Someone edits a field we own with another manager (again on a
	// conflict: the operator may still be writing the Deployment it just
	// made, the admin token's hash for one).
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := getDeployment(ns, "drift")
		if err != nil {
			return err
		}
		d.Spec.Replicas = ptrTo(int32(7))
		d.Spec.Template.Spec.Containers[0].Image = "evil/image:1"
		return k8s.Update(ctx, d, client.FieldOwner("kubectl-edit"))
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "deployment drift corrected", func() error {
		d, err := getDeployment(ns, "drift")
		if err != nil {
			return err
		}
		if *d.Spec.Replicas != 1 || d.Spec.Template.Spec.Containers[0].Image != testImage {
			return fmt.Errorf("replicas %d image %s", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image)
		}
		return nil
	})

	// A deleted child comes back.
	for _, obj := range []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift-media"}},
	} {
		old := obj.DeepCopyObject().(client.Object)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), old); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitFor, fmt.Sprintf("%T recreated", obj), func() error {
			fresh := obj.DeepCopyObject().(client.Object)
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), fresh); err != nil {
				return err
			}
			if fresh.GetUID() == old.GetUID() {
				return fmt.Errorf("still the old object")
			}
			return nil
		})
	}
}

func TestEnvtestDeletionGarbageCollectsChildren(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := createMS(t, newMS(ns, "gone"))
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "gone"); return err })
	eventually(t, waitFor, "pdb", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gone"}, &policyv1.PodDisruptionBudget{})
	})

	if err := k8s.Delete(ctx, ms, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		t.Fatal(err)
	}
	// The real garbage collector (kube-controller-manager) removes them.
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}} {
		eventually(t, 90*time.Second, fmt.Sprintf("%T deleted", obj), func() error {
			err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gone"}, obj)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (err=%v)", err)
		})
	}
	eventually(t, 90*time.Second, "mediaservice gone", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gone"}, &mediav1alpha1.MediaService{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (err=%v)", err)
	})
}

// setDeploymentStatus plays the Deployment controller, which envtest does
// not run.
func setDeploymentStatus(t *testing.T, ns, name string, replicas, ready, updated int32, conds ...appsv1.DeploymentCondition) {
	t.Helper()
	eventually(t, waitFor, "deployment status update", func() error {
		d, err := getDeployment(ns, name)
		if err != nil {
			return err
		}
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation, Replicas: replicas, ReadyReplicas: ready,
			AvailableReplicas: ready, UpdatedReplicas: updated, Conditions: conds,
		}
		return k8s.Status().Update(context.Background(), d)
	})
}

func conditionIs(ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		ms := &mediav1alpha1.MediaService{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, ms); err != nil {
			return err
		}
		c := meta.FindStatusCondition(ms.Status.Conditions, typ)
		if c == nil || c.Status != status || (reason != "" && c.Reason != reason) {
			return fmt.Errorf("%s = %+v", typ, c)
		}
		return nil
	}
}

func TestEnvtestStatusConditions(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "cond")
	ms.Spec.Replicas = ptrTo(int32(3))
	createMS(t, ms)
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "cond"); return err })

	// Rolling out: nothing ready yet.
	setDeploymentStatus(t, ns, "cond", 1, 0, 1)
	eventually(t, waitFor, "not available", conditionIs(ns, "cond", mediav1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonNotEnoughReady))
	eventually(t, waitFor, "progressing", conditionIs(ns, "cond", mediav1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut))

	// Two of three ready: available (one may be disrupted), still progressing.
	setDeploymentStatus(t, ns, "cond", 3, 2, 3)
	eventually(t, waitFor, "available", conditionIs(ns, "cond", mediav1alpha1.ConditionAvailable, metav1.ConditionTrue, ReasonMinimumReplicasReady))

	// All ready: rollout complete, counts in status.
	setDeploymentStatus(t, ns, "cond", 3, 3, 3)
	eventually(t, waitFor, "complete", conditionIs(ns, "cond", mediav1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete))
	st := getMS(t, ns, "cond").Status
	if st.Replicas != 3 || st.ReadyReplicas != 3 || st.UpdatedReplicas != 3 {
		t.Errorf("status counts = %+v", st)
	}
	eventually(t, waitFor, "not degraded", conditionIs(ns, "cond", mediav1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected))

	// A crash-looping media pod degrades the MediaService, with its reason.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cond-abc", Labels: desired.CommonLabels(getMS(t, ns, "cond"))},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "mediaserver", Image: testImage}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "mediaserver", Image: testImage,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}},
	}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "degraded", conditionIs(ns, "cond", mediav1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonPodsFailing))
	c := meta.FindStatusCondition(getMS(t, ns, "cond").Status.Conditions, mediav1alpha1.ConditionDegraded)
	if !strings.Contains(c.Message, "cond-abc: CrashLoopBackOff") {
		t.Errorf("degraded message %q does not name the pod and reason", c.Message)
	}
	assertEvent(t, ns, "cond", ReasonPodsFailing, "Degraded is True")

	if err := k8s.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "recovered", conditionIs(ns, "cond", mediav1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected))

	// A stuck rollout.
	setDeploymentStatus(t, ns, "cond", 3, 3, 3, appsv1.DeploymentCondition{
		Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
		Message: `ReplicaSet "cond-1" has timed out progressing.`,
	})
	eventually(t, waitFor, "deadline exceeded", conditionIs(ns, "cond", mediav1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonDeadlineExceeded))
}

func TestEnvtestNoOpReconcileWritesNothing(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "steady")
	ms.Spec.Replicas = ptrTo(int32(2))
	ms.Spec.Signaling.AllowedOrigins = []string{"https://app.example.test"}
	ms.Spec.ICE = mediav1alpha1.ICESpec{PortRange: &mediav1alpha1.PortRange{Min: 40000, Max: 40999}, HostNetwork: true,
		STUNServers: []string{"stun:stun.example.test:3478"}, PublicAddress: &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressNodeInternalIP}}
	ms.Spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: mustQ("500m"), corev1.ResourceMemory: mustQ("256Mi")}}
	ms.Spec.PodTemplate.Tolerations = []corev1.Toleration{{Key: "media", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	createMS(t, ms)
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "steady"); return err })
	setDeploymentStatus(t, ns, "steady", 2, 2, 2)
	eventually(t, waitFor, "available", conditionIs(ns, "steady", mediav1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))
	settle(t, ns, "steady", 0)

	before := writes.writesIn(ns)
	reconcilesBefore := reconciles.Load()
	// Nudge the reconciler through a child: a foreign label on the
	// Deployment is not ours to judge and must not cause a write.
	d, _ := getDeployment(ns, "steady")
	d.Labels["team"] = "media"
	if err := k8s.Update(ctx, d, client.FieldOwner("someone-else")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "a reconcile ran", func() error {
		if reconciles.Load() <= reconcilesBefore {
			return fmt.Errorf("no reconcile yet")
		}
		return nil
	})
	reconcileFully(t, ns, "steady")
	if n := writes.writesIn(ns) - before; n != 0 {
		t.Fatalf("steady reconcile made %d writes, want 0", n)
	}
}

func mustQ(s string) resourceQuantity { return parseQuantity(s) }

func assertEvent(t *testing.T, ns, regarding, reason, noteContains string) {
	t.Helper()
	eventually(t, waitFor, "event "+reason, func() error {
		list := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == regarding && e.Reason == reason && strings.Contains(e.Note, noteContains) {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return fmt.Errorf("not found among %q", seen)
	})
}

// TestEnvtestNetworkPolicy: the real API server accepts the generated
// NetworkPolicy (on by default, owned by the MediaService); switching it
// off removes it, and a deleted one comes back.
func TestEnvtestNetworkPolicy(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "fenced")
	createMS(t, ms)
	np := &networkingv1.NetworkPolicy{}
	key := types.NamespacedName{Namespace: ns, Name: "fenced"}
	eventually(t, waitFor, "NetworkPolicy", func() error { return k8s.Get(ctx, key, np) })
	if !metav1.IsControlledBy(np, getMS(t, ns, "fenced")) || len(np.Spec.Ingress) != 2 || np.Spec.Ingress[1].Ports[0].Port.IntValue() != 9090 {
		t.Fatalf("NetworkPolicy %+v", np)
	}
	uid := np.UID
	if err := k8s.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "NetworkPolicy recreated", func() error {
		if err := k8s.Get(ctx, key, np); err != nil {
			return err
		}
		if np.UID == uid {
			return errors.New("still the deleted one")
		}
		return nil
	})
	cur := getMS(t, ns, "fenced")
	cur.Spec.NetworkPolicy.Enabled = ptrTo(false)
	if err := k8s.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "NetworkPolicy removed when disabled", func() error {
		if err := k8s.Get(ctx, key, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// TestEnvtestStateIsPrunedWhenMediaServicesGo (hostile review item 12):
// what the reconciler remembers per MediaService and per pod (the
// autoscaler's history, deletion-cost timestamps) goes with them: 100
// MediaServices made and deleted leave nothing behind.
func TestEnvtestStateIsPrunedWhenMediaServicesGo(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	const n = 100
	var made []*mediav1alpha1.MediaService
	for i := 0; i < n; i++ {
		ms := newMS(ns, fmt.Sprintf("churn-%03d", i))
		if i%2 == 0 {
			ms.Spec.Autoscaling = &mediav1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetSessionsPerPod: 10}
		}
		createMS(t, ms)
		made = append(made, ms)
	}
	eventually(t, 90*time.Second, "state held for the MediaServices", func() error {
		if got := testReconciler.heldIn(ns); got < n {
			return fmt.Errorf("state for %d MediaServices", got)
		}
		return nil
	})
	for _, ms := range made {
		if err := k8s.Delete(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 90*time.Second, "state pruned", func() error {
		if got := testReconciler.heldIn(ns); got != 0 {
			return fmt.Errorf("state still held for %d MediaServices", got)
		}
		return nil
	})
}
