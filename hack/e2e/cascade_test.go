//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
)

// 19. A room bigger than a pod: three replicas of 10 sessions each, one
// WHIP publisher and 25 WHEP viewers of one room, all through the
// Service. The owner takes viewers until it is full, then the pods that
// receive the rest serve them as relays of the owner (one link each):
// every viewer gets media, no pod holds more than 10 sessions, and
// status.rooms (kubectl describe msvc) shows the room over 3 pods. Then
// the network between the owner and one relay pod drops every 10th packet
// (an iptables rule on the pod bridge): the relay pod's link asks the owner
// again (NACK), about once per lost packet, and its viewers still get
// every video packet.
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
	var seqs []*seqLog
	for i := 0; i < 25; i++ {
		log := &seqLog{seen: map[uint16]time.Time{}}
		opts.OnRTP = log.add
		seqs = append(seqs, log)
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
	linkLoss(t, name, room, viewers, seqs)
	for _, v := range viewers {
		_, _ = v.Delete(ctx)
	}
}

// seqLog is when each video sequence number first reached a viewer.
type seqLog struct {
	mu   sync.Mutex
	seen map[uint16]time.Time
}

func (l *seqLog) add(kind webrtc.RTPCodecType, h *rtp.Header, at time.Time) {
	if kind != webrtc.RTPCodecTypeVideo {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[h.SequenceNumber]; !ok {
		l.seen[h.SequenceNumber] = at
	}
}

// highest is the newest sequence number that had arrived by t.
func (l *seqLog) highest(t time.Time) (uint16, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var hi uint16
	found := false
	for s, at := range l.seen {
		if at.After(t) {
			continue
		}
		if !found || int16(s-hi) > 0 {
			hi, found = s, true
		}
	}
	return hi, found
}

// missing lists the sequence numbers in (from, to] that never arrived.
func (l *seqLog) missing(from, to uint16) []uint16 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint16
	for s := from + 1; int16(to-s) >= 0; s++ {
		if _, ok := l.seen[s]; !ok {
			out = append(out, s)
		}
	}
	return out
}

// linkLoss drops every 10th UDP packet from the room's owner to one relay
// pod for a few seconds and checks that the relay pod's viewers still get
// every video packet of that window: what the link loses, the relay pod
// asks the owner for again (its link's NACKs, answered from the owner's
// packet cache).
func linkLoss(t *testing.T, name, room string, viewers []*mfclient.Session, seqs []*seqLog) {
	t.Helper()
	var owner, relay *corev1.Pod
	pods := mediaPods(t, name)
	for i := range pods {
		for _, r := range podReport(t, &pods[i], 9090).Rooms {
			switch {
			case r.Name == room && r.Role == "owner":
				owner = &pods[i]
			case r.Name == room && r.Role == "relay" && r.LinkState == "connected" && relay == nil:
				relay = &pods[i]
			}
		}
	}
	if owner == nil || relay == nil {
		t.Fatalf("no owner and connected relay pod for room %s among %d pods", room, len(pods))
	}
	var onRelay []int
	for i, v := range viewers {
		if sessionPod(v) == relay.Status.PodIP {
			onRelay = append(onRelay, i)
		}
	}
	if len(onRelay) == 0 {
		t.Fatalf("no viewer has its media with relay pod %s (%s)", relay.Name, relay.Status.PodIP)
	}
	answeredBefore := podCounter(t, owner, `media_nack_packets_total{result="answered"}`)
	rule := []string{"FORWARD", "-s", owner.Status.PodIP, "-d", relay.Status.PodIP, "-p", "udp",
		"-m", "statistic", "--mode", "nth", "--every", "10", "--packet", "0",
		"-m", "comment", "--comment", "mediafleet-e2e-linkloss", "-j", "DROP"}
	if err := iptables(append([]string{"-I"}, rule...)...); err != nil {
		t.Fatal(err)
	}
	removed := false
	remove := func() {
		if !removed {
			removed = true
			if err := iptables(append([]string{"-D"}, rule...)...); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(remove)
	start := time.Now()
	from := map[int]uint16{}
	for _, i := range onRelay {
		hi, ok := seqs[i].highest(start)
		if !ok {
			t.Fatalf("viewer %d on relay pod %s has no video yet", i, relay.Name)
		}
		from[i] = hi
	}
	// 500 video packets through the lossy link (five seconds at 100 a
	// second) to every viewer of the relay pod.
	eventually(t, 30*time.Second, "500 video packets to the relay pod's viewers through the lossy link", func() (bool, string) {
		for _, i := range onRelay {
			if hi, _ := seqs[i].highest(time.Now()); int16(hi-from[i]) < 500 {
				return false, fmt.Sprintf("viewer %d: %d", i, int16(hi-from[i]))
			}
		}
		return true, ""
	})
	end := time.Now()
	dropped := ruleDrops(t, "mediafleet-e2e-linkloss")
	remove()
	if dropped < 20 {
		t.Fatalf("the loss rule dropped %d packets from the owner %s to the relay %s: the link does not cross the pod bridge as expected",
			dropped, owner.Name, relay.Name)
	}
	for _, i := range onRelay {
		to, _ := seqs[i].highest(end)
		from := from[i]
		// Retransmissions take a round trip or two after the window.
		eventually(t, 10*time.Second, fmt.Sprintf("viewer %d on relay %s: every packet of %d..%d", i, relay.Name, from, to), func() (bool, string) {
			miss := seqs[i].missing(from, to)
			return len(miss) == 0, fmt.Sprintf("%d missing: %v", len(miss), miss[:min(len(miss), 20)])
		})
	}
	answered := podCounter(t, owner, `media_nack_packets_total{result="answered"}`) - answeredBefore
	// The rule drops video, audio and RTCP alike; only video is asked
	// for, about once per lost packet (pion's generator asked ~6 times
	// per lost packet here: it never saw the RTX repairs).
	if answered < float64(dropped)/4 || answered > 2*float64(dropped) {
		t.Errorf("the owner answered %.0f NACKed packets while the link lost %d packets: want each lost video packet asked for about once", answered, dropped)
	}
	t.Logf("link %s → %s lost %d packets in %v; the owner answered %.0f NACKed packets; %d relayed viewers got every video packet",
		owner.Name, relay.Name, dropped, end.Sub(start).Round(time.Millisecond), answered, len(onRelay))
}

// podCounter is the value of one series of a media pod's /metrics, 0 when
// it has none yet.
func podCounter(t *testing.T, pod *corev1.Pod, series string) float64 {
	t.Helper()
	v, _, err := seriesValue(pod, 9090, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ruleDrops is how many packets the FORWARD rule with this comment has
// matched.
func ruleDrops(t *testing.T, comment string) int {
	t.Helper()
	out, err := exec.Command("iptables", "-L", "FORWARD", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "/* "+comment+" */") {
			if m := leadingCount.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
	}
	t.Fatalf("no FORWARD rule %q in:\n%s", comment, out)
	return 0
}

var leadingCount = regexp.MustCompile(`^\s*(\d+)\s`)
