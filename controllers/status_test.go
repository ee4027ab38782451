package controllers

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// defaulted returns a MediaService with what status and fleet
// computations read (the builders' tests in package desired use a fully
// defaulted one).
func defaulted(mut func(*mediav1alpha1.MediaService)) *mediav1alpha1.MediaService {
	ms := &mediav1alpha1.MediaService{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "media", UID: "uid-1"},
		Spec: mediav1alpha1.MediaServiceSpec{Replicas: ptrTo(int32(2)),
			Limits:        mediav1alpha1.LimitsSpec{MaxSessionsPerPod: 500},
			LeakDetection: mediav1alpha1.LeakDetectionSpec{ThresholdRatio: 3}},
	}
	if mut != nil {
		mut(ms)
	}
	return ms
}

func TestComputeStatus(t *testing.T) {
	ms := defaulted(func(ms *mediav1alpha1.MediaService) { ms.Spec.Replicas = ptrTo(int32(3)); ms.Generation = 4 })
	cases := []struct {
		name                       string
		dep                        *appsv1.Deployment
		avail, progressing, degrad metav1.ConditionStatus
	}{
		{"no deployment", nil, metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse},
		{"one of three ready", &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 1, UpdatedReplicas: 3, AvailableReplicas: 1}},
			metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse},
		{"all ready", &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}},
			metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionFalse},
		{"replica failure", &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Message: "pods forbidden"}}}},
			metav1.ConditionTrue, metav1.ConditionTrue, metav1.ConditionTrue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := ms.DeepCopy()
			computeStatus(m, tc.dep, nil, nil, nil)
			for typ, want := range map[string]metav1.ConditionStatus{mediav1alpha1.ConditionAvailable: tc.avail,
				mediav1alpha1.ConditionProgressing: tc.progressing, mediav1alpha1.ConditionDegraded: tc.degrad} {
				if c := findCond(m.Status.Conditions, typ); c == nil || c.Status != want {
					t.Errorf("%s = %+v, want %s", typ, c, want)
				}
			}
			if m.Status.ObservedGeneration != 4 || m.Status.Selector != "app.kubernetes.io/instance=demo,app.kubernetes.io/name=mediaserver" {
				t.Errorf("status %+v", m.Status)
			}
		})
	}
}

// TestAvailableMeansServing: enough ready pods are not enough to become
// Available while a ready pod is missing from the Service's endpoints or
// its member list; once Available, a new pod's short gap (a scale-up) does
// not flip it back.
func TestAvailableMeansServing(t *testing.T) {
	ms := defaulted(func(ms *mediav1alpha1.MediaService) { ms.Spec.Replicas = ptrTo(int32(2)) })
	dep := &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}}
	gaps := []string{"pod demo-a: not a ready endpoint of Service demo yet"}

	computeStatus(ms, dep, nil, gaps, nil)
	c := findCond(ms.Status.Conditions, mediav1alpha1.ConditionAvailable)
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonNotServingYet || !strings.Contains(c.Message, "demo-a") {
		t.Fatalf("with a gap: %+v", c)
	}
	computeStatus(ms, dep, nil, nil, nil)
	if c := findCond(ms.Status.Conditions, mediav1alpha1.ConditionAvailable); c.Status != metav1.ConditionTrue || c.Reason != ReasonMinimumReplicasReady {
		t.Fatalf("without gaps: %+v", c)
	}
	computeStatus(ms, dep, nil, gaps, nil)
	if c := findCond(ms.Status.Conditions, mediav1alpha1.ConditionAvailable); c.Status != metav1.ConditionTrue {
		t.Fatalf("a gap after Available flipped it: %+v", c)
	}
	// Not enough ready pods: the gap check does not matter.
	computeStatus(ms, &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 2}}, nil, nil, nil)
	if c := findCond(ms.Status.Conditions, mediav1alpha1.ConditionAvailable); c.Status != metav1.ConditionFalse || c.Reason != ReasonNotEnoughReady {
		t.Fatalf("nothing ready: %+v", c)
	}
}

func TestReadyEndpointPods(t *testing.T) {
	f, tr := false, true
	slices := []discoveryv1.EndpointSlice{{Endpoints: []discoveryv1.Endpoint{
		{TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "a"}, Conditions: discoveryv1.EndpointConditions{Ready: &tr}},
		{TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "b"}, Conditions: discoveryv1.EndpointConditions{Ready: &f}},
		{TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "c"}}, // nil means ready
		{Addresses: []string{"198.18.1.9"}}, // no pod
	}}}
	got := readyEndpointPods(slices)
	if !got["a"] || got["b"] || !got["c"] || len(got) != 2 {
		t.Fatalf("ready endpoint pods %v", got)
	}
}

func findCond(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func TestSameStatusAtRest(t *testing.T) {
	base := mediav1alpha1.MediaServiceStatus{ReadyReplicas: 2, Pods: []mediav1alpha1.PodStatus{
		{Name: "a", Reachable: true, Sessions: 3, Goroutines: 120}, {Name: "b", Reachable: true, Goroutines: 80}}}
	moved := *base.DeepCopy()
	moved.Pods[0].Goroutines, moved.Pods[1].Goroutines = 131, 77
	if !sameStatusAtRest(&base, &moved) {
		t.Error("goroutine counts alone made a write")
	}
	for name, mut := range map[string]func(*mediav1alpha1.MediaServiceStatus){
		"sessions":  func(s *mediav1alpha1.MediaServiceStatus) { s.Pods[0].Sessions = 4 },
		"readiness": func(s *mediav1alpha1.MediaServiceStatus) { s.ReadyReplicas = 1 },
		"a new pod": func(s *mediav1alpha1.MediaServiceStatus) { s.Pods = append(s.Pods, mediav1alpha1.PodStatus{Name: "c"}) },
	} {
		changed := *moved.DeepCopy()
		mut(&changed)
		if sameStatusAtRest(&base, &changed) {
			t.Errorf("a change of %s was not written", name)
		}
	}
	if base.Pods[0].Goroutines != 120 {
		t.Error("the comparison changed its input")
	}
}
