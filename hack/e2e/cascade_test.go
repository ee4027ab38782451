//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// 19. A room bigger than a pod: three replicas of 10 sessions each, one
// WHIP publisher and 25 WHEP viewers of one room, all through the
// Service. The owner takes viewers until it is full, then the pods that
// receive the rest serve them as relays of the owner (one link each):
// every viewer gets media, no pod holds more than 10 sessions, and
// status.rooms (kubectl describe msvc) shows the room over 3 pods.
func TestRoomBiggerThanAPod(t *testing.T) {
	phase(t)
	checkLeaks(t)
	const name, room = "webinar", "keynote"
	createMS(t, name, mediav1alpha1.MediaServiceSpec{
		Replicas: ptr.To[int32](3),
		Limits:   mediav1alpha1.LimitsSpec{MaxSessionsPerPod: 10},
	})
	t.Cleanup(func() { deleteMS(t, name) })
	waitAvailable(t, name, 3, 3*time.Minute)
	base := serviceURL(t, name)
	waitServiceAnswers(t, httpc, base) // kube-proxy has programmed the Service
	ctx := ctxFor(t, 5*time.Minute)
	opts := clientOpts()
	opts.Retries = 10 // a pod that just filled up answers 503 until the kubelet marks it not ready

	pub, err := mfclient.Publish(ctx, base, room, opts)
	if err != nil {
		t.Fatalf("WHIP: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	if err := mfclient.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 500)
	var viewers []*mfclient.Session
	for i := 0; i < 25; i++ {
		v, err := mfclient.Play(ctx, base, room, opts)
		if err != nil {
			t.Fatalf("WHEP viewer %d: %v", i, err)
		}
		t.Cleanup(func() { _ = v.Close() })
		viewers = append(viewers, v)
	}
	for i, v := range viewers {
		waitPackets(t, fmt.Sprintf("viewer %d", i), &v.Received, 100, 30*time.Second)
	}
	perPod := map[string]int{}
	for _, p := range mediaPods(t, name) {
		r := podReport(t, &p, 9090)
		perPod[p.Name] = r.Sessions.Active
		if r.Sessions.Active > 10 {
			t.Errorf("pod %s holds %d sessions, over maxSessionsPerPod 10", p.Name, r.Sessions.Active)
		}
	}
	t.Logf("sessions per pod: %v", perPod)
	eventually(t, time.Minute, "status.rooms: the room over 3 pods", func() (bool, string) {
		rooms := getMS(t, name).Status.Rooms
		return len(rooms) > 0 && rooms[0].Name == room && rooms[0].Pods == 3 && rooms[0].Sessions == 26, fmt.Sprintf("%+v", rooms)
	})
	out := kubectl(t, "-n", ns, "describe", "msvc", name)
	if !strings.Contains(out, "Rooms:") || !strings.Contains(out, room) {
		t.Errorf("kubectl describe msvc does not show the room:\n%s", out)
	}
	for _, v := range viewers {
		_, _ = v.Delete(ctx)
	}
}
