//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// 1. The operator runs in-cluster: its own pod and ServiceAccount, the
// generated RBAC, leadership held, Ready.
func TestOperatorRunsInCluster(t *testing.T) {
	phase(t)
	var dep appsv1.Deployment
	eventually(t, 3*time.Minute, "operator Deployment available", func() (bool, string) {
		if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, &dep); err != nil {
			return false, err.Error()
		}
		return dep.Status.AvailableReplicas == 1 && dep.Status.ReadyReplicas == 1, fmt.Sprintf("%+v", dep.Status)
	})
	var pods corev1.PodList
	if err := kc.List(ctxFor(t, 10*time.Second), &pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil && podReady(&pods.Items[i]) {
			pod = &pods.Items[i]
		}
	}
	if pod == nil {
		t.Fatalf("no ready operator pod among %d", len(pods.Items))
	}
	if pod.Spec.ServiceAccountName != operatorDeployment || pod.Spec.NodeName == "" || pod.Spec.HostNetwork {
		t.Errorf("operator pod %s: serviceAccount %q node %q hostNetwork %v", pod.Name, pod.Spec.ServiceAccountName, pod.Spec.NodeName, pod.Spec.HostNetwork)
	}
	if img := pod.Spec.Containers[0].Image; !strings.HasPrefix(img, "mediafleet/manager:") {
		t.Errorf("operator image %s", img)
	}
	// The generated ClusterRole is bound to the operator's ServiceAccount.
	var crb rbacv1.ClusterRoleBinding
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Name: "mediafleet-manager-rolebinding"}, &crb); err != nil {
		t.Fatal(err)
	}
	if crb.RoleRef.Name != "mediafleet-manager-role" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != operatorDeployment || crb.Subjects[0].Namespace != operatorNamespace {
		t.Errorf("binding %+v %+v", crb.RoleRef, crb.Subjects)
	}
	var role rbacv1.ClusterRole
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Name: "mediafleet-manager-role"}, &role); err != nil || len(role.Rules) == 0 {
		t.Fatalf("generated ClusterRole: %v (%d rules)", err, len(role.Rules))
	}
	// Leader election (--leader-elect) is held by this pod.
	eventually(t, time.Minute, "leader lease held by the operator pod", func() (bool, string) {
		var leases coordinationv1.LeaseList
		if err := kc.List(ctxFor(t, 10*time.Second), &leases, client.InNamespace(operatorNamespace)); err != nil {
			return false, err.Error()
		}
		var holders []string
		for _, l := range leases.Items {
			h := ptr.Deref(l.Spec.HolderIdentity, "")
			holders = append(holders, h)
			if strings.HasPrefix(h, pod.Name) {
				return true, ""
			}
		}
		return false, fmt.Sprint(holders)
	})
}

// 2. A pod-network MediaService on the UDP mux becomes Available with two
// replicas, shows in `kubectl get msvc`, and scales with `kubectl scale`.
func TestPodNetworkScale(t *testing.T) {
	phase(t)
	createMS(t, "mux", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](2)})
	waitAvailable(t, "mux", 2, 3*time.Minute)
	waitRow(t, "mux", map[string]string{"DESIRED": "2", "READY": "2", "AVAILABLE": "True", "SESSIONS": "0"})
	pods := mediaPods(t, "mux")
	for _, p := range pods {
		if p.Spec.HostNetwork || !strings.HasPrefix(p.Status.PodIP, "198.18.1.") {
			t.Errorf("pod %s: hostNetwork %v IP %s", p.Name, p.Spec.HostNetwork, p.Status.PodIP)
		}
		c := p.Spec.Containers[0]
		if c.Image != "mediafleet/mediaserver:dev" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ICE_UDP_MUX_PORT" && e.Value == "50000" }) {
			t.Errorf("pod %s: image %s env %v", p.Name, c.Image, c.Env)
		}
	}
	// The release image has no fault-injection hook.
	if code, _, err := adminDo(&pods[0], 9090, http.MethodPost, "/debug/fault/leak?n=1", adminToken(t, &pods[0])); err != nil || code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Errorf("fault hook on the release image: %d %v", code, err)
	}
	// The operator-made pods guard their admin port: without the token,
	// 401 for all but the probes and /metrics (the operator itself reads
	// fleet status and delivers member lists with the token: the status
	// row above shows it works).
	for _, path := range []string{"/status", "/rooms/x", "/debug/pprof/cmdline"} {
		if code, _, err := adminDo(&pods[0], 9090, http.MethodGet, path, ""); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET %s without the admin token: %d %v, want 401", path, code, err)
		}
	}
	if code, _, err := adminDo(&pods[0], 9090, http.MethodPut, "/membership", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("PUT /membership without the admin token: %d %v, want 401", code, err)
	}
	if code, _, err := adminDo(&pods[0], 9090, http.MethodGet, "/metrics", ""); err != nil || code != http.StatusOK {
		t.Errorf("GET /metrics without a token: %d %v", code, err)
	}

	kubectl(t, "-n", ns, "scale", "msvc", "mux", "--replicas", "3")
	waitAvailable(t, "mux", 3, 3*time.Minute)
	waitRow(t, "mux", map[string]string{"DESIRED": "3", "READY": "3"})
	kubectl(t, "-n", ns, "scale", "msvc", "mux", "--replicas", "2")
	waitAvailable(t, "mux", 2, 3*time.Minute)
	waitRow(t, "mux", map[string]string{"DESIRED": "2", "READY": "2"})
}

