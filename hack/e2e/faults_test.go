//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// killContainer sends SIGKILL to a pod's container through the cluster's
// containerd: no SIGTERM, no drain, as an OOM kill or a lost node.
func killContainer(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	root, _ := filepath.Abs("../..")
	sock := filepath.Join(envOr("MEDIAFLEET_DEV_DIR", filepath.Join(root, "bin/dev")), "containerd", "containerd.sock")
	if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill %s: %v: %s", id, err, out)
	}
}

// roomOwners lists the media pods that hold a room.
func roomOwners(t *testing.T, name, room string) []string {
	t.Helper()
	var holders []string
	for _, p := range mediaPods(t, name) {
		if code, _, err := adminGet(t, &p, 9090, "/rooms/"+room); err == nil && code == http.StatusOK {
			holders = append(holders, p.Name)
		}
	}
	return holders
}

// 13. A media pod killed without warning (SIGKILL through containerd) while
// it holds a WebSocket room: within one observation interval the
// surviving pods hold a new member list; the room's clients reconnect
// through the Service the way the demo page does and meet again on exactly
// one pod with media flowing; the kubelet restarts the killed container
// and status.pods says it was killed (exit 137) and restarted.
func TestKilledMediaPodHoldingARoom(t *testing.T) {
	phase(t)
	checkLeaks(t)
	createMS(t, "killed", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](3)})
	t.Cleanup(func() { deleteMS(t, "killed") })
	waitAvailable(t, "killed", 3, 3*time.Minute)
	base := serviceURL(t, "killed")
	waitServiceAnswers(t, httpc, base)
	ctx := ctxFor(t, 4*time.Minute)
	wsBase := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	join := func(what string) []*mfclient.Participant {
		var parts []*mfclient.Participant
		for i := 0; i < 3; i++ {
			p, err := mfclient.Join(ctx, wsBase, "victim", true, clientOpts())
			if err != nil {
				t.Fatalf("%s: join %d through the Service: %v", what, i, err)
			}
			t.Cleanup(func() { _ = p.Close() })
			p.SendRTP(50, 500)
			parts = append(parts, p)
		}
		for i, p := range parts {
			eventually(t, 30*time.Second, fmt.Sprintf("%s: participant %d receives both others", what, i), func() (bool, string) {
				return p.Received.Tracks.Load() >= 2 && p.Received.Packets.Load() > 100,
					fmt.Sprintf("%d tracks %d packets", p.Received.Tracks.Load(), p.Received.Packets.Load())
			})
		}
		return parts
	}
	before := join("before the kill")
	owners := roomOwners(t, "killed", "victim")
	if len(owners) != 1 {
		t.Fatalf("room held by %v, want one pod", owners)
	}
	var victim corev1.Pod
	generations := map[string]int64{}
	for _, p := range mediaPods(t, "killed") {
		if p.Name == owners[0] {
			victim = p
		} else {
			generations[p.Name] = podReport(t, &p, 9090).MembershipGeneration
		}
	}
	restarts := victim.Status.ContainerStatuses[0].RestartCount

	killContainer(t, &victim)
	killed := time.Now()
	// The survivors learn a new member list (the killed pod not ready)
	// within one observation interval (10 s) and a little.
	eventually(t, 20*time.Second, "the surviving pods hold a new member list", func() (bool, string) {
		var got []string
		ok := true
		for _, p := range mediaPods(t, "killed") {
			if old, survivor := generations[p.Name]; survivor {
				g := podReport(t, &p, 9090).MembershipGeneration
				got = append(got, fmt.Sprintf("%s %d→%d", p.Name, old, g))
				ok = ok && g > old
			}
		}
		return ok, strings.Join(got, " ")
	})
	t.Logf("new member list on the survivors %s after the kill", time.Since(killed).Round(100*time.Millisecond))

	// The clients notice (their WebSocket and ICE fail) and come back
	// through the Service: they meet again on one pod.
	for _, p := range before {
		_ = p.Close()
	}
	join("after the kill")
	if owners := roomOwners(t, "killed", "victim"); len(owners) != 1 {
		t.Errorf("after the kill the room is held by %v, want exactly one pod (no split room)", owners)
	}
	eventually(t, 2*time.Minute, "the kubelet restarts the killed container", func() (bool, string) {
		for _, p := range mediaPods(t, "killed") {
			if p.Name == victim.Name {
				st := p.Status.ContainerStatuses[0]
				return st.RestartCount > restarts && podReady(&p), fmt.Sprintf("restarts %d ready %v", st.RestartCount, podReady(&p))
			}
		}
		return false, "the pod is gone"
	})
	// The operator says what happened to it: killed (SIGKILL: exit 137)
	// and restarted, in status.pods and so in kubectl describe msvc.
	eventually(t, time.Minute, "status.pods reports the kill and the restart", func() (bool, string) {
		for _, ps := range getMS(t, "killed").Status.Pods {
			if ps.Name == victim.Name {
				return strings.Contains(ps.Message, "restarted") && strings.Contains(ps.Message, "(exit 137)"), ps.Message
			}
		}
		return false, "not in status.pods"
	})
	waitAvailable(t, "killed", 3, 2*time.Minute)
}

