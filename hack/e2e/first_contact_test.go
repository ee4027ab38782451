//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
)

// firstContact is what one fresh MediaService did for its first client.
type firstContact struct {
	name      string
	refused   int           // TCP connections refused while kube-proxy programmed the Service
	refusedIn time.Duration // from Available to the first accepted connection
	err       error
}

// waitConditionTrue polls (every 100 ms, like kubectl wait's watch) until
// a condition of the MediaService is True.
func waitConditionTrue(ctx context.Context, name, typ string) error {
	for {
		ms := &mediav1alpha1.MediaService{}
		if err := kc.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ms); err == nil {
			if c := condition(ms, typ); c != nil && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not %s: %w", name, typ, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// firstPublish creates a MediaService, waits for Available and at that
// moment publishes over WHIP through its Service. The only retry allowed is
// a refused TCP connection (kube-proxy still programming the Service); a
// 503, an "unavailable" or a 404 from any pod is a failure.
func firstPublish(t *testing.T, name string) firstContact {
	fc := firstContact{name: name}
	ms := &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: mediav1alpha1.MediaServiceSpec{Replicas: ptr.To[int32](2)}}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := kc.Create(ctx, ms); err != nil {
		fc.err = err
		return fc
	}
	defer func() { _ = kc.Delete(context.Background(), ms) }() // the namespace's deletion finishes the job
	if fc.err = waitConditionTrue(ctx, name, mediav1alpha1.ConditionAvailable); fc.err != nil {
		return fc
	}
	available := time.Now()
	svc := &corev1.Service{}
	if fc.err = kc.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); fc.err != nil {
		return fc
	}
	base := fmt.Sprintf("http://%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	opts := mfclient.Options{API: rtcAPI, HTTP: &http.Client{Timeout: 20 * time.Second}} // no retries of 503
	for {
		pub, err := mfclient.Publish(ctx, base, "first", opts)
		if err == nil {
			defer pub.Close()
			// ICE and DTLS done: the media path is up (and closing now
			// leaves no handshake behind).
			fc.err = mfclient.WaitPeerConnected(ctx, pub.PC)
			return fc
		}
		if errors.Is(err, syscall.ECONNREFUSED) && time.Since(available) < 30*time.Second {
			fc.refused++
			fc.refusedIn = time.Since(available)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		fc.err = fmt.Errorf("first WHIP publish %s after Available: %w", time.Since(available).Round(time.Millisecond), err)
		return fc
	}
}

// 10. Available means serving: 20 MediaServices, each newly created with
// two pods, each publishing over WHIP through its Service the moment it is
// Available. None may be refused by a pod (503, unavailable, 404); refused
// TCP connections while kube-proxy programs the Service are counted.
func TestFirstPublishAfterAvailable(t *testing.T) {
	phase(t)
	checkLeaks(t)
	const total, together = 20, 4
	var results []firstContact
	for batch := 0; batch < total/together; batch++ {
		var wg sync.WaitGroup
		out := make([]firstContact, together)
		for i := range together {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i] = firstPublish(t, fmt.Sprintf("first-%02d", batch*together+i))
			}()
		}
		wg.Wait()
		results = append(results, out...)
	}
	refusedServices, refusedMax := 0, time.Duration(0)
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		}
		if r.refused > 0 {
			refusedServices++
			refusedMax = max(refusedMax, r.refusedIn)
		}
	}
	t.Logf("%d fresh MediaServices: %d first publishes accepted; %d saw refused TCP connections while kube-proxy programmed the Service (longest %s)",
		total, total-countErrs(results), refusedServices, refusedMax.Round(time.Millisecond))
}

func countErrs(rs []firstContact) int {
	n := 0
	for _, r := range rs {
		if r.err != nil {
			n++
		}
	}
	return n
}

