package desired

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

func withTURN(mut func(*mediav1alpha1.TURNSpec)) *mediav1alpha1.MediaService {
	return defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.TURN = &mediav1alpha1.TURNSpec{Enabled: true, UDP: mediav1alpha1.TURNUDPListener{Port: 3478},
			TCP: mediav1alpha1.TURNListener{Port: 3478}, TLS: mediav1alpha1.TURNTLSListener{Port: 443},
			ServiceType: mediav1alpha1.ServiceTypeLoadBalancer, MaxAllocationsPerPod: 1000, MaxAllocationsPerUser: 4}
		if mut != nil {
			mut(ms.Spec.TURN)
		}
	})
}

// TestTURNAddressAndURLs: what clients are told, for every Service type.
func TestTURNAddressAndURLs(t *testing.T) {
	lb := func(ip, host string) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.0.0.9"}}
		if ip != "" || host != "" {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, Hostname: host}}
		}
		return s
	}
	nodePort := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
		{Name: PortNameTURNUDP, Port: 3478, NodePort: 31000}, {Name: PortNameTURNTLS, Port: 443, NodePort: 31443}}}}
	tls := func(t *mediav1alpha1.TURNSpec) {
		t.TLS.Enabled, t.TLS.SecretRef = true, &corev1.LocalObjectReference{Name: "cert"}
	}
	for _, tc := range []struct {
		name string
		ms   *mediav1alpha1.MediaService
		svc  *corev1.Service
		want string
	}{
		{"load balancer pending", withTURN(nil), lb("", ""), ""},
		{"load balancer ip", withTURN(nil), lb("203.0.113.7", ""), "turn:203.0.113.7:3478?transport=udp"},
		{"load balancer hostname, tls too", withTURN(tls), lb("", "turn.example.test"),
			"turn:turn.example.test:3478?transport=udp,turns:turn.example.test:443?transport=tcp"},
		{"public address wins", withTURN(func(t *mediav1alpha1.TURNSpec) { t.PublicAddress = "relay.example.test" }), lb("203.0.113.7", ""),
			"turn:relay.example.test:3478?transport=udp"},
		{"node port", withTURN(func(t *mediav1alpha1.TURNSpec) {
			t.ServiceType, t.PublicAddress = mediav1alpha1.ServiceTypeNodePort, "198.51.100.4"
			tls(t)
		}), nodePort, "turn:198.51.100.4:31000?transport=udp,turns:198.51.100.4:31443?transport=tcp"},
		{"cluster ip", withTURN(func(t *mediav1alpha1.TURNSpec) {
			t.ServiceType = mediav1alpha1.ServiceTypeClusterIP
			t.UDP.Enabled, t.TCP.Enabled = ptr.To(false), true
		}), &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.9"}}, "turn:10.0.0.9:3478?transport=tcp"},
		{"ipv6", withTURN(nil), lb("2001:db8::7", ""), "turn:[2001:db8::7]:3478?transport=udp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(TURNURLs(tc.ms, tc.svc, TURNAddress(tc.ms, tc.svc)), ",")
			if got != tc.want {
				t.Errorf("URLs %q, want %q", got, tc.want)
			}
		})
	}
}

// TestTURNChildren: the gateway's objects, and the monitoring for it only
// when it runs.
func TestTURNChildren(t *testing.T) {
	ms := withTURN(func(t *mediav1alpha1.TURNSpec) {
		t.MaxKbpsPerAllocation = 4000
		t.TLS.Enabled, t.TLS.SecretRef = true, &corev1.LocalObjectReference{Name: "cert"}
	})
	d := TURNDeployment(ms, Options{MediaserverImage: "img"}, "hash", 2)
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Value != nil {
			env[*e.Name] = *e.Value
		}
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want the 2 asked for", *d.Spec.Replicas)
	}
	if env["RELAY_ALLOCATION_BPS"] != "4000000" || env["RELAY_TLS_PORT"] != "5349" || env["RELAY_PEER_PORTS"] != "50000" ||
		env["TLS_CERT_FILE"] == "" || d.Spec.Template.Annotations[AnnotationTURNSecretHash] != "hash" {
		t.Errorf("gateway env %v, annotations %v", env, d.Spec.Template.Annotations)
	}
	ms.Spec.ICE = mediav1alpha1.ICESpec{PortRange: &mediav1alpha1.PortRange{Min: 40000, Max: 40999}}
	if got := TURNPeerPorts(ms); got != "40000-40999" {
		t.Errorf("peer ports %q", got)
	}
	svc := TURNService(ms)
	if len(svc.Spec.Ports) != 2 || *svc.Spec.Ports[1].Port != 443 || svc.Spec.Ports[1].TargetPort.StrVal != PortNameTURNTLS ||
		*svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("service %+v", svc.Spec)
	}
	pm := TURNPodMonitor(ms)
	if pm.Name != "demo-turn" || pm.Spec.Selector.MatchLabels[labelName] != turnAppName ||
		pm.Spec.PodMetricsEndpoints[0].RelabelConfigs[0].TargetLabel != LabelTURNGatewaySeries {
		t.Errorf("TURN PodMonitor %+v", pm)
	}
	count := func(ms *mediav1alpha1.MediaService) (alerts int, panels int) {
		for _, r := range PrometheusRule(ms).Spec.Groups[0].Rules {
			if strings.HasPrefix(r.Alert, "TURN") {
				alerts++
			}
		}
		js, err := dashboardJSON(ms)
		if err != nil {
			t.Fatal(err)
		}
		return alerts, strings.Count(js, "TURN gateway:")
	}
	if a, p := count(ms); a != 2 || p != 2 {
		t.Errorf("with a gateway: %d TURN alerts, %d TURN panels; want 2 and 2", a, p)
	}
	if a, p := count(defaulted(nil)); a != 0 || p != 0 {
		t.Errorf("without a gateway: %d TURN alerts, %d TURN panels", a, p)
	}
}
