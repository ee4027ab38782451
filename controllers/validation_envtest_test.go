package controllers

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

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
	}{
		{"port range reversed", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50100), "max": int64(50000)}}, "limits": map[string]any{"maxSessionsPerPod": int64(10)}},
			nil, "ice.portRange.min must be <= ice.portRange.max"},
		{"port range below 1024", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(80), "max": int64(2000)}}},
			nil, "spec.ice.portRange.min: Invalid value: 80: spec.ice.portRange.min in body should be greater than or equal to 1024"},
		{"port range and mux together", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50000), "max": int64(51000)}, "udpMuxPort": int64(50000)}},
			nil, "exactly one of ice.portRange or ice.udpMuxPort must be set"},
		{"neither range nor mux", map[string]any{"ice": map[string]any{"stunServers": []any{"stun:stun.example.test:3478"}}},
			nil, "exactly one of ice.portRange or ice.udpMuxPort must be set"},
		{"range narrower than sessions", map[string]any{"ice": map[string]any{"portRange": map[string]any{"min": int64(50000), "max": int64(50100)}}},
			nil, "ice.portRange is too narrow: it needs at least limits.maxSessionsPerPod ports"},
		{"stun url scheme", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "stunServers": []any{"http://stun.example.test"}}},
			nil, "each ice.stunServers entry must be a stun: or stuns: URL"},
		{"turn url scheme", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "turnServers": []any{map[string]any{"urls": []any{"stun:turn.example.test"}, "credentialsSecretRef": map[string]any{"name": "turn"}}}}},
			nil, "each ice.turnServers[].urls entry must be a turn: or turns: URL"},
		{"turn without secret", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "turnServers": []any{map[string]any{"urls": []any{"turn:turn.example.test"}}}}},
			nil, "spec.ice.turnServers[0].credentialsSecretRef: Required value"},
		{"zero drain timeout", map[string]any{"limits": map[string]any{"drainTimeout": "0s"}},
			nil, "limits.drainTimeout must be positive and at most 24h"},
		{"garbage drain timeout", map[string]any{"limits": map[string]any{"drainTimeout": "soon"}},
			nil, "spec.limits.drainTimeout: Invalid value: \"soon\""},
		{"too many ice candidates", map[string]any{"limits": map[string]any{"maxICECandidatesPerSession": int64(5000)}},
			nil, "spec.limits.maxICECandidatesPerSession: Invalid value: 5000: spec.limits.maxICECandidatesPerSession in body should be less than or equal to 1000"},
		{"negative replicas", map[string]any{"replicas": int64(-1)},
			nil, "spec.replicas in body should be greater than or equal to 0"},
		{"signaling and admin on one port", map[string]any{"adminPort": int64(8080)},
			nil, "signaling.port and adminPort must differ"},
		{"unknown service type", map[string]any{"signaling": map[string]any{"serviceType": "ExternalName"}},
			nil, `spec.signaling.serviceType: Unsupported value: "ExternalName"`},
		{"static address without ips", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "publicAddress": map[string]any{"source": "Static"}}},
			nil, "ice.publicAddress.ips is required with source Static and allowed only with it"},
		{"static address not an IP", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "publicAddress": map[string]any{"source": "Static", "ips": []any{"media.example.test"}}}},
			nil, "each ice.publicAddress.ips entry must be an IP address"},
		{"bad origin", map[string]any{"signaling": map[string]any{"allowedOrigins": []any{"app.example.test/path"}}},
			nil, "each signaling.allowedOrigins entry must be"},
		{"threshold ratio too low", map[string]any{"leakDetection": map[string]any{"thresholdRatio": int64(1)}},
			nil, "spec.leakDetection.thresholdRatio in body should be greater than or equal to 2"},
		{"unknown remediation", map[string]any{"leakDetection": map[string]any{"remediation": "Reboot"}},
			nil, `spec.leakDetection.remediation: Unsupported value: "Reboot"`},
		{"pod ip with host network", map[string]any{"ice": map[string]any{"udpMuxPort": int64(50000), "hostNetwork": true, "publicAddress": map[string]any{"source": "PodIP"}}},
			nil, "ice.publicAddress.source PodIP makes no sense with ice.hostNetwork"},
		{"autoscaling min above max", map[string]any{"autoscaling": map[string]any{"minReplicas": int64(5), "maxReplicas": int64(2), "targetSessionsPerPod": int64(10)}, "replicas": int64(3)},
			nil, "autoscaling.minReplicas must be <= autoscaling.maxReplicas"},
		{"replicas outside the autoscaling range", map[string]any{"autoscaling": map[string]any{"minReplicas": int64(2), "maxReplicas": int64(4), "targetSessionsPerPod": int64(10)}, "replicas": int64(9)},
			nil, "spec.replicas must lie within autoscaling.minReplicas..maxReplicas"},
		{"autoscaling target above the pod limit", map[string]any{"autoscaling": map[string]any{"maxReplicas": int64(4), "targetSessionsPerPod": int64(900)}},
			nil, "autoscaling.targetSessionsPerPod cannot exceed limits.maxSessionsPerPod"},
		{"name too long", map[string]any{}, map[string]any{"name": strings.Repeat("a", 60)},
			"metadata.name must be a DNS label of at most 52 characters"},
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
		})
	}
}