// 3. hostNetwork + ICE port range: WHIP in and WHEP out through the node
// address; every server candidate and the selected pair use the range.
func TestHostNetworkPortRange(t *testing.T) {
	phase(t)
	checkLeaks(t)
	// Every port is chosen free on the node at run time: a hostNetwork pod
	// binds the node's address, shared with whatever else runs here.
	minPort, maxPort := freeHostUDPRange(t, nodeIP, 32)
	sigPort, adminPort := freeHostTCPPort(t, nodeIP), freeHostTCPPort(t, nodeIP)
	for adminPort == sigPort {
		adminPort = freeHostTCPPort(t, nodeIP)
	}
	createMS(t, "host", mediav1alpha1.MediaServiceSpec{
		Replicas:  ptr.To[int32](1),
		Signaling: mediav1alpha1.SignalingSpec{Port: int32(sigPort)},
		Limits:    mediav1alpha1.LimitsSpec{MaxSessionsPerPod: 30}, // one port per session
		AdminPort: int32(adminPort),
		ICE: mediav1alpha1.ICESpec{
			HostNetwork:   true,
			PortRange:     &mediav1alpha1.PortRange{Min: int32(minPort), Max: int32(maxPort)},
			PublicAddress: &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressNodeInternalIP},
		},
	})
	t.Cleanup(func() { deleteMS(t, "host") })
	waitAvailable(t, "host", 1, 3*time.Minute)
	pod := mediaPods(t, "host")[0]
	if !pod.Spec.HostNetwork || pod.Status.PodIP != nodeIP {
		t.Fatalf("pod %s: hostNetwork %v IP %s", pod.Name, pod.Spec.HostNetwork, pod.Status.PodIP)
	}

	base := fmt.Sprintf("http://%s:%d", nodeIP, sigPort)
	ctx := ctxFor(t, time.Minute)
	pub, err := mfclient.Publish(ctx, base, "host-room", clientOpts())
	if err != nil {
		t.Fatalf("WHIP publish to %s: %v", base, err)
	}
	defer pub.Close()
	if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 600)
	view, err := mfclient.Play(ctx, base, "host-room", clientOpts())
	if err != nil {
		t.Fatalf("WHEP play: %v", err)
	}
	defer view.Close()
	if err := mfclient.WaitConnected(ctx, view.PC); err != nil {
		t.Fatal(err)
	}
	waitPackets(t, "WHEP viewer", &view.Received, 200, 30*time.Second)

	for _, s := range []*mfclient.Session{pub, view} {
		cands := candidates(s.Answer)
		if len(cands) == 0 {
			t.Fatalf("no candidates in the answer:\n%s", s.Answer)
		}
		for _, c := range cands {
			if c.ip != nodeIP || int(c.port) < minPort || int(c.port) > maxPort {
				t.Errorf("server candidate %s:%d outside %s:%d-%d", c.ip, c.port, nodeIP, minPort, maxPort)
			}
		}
		pair, err := s.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("selected pair: %v", err)
		}
		if pair.Remote.Address != nodeIP || int(pair.Remote.Port) < minPort || int(pair.Remote.Port) > maxPort {
			t.Errorf("media flows to %s:%d, not the node's port range", pair.Remote.Address, pair.Remote.Port)
		}
	}
	t.Logf("viewer received %d packets; publisher sent %d", view.Received.Packets.Load(), pub.Sent.Load())
}