// cluster runs hack/cluster.sh with a verb (the suite runs as root, as
// make dev does).
func cluster(t *testing.T, verb string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	if out, err := exec.Command(filepath.Join(root, "hack/cluster.sh"), verb).CombinedOutput(); err != nil {
		t.Fatalf("hack/cluster.sh %s: %v: %s", verb, err, out)
	}
}

// 14. The API server stops (SIGTERM) for a while and comes back, while a
// fleet carries a WHIP publisher and a WHEP viewer: media keeps flowing
// with the control plane gone (the data plane never depends on it); once
// it is back, kubectl get msvc is right within an observation interval,
// the operator converges without duplicates (one Deployment, one
// ReplicaSet, the same two pods) and acts on a change again.
func TestAPIServerRestartUnderMedia(t *testing.T) {
	phase(t)
	checkLeaks(t)
	createMS(t, "apistop", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](2)})
	t.Cleanup(func() { deleteMS(t, "apistop") })
	waitAvailable(t, "apistop", 2, 3*time.Minute)
	base := serviceURL(t, "apistop")
	waitServiceAnswers(t, httpc, base)
	ctx := ctxFor(t, 5*time.Minute)
	pub, err := mfclient.Publish(ctx, base, "steady", clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(100, 600)
	view, err := mfclient.Play(ctx, base, "steady", clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	waitPackets(t, "viewer", &view.Received, 200, 30*time.Second)
	waitRow(t, "apistop", map[string]string{"READY": "2", "AVAILABLE": "True", "SESSIONS": "2"})
	podsBefore := map[string]bool{}
	for _, p := range mediaPods(t, "apistop") {
		podsBefore[p.Name] = true
	}
	sel := client.MatchingLabels{instanceLabel: "apistop", "app.kubernetes.io/name": "mediaserver"}
	replicaSets := func() []string {
		var rss appsv1.ReplicaSetList
		if err := kc.List(ctxFor(t, 10*time.Second), &rss, client.InNamespace(ns), sel); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, rs := range rss.Items {
			names = append(names, rs.Name)
		}
		sort.Strings(names)
		return names
	}
	rsBefore := replicaSets()

	cluster(t, "apiserver-stop")
	stopped := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			cluster(t, "apiserver-start")
		}
	})
	// Media keeps flowing with the API server gone: 20 s of it (at 100
	// packets/s, 2,000 more packets).
	before := view.Received.Packets.Load()
	waitPackets(t, "viewer with the API server down", &view.Received, before+2000, time.Minute)
	if _, err := cs.CoreV1().Namespaces().Get(ctxFor(t, 3*time.Second), ns, metav1.GetOptions{}); err == nil {
		t.Fatal("the API server answered while stopped: the test did not stop it")
	}
	t.Logf("media flowed for %s with the API server down", time.Since(stopped).Round(time.Second))
	cluster(t, "apiserver-start")
	restarted = true
	back := time.Now()

	waitRow(t, "apistop", map[string]string{"READY": "2", "AVAILABLE": "True", "SESSIONS": "2"})
	t.Logf("kubectl get msvc right again %s after the API server came back", time.Since(back).Round(100*time.Millisecond))
	var deps appsv1.DeploymentList
	if err := kc.List(ctxFor(t, 10*time.Second), &deps, client.InNamespace(ns), sel); err != nil {
		t.Fatal(err)
	}
	if rsAfter := replicaSets(); len(deps.Items) != 1 || strings.Join(rsAfter, ",") != strings.Join(rsBefore, ",") {
		t.Errorf("after the restart: %d Deployments, ReplicaSets %v (before: %v); want one Deployment and no new ReplicaSet", len(deps.Items), rsAfter, rsBefore)
	}
	for _, p := range mediaPods(t, "apistop") {
		if !podsBefore[p.Name] {
			t.Errorf("pod %s appeared across the restart (before: %v)", p.Name, podsBefore)
		}
	}
	// The operator acts again: a scale goes through.
	kubectl(t, "-n", ns, "scale", "msvc", "apistop", "--replicas", "3")
	waitAvailable(t, "apistop", 3, 3*time.Minute)
	waitPackets(t, "viewer after the restart", &view.Received, view.Received.Packets.Load()+100, 30*time.Second)
}

