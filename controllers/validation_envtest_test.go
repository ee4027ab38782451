package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// TestEnvtestInvalidManifestsAreRejected sends manifests an admin might
// write to the real API server and checks each is refused with a message
// that says what is wrong.
func TestEnvtestInvalidManifestsAreRejected(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	cases := []struct {
		name string
		spec map[string]any
		meta map[string]any
		want string
		// not: what the same mistake must not also say (no second,
		// contradicting or noisy message).
		not []string
	}{
		{"port range reversed", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50100), "max": int64(50000)}}, "limits": map[string]any{"maxSessionsPerPod": int64(10)}},
			nil, "ice.portRange.min must be <= ice.portRange.max", []string{"ports; limits.maxSessionsPerPod needs"}},
		{"port range reversed, default session limit", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50100), "max": int64(50000)}}},
			nil, "ice.portRange.min must be <= ice.portRange.max", []string{"ports; limits.maxSessionsPerPod needs"}},
		{"port range below 1024", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(80), "max": int64(2000)}}},
			nil, "spec.ice.portRange.min: Invalid value: 80: spec.ice.portRange.min in body should be greater than or equal to 1024", nil},
		{"port range and mux together", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50000), "max": int64(51000)}, "udpMuxPort": int64(50000)}},
			nil, "ice.portRange and ice.udpMuxPort are mutually exclusive: set one (with neither, udpMuxPort 50000 is used)", nil},
		{"range narrower than sessions", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50000), "max": int64(50100)}}},
			nil, "ice.portRange has 101 ports; limits.maxSessionsPerPod needs 500", []string{"min must be <= "}},
		{"range narrower than an explicit limit", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(40000), "max": int64(40009)}}, "limits": map[string]any{"maxSessionsPerPod": int64(30)}},
			nil, "ice.portRange has 10 ports; limits.maxSessionsPerPod needs 30", nil},
		{"stun url scheme", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "stunServers": []any{"http://stun.example.test"}}},
			nil, "each ice.stunServers entry must be a stun: or stuns: URL", nil},
		{"turn url scheme", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "turnServers": []any{map[string]any{"urls": []any{"stun:turn.example.test"}, "credentialsSecretRef": map[string]any{"name": "turn"}}}}},
			nil, "each ice.turnServers[].urls entry must be a turn: or turns: URL", nil},
		{"turn without secret", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "turnServers": []any{map[string]any{"urls": []any{"turn:turn.example.test"}}}}},
			nil, "each ice.turnServers entry needs exactly one of credentialsSecretRef", nil},
		{"turn with both kinds of credentials", map[string]any{"ice": map[string]any{"turnServers": []any{map[string]any{"urls": []any{"turn:turn.example.test"},
			"credentialsSecretRef": map[string]any{"name": "a"}, "sharedSecretRef": map[string]any{"name": "b"}}}}},
			nil, "each ice.turnServers entry needs exactly one of credentialsSecretRef", nil},
		{"turn ttl without a shared secret", map[string]any{"ice": map[string]any{"turnServers": []any{map[string]any{"urls": []any{"turn:turn.example.test"},
			"credentialsSecretRef": map[string]any{"name": "a"}, "credentialTTL": "1h"}}}},
			nil, "ice.turnServers[].credentialTTL applies to sharedSecretRef only", nil},
		{"turn ttl too long", map[string]any{"ice": map[string]any{"turnServers": []any{map[string]any{"urls": []any{"turn:turn.example.test"},
			"sharedSecretRef": map[string]any{"name": "b"}, "credentialTTL": "48h"}}}},
			nil, "ice.turnServers[].credentialTTL must be between 1m and 24h", nil},
		{"turn tls without a certificate", map[string]any{"turn": map[string]any{"enabled": true, "tls": map[string]any{"enabled": true}}},
			nil, "turn.tls.enabled needs turn.tls.secretRef: a kubernetes.io/tls Secret holding the gateway's certificate", nil},
		{"turn without listeners", map[string]any{"turn": map[string]any{"enabled": true, "udp": map[string]any{"enabled": false}}},
			nil, "turn needs at least one listener: udp, tcp or tls", nil},
		{"turn nodeport without an address", map[string]any{"turn": map[string]any{"enabled": true, "serviceType": "NodePort"}},
			nil, "turn.serviceType NodePort needs turn.publicAddress", nil},
		{"turn tcp and tls on one port", map[string]any{"turn": map[string]any{"enabled": true, "tcp": map[string]any{"enabled": true, "port": int64(443)},
			"tls": map[string]any{"enabled": true, "secretRef": map[string]any{"name": "cert"}}}},
			nil, "turn.tcp.port and turn.tls.port must differ (both are TCP)", nil},
		{"broadcast room with a space", map[string]any{"rooms": map[string]any{"broadcast": []any{"town hall"}}},
			nil, "spec.rooms.broadcast[0] in body should match", nil},
		{"turn ttl too short", map[string]any{"turn": map[string]any{"enabled": true, "credentialTTL": "10s"}},
			nil, "turn.credentialTTL must be between 1m and 24h", nil},
		{"turn public address with a space", map[string]any{"turn": map[string]any{"enabled": true, "publicAddress": "turn example"}},
			nil, "spec.turn.publicAddress in body should match", nil},
		{"turn quota too high", map[string]any{"turn": map[string]any{"enabled": true, "maxAllocationsPerUser": int64(1000)}},
			nil, "spec.turn.maxAllocationsPerUser in body should be less than or equal to 64", nil},
		{"turn autoscaling reversed", map[string]any{"turn": map[string]any{"enabled": true, "autoscaling": map[string]any{"minReplicas": int64(5), "maxReplicas": int64(2), "targetAllocationsPerPod": int64(100)}}},
			nil, "turn.autoscaling.minReplicas must be <= maxReplicas", nil},
		{"turn autoscaling target above the bound", map[string]any{"turn": map[string]any{"enabled": true, "maxAllocationsPerPod": int64(100),
			"autoscaling": map[string]any{"maxReplicas": int64(3), "targetAllocationsPerPod": int64(500)}}},
			nil, "turn.autoscaling.targetAllocationsPerPod cannot exceed turn.maxAllocationsPerPod", nil},
		{"zero drain timeout", map[string]any{"limits": map[string]any{"drainTimeout": "0s"}},
			nil, "limits.drainTimeout must be positive and at most 24h", nil},
		{"garbage drain timeout", map[string]any{"limits": map[string]any{"drainTimeout": "soon"}},
			nil, "spec.limits.drainTimeout: Invalid value: \"soon\"", []string{"type conversion", "google.protobuf.Duration"}},
		{"garbage send timeout", map[string]any{"limits": map[string]any{"websocketSendTimeout": "1 second"}},
			nil, "spec.limits.websocketSendTimeout: Invalid value: \"1 second\"", []string{"type conversion"}},
		{"garbage baseline window", map[string]any{"leakDetection": map[string]any{"baselineWindow": "5min"}},
			nil, "spec.leakDetection.baselineWindow: Invalid value: \"5min\"", []string{"type conversion"}},
		{"garbage stabilization", map[string]any{"autoscaling": map[string]any{"maxReplicas": int64(4), "targetSessionsPerPod": int64(10), "scaleDownStabilization": "later"}},
			nil, "spec.autoscaling.scaleDownStabilization: Invalid value: \"later\"", []string{"type conversion"}},
		{"tls without a secret name", map[string]any{"signaling": map[string]any{"tls": map[string]any{}}},
			nil, "spec.signaling.tls.secretRef: Required value", nil},
		{"too many ice candidates", map[string]any{"limits": map[string]any{"maxICECandidatesPerSession": int64(5000)}},
			nil, "spec.limits.maxICECandidatesPerSession: Invalid value: 5000: spec.limits.maxICECandidatesPerSession in body should be less than or equal to 1000", nil},
		{"negative replicas", map[string]any{"replicas": int64(-1)},
			nil, "spec.replicas in body should be greater than or equal to 0", nil},
		{"signaling and admin on one port", map[string]any{"adminPort": int64(8080)},
			nil, "signaling.port and adminPort must differ", nil},
		{"unknown service type", map[string]any{"signaling": map[string]any{"serviceType": "ExternalName"}},
			nil, `spec.signaling.serviceType: Unsupported value: "ExternalName"`, nil},
		{"static address without ips", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "publicAddress": map[string]any{"source": "Static"}}},
			nil, "ice.publicAddress.ips is required with source Static and allowed only with it", nil},
		{"static address not an IP", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "publicAddress": map[string]any{"source": "Static", "ips": []any{"media.example.test"}}}},
			nil, "each ice.publicAddress.ips entry must be an IP address", nil},
		{"bad origin", map[string]any{"signaling": map[string]any{"allowedOrigins": []any{"app.example.test/path"}}},
			nil, "each signaling.allowedOrigins entry must be", nil},
		{"threshold ratio too low", map[string]any{"leakDetection": map[string]any{"thresholdRatio": int64(1)}},
			nil, "spec.leakDetection.thresholdRatio in body should be greater than or equal to 2", nil},
		{"unknown remediation", map[string]any{"leakDetection": map[string]any{"remediation": "Reboot"}},
			nil, `spec.leakDetection.remediation: Unsupported value: "Reboot"`, nil},
		{"pod ip with host network", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "hostNetwork": true, "publicAddress": map[string]any{"source": "PodIP"}}},
			nil, "ice.publicAddress.source PodIP makes no sense with ice.hostNetwork", nil},
		{"autoscaling min above max", map[string]any{"autoscaling": map[string]any{"minReplicas": int64(5), "maxReplicas": int64(2), "targetSessionsPerPod": int64(10)}, "replicas": int64(3)},
			nil, "autoscaling.minReplicas must be <= autoscaling.maxReplicas", nil},
		{"replicas outside the autoscaling range", map[string]any{"autoscaling": map[string]any{"minReplicas": int64(2), "maxReplicas": int64(4), "targetSessionsPerPod": int64(10)}, "replicas": int64(9)},
			nil, "spec.replicas must lie within autoscaling.minReplicas..maxReplicas", nil},
		{"autoscaling target above the pod limit", map[string]any{"autoscaling": map[string]any{"maxReplicas": int64(4), "targetSessionsPerPod": int64(900)}},
			nil, "autoscaling.targetSessionsPerPod cannot exceed limits.maxSessionsPerPod", nil},
		{"name too long", map[string]any{}, map[string]any{"name": strings.Repeat("a", 60)},
			"metadata.name must be a DNS label of at most 52 characters", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": mediav1alpha1.GroupVersion.String(),
				"kind":       "MediaService",
				"metadata":   map[string]any{"name": "invalid", "namespace": ns},
				"spec":       tc.spec,
			}}
			for k, v := range tc.meta {
				u.Object["metadata"].(map[string]any)[k] = v
			}
			err := k8s.Create(context.Background(), u)
			if err == nil {
				_ = k8s.Delete(context.Background(), u)
				t.Fatalf("accepted; want rejection with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rejected with\n  %v\nwant a message containing\n  %q", err, tc.want)
			}
			for _, n := range tc.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("rejected with\n  %v\nwhich also says %q", err, n)
				}
			}
		})
	}
}

