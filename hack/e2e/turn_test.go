//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/pion/webrtc/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
)

// iptables runs iptables (the cluster script installed it).
func iptables(args ...string) error {
	out, err := exec.Command("iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// 17. The TURN gateway: a MediaService with spec.turn on the pod network;
// direct UDP from the host to the media pods' ICE port is dropped (a rule
// the test adds and removes), so only the gateway's Service can carry
// media. A WHIP publisher and a WHEP viewer exchange media through the
// relay over UDP and over TLS, with the credentials the media pod minted
// for them; the relay refuses permissions towards the node and the API
// server's ClusterIP.
func TestTURNGatewayCarriesMedia(t *testing.T) {
	phase(t)
	checkLeaks(t)
	createMS(t, "relay", mediav1alpha1.MediaServiceSpec{
		Replicas: ptr.To[int32](1),
		TURN: &mediav1alpha1.TURNSpec{Enabled: true, ServiceType: mediav1alpha1.ServiceTypeClusterIP,
			TLS: mediav1alpha1.TURNTLSListener{Enabled: true, Port: 443, SecretRef: &corev1.LocalObjectReference{Name: "relay-turn-cert"}}},
	})
	t.Cleanup(func() { deleteMS(t, "relay") })
	var svc corev1.Service
	eventually(t, time.Minute, "TURN Service", func() (bool, string) {
		err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "relay-turn"}, &svc)
		return err == nil && svc.Spec.ClusterIP != "", fmt.Sprint(err)
	})
	// The gateway's certificate, for the address clients are given; pion's
	// ICE agent checks turns: servers against the system roots, which
	// TestMain pointed at turnCAFile.
	ca := testpki.NewCA(t)
	if err := os.WriteFile(turnCAFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := kc.Create(ctxFor(t, 10*time.Second), tlsSecret(t, ca, "relay-turn-cert", svc.Spec.ClusterIP)); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, "relay", 1, 3*time.Minute)
	var st *mediav1alpha1.TURNStatus
	eventually(t, 3*time.Minute, "the gateway ready and announced", func() (bool, string) {
		st = getMS(t, "relay").Status.TURN
		return st != nil && st.ReadyReplicas == 1 && len(st.URLs) == 2, fmt.Sprintf("%+v", st)
	})
	waitRow(t, "relay", map[string]string{"TURN": svc.Spec.ClusterIP})

	// The media pods have rolled onto the gateway's URLs by now (status
	// shows them once the Deployment carries them); wait for a pod that
	// announces it.
	base := serviceURL(t, "relay")
	var servers []webrtc.ICEServer
	eventually(t, 3*time.Minute, "the media pods announce the gateway", func() (bool, string) {
		req, _ := http.NewRequest(http.MethodOptions, base+"/whip/relayed", nil)
		resp, err := httpc.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		servers = mfclient.ICEServersFromLinks(resp.Header)
		return len(servers) == 2, fmt.Sprintf("%+v", servers) // one per URL: udp and turns
	})

	// The media pods rolled onto the gateway's URLs; once the rollout is
	// over, the gateway relays to exactly the one media pod left.
	eventually(t, 3*time.Minute, "one announcing media pod, and the gateway relaying to it", func() (bool, string) {
		pods := mediaPods(t, "relay")
		if len(pods) != 1 || !podReady(&pods[0]) || pods[0].DeletionTimestamp != nil {
			return false, fmt.Sprintf("%d media pods", len(pods))
		}
		got := gatewayPeers(t)
		return got == pods[0].Status.PodIP, "the gateway relays to " + got + ", the media pod is " + pods[0].Status.PodIP
	})

	// kube-proxy programs the gateway's Service a little after its pod
	// is ready (until then UDP to it is refused): wait until a STUN
	// binding request over UDP is answered and TCP 443 accepts.
	eventually(t, time.Minute, "the TURN Service answers over UDP and TCP", func() (bool, string) {
		if err := stunBinding(net.JoinHostPort(svc.Spec.ClusterIP, "3478")); err != nil {
			return false, "UDP 3478: " + err.Error()
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "443"), time.Second)
		if err != nil {
			return false, "TCP 443: " + err.Error()
		}
		_ = c.Close()
		return true, ""
	})

	// Direct UDP from the host to the pod network's ICE port: dropped.
	rule := []string{"OUTPUT", "-d", "198.18.1.0/24", "-p", "udp", "--dport", "50000", "-m", "comment", "--comment", "mediafleet-e2e-turn", "-j", "DROP"}
	if err := iptables(append([]string{"-I"}, rule...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := iptables(append([]string{"-D"}, rule...)...); err != nil {
			t.Error(err)
		}
	})

	for _, tc := range []struct {
		name, scheme string
		relayOnly    bool
	}{{"udp-relayonly", "turn:", true}, {"udp", "turn:", false}, {"tls", "turns:", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var one []webrtc.ICEServer
			for _, s := range servers {
				if strings.HasPrefix(s.URLs[0], tc.scheme) {
					one = append(one, s)
				}
			}
			opts := clientOpts()
			opts.ICEServers, opts.RelayOnly = one, tc.relayOnly
			ctx := ctxFor(t, 2*time.Minute)
			room := "relayed-" + tc.name
			pub, err := mfclient.Publish(ctx, base, room, opts)
			if err != nil {
				t.Fatalf("WHIP through the gateway: %v", err)
			}
			defer pub.Close()
			pub.SendRTP(100, 600)
			view, err := mfclient.Play(ctx, base, room, opts)
			if err != nil {
				t.Fatalf("WHEP through the gateway: %v", err)
			}
			defer view.Close()
			t.Cleanup(func() {
				if t.Failed() {
					for _, m := range []string{"turn_peers", "turn_allocations", "turn_refused_permissions_total", "turn_relayed_packets_total"} {
						t.Logf("gateway %s: %s", m, gatewayMetric(t, m))
					}
				}
			})
			waitPackets(t, "viewer through the "+tc.name+" relay", &view.Received, 200, time.Minute)
			for _, s := range []*mfclient.Session{pub, view} {
				pair, err := s.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
				if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
					t.Errorf("selected pair %v (%v), want the client's relay candidate", pair, err)
				}
			}
		})
	}

	// Not an open relay: with good credentials, a permission towards the
	// node or the API server is refused; one towards the media pod is not.
	conn, err := net.ListenPacket("udp4", nodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	addr := net.JoinHostPort(svc.Spec.ClusterIP, "3478")
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: servers[0].Username, Password: servers[0].Credential.(string), Realm: "mediafleet"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	alloc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate with minted credentials: %v", err)
	}
	defer alloc.Close()
	mediaIP := mediaPods(t, "relay")[0].Status.PodIP
	for _, tc := range []struct {
		what string
		ip   string
		ok   bool
	}{{"the node", nodeIP, false}, {"the API server's ClusterIP", "198.18.16.1", false}, {"a media pod", mediaIP, true}} {
		err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(tc.ip), Port: 50000})
		if (err == nil) != tc.ok {
			t.Errorf("permission towards %s (%s): %v, want allowed %v", tc.what, tc.ip, err, tc.ok)
		}
	}
}

