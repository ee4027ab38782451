//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

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

// 14. A media pod killed without warning (SIGKILL through containerd) while
// it holds a WebSocket room: within one observation interval the
// surviving pods hold a new member list; the room's clients reconnect
// through the Service the way the demo page does and meet again on exactly
// one pod with media flowing; the kubelet restarts the killed container.
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
	waitAvailable(t, "killed", 3, 2*time.Minute)
}