// leaseHolder is the leader lease's holder identity ("<pod>_<uuid>": a
// restarted container is a new identity in the same pod; "" when none).
func leaseHolder(t *testing.T) string {
	t.Helper()
	var leases coordinationv1.LeaseList
	if err := kc.List(ctxFor(t, 10*time.Second), &leases, client.InNamespace(operatorNamespace)); err != nil {
		return ""
	}
	for _, l := range leases.Items {
		if h := ptr.Deref(l.Spec.HolderIdentity, ""); h != "" {
			return h
		}
	}
	return ""
}

// 15. Leader failover: the operator runs two replicas; its leader is
// SIGKILLed (no graceful release of the lease): a live instance (the other
// replica, or the killed one's restarted container) takes over within the
// lease's life; from the kill until the new leader has observed the fleet
// three times nothing the MediaService owns is written (watched and
// counted: Deployment, Services, PDB, Secrets, pods' metadata) and the
// MediaService keeps its resourceVersion (status kept); and the new
// leader acts: a scale-up is applied and every pod, the new one too, holds
// the new member list.
func TestLeaderFailover(t *testing.T) {
	phase(t)
	checkLeaks(t)
	kubectl(t, "-n", operatorNamespace, "scale", "deployment", operatorDeployment, "--replicas", "2")
	t.Cleanup(func() {
		kubectl(t, "-n", operatorNamespace, "scale", "deployment", operatorDeployment, "--replicas", "1")
		eventually(t, 2*time.Minute, "the operator back to one ready replica", func() (bool, string) {
			var dep appsv1.Deployment
			if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, &dep); err != nil {
				return false, err.Error()
			}
			return dep.Status.Replicas == 1 && dep.Status.ReadyReplicas == 1 && leaseHolder(t) != "", fmt.Sprintf("%+v, leader %q", dep.Status, leaseHolder(t))
		})
	})
	var pods corev1.PodList
	eventually(t, 2*time.Minute, "two operator replicas ready, one leading", func() (bool, string) {
		if err := kc.List(ctxFor(t, 10*time.Second), &pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
			return false, err.Error()
		}
		ready := 0
		for i := range pods.Items {
			if podReady(&pods.Items[i]) && pods.Items[i].DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == 2 && leaseHolder(t) != "", fmt.Sprintf("%d ready, leader %q", ready, leaseHolder(t))
	})
	createMS(t, "failover", mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](2)})
	t.Cleanup(func() { deleteMS(t, "failover") })
	waitAvailable(t, "failover", 2, 3*time.Minute)
	waitRow(t, "failover", map[string]string{"READY": "2", "AVAILABLE": "True", "SESSIONS": "0"})
	msBefore := getMS(t, "failover")
	var depBefore appsv1.Deployment
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "failover"}, &depBefore); err != nil {
		t.Fatal(err)
	}

	leader := leaseHolder(t)
	leaderName, _, _ := strings.Cut(leader, "_")
	var leaderPod *corev1.Pod
	for i := range pods.Items {
		if pods.Items[i].Name == leaderName {
			leaderPod = &pods.Items[i]
		}
	}
	if leaderPod == nil {
		t.Fatalf("leader %q is none of the operator pods", leader)
	}
	writes := watchWrites(t, instanceLabel+"=failover")
	killContainer(t, leaderPod)
	killed := time.Now()
	// The lease goes to a live instance: the other replica, or the killed
	// one's restarted container, whichever wins (both are new holders).
	eventually(t, 90*time.Second, "a live instance takes the lease", func() (bool, string) {
		h := leaseHolder(t)
		return h != "" && h != leader, "holder " + h
	})
	t.Logf("leadership moved from %s to %s %s after the kill", leader, leaseHolder(t), time.Since(killed).Round(100*time.Millisecond))
	// The new leader observes and reconciles everything once; at rest that
	// writes nothing: the same resourceVersions after a few passes.
	eventually(t, 30*time.Second, "kubectl get msvc unchanged under the new leader", func() (bool, string) {
		row := msvcRow(t, "failover")
		return row["READY"] == "2" && row["AVAILABLE"] == "True", fmt.Sprint(row)
	})
	// Three observation passes of the new leader (its metric): still no
	// write to anything the MediaService owns.
	holder, _, _ := strings.Cut(leaseHolder(t), "_")
	var holderPod corev1.Pod
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: operatorNamespace, Name: holder}, &holderPod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "three observation passes by the new leader", func() (bool, string) {
		if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKeyFromObject(&holderPod), &holderPod); err != nil {
			return false, err.Error()
		}
		n, found, err := seriesValue(&holderPod, 8080, "mediafleet_observer_passes_total")
		switch {
		case err != nil:
			return false, err.Error()
		case !found:
			return false, "no mediafleet_observer_passes_total"
		}
		return n >= 3, fmt.Sprintf("passes %g", n)
	})
	if w := writes(); len(w) > 0 {
		t.Errorf("%d writes to the MediaService's objects from the kill to three observation passes of the new leader: %v", len(w), w)
	} else {
		t.Logf("no write to the MediaService's objects from the kill to three observation passes of the new leader (%s)", time.Since(killed).Round(time.Second))
	}
	if ms := getMS(t, "failover"); ms.ResourceVersion != msBefore.ResourceVersion {
		t.Errorf("the MediaService was written across the failover (resourceVersion %s → %s)", msBefore.ResourceVersion, ms.ResourceVersion)
	}
	var depAfter appsv1.Deployment
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "failover"}, &depAfter); err != nil {
		t.Fatal(err)
	}
	if depAfter.Generation != depBefore.Generation {
		t.Errorf("the Deployment's spec was written across the failover (generation %d → %d)", depBefore.Generation, depAfter.Generation)
	}
	// The new leader acts, and delivers member lists.
	kubectl(t, "-n", ns, "scale", "msvc", "failover", "--replicas", "3")
	waitAvailable(t, "failover", 3, 3*time.Minute)
	eventually(t, 30*time.Second, "every pod holds one newer member list", func() (bool, string) {
		gens := map[int64]bool{}
		var got []string
		for _, p := range mediaPods(t, "failover") {
			r := podReport(t, &p, 9090)
			gens[r.MembershipGeneration] = true
			got = append(got, fmt.Sprintf("%s=%d/%d", p.Name, r.MembershipGeneration, r.MembershipSize))
			if r.MembershipSize != 3 {
				return false, strings.Join(got, " ")
			}
		}
		return len(gens) == 1, strings.Join(got, " ")
	})
}