// TestEnvtestICEBlockWithoutPortMode: adding STUN servers to a working
// manifest keeps the default UDP mux port instead of being refused, and
// `kubectl explain msvc.spec.ice` (the CRD's description) says so.
func TestEnvtestICEBlockWithoutPortMode(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": mediav1alpha1.GroupVersion.String(),
		"kind":       "MediaService",
		"metadata":   map[string]any{"name": "stun-only", "namespace": ns},
		"spec":       map[string]any{"ice": map[string]any{"stunServers": []any{"stun:stun.example.test:3478"}}},
	}}
	if err := k8s.Create(context.Background(), u); err != nil {
		t.Fatalf("an ice block with only stunServers was refused: %v", err)
	}
	eventually(t, waitFor, "deployment uses the default mux port", func() error {
		d, err := getDeployment(ns, "stun-only")
		if err != nil {
			return err
		}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "ICE_UDP_MUX_PORT" && e.Value == "50000" {
				return nil
			}
		}
		return fmt.Errorf("env %v", d.Spec.Template.Spec.Containers[0].Env)
	})

	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: "mediaservices.media.mediafleet.io"}, crd); err != nil {
		t.Fatal(err)
	}
	ice := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["ice"]
	for _, want := range []string{"mutually exclusive", "50000"} {
		if !strings.Contains(ice.Description, want) {
			t.Errorf("spec.ice description lacks %q:\n%s", want, ice.Description)
		}
	}
}
