package controllers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
	mfconfig "github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/relay"
)

// TestEnvtestTURNGateway: spec.turn.enabled makes the gateway (its own
// shared secret, Deployment, Service, PDB), the media pods announce it with
// credentials minted from that secret (and gather no relay candidate on
// it), status and `kubectl get` show the address clients get; disabling it
// removes every piece.
func TestEnvtestTURNGateway(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ms := newMS(ns, "relayed")
	ms.Spec.TURN = &mediav1alpha1.TURNSpec{Enabled: true, ServiceType: mediav1alpha1.ServiceTypeClusterIP,
		TCP: mediav1alpha1.TURNListener{Enabled: true, Port: 3478}}
	createMS(t, ms)
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

	sec := &corev1.Secret{}
	eventually(t, waitFor, "TURN secret", func() error { return k8s.Get(ctx, key("relayed-turn-secret"), sec) })
	if len(sec.Data[desired.TURNSecretKey]) < 32 || !metav1.IsControlledBy(sec, ms) {
		t.Errorf("TURN secret: %d bytes, controlled %v", len(sec.Data[desired.TURNSecretKey]), metav1.IsControlledBy(sec, ms))
	}
	gw := &appsv1.Deployment{}
	eventually(t, waitFor, "TURN Deployment", func() error { return k8s.Get(ctx, key("relayed-turn"), gw) })
	pod := gw.Spec.Template.Spec
	c := pod.Containers[0]
	env := envOf(gw)
	if len(c.Args) != 1 || c.Args[0] != "turn" || c.Image != testImage {
		t.Errorf("gateway container %s %v, want the media image with args [turn]", c.Image, c.Args)
	}
	for k, want := range map[string]string{"RELAY_SECRET": "<ref>", "ADMIN_TOKEN": "<ref>", "RELAY_PEER_PORTS": "50000", "RELAY_UDP_PORT": "3478",
		"RELAY_TCP_PORT": "3478", "RELAY_MAX_ALLOCATIONS": "1000", "RELAY_USER_ALLOCATIONS": "4", "RELAY_ALLOCATION_BPS": "0"} {
		if env[k] != want {
			t.Errorf("gateway env %s = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["RELAY_TLS_PORT"]; ok {
		t.Error("TLS listener configured without spec.turn.tls")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || pod.HostNetwork ||
		c.SecurityContext == nil || !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("gateway pod not hardened like the media pods: %+v", pod)
	}
	if gw.Spec.Template.Labels[desired.LabelMediaService] != "" || gw.Spec.Template.Labels[desired.LabelTURNGateway] != "relayed" {
		t.Errorf("gateway pod labels %v: a gateway pod must not pass for a media pod", gw.Spec.Template.Labels)
	}
	svc := &corev1.Service{}
	eventually(t, waitFor, "TURN Service", func() error { return k8s.Get(ctx, key("relayed-turn"), svc) })
	ports := map[string]corev1.Protocol{}
	for _, p := range svc.Spec.Ports {
		ports[fmt.Sprintf("%s/%d", p.Name, p.Port)] = p.Protocol
	}
	if len(ports) != 2 || ports["turn-udp/3478"] != corev1.ProtocolUDP || ports["turn-tcp/3478"] != corev1.ProtocolTCP {
		t.Errorf("TURN Service ports %v, want udp and tcp 3478 and never the admin port", ports)
	}
	eventually(t, waitFor, "TURN PDB", func() error { return k8s.Get(ctx, key("relayed-turn"), &policyv1.PodDisruptionBudget{}) })

	// The media pods announce the gateway (clients only), and status says
	// where clients reach it.
	wantURLs := []string{"turn:" + svc.Spec.ClusterIP + ":3478?transport=udp", "turn:" + svc.Spec.ClusterIP + ":3478?transport=tcp"}
	eventually(t, waitFor, "media pods announce the gateway", func() error {
		dep, err := getDeployment(ns, "relayed")
		if err != nil {
			return err
		}
		e := envOf(dep)
		if e["TURN_SERVER_COUNT"] != "1" || e["TURN_0_URLS"] != strings.Join(wantURLs, ",") || e["TURN_0_SECRET"] != "<ref>" ||
			e["TURN_0_CLIENTS_ONLY"] != "true" || e["TURN_0_TTL"] != "1h0m0s" {
			return fmt.Errorf("media env %v", e)
		}
		if dep.Spec.Template.Annotations[desired.AnnotationTURNSecretHash] == "" {
			return fmt.Errorf("no secret hash on the media pod template")
		}
		return nil
	})
	eventually(t, waitFor, "status.turn", func() error {
		st := getMS(t, ns, "relayed").Status.TURN
		if st == nil || st.Address != svc.Spec.ClusterIP || strings.Join(st.URLs, ",") != strings.Join(wantURLs, ",") {
			return fmt.Errorf("status.turn %+v", st)
		}
		return nil
	})

	// Off again: every piece goes, and the media pods no longer announce it.
	cur := getMS(t, ns, "relayed")
	cur.Spec.TURN.Enabled = false
	if err := k8s.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}} {
		eventually(t, waitFor, fmt.Sprintf("%T removed", obj), func() error {
			if err := k8s.Get(ctx, key("relayed-turn"), obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
	}
	eventually(t, waitFor, "secret removed, media env clean, status clear", func() error {
		if err := k8s.Get(ctx, key("relayed-turn-secret"), &corev1.Secret{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("secret still there (%v)", err)
		}
		dep, err := getDeployment(ns, "relayed")
		if err != nil {
			return err
		}
		if e := envOf(dep); e["TURN_SERVER_COUNT"] != "" || e["TURN_0_URLS"] != "" {
			return fmt.Errorf("media env still announces a gateway: %v", e)
		}
		if st := getMS(t, ns, "relayed").Status.TURN; st != nil {
			return fmt.Errorf("status.turn %+v", st)
		}
		return nil
	})
}

// TestEnvtestTURNAutoscaling: a real gateway (mediaserver/relay on
// loopback) behind a gateway Pod whose status points at it; allocations
// made by real pion/turn clients are observed, the gateway Deployment
// scales up at once to ceil(allocations / target), status.turn counts them,
// and once they are gone it scales down only after the window.
func TestEnvtestTURNAutoscaling(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	const secret = "envtest-gateway-secret-0123456789"
	cfg := relay.Default()
	cfg.ListenHost, cfg.UDPPort, cfg.AdminPort, cfg.UDPListeners = "127.0.0.1", 0, 0, 1
	cfg.Secret, cfg.RelayIP = secret, net.ParseIP("127.0.0.1")
	gw, err := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	adminPort, _ := strconv.Atoi(strings.TrimPrefix(gw.AdminURL(), "http://127.0.0.1:"))

	ms := newMS(ns, "scaled")
	ms.Spec.TURN = &mediav1alpha1.TURNSpec{Enabled: true, ServiceType: mediav1alpha1.ServiceTypeClusterIP,
		Autoscaling: &mediav1alpha1.TURNAutoscalingSpec{MinReplicas: 1, MaxReplicas: 4, TargetAllocationsPerPod: 2,
			ScaleDownStabilization: metav1.Duration{Duration: 5 * time.Minute}}}
	createMS(t, ms)
	replicasAre := func(n int32) func() error {
		return func() error {
			d := &appsv1.Deployment{}
			if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "scaled-turn"}, d); err != nil {
				return err
			}
			if *d.Spec.Replicas != n {
				return fmt.Errorf("gateway replicas %d, want %d", *d.Spec.Replicas, n)
			}
			return nil
		}
	}
	eventually(t, waitFor, "the gateway at its starting size", replicasAre(1))

	// Five allocations, target 2 per pod: 3 gateway pods.
	var closers []func()
	for i := 0; i < 5; i++ {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		user, pass := mfconfig.TURNServer{Secret: secret, TTL: time.Hour}.Credentials(time.Now(), fmt.Sprintf("s%d", i))
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: gw.UDPAddr().String(), TURNServerAddr: gw.UDPAddr().String(),
			Conn: conn, Username: user, Password: pass, Realm: "mediafleet"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		a, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, func() { _ = a.Close(); c.Close(); _ = conn.Close() })
	}
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	// The gateway pod appears only now, holding all five: the operator sees
	// them in one observation, so "at once" is one step, 1 → 3 (allocating
	// while the pod is observed could show 3 of 5 first: 1 → 2 → 3).
	localPod(t, ns, "scaled-turn-a", desired.TURNLabels(ms), "turn", adminPort)
	eventually(t, waitFor, "scale up to ceil(5/2)=3 at once", replicasAre(3))
	assertEvent(t, ns, "scaled", ReasonAutoscaled, "TURN gateway autoscaling: 1 → 3 replicas (5 allocations on 1 pods, target 2 per pod)")
	eventually(t, waitFor, "status.turn.allocations", func() error {
		if st := getMS(t, ns, "scaled").Status.TURN; st == nil || st.Allocations != 5 {
			return fmt.Errorf("status.turn %+v", st)
		}
		return nil
	})
	for _, c := range closers {
		c()
	}
	closers = nil
	eventually(t, waitFor, "allocations gone", func() error {
		if st := getMS(t, ns, "scaled").Status.TURN; st == nil || st.Allocations != 0 {
			return fmt.Errorf("status.turn %+v", st)
		}
		return nil
	})
	testClock.Step(4 * time.Minute)
	reconcileFully(t, ns, "scaled")
	if err := replicasAre(3)(); err != nil {
		t.Fatalf("scaled down inside the stabilization window: %v", err)
	}
	testClock.Step(2 * time.Minute)
	kick(ns, "scaled")
	eventually(t, waitFor, "scale down after the window", replicasAre(1))
}