type candidate struct {
	ip   string
	port uint16
}

// candidates parses the a=candidate lines of an SDP.
func candidates(sdp string) []candidate {
	var out []candidate
	for _, l := range strings.Split(sdp, "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "a="))
		if len(f) < 6 || !strings.HasPrefix(f[0], "candidate:") {
			continue
		}
		port, _ := strconv.Atoi(f[5])
		out = append(out, candidate{ip: f[4], port: uint16(port)})
	}
	return out
}

// 4 + 5 + fleet-wide rooms: three replicas behind one signalling Service
// reached at its ClusterIP from the host (kube-proxy). A WHIP publisher,
// WHEP viewers and a WebSocket room land on whichever pods kube-proxy picks;
// each room meets on one pod and everyone gets media. The sessions show in
// `kubectl get msvc`, pod-deletion-cost follows them, and scaling down
// removes the idle pods, never a busy one.
func TestRoomsThroughServiceAndScaleDown(t *testing.T) {
	phase(t)
	checkLeaks(t)
	createMS(t, "rooms", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](3)})
	t.Cleanup(func() { deleteMS(t, "rooms") })
	waitAvailable(t, "rooms", 3, 3*time.Minute)
	base := serviceURL(t, "rooms")
	if !strings.HasPrefix(base, "http://198.18.") {
		t.Fatalf("signalling Service at %s", base)
	}
	if refused, took := waitServiceAnswers(t, httpc, base); refused > 0 {
		t.Logf("kube-proxy programmed the Service %s after Available (%d connections refused)", took.Round(time.Millisecond), refused)
	}
	ctx := ctxFor(t, 3*time.Minute)

	pub, err := mfclient.Publish(ctx, base, "stage", clientOpts())
	if err != nil {
		t.Fatalf("WHIP through the Service: %v", err)
	}
	defer pub.Close()
	if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 600)
	var viewers []*mfclient.Session
	for i := 0; i < 4; i++ {
		v, err := mfclient.Play(ctx, base, "stage", clientOpts())
		if err != nil {
			t.Fatalf("WHEP %d through the Service: %v", i, err)
		}
		defer v.Close()
		if err := mfclient.WaitConnected(ctx, v.PC); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
	}
	wsBase := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	var parts []*mfclient.Participant
	for i := 0; i < 3; i++ {
		p, err := mfclient.Join(ctx, wsBase, "huddle", true, clientOpts())
		if err != nil {
			t.Fatalf("WebSocket join %d through the Service: %v", i, err)
		}
		defer p.Close()
		p.SendRTP(50, 500)
		parts = append(parts, p)
	}
	for i, v := range viewers {
		waitPackets(t, fmt.Sprintf("viewer %d", i), &v.Received, 200, 30*time.Second)
	}
	for i, p := range parts {
		eventually(t, 30*time.Second, fmt.Sprintf("participant %d receives both others", i), func() (bool, string) {
			return p.Received.Tracks.Load() >= 2 && p.Received.Packets.Load() > 100,
				fmt.Sprintf("%d tracks %d packets", p.Received.Tracks.Load(), p.Received.Packets.Load())
		})
	}

	// Each room lives on exactly one pod, whatever pod kube-proxy picked.
	owner := map[string]string{}
	for _, room := range []string{"stage", "huddle"} {
		holders := roomOwners(t, "rooms", room)
		if len(holders) != 1 {
			t.Fatalf("room %s held by %v, want exactly one pod", room, holders)
		}
		owner[room] = holders[0]
	}
	busy := map[string]int{}
	busy[owner["stage"]] += 5
	busy[owner["huddle"]] += 3
	t.Logf("rooms: stage on %s, huddle on %s", owner["stage"], owner["huddle"])

	// Sessions in kubectl get msvc within the observation interval, and
	// deletion cost following them.
	start := time.Now()
	waitRow(t, "rooms", map[string]string{"SESSIONS": "8"})
	t.Logf("sessions visible in kubectl get msvc after %s", time.Since(start).Round(100*time.Millisecond))
	eventually(t, 45*time.Second, "pod-deletion-cost follows sessions", func() (bool, string) {
		var got []string
		ok := true
		for _, p := range mediaPods(t, "rooms") {
			cost := p.Annotations["controller.kubernetes.io/pod-deletion-cost"]
			got = append(got, p.Name+"="+cost)
			ok = ok && cost == strconv.Itoa(busy[p.Name])
		}
		return ok, strings.Join(got, " ")
	})

	// Scale down to the busy pods: the idle ones go.
	keep := len(busy)
	kubectl(t, "-n", ns, "scale", "msvc", "rooms", "--replicas", strconv.Itoa(keep))
	waitAvailable(t, "rooms", int32(keep), 2*time.Minute)
	for _, p := range mediaPods(t, "rooms") {
		if busy[p.Name] == 0 {
			t.Errorf("scale-down kept idle pod %s and removed a busy one", p.Name)
		}
	}
	// Media still flows on the pods that stayed.
	before := viewers[0].Received.Packets.Load()
	waitPackets(t, "viewer 0 after the scale-down", &viewers[0].Received, before+100, 20*time.Second)
	for _, p := range parts {
		_ = p.Leave()
	}
}