// writeSource lists and watches one kind of object.
type writeSource struct {
	name  string
	list  func(context.Context, metav1.ListOptions) (string, error) // the list's resourceVersion
	watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
}

// source is a writeSource of a typed client's List and Watch.
func source[L interface{ GetResourceVersion() string }](name string, list func(context.Context, metav1.ListOptions) (L, error),
	w func(context.Context, metav1.ListOptions) (watch.Interface, error)) writeSource {
	return writeSource{name, func(ctx context.Context, o metav1.ListOptions) (string, error) {
		l, err := list(ctx, o)
		if err != nil {
			return "", err
		}
		return l.GetResourceVersion(), nil
	}, w}
}

// watchWrites watches the objects a MediaService owns (selector: its
// instance label) and returns a function that stops the watches and lists
// every write seen: any change to a Deployment, Service, PDB, service
// account, Secret or ConfigMap, and changes of a pod's labels,
// annotations or spec (the kubelet's status updates are not the
// operator's).
func watchWrites(t *testing.T, selector string) func() []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pods := map[string]*corev1.Pod{} // the last seen of each, read by the pod watch only
	listPods := func(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
		l, err := cs.CoreV1().Pods(ns).List(ctx, o)
		if err == nil {
			for i := range l.Items {
				pods[l.Items[i].Name] = &l.Items[i]
			}
		}
		return l, err
	}
	sources := []writeSource{
		source("Deployment", cs.AppsV1().Deployments(ns).List, cs.AppsV1().Deployments(ns).Watch),
		source("Service", cs.CoreV1().Services(ns).List, cs.CoreV1().Services(ns).Watch),
		source("PodDisruptionBudget", cs.PolicyV1().PodDisruptionBudgets(ns).List, cs.PolicyV1().PodDisruptionBudgets(ns).Watch),
		source("ServiceAccount", cs.CoreV1().ServiceAccounts(ns).List, cs.CoreV1().ServiceAccounts(ns).Watch),
		source("Secret", cs.CoreV1().Secrets(ns).List, cs.CoreV1().Secrets(ns).Watch),
		source("ConfigMap", cs.CoreV1().ConfigMaps(ns).List, cs.CoreV1().ConfigMaps(ns).Watch),
		source("Pod", listPods, cs.CoreV1().Pods(ns).Watch),
	}
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	for _, src := range sources {
		o := metav1.ListOptions{LabelSelector: selector}
		from, err := src.list(ctx, o)
		var w watch.Interface
		if err == nil {
			o.ResourceVersion = from
			w, err = src.watch(ctx, o)
		}
		if err != nil {
			cancel()
			t.Fatalf("watch %ss: %v", src.name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Stop()
			for ev := range w.ResultChan() {
				o, ok := ev.Object.(metav1.Object)
				if !ok {
					continue
				}
				if p, ok := ev.Object.(*corev1.Pod); ok {
					old := pods[p.Name]
					pods[p.Name] = p
					if ev.Type == watch.Modified && old != nil && !podMetaOrSpecChanged(old, p) {
						continue // the kubelet's status update
					}
				}
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s %s/%s", ev.Type, src.name, o.GetName()))
				mu.Unlock()
			}
		}()
	}
	stop := sync.OnceValue(func() []string {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return seen
	})
	t.Cleanup(func() { stop() })
	return stop
}