// 11. HTTPS signalling: a MediaService with spec.signaling.tls serves
// WHIP, WHEP and WSS through its Service with a certificate issued for the
// Service's address; rooms forwarded between its pods go over TLS; a
// renewed certificate in the Secret is served without a restart.
func TestHTTPSSignallingThroughService(t *testing.T) {
	phase(t)
	checkLeaks(t)
	createMS(t, "tls", mediav1alpha1.MediaServiceSpec{
		Replicas:  ptr.To[int32](2),
		Signaling: mediav1alpha1.SignalingSpec{TLS: &mediav1alpha1.SignalingTLS{SecretRef: corev1.LocalObjectReference{Name: "tls-cert"}}},
	})
	t.Cleanup(func() { deleteMS(t, "tls") })
	var svc corev1.Service
	eventually(t, time.Minute, "signalling Service", func() (bool, string) {
		err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "tls"}, &svc)
		return err == nil && svc.Spec.ClusterIP != "", fmt.Sprint(err)
	})
	ca := testpki.NewCA(t)
	writeSecret := func(create bool) {
		sec := tlsSecret(t, ca, "tls-cert", svc.Spec.ClusterIP, "tls."+ns+".svc")
		var err error
		if create {
			err = kc.Create(ctxFor(t, 10*time.Second), sec)
		} else {
			err = kc.Update(ctxFor(t, 10*time.Second), sec)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	writeSecret(true) // the pods wait for it to mount
	waitAvailable(t, "tls", 2, 3*time.Minute)

	tlsCfg := ca.ClientConfig()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer hc.CloseIdleConnections()
	base := fmt.Sprintf("https://%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	waitServiceAnswers(t, hc, base)
	opts := mfclient.Options{API: rtcAPI, HTTP: hc, TLS: tlsCfg, Retries: 3}
	ctx := ctxFor(t, 3*time.Minute)
	pub, err := mfclient.Publish(ctx, base, "secure", opts)
	if err != nil {
		t.Fatalf("WHIP over HTTPS through the Service: %v", err)
	}
	defer pub.Close()
	pub.SendRTP(100, 600)
	view, err := mfclient.Play(ctx, base, "secure", opts)
	if err != nil {
		t.Fatalf("WHEP over HTTPS: %v", err)
	}
	defer view.Close()
	waitPackets(t, "HTTPS viewer", &view.Received, 200, 30*time.Second)
	// Three WSS participants: kube-proxy spreads them over both pods, which
	// relay to the room's owner over WSS.
	var parts []*mfclient.Participant
	for i := 0; i < 3; i++ {
		p, err := mfclient.Join(ctx, "wss://"+strings.TrimPrefix(base, "https://")+"/ws", "secure-room", true, opts)
		if err != nil {
			t.Fatalf("WSS join %d: %v", i, err)
		}
		defer p.Close()
		p.SendRTP(50, 400)
		parts = append(parts, p)
	}
	for i, p := range parts {
		eventually(t, 30*time.Second, fmt.Sprintf("WSS participant %d receives both others", i), func() (bool, string) {
			return p.Received.Tracks.Load() >= 2, fmt.Sprintf("%d tracks", p.Received.Tracks.Load())
		})
	}

	// Renewal: the Secret changes, the kubelet updates the mounted files,
	// every pod serves the new certificate without a restart.
	pods := mediaPods(t, "tls")
	restarts := map[string]int32{}
	for _, p := range pods {
		restarts[p.Name] = p.Status.ContainerStatuses[0].RestartCount
	}
	old := servedCert(t, pods[0].Status.PodIP, tlsCfg)
	writeSecret(false)
	start := time.Now()
	eventually(t, 2*time.Minute, "every pod serves the renewed certificate", func() (bool, string) {
		var got []string
		ok := true
		for _, p := range pods {
			serial := servedCert(t, p.Status.PodIP, tlsCfg)
			got = append(got, p.Name+"="+serial)
			ok = ok && serial != old
		}
		return ok, strings.Join(got, " ")
	})
	t.Logf("renewed certificate served by every pod %s after the Secret changed", time.Since(start).Round(time.Second))
	for _, p := range mediaPods(t, "tls") {
		if n := p.Status.ContainerStatuses[0].RestartCount; n != restarts[p.Name] {
			t.Errorf("pod %s restarted (%d → %d) for the renewal", p.Name, restarts[p.Name], n)
		}
	}
	before := view.Received.Packets.Load()
	waitPackets(t, "HTTPS viewer after the renewal", &view.Received, before+100, 20*time.Second)
	for _, p := range parts {
		_ = p.Leave()
	}
}

// servedCert is the serial of the certificate a pod presents on 8080.
func servedCert(t *testing.T, podIP string, cfg *tls.Config) string {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(podIP, "8080"), &tls.Config{RootCAs: cfg.RootCAs, InsecureSkipVerify: true})
	if err != nil {
		return "error: " + err.Error()
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// tlsSecret is a kubernetes.io/tls Secret in the test namespace with a
// certificate from ca for hosts.
func tlsSecret(t *testing.T, ca *testpki.CA, name string, hosts ...string) *corev1.Secret {
	t.Helper()
	cert, key := ca.Issue(t, hosts...)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
}