// 6. Deleting a busy pod drains it: its WebSocket client is told, the
// session keeps its media until it leaves (well inside drainTimeout), and
// the pod exits cleanly.
func TestDrainOnPodDeletion(t *testing.T) {
	phase(t)
	checkLeaks(t)
	const drain = 40 * time.Second
	createMS(t, "drain", mediav1alpha1.MediaServiceSpec{
		Replicas: ptr.To[int32](1),
		Limits:   mediav1alpha1.LimitsSpec{DrainTimeout: metav1.Duration{Duration: drain}},
	})
	t.Cleanup(func() { deleteMS(t, "drain") })
	waitAvailable(t, "drain", 1, 3*time.Minute)
	pod := mediaPods(t, "drain")[0]
	if g := ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 0); g != int64(drain.Seconds())+10 {
		t.Errorf("terminationGracePeriodSeconds %d, want drainTimeout+10s", g)
	}
	ctx := ctxFor(t, 2*time.Minute)
	wsURL := fmt.Sprintf("ws://%s:8080/ws", pod.Status.PodIP)
	a, err := mfclient.Join(ctx, wsURL, "talk", true, clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := mfclient.Join(ctx, wsURL, "talk", true, clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a.SendRTP(50, 500)
	b.SendRTP(50, 500)
	waitPackets(t, "participant a", &a.Received, 50, 30*time.Second)

	// Watch the pod to its end to read the container's exit.
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod.Name, ResourceVersion: pod.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var exit atomic.Int32
	exit.Store(-1)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Terminated != nil {
					exit.Store(s.State.Terminated.ExitCode)
				}
			}
			if ev.Type == "DELETED" {
				return
			}
		}
	}()

	deleted := time.Now()
	if err := kc.Delete(ctx, &pod); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*mfclient.Participant{a, b} {
		select {
		case m := <-waitMessage(p, "draining"):
			if m.RetryAfter <= 0 {
				t.Errorf("draining message without retryAfter: %+v", m)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no draining message within 15s of the pod's deletion")
		}
	}
	// The sessions are not cut: media keeps flowing well into the drain
	// (250 more packets: five seconds of the other participant's 50 packets/s).
	before := a.Received.Packets.Load()
	eventually(t, 60*time.Second, "media flowing during the drain", func() (bool, string) {
		if s := a.PC.ConnectionState(); s != webrtc.PeerConnectionStateConnected {
			t.Fatalf("during the drain the session was cut: state %s after %d packets", s, a.Received.Packets.Load()-before)
		}
		got := a.Received.Packets.Load()
		return got >= before+250, fmt.Sprintf("%d packets since the drain began", got-before)
	})
	select {
	case <-gone:
		t.Fatalf("pod gone %s after deletion with sessions open (drainTimeout %s)", time.Since(deleted), drain)
	default:
	}
	// The clients leave; the pod finishes draining and exits 0.
	_ = a.Leave()
	_ = b.Leave()
	select {
	case <-gone:
	case <-time.After(drain):
		t.Fatal("pod still there long after its sessions left")
	}
	if code := exit.Load(); code != 0 {
		t.Errorf("mediaserver exit code %d, want 0", code)
	}
	t.Logf("pod %s deleted %s after the delete call (sessions held through the drain, drainTimeout %s)", pod.Name, time.Since(deleted).Round(100*time.Millisecond), drain)
}

// prometheusOperatorVersion is the release whose CRDs test 9 installs (the
// envtest suite uses the same).
const prometheusOperatorVersion = "v0.85.0"

