package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Real mediaserver processes stand behind Pod objects: each test pod's
// status points at 127.0.0.1 and its "admin" container port at a process.

func freeTCPPort(t *testing.T) int { return mediaproc.FreePort(t) }

// mediaProc is a real mediaserver process (built with the faultinject tag)
// standing behind a Pod object.
type mediaProc struct {
	port, admin int
	token       string // ADMIN_TOKEN, "" for an unauthenticated (loopback) admin port
}

// adminReq is a request to the admin port with the process's token.
func (m mediaProc) adminReq(t *testing.T, method, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, m.adminURL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if m.token != "" {
		req.Header.Set("Authorization", "Bearer "+m.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (m mediaProc) ws() string { return fmt.Sprintf("ws://127.0.0.1:%d/ws", m.port) }
func (m mediaProc) adminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", m.admin, path)
}

// startMediaserver runs a real mediaserver process with a fast leak
// detector and no admin token (its admin port is on loopback, open).
func startMediaserver(t *testing.T) mediaProc { return startMediaserverWithToken(t, "") }

// startMediaserverWithToken runs one with ADMIN_TOKEN set, as the operator
// configures its pods.
func startMediaserverWithToken(t *testing.T, token string) mediaProc {
	t.Helper()
	p := mediaproc.Start(t, mediaproc.Binary(t, mediaproc.Build{Tags: []string{"faultinject"}}), mediaproc.Options{Token: token,
		Env: []string{"SAMPLE_INTERVAL=200ms", "LEAK_BASELINE_WINDOW=1s", "LOG_LEVEL=warn", "DRAIN_TIMEOUT=1s", "MAX_SESSIONS=50"}})
	return mediaProc{port: p.Port, admin: p.AdminPort, token: token}
}

// mediaPod creates a Pod of ms whose status points at a local process.
func mediaPod(t *testing.T, ms *mediav1alpha1.MediaService, name string, adminPort int) *corev1.Pod {
	t.Helper()
	return localPod(t, ms.Namespace, name, desired.CommonLabels(ms), desired.ContainerName, adminPort)
}

// localPod creates a running, ready Pod on 127.0.0.1 whose admin port is
// a local process's.
func localPod(t *testing.T, ns, name string, labels map[string]string, container string, adminPort int) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: container, Image: testImage,
			Ports: []corev1.ContainerPort{{Name: desired.PortNameAdmin, ContainerPort: int32(adminPort), Protocol: corev1.ProtocolTCP}}}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// wsSession joins a room over WebSocket: the server opens a session at once.
func wsSession(t *testing.T, m mediaProc, room string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(m.ws(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WriteJSON(map[string]string{"type": "join", "room": room}); err != nil {
		t.Fatal(err)
	}
	go func() { // keep reading so the server never sees a slow client
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return c
}

func injectLeak(t *testing.T, m mediaProc, query string) {
	t.Helper()
	resp, err := m.adminReq(t, http.MethodPost, "/debug/fault/leak?"+query, ""), error(nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("fault injection: %d %s", resp.StatusCode, body)
	}
}

func msStatus(t *testing.T, ns, name string) mediav1alpha1.MediaServiceStatus {
	t.Helper()
	return getMS(t, ns, name).Status
}

func podStatusOf(st mediav1alpha1.MediaServiceStatus, name string) *mediav1alpha1.PodStatus {
	for i := range st.Pods {
		if st.Pods[i].Name == name {
			return &st.Pods[i]
		}
	}
	return nil
}

// tableRow fetches `kubectl get msvc NAME` as the API server renders it.
func tableRow(t *testing.T, ns, name string) map[string]any {
	t.Helper()
	hc, err := rest.HTTPClientFor(testCfg)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", strings.TrimSuffix(testCfg.Host, "/")+"/apis/media.mediafleet.io/v1alpha1/namespaces/"+ns+"/mediaservices/"+name, nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var table struct {
		ColumnDefinitions []struct{ Name string } `json:"columnDefinitions"`
		Rows              []struct{ Cells []any } `json:"rows"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("table from %s: %v: %s", req.URL, err, truncate(string(raw), 300))
	}
	out := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		out[c.Name] = table.Rows[0].Cells[i]
	}
	return out
}

func TestEnvtestFleetStatusLeaksAndDeletionCost(t *testing.T) {
	requireEnvtest(t)
	runClock(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "fleet")
	ms.Spec.Replicas = ptrTo(int32(2))
	createMS(t, ms)
	a, b := startMediaserver(t), startMediaserver(t)
	podA := mediaPod(t, ms, "fleet-a", a.admin)
	podB := mediaPod(t, ms, "fleet-b", b.admin)
	wsSession(t, a, "room-1")
	wsSession(t, a, "room-2")

	// Sessions appear in status and in `kubectl get`.
	eventually(t, 15*time.Second, "sessions in status", func() error {
		st := msStatus(t, ns, "fleet")
		if st.Sessions == nil || st.Sessions.Active != 2 || st.Sessions.Capacity != 100 || st.Sessions.ReportingPods != 2 {
			return fmt.Errorf("sessions %+v", st.Sessions)
		}
		pa, pb := podStatusOf(st, "fleet-a"), podStatusOf(st, "fleet-b")
		if pa == nil || pb == nil || pa.Sessions != 2 || pb.Sessions != 0 || !pa.Reachable || !pa.Ready || pa.Goroutines == 0 {
			return fmt.Errorf("pods %+v", st.Pods)
		}
		return nil
	})
	row := tableRow(t, ns, "fleet")
	if row["Sessions"] != float64(2) || row["Capacity"] != float64(100) || row["Leak"] != "False" {
		t.Errorf("kubectl get row %v, want Sessions 2, Capacity 100, Leak False", row)
	}

	// Deletion cost follows sessions.
	eventually(t, 10*time.Second, "deletion cost", func() error {
		for pod, want := range map[*corev1.Pod]string{podA: "2", podB: "0"} {
			p := &corev1.Pod{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
				return err
			}
			if got := p.Annotations[annotationDeletionCost]; got != want {
				return fmt.Errorf("pod %s deletion cost %q, want %q", p.Name, got, want)
			}
		}
		return nil
	})
	third := wsSession(t, a, "room-3")
	eventually(t, 10*time.Second, "deletion cost after a third session", func() error {
		p := &corev1.Pod{}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(podA), p)
		if p.Annotations[annotationDeletionCost] != "3" {
			return fmt.Errorf("cost %q", p.Annotations[annotationDeletionCost])
		}
		return nil
	})
	third.Close()

	// A leak in process B: condition, per-pod message and an Event.
	baselineLearnt(t, b)
	injectLeak(t, b, "n=400")
	eventually(t, 20*time.Second, "GoroutineLeak True", conditionIs(ns, "fleet", mediav1alpha1.ConditionGoroutineLeak, metav1.ConditionTrue, ReasonLeakSuspected))
	st := msStatus(t, ns, "fleet")
	if len(st.LeakingPods) != 1 || st.LeakingPods[0] != "fleet-b" {
		t.Errorf("leakingPods %v", st.LeakingPods)
	}
	c := findCond(st.Conditions, mediav1alpha1.ConditionGoroutineLeak)
	if !strings.Contains(c.Message, "pod fleet-b: suspected since") || !strings.Contains(c.Message, "top growth") {
		t.Errorf("condition message %q should name the pod, since when and the growth site", c.Message)
	}
	if row := tableRow(t, ns, "fleet"); row["Leak"] != "True" {
		t.Errorf("Leak column %v", row["Leak"])
	}
	assertEvent(t, ns, "fleet", ReasonLeakStarted, "pod fleet-b: goroutine leak suspected")

	injectLeak(t, b, "release=1")
	eventually(t, 20*time.Second, "GoroutineLeak cleared", conditionIs(ns, "fleet", mediav1alpha1.ConditionGoroutineLeak, metav1.ConditionFalse, ReasonNoLeak))
	assertEvent(t, ns, "fleet", ReasonLeakCleared, "pod fleet-b")

	// An unreachable pod is shown, not dropped.
	mediaPod(t, ms, "fleet-gone", freeTCPPort(t))
	eventually(t, 15*time.Second, "unreachable pod reported", func() error {
		ps := podStatusOf(msStatus(t, ns, "fleet"), "fleet-gone")
		if ps == nil || ps.Reachable || !strings.Contains(ps.Message, "unreachable") {
			return fmt.Errorf("%+v", ps)
		}
		return nil
	})

	// A steady fleet costs zero writes: once settled, a window in which
	// observation passes and reconciles provably ran writes nothing (the
	// pods' goroutine counts move all the time; they are not a reason).
	settle(t, ns, "fleet", 2)
	before, passes := writes.writesIn(ns), testObserver.Passes()
	eventually(t, 10*time.Second, "observation passes in the window", func() error {
		if testObserver.Passes() < passes+3 {
			return fmt.Errorf("%d passes", testObserver.Passes()-passes)
		}
		return nil
	})
	reconcileFully(t, ns, "fleet")
	if n := writes.writesIn(ns) - before; n != 0 {
		t.Errorf("steady fleet made %d writes, want 0", n)
	}
}

func TestEnvtestRestartWhenIdleDeletesOnlyIdleLeakingPod(t *testing.T) {
	requireEnvtest(t)
	runClock(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "heal")
	ms.Spec.Replicas = ptrTo(int32(2))
	ms.Spec.LeakDetection.Remediation = mediav1alpha1.RemediationRestartWhenIdle
	createMS(t, ms)
	busy, idle := startMediaserver(t), startMediaserver(t)
	busyPod := mediaPod(t, ms, "heal-busy", busy.admin)
	idlePod := mediaPod(t, ms, "heal-idle", idle.admin)
	wsSession(t, busy, "keep")
	baselineLearnt(t, busy)
	baselineLearnt(t, idle)
	injectLeak(t, busy, "n=400")
	injectLeak(t, idle, "n=400")
	eventually(t, 20*time.Second, "idle leaking pod deleted", func() error {
		p := &corev1.Pod{}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(idlePod), p)
		if err == nil && p.DeletionTimestamp == nil {
			return errors.New("idle leaking pod still alive")
		}
		return nil
	})
	assertEvent(t, ns, "heal", ReasonRestartedLeaking, "deleted pod heal-idle")
	// Observation passes and whole reconciles after the deletion had every
	// chance to delete the busy pod too.
	passes := testObserver.Passes()
	eventually(t, 10*time.Second, "observation passes", func() error {
		if testObserver.Passes() < passes+2 {
			return fmt.Errorf("%d passes", testObserver.Passes()-passes)
		}
		return nil
	})
	reconcileFully(t, ns, "heal")
	p := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(busyPod), p); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("the busy leaking pod was deleted (err %v): remediation must wait until it is idle", err)
	}
	if st := msStatus(t, ns, "heal"); len(st.LeakingPods) == 0 {
		t.Errorf("the busy pod's leak is no longer reported: %+v", st)
	}
}

func TestEnvtestAutoscalingUpAtOnceDownAfterWindow(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	ms := newMS(ns, "auto")
	ms.Spec.Replicas = ptrTo(int32(1))
	ms.Spec.Autoscaling = &mediav1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 5, TargetSessionsPerPod: 2,
		ScaleDownStabilization: metav1.Duration{Duration: 5 * time.Minute}}
	// The five sessions exist before the pod is observed at all, so the
	// first observation sees all of them (not 4, then 5).
	m := startMediaserver(t)
	var conns []*websocket.Conn
	for i := 0; i < 5; i++ {
		conns = append(conns, wsSession(t, m, "r"+strconv.Itoa(i)))
	}
	eventually(t, 10*time.Second, "five sessions on the media server", func() error {
		if n := readStatus(t, m).Sessions.Active; n != 5 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	createMS(t, ms)
	mediaPod(t, ms, "auto-a", m.admin)
	replicasAre := func(n int32) func() error {
		return func() error {
			if got := *getMS(t, ns, "auto").Spec.Replicas; got != n {
				return fmt.Errorf("replicas %d, want %d", got, n)
			}
			return nil
		}
	}
	eventually(t, 15*time.Second, "scale up to ceil(5/2)=3 at once", replicasAre(3))
	assertEvent(t, ns, "auto", ReasonAutoscaled, "autoscaling: 1 → 3 replicas")
	for _, c := range conns {
		c.Close()
	}
	eventually(t, 10*time.Second, "sessions gone", func() error {
		if st := msStatus(t, ns, "auto"); st.Sessions == nil || st.Sessions.Active != 0 {
			return fmt.Errorf("%+v", st.Sessions)
		}
		return nil
	})
	// Within the window the fleet holds, whatever triggers a reconcile.
	testClock.Step(4 * time.Minute)
	reconcileFully(t, ns, "auto")
	if err := replicasAre(3)(); err != nil {
		t.Fatalf("scaled down inside the stabilization window: %v", err)
	}
	testClock.Step(2 * time.Minute)
	kick(ns, "auto")
	eventually(t, 10*time.Second, "scale down after the window", replicasAre(1))
}

// kick asks for a reconcile the way the observer does.
// baselineLearnt waits until a mediaserver's leak detector has learnt its
// goroutine baseline (a leak injected before that becomes the baseline).
func baselineLearnt(t *testing.T, m mediaProc) {
	t.Helper()
	eventually(t, 20*time.Second, "goroutine baseline learnt", func() error {
		if r := readStatus(t, m); r.Goroutines.Baseline == 0 {
			return errors.New("still learning")
		}
		return nil
	})
}

func kick(ns, name string) {
	obj := &mediav1alpha1.MediaService{}
	obj.Namespace, obj.Name = ns, name
	testObserver.Events <- event.GenericEvent{Object: obj}
}

func readStatus(t *testing.T, m mediaProc) statusapi.Report {
	t.Helper()
	c := statusapi.Client{Token: m.token}
	r, err := c.Report(context.Background(), m.adminURL(""))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEnvtestMembershipDelivered: the operator delivers each MediaService's
// member list to its pods (behind Pod objects here) and bumps the
// generation when the list changes.
func TestEnvtestMembershipDelivered(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "ring")
	ms.Spec.Replicas = ptrTo(int32(2))
	createMS(t, ms)
	a, b := startMediaserver(t), startMediaserver(t)
	mediaPod(t, ms, "ring-a", a.admin)
	podB := mediaPod(t, ms, "ring-b", b.admin)

	var gen int64
	eventually(t, 15*time.Second, "both pods hold a list of two", func() error {
		ra, rb := readStatus(t, a), readStatus(t, b)
		if ra.MembershipSize != 2 || rb.MembershipSize != 2 || ra.MembershipGeneration != rb.MembershipGeneration || ra.MembershipGeneration == 0 {
			return fmt.Errorf("a %d/%d, b %d/%d", ra.MembershipGeneration, ra.MembershipSize, rb.MembershipGeneration, rb.MembershipSize)
		}
		gen = ra.MembershipGeneration
		return nil
	})
	// A pod leaves: the other gets a newer, shorter list.
	if err := k8s.Delete(ctx, podB, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "remaining pod holds a newer list of one", func() error {
		ra := readStatus(t, a)
		if ra.MembershipSize != 1 || ra.MembershipGeneration <= gen {
			return fmt.Errorf("a %d/%d (was %d)", ra.MembershipGeneration, ra.MembershipSize, gen)
		}
		return nil
	})
	// A stale list is refused by the pod itself.
	body := `{"apiVersion":"status.mediafleet.io/v1","generation":1,"members":[{"name":"x","address":"198.18.0.9:8080"}]}`
	req, _ := http.NewRequest("PUT", a.adminURL(statusapi.MembershipPath), strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("stale list answered %d, want 409", resp.StatusCode)
	}
}

// TestEnvtestAvailableMeansServing: a ready pod is not enough. The
// MediaService turns Available only once the pod holds a member list in
// which it is ready and the Service's EndpointSlices list it (the test
// plays the EndpointSlice controller, which envtest does not run).
func TestEnvtestAvailableMeansServing(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "serve")
	ms.Spec.Replicas = ptrTo(int32(1))
	createMS(t, ms)
	eventually(t, waitFor, "deployment", func() error { _, err := getDeployment(ns, "serve"); return err })
	m := startMediaserver(t)
	pod := mediaPod(t, ms, "serve-a", m.admin)
	setDeploymentStatus(t, ns, "serve", 1, 1, 1)

	eventually(t, waitFor, "ready but not serving", conditionIs(ns, "serve", mediav1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonNotServingYet))
	c := meta.FindStatusCondition(getMS(t, ns, "serve").Status.Conditions, mediav1alpha1.ConditionAvailable)
	if !strings.Contains(c.Message, "serve-a: not a ready endpoint of Service serve") {
		t.Errorf("message does not say what is missing: %q", c.Message)
	}
	// The member list reaches the pod without waiting for endpoints, and
	// it marks the pod ready.
	eventually(t, waitFor, "pod holds a list naming it", func() error {
		if r := readStatus(t, m); r.MembershipSize != 1 || r.MembershipGeneration == 0 {
			return fmt.Errorf("membership %d/%d", r.MembershipGeneration, r.MembershipSize)
		}
		return nil
	})

	svc := &corev1.Service{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "serve"}, svc); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{discoveryv1.LabelServiceName: "serve", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}
	for k, v := range svc.Labels { // the EndpointSlice controller copies them
		labels[k] = v
	}
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "serve-abcde", Labels: labels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.18.1.10"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID}}},
	}
	if err := k8s.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "available once listed", conditionIs(ns, "serve", mediav1alpha1.ConditionAvailable, metav1.ConditionTrue, ReasonMinimumReplicasReady))
}

// adminToken waits for the operator to make a MediaService's admin token
// Secret and returns the token.
func adminToken(t *testing.T, ns, name string) (string, *corev1.Secret) {
	t.Helper()
	sec := &corev1.Secret{}
	eventually(t, waitFor, "admin token Secret", func() error {
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name + "-admin-token"}, sec); err != nil {
			return err
		}
		if len(sec.Data["token"]) != 64 {
			return fmt.Errorf("token of %d bytes", len(sec.Data["token"]))
		}
		return nil
	})
	return string(sec.Data["token"]), sec
}

// TestEnvtestAdminTokenAndWedgedMembership: the operator makes one random
// admin token per MediaService in a Secret it owns, gives it to the pods
// by reference, and reads /status and delivers member lists with it. A pod
// refuses all of that without the token. A generation pushed ahead of the
// operator's (by anyone holding the token) is overtaken within an
// observation pass, and one too far in the future is refused by the pod.
func TestEnvtestAdminTokenAndWedgedMembership(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "guard")
	ms.Spec.Replicas = ptrTo(int32(1))
	createMS(t, ms)
	token, sec := adminToken(t, ns, "guard")
	if !metav1.IsControlledBy(sec, getMS(t, ns, "guard")) || sec.Labels[desired.LabelManagedBy] != desired.ManagedByValue {
		t.Errorf("admin token Secret not owned by the MediaService: %+v %v", sec.OwnerReferences, sec.Labels)
	}
	eventually(t, waitFor, "pods get the token by reference and its hash", func() error {
		d, err := getDeployment(ns, "guard")
		if err != nil {
			return err
		}
		if d.Spec.Template.Annotations[desired.AnnotationAdminTokenHash] != tokenHash(token) {
			return fmt.Errorf("annotations %v", d.Spec.Template.Annotations)
		}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "ADMIN_TOKEN" {
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "guard-admin-token" {
					return fmt.Errorf("ADMIN_TOKEN %+v", e)
				}
				return nil
			}
		}
		return errors.New("no ADMIN_TOKEN")
	})

	m := startMediaserverWithToken(t, token)
	mediaPod(t, ms, "guard-a", m.admin)
	eventually(t, waitFor, "operator reads /status and delivers a list with the token", func() error {
		if r := readStatus(t, m); r.MembershipGeneration == 0 || r.MembershipSize != 1 {
			return fmt.Errorf("membership %d/%d", r.MembershipGeneration, r.MembershipSize)
		}
		if st := msStatus(t, ns, "guard"); st.Sessions == nil || st.Sessions.ReportingPods != 1 {
			return fmt.Errorf("status %+v", st.Sessions)
		}
		return nil
	})
	// Without the token: 401 for everything but the probes and metrics.
	anon := mediaProc{admin: m.admin}
	for _, c := range []struct{ method, path, body string }{
		{"GET", statusapi.Path, ""}, {"PUT", statusapi.MembershipPath, "{}"}, {"GET", "/rooms/x", ""},
		{"GET", "/debug/pprof/cmdline", ""}, {"GET", "/debug/pprof/goroutine?debug=2", ""},
	} {
		resp := anon.adminReq(t, c.method, c.path, c.body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without the token: %s", c.method, c.path, resp.Status)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp := anon.adminReq(t, "GET", path, "")
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the token: %s", path, resp.Status)
		}
	}

	// Wedge attempts.
	put := func(gen int64) int {
		body := fmt.Sprintf(`{"apiVersion":%q,"generation":%d,"members":[{"name":"x","address":"198.18.0.9:8080"}]}`, statusapi.APIVersion, gen)
		resp := m.adminReq(t, "PUT", statusapi.MembershipPath, body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(math.MaxInt64); code != http.StatusBadRequest {
		t.Errorf("generation 2^63-1 answered %d, want 400", code)
	}
	wedged := time.Now().Add(23 * time.Hour).UnixNano()
	if code := put(wedged); code != http.StatusNoContent {
		t.Fatalf("a list 23h ahead answered %d", code)
	}
	eventually(t, 15*time.Second, "the operator's list overtakes the wedged one", func() error {
		r := readStatus(t, m)
		if r.MembershipGeneration <= wedged || r.MembershipSize != 1 {
			return fmt.Errorf("pod holds %d/%d (wedged at %d)", r.MembershipGeneration, r.MembershipSize, wedged)
		}
		return nil
	})
	_ = ctx
}
