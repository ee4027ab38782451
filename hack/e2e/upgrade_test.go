//go:build e2e

package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// The e2e image under a second tag (make images): changing a
// MediaService's image to it rolls the pods like a real upgrade.
const (
	e2eImage     = "mediafleet/mediaserver:e2e"
	e2eImageNext = "mediafleet/mediaserver:e2e-next"
)

// sessionPod is the pod IP a client's session has its media with: the
// candidate of the server's answer (a pod-network pod offers its own IP).
func sessionPod(s *mfclient.Session) string {
	if cs := candidates(s.Answer); len(cs) > 0 {
		return cs[0].ip
	}
	return ""
}

// 18. Rolling upgrade under load: 20 sessions (10 WHIP publishers, each
// watched by a WHEP viewer, all through the Service) are live on two pods
// when the image tag changes. The old pods drain: none of their sessions is
// cut or stops receiving media while the new pods come up; new sessions
// land on the new pods; the Deployment never has fewer available replicas
// than the spec asks; when the old sessions end, the old pods exit and the
// rollout completes long before drainTimeout.
func TestRollingUpgradeUnderLoad(t *testing.T) {
	phase(t)
	checkLeaks(t)
	const (
		name  = "upgrade"
		drain = 4 * time.Minute
		rooms = 10
	)
	createMS(t, name, mediav1alpha1.MediaServiceSpec{
		Replicas:        ptr.To[int32](2),
		Image:           e2eImage,
		ImagePullPolicy: corev1.PullNever,
		Limits:          mediav1alpha1.LimitsSpec{DrainTimeout: metav1.Duration{Duration: drain}},
	})
	t.Cleanup(func() { deleteMS(t, name) })
	waitAvailable(t, name, 2, 3*time.Minute)
	base := serviceURL(t, name)
	waitServiceAnswers(t, httpc, base) // kube-proxy has programmed the Service
	ctx := ctxFor(t, 10*time.Minute)

	oldPods := map[string]string{} // IP → name
	eventually(t, time.Minute, "two ready pods of the first revision", func() (bool, string) {
		clear(oldPods)
		for _, p := range mediaPods(t, name) {
			if podReady(&p) && p.DeletionTimestamp == nil {
				oldPods[p.Status.PodIP] = p.Name
			}
		}
		return len(oldPods) == 2, fmt.Sprint(oldPods)
	})

	type pair struct {
		room      string
		pub, view *mfclient.Session
	}
	var live []pair
	for i := 0; i < rooms; i++ {
		room := fmt.Sprintf("before-%d", i)
		pub, err := mfclient.Publish(ctx, base, room, clientOpts())
		if err != nil {
			t.Fatalf("WHIP %s: %v", room, err)
		}
		t.Cleanup(func() { _ = pub.Close() })
		if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
			t.Fatal(err)
		}
		pub.SendRTP(50, 500)
		view, err := mfclient.Play(ctx, base, room, clientOpts())
		if err != nil {
			t.Fatalf("WHEP %s: %v", room, err)
		}
		t.Cleanup(func() { _ = view.Close() })
		live = append(live, pair{room, pub, view})
	}
	spread := map[string]int{}
	for _, p := range live {
		waitPackets(t, "viewer of "+p.room, &p.view.Received, 50, 30*time.Second)
		for _, s := range []*mfclient.Session{p.pub, p.view} {
			ip := sessionPod(s)
			if _, ok := oldPods[ip]; !ok {
				t.Fatalf("a session of %s has its media with %q, none of the pods %v", p.room, ip, oldPods)
			}
			spread[oldPods[ip]]++
		}
	}
	t.Logf("20 sessions live before the upgrade: %v", spread)

	// Watch every session for a cut and the Deployment's availability.
	lowestAvailable := minAvailable(t, name)
	var cutMu sync.Mutex
	var cuts []string
	stopWatch := every(t, func() {
		for _, p := range live {
			for _, s := range []*mfclient.Session{p.pub, p.view} {
				if st := s.PC.ConnectionState(); st != webrtc.PeerConnectionStateConnected {
					cutMu.Lock()
					if !slices.Contains(cuts, p.room) {
						cuts = append(cuts, p.room)
					}
					cutMu.Unlock()
				}
			}
		}
	})

	started := time.Now()
	patch := fmt.Sprintf(`{"spec":{"image":%q}}`, e2eImageNext)
	if err := kc.Patch(ctxFor(t, 10*time.Second), &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	// Two new pods ready, the old ones still there (draining: they hold
	// sessions).
	newPods := map[string]string{}
	eventually(t, 3*time.Minute, "two ready pods of the new image beside the draining old ones", func() (bool, string) {
		clear(newPods)
		var got []string
		for _, p := range mediaPods(t, name) {
			got = append(got, fmt.Sprintf("%s(%s ready=%v deleting=%v)", p.Name, p.Spec.Containers[0].Image, podReady(&p), p.DeletionTimestamp != nil))
			if p.Spec.Containers[0].Image == e2eImageNext && podReady(&p) {
				newPods[p.Status.PodIP] = p.Name
			}
		}
		return len(newPods) == 2, strings.Join(got, " ")
	})
	t.Logf("new pods ready %s after the image change", time.Since(started).Round(100*time.Millisecond))
	for _, p := range mediaPods(t, name) {
		if _, old := oldPods[p.Status.PodIP]; old && p.DeletionTimestamp == nil {
			t.Errorf("old pod %s is not terminating once the new pods are ready", p.Name)
		}
	}
	// The operator reports the old pods as draining, with their sessions.
	eventually(t, 30*time.Second, "status.pods: the old pods draining with their sessions", func() (bool, string) {
		n := 0
		var got []string
		for _, p := range getMS(t, name).Status.Pods {
			got = append(got, fmt.Sprintf("%s draining=%v sessions=%d", p.Name, p.Draining, p.Sessions))
			if slices.Contains(slices.Collect(maps.Values(oldPods)), p.Name) && p.Draining && p.Sessions > 0 {
				n++
			}
		}
		return n == 2, strings.Join(got, "; ")
	})
	// The old pods hold every session and keep carrying media.
	before := make([]uint64, len(live))
	for i, p := range live {
		before[i] = p.view.Received.Packets.Load()
	}
	eventually(t, time.Minute, "media on every old session during the rollout", func() (bool, string) {
		for i, p := range live {
			if got := p.view.Received.Packets.Load(); got < before[i]+250 {
				return false, fmt.Sprintf("viewer of %s: %d packets since the new pods came up", p.room, got-before[i])
			}
		}
		return true, ""
	})
	// New sessions land on the new pods.
	for i := 0; i < 3; i++ {
		room := fmt.Sprintf("after-%d", i)
		pub, err := mfclient.Publish(ctx, base, room, clientOpts())
		if err != nil {
			t.Fatalf("WHIP %s during the rollout: %v", room, err)
		}
		view, err := mfclient.Play(ctx, base, room, clientOpts())
		if err != nil {
			t.Fatalf("WHEP %s during the rollout: %v", room, err)
		}
		if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
			t.Fatal(err)
		}
		pub.SendRTP(50, 500)
		waitPackets(t, "viewer of "+room, &view.Received, 50, 30*time.Second)
		for _, s := range []*mfclient.Session{pub, view} {
			if ip := sessionPod(s); newPods[ip] == "" {
				t.Errorf("a new session of %s has its media with %s, not a new pod %v", room, ip, newPods)
			}
		}
		_, _ = view.Delete(ctx)
		_, _ = pub.Delete(ctx)
		_ = view.Close()
		_ = pub.Close()
	}
	cutMu.Lock()
	if len(cuts) > 0 {
		t.Errorf("sessions on the old pods cut during the drain: %v", cuts)
	}
	cutMu.Unlock()

	// The old sessions end; the old pods exit and the rollout completes.
	ended := time.Now()
	for _, p := range live {
		for _, s := range []*mfclient.Session{p.view, p.pub} {
			if code, err := s.Delete(ctx); err != nil || code >= 300 {
				t.Errorf("DELETE a session of %s: %d %v", p.room, code, err)
			}
		}
	}
	eventually(t, drain/2, "old pods gone, rollout complete", func() (bool, string) {
		var d appsv1.Deployment
		if err := kc.Get(ctxFor(t, 5*time.Second), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return false, err.Error()
		}
		var got []string
		for _, p := range mediaPods(t, name) {
			if _, old := oldPods[p.Status.PodIP]; old {
				return false, "old pod " + p.Name + " still there"
			}
			got = append(got, p.Name)
		}
		done := d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == 2 && d.Status.Replicas == 2 && d.Status.AvailableReplicas == 2
		return done && len(got) == 2, fmt.Sprintf("%+v pods %v", d.Status, got)
	})
	t.Logf("old pods gone %s after their last session ended (drainTimeout %s); rollout took %s",
		time.Since(ended).Round(100*time.Millisecond), drain, time.Since(started).Round(time.Second))
	stopWatch()
	if m := lowestAvailable(); m < 2 {
		t.Errorf("available replicas dropped to %d during the rollout (spec: 2, maxUnavailable 0)", m)
	}
	waitAvailable(t, name, 2, time.Minute)
	eventually(t, 30*time.Second, "status.pods lists the new pods only", func() (bool, string) {
		var got []string
		for _, p := range getMS(t, name).Status.Pods {
			got = append(got, p.Name)
		}
		slices.Sort(got)
		want := slices.Sorted(maps.Values(newPods))
		return slices.Equal(got, want), fmt.Sprintf("%v, want %v", got, want)
	})
}