// waitMessage delivers the first server message of the given type.
func waitMessage(p *mfclient.Participant, typ string) <-chan mfclient.WSMessage {
	ch := make(chan mfclient.WSMessage, 1)
	go func() {
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m := <-p.Events:
				if m.Type == typ {
					ch <- m
					return
				}
			case <-timeout:
				return
			}
		}
	}()
	return ch
}

// 7. A spec change (STUN servers) rolls the pods without dropping below the
// ready count; deleted children come back; deleting the MediaService
// removes everything it made.
func TestRolloutHealAndDelete(t *testing.T) {
	phase(t)
	name := "mux" // left by TestPodNetworkScale with two replicas
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: name}, &mediav1alpha1.MediaService{}); apierrors.IsNotFound(err) {
		createMS(t, name, mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](2)})
	}
	waitAvailable(t, name, 2, 3*time.Minute)
	stun := "stun:" + nodeIP + ":3478"

	lowestAvailable := minAvailable(t, name)
	old := map[string]bool{}
	for _, p := range mediaPods(t, name) {
		old[p.Name] = true
	}
	patch := fmt.Sprintf(`{"spec":{"ice":{"stunServers":[%q]}}}`, stun)
	if err := kc.Patch(ctxFor(t, 10*time.Second), &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "rollout to the new STUN servers", func() (bool, string) {
		pods := mediaPods(t, name)
		if len(pods) != 2 {
			return false, fmt.Sprintf("%d pods", len(pods))
		}
		for _, p := range pods {
			hasStun := slices.ContainsFunc(p.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "STUN_SERVERS" && e.Value == stun })
			if old[p.Name] || !hasStun || !podReady(&p) {
				return false, fmt.Sprintf("pod %s old=%v stun=%v ready=%v", p.Name, old[p.Name], hasStun, podReady(&p))
			}
		}
		return true, ""
	})
	if m := lowestAvailable(); m < 2 {
		t.Errorf("available replicas dropped to %d during the rollout", m)
	}
	waitAvailable(t, name, 2, time.Minute)

	// Children deleted behind the operator's back come back.
	children := []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-pods"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-media"}},
	}
	uids := map[string]types.UID{}
	for _, o := range children {
		key := fmt.Sprintf("%T/%s", o, o.GetName())
		if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		uids[key] = o.GetUID()
		if err := kc.Delete(ctxFor(t, 10*time.Second), o); err != nil {
			t.Fatalf("delete %s: %v", key, err)
		}
	}
	for _, o := range children {
		key := fmt.Sprintf("%T/%s", o, o.GetName())
		eventually(t, time.Minute, key+" recreated", func() (bool, string) {
			err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKeyFromObject(o), o)
			return err == nil && o.GetUID() != uids[key], fmt.Sprint(err)
		})
	}

	deleteMS(t, name)
}