// gatewayMetric reads one series family of the gateway pod's /metrics (its
// admin port serves /metrics without the token), as "value" or
// "labels=value ..." when it has several series.
func gatewayMetric(t *testing.T, name string) string {
	t.Helper()
	var list corev1.PodList
	if err := kc.List(ctxFor(t, 10*time.Second), &list, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "mediafleet-turn"}); err != nil || len(list.Items) == 0 {
		return fmt.Sprintf("no gateway pod (%v)", err)
	}
	var out []string
	for _, p := range list.Items {
		if p.Status.PodIP == "" {
			continue
		}
		code, body, err := adminDo(&p, 9090, http.MethodGet, "/metrics", "")
		if err != nil || code != http.StatusOK {
			out = append(out, fmt.Sprintf("%s: %d %v", p.Name, code, err))
			continue
		}
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name+" ") {
				out = append(out, strings.TrimPrefix(line, name+" "))
			} else if strings.HasPrefix(line, name+"{") {
				out = append(out, strings.TrimPrefix(line, name))
			}
		}
	}
	return strings.Join(out, " ")
}

// gatewayPeers is what the gateway pods relay to (their /status, with the
// MediaService's admin token), one list per pod joined by ";".
func gatewayPeers(t *testing.T) string {
	t.Helper()
	var sec corev1.Secret
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: ns, Name: "relay-admin-token"}, &sec); err != nil {
		return err.Error()
	}
	var list corev1.PodList
	if err := kc.List(ctxFor(t, 10*time.Second), &list, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "mediafleet-turn"}); err != nil {
		return err.Error()
	}
	var out []string
	for _, p := range list.Items {
		code, body, err := adminDo(&p, 9090, http.MethodGet, "/status", string(sec.Data["token"]))
		if err != nil || code != http.StatusOK {
			out = append(out, fmt.Sprintf("%s: %d %v", p.Name, code, err))
			continue
		}
		var st struct {
			PeerAddresses []string `json:"peerAddresses"`
		}
		_ = json.Unmarshal(body, &st)
		out = append(out, strings.Join(st.PeerAddresses, ","))
	}
	return strings.Join(out, ";")
}

// stunBinding sends one STUN binding request over UDP and waits a second
// for the answer.
func stunBinding(addr string) error {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	var resp stun.Message
	if err := stun.Decode(buf[:n], &resp); err != nil {
		return err
	}
	if resp.Type != stun.BindingSuccess {
		return fmt.Errorf("answer %s", resp.Type)
	}
	return nil
}