// podMetaOrSpecChanged says whether a pod's labels, annotations or spec
// differ between two versions (what the operator, not the kubelet, writes).
func podMetaOrSpecChanged(a, b *corev1.Pod) bool {
	return !equality.Semantic.DeepEqual(a.Labels, b.Labels) || !equality.Semantic.DeepEqual(a.Annotations, b.Annotations) ||
		!equality.Semantic.DeepEqual(a.Spec, b.Spec)
}

// 16. Memory pressure stand-in: a media pod (the e2e image) with a 128 MiB
// memory limit is made to allocate past it (the fault hook); the kernel
// OOM-kills the container, the kubelet restarts it, and the operator says
// why in status.pods[].message ("OOMKilled") and in a Warning Event; the
// fleet is Available again.
func TestOOMKilledMediaPod(t *testing.T) {
	phase(t)
	createMS(t, "oom", mediav1alpha1.MediaServiceSpec{
		Replicas:        ptr.To[int32](1),
		Image:           "mediafleet/mediaserver:e2e",
		ImagePullPolicy: corev1.PullNever,
		Resources:       corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
	})
	t.Cleanup(func() { deleteMS(t, "oom") })
	waitAvailable(t, "oom", 1, 3*time.Minute)
	pod := mediaPods(t, "oom")[0]
	// The request never answers: the process dies under it.
	_, _, _ = adminDo(&pod, 9090, http.MethodPost, "/debug/fault/alloc?mb=512", adminToken(t, &pod))
	eventually(t, 2*time.Minute, "the container OOM-killed and restarted", func() (bool, string) {
		p := mediaPods(t, "oom")[0]
		st := p.Status.ContainerStatuses[0]
		term := st.LastTerminationState.Terminated
		return st.RestartCount > 0 && term != nil && term.Reason == "OOMKilled", fmt.Sprintf("restarts %d, last %+v", st.RestartCount, term)
	})
	eventually(t, time.Minute, "status.pods says OOMKilled", func() (bool, string) {
		st := getMS(t, "oom").Status
		for _, ps := range st.Pods {
			if ps.Name == pod.Name && strings.Contains(ps.Message, "OOMKilled") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", st.Pods)
	})
	eventually(t, time.Minute, "a MediaPodRestarted Event", func() (bool, string) {
		var got []string
		for _, e := range mediaServiceEvents(t, "oom") {
			if e.Reason == "MediaPodRestarted" && strings.Contains(e.Message, "OOMKilled") {
				return true, ""
			}
			got = append(got, e.Reason)
		}
		return false, strings.Join(got, ",")
	})
	waitAvailable(t, "oom", 1, 2*time.Minute)
	if out := kubectl(t, "-n", ns, "describe", "msvc", "oom"); !strings.Contains(out, "OOMKilled") {
		t.Errorf("kubectl describe msvc does not say OOMKilled:\n%s", out)
	}
}