// deleteMS deletes a MediaService and waits until nothing it made is left.
func deleteMS(t *testing.T, name string) {
	t.Helper()
	err := kc.Delete(ctxFor(t, 10*time.Second), &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	sel := client.MatchingLabels{instanceLabel: name}
	eventually(t, 2*time.Minute, "everything of "+name+" deleted", func() (bool, string) {
		lists := map[string]client.ObjectList{
			"deployments": &appsv1.DeploymentList{}, "pods": &corev1.PodList{}, "services": &corev1.ServiceList{},
			"pdbs": &policyv1.PodDisruptionBudgetList{}, "serviceaccounts": &corev1.ServiceAccountList{}, "configmaps": &corev1.ConfigMapList{},
		}
		var left []string
		for kind, l := range lists {
			if err := kc.List(ctxFor(t, 10*time.Second), l, client.InNamespace(ns), sel); err != nil {
				return false, err.Error()
			}
			if n := meta.LenList(l); n > 0 {
				left = append(left, fmt.Sprintf("%d %s", n, kind))
			}
		}
		var ms mediav1alpha1.MediaService
		if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: name}, &ms); err == nil {
			left = append(left, "the MediaService")
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// 8. A goroutine leak injected through the e2e image's fault hook shows up
// as the GoroutineLeak condition, in kubectl get msvc and as an Event; it
// clears when the goroutines are released.
func TestGoroutineLeakReported(t *testing.T) {
	phase(t)
	createMS(t, "leak", mediav1alpha1.MediaServiceSpec{
		Replicas:        ptr.To[int32](1),
		Image:           "mediafleet/mediaserver:e2e",
		ImagePullPolicy: corev1.PullNever,
		LeakDetection:   mediav1alpha1.LeakDetectionSpec{BaselineWindow: metav1.Duration{Duration: 5 * time.Second}},
	})
	t.Cleanup(func() { deleteMS(t, "leak") })
	waitAvailable(t, "leak", 1, 3*time.Minute)
	pod := mediaPods(t, "leak")[0]
	eventually(t, time.Minute, "baseline learned", func() (bool, string) {
		r := podReport(t, &pod, 9090)
		return r.Goroutines.Baseline > 0, fmt.Sprintf("%+v", r.Goroutines)
	})
	post := func(q string) {
		code, body, err := adminDo(&pod, 9090, http.MethodPost, "/debug/fault/leak?"+q, adminToken(t, &pod))
		if err != nil || code != http.StatusOK {
			t.Fatalf("fault hook: %d %v %s", code, err, body)
		}
	}
	post("n=400")
	start := time.Now()
	eventually(t, 2*time.Minute, "GoroutineLeak condition", func() (bool, string) {
		ms := getMS(t, "leak")
		c := condition(ms, mediav1alpha1.ConditionGoroutineLeak)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == metav1.ConditionTrue && strings.Contains(c.Message, pod.Name) && slices.Contains(ms.Status.LeakingPods, pod.Name),
			fmt.Sprintf("%s %s: %s; leakingPods %v", c.Status, c.Reason, c.Message, ms.Status.LeakingPods)
	})
	t.Logf("leak reported %s after injection: %s", time.Since(start).Round(100*time.Millisecond), condition(getMS(t, "leak"), mediav1alpha1.ConditionGoroutineLeak).Message)
	waitRow(t, "leak", map[string]string{"LEAK": "True"})
	eventually(t, 30*time.Second, "GoroutineLeakSuspected Event", func() (bool, string) {
		var seen []string
		for _, e := range mediaServiceEvents(t, "leak") {
			seen = append(seen, e.Reason)
			if e.Reason == "GoroutineLeakSuspected" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, pod.Name) {
				return true, ""
			}
		}
		return false, fmt.Sprint(seen)
	})
	post("release=1")
	eventually(t, 2*time.Minute, "GoroutineLeak cleared", func() (bool, string) {
		c := condition(getMS(t, "leak"), mediav1alpha1.ConditionGoroutineLeak)
		return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprint(c)
	})
}

// 9. The Prometheus Operator's real CRDs installed into the running cluster:
// the in-cluster operator (its generated RBAC, not an admin's) notices them
// without a restart and creates the PodMonitor, PrometheusRule and dashboard
// of a MediaService. The CRDs stay installed afterwards.
func TestMonitoringObjectsInCluster(t *testing.T) {
	phase(t)
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/prometheus-operator/prometheus-operator@"+prometheusOperatorVersion).Output()
	if err != nil {
		t.Fatalf("download prometheus-operator %s: %v", prometheusOperatorVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("module dir: %v %s", err, out)
	}
	dir := filepath.Join(mod.Dir, "example", "prometheus-operator-crd")
	kubectl(t, "apply", "--server-side", "-f", filepath.Join(dir, "monitoring.coreos.com_podmonitors.yaml"),
		"-f", filepath.Join(dir, "monitoring.coreos.com_prometheusrules.yaml"))

	createMS(t, "mon", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](1)})
	t.Cleanup(func() { deleteMS(t, "mon") })
	eventually(t, 2*time.Minute, "MonitoringReady", func() (bool, string) {
		c := condition(getMS(t, "mon"), mediav1alpha1.ConditionMonitoringReady)
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprint(c)
	})
	for _, kind := range []string{"podmonitor", "prometheusrule", "configmap"} {
		name := "mon"
		if kind == "configmap" {
			name = "mon-dashboard"
		}
		owner := kubectl(t, "-n", ns, "get", kind, name, "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}")
		if owner != "MediaService/mon" {
			t.Errorf("%s %s owned by %q", kind, name, owner)
		}
	}
	alerts := kubectl(t, "-n", ns, "get", "prometheusrule", "mon", "-o", "jsonpath={.spec.groups[*].rules[*].alert}")
	for _, a := range []string{"GoroutineLeak", "MediaPodDown", "SessionCapacityNearlyExhausted"} {
		if !strings.Contains(alerts, a) {
			t.Errorf("PrometheusRule lacks %s: %s", a, alerts)
		}
	}
}
