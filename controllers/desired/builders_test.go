package desired

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"k8s.io/utils/ptr"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// defaulted returns a MediaService as the API server's defaulting leaves it.
func defaulted(mut func(*mediav1alpha1.MediaService)) *mediav1alpha1.MediaService {
	ms := &mediav1alpha1.MediaService{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "media", UID: "uid-1"},
		Spec: mediav1alpha1.MediaServiceSpec{
			Replicas:  ptr.To(int32(2)),
			Signaling: mediav1alpha1.SignalingSpec{Port: 8080, ServiceType: mediav1alpha1.ServiceTypeClusterIP},
			AdminPort: 9090,
			ICE:       mediav1alpha1.ICESpec{UDPMuxPort: ptr.To(int32(50000))},
			Limits: mediav1alpha1.LimitsSpec{MaxSessionsPerPod: 500, MaxICECandidatesPerSession: 50, WebsocketSendBuffer: 256,
				WebsocketSendTimeout: metav1.Duration{Duration: time.Second}, DrainTimeout: metav1.Duration{Duration: 30 * time.Second}},
			LeakDetection: mediav1alpha1.LeakDetectionSpec{BaselineWindow: metav1.Duration{Duration: 5 * time.Minute}, ThresholdRatio: 3, Remediation: mediav1alpha1.RemediationNone},
			Logging:       mediav1alpha1.LoggingSpec{Level: "info", Format: "json"},
		},
	}
	if mut != nil {
		mut(ms)
	}
	return ms
}

func envMap(d *appsv1ac.DeploymentApplyConfiguration) map[string]string {
	out := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		switch {
		case e.Value != nil:
			out[*e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			out[*e.Name] = "secret:" + *e.ValueFrom.SecretKeyRef.Name + "/" + *e.ValueFrom.SecretKeyRef.Key
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			out[*e.Name] = "field:" + *e.ValueFrom.FieldRef.FieldPath
		}
	}
	return out
}

func TestDesiredDeployment(t *testing.T) {
	opts := Options{MediaserverImage: "mediafleet/mediaserver:v1"}
	cases := []struct {
		name  string
		mut   func(*mediav1alpha1.MediaService)
		check func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration)
	}{
		{"defaults: operator image, mux port, surge-first rollout", nil, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			c := d.Spec.Template.Spec.Containers[0]
			if *c.Image != "mediafleet/mediaserver:v1" || *d.Spec.Replicas != 2 {
				t.Errorf("image %s replicas %d", *c.Image, *d.Spec.Replicas)
			}
			ru := d.Spec.Strategy.RollingUpdate
			if ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable.IntValue() != 0 {
				t.Errorf("pod-network rollout must surge first: %+v", ru)
			}
			env := envMap(d)
			want := map[string]string{"PORT": "8080", "ADMIN_PORT": "9090", "ICE_UDP_MUX_PORT": "50000", "MAX_SESSIONS": "500",
				"MAX_ICE_CANDIDATES": "50", "WS_SEND_BUFFER": "256", "WS_SEND_TIMEOUT": "1s", "DRAIN_TIMEOUT": "30s",
				"LEAK_BASELINE_WINDOW": "5m0s", "LEAK_THRESHOLD_RATIO": "3", "POD_NAME": "field:metadata.name",
				"HOST_IP": "field:status.hostIP", "POD_IP": "field:status.podIP", "MEDIASERVICE_NAME": "demo"}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}
			if _, ok := env["ICE_PORT_MIN"]; ok {
				t.Errorf("ICE_PORT_MIN set in mux mode")
			}
			var udp bool
			for _, p := range c.Ports {
				if *p.Name == portNameICEMux && *p.Protocol == corev1.ProtocolUDP && *p.ContainerPort == 50000 {
					udp = true
				}
			}
			if !udp {
				t.Errorf("mux UDP port not declared: %+v", c.Ports)
			}
			if d.Spec.Template.Spec.HostNetwork != nil || d.Spec.Template.Spec.Affinity != nil {
				t.Errorf("pod network fleet got hostNetwork/affinity")
			}
		}},
		{"an ice block with only STUN servers keeps the default mux port", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.ICE = mediav1alpha1.ICESpec{STUNServers: []string{"stun:stun.example.test:3478"}}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			env := envMap(d)
			if env["ICE_UDP_MUX_PORT"] != "50000" || env["STUN_SERVERS"] != "stun:stun.example.test:3478" {
				t.Errorf("env %v", env)
			}
			if _, ok := env["ICE_PORT_MIN"]; ok {
				t.Error("port range env without a port range")
			}
		}},
		{"signalling TLS: the Secret mounted read-only, files named in the env", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.Signaling.TLS = &mediav1alpha1.SignalingTLS{SecretRef: corev1.LocalObjectReference{Name: "demo-tls"}}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			env := envMap(d)
			if env["TLS_CERT_FILE"] != "/etc/mediafleet/tls/tls.crt" || env["TLS_KEY_FILE"] != "/etc/mediafleet/tls/tls.key" {
				t.Errorf("env %v", env)
			}
			var vol bool
			for _, v := range d.Spec.Template.Spec.Volumes {
				if *v.Name == tlsVolume && v.Secret != nil && *v.Secret.SecretName == "demo-tls" && len(v.Secret.Items) == 2 {
					vol = true
				}
			}
			var mount bool
			for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
				if *m.Name == tlsVolume && *m.MountPath == "/etc/mediafleet/tls" && *m.ReadOnly {
					mount = true
				}
			}
			if !vol || !mount {
				t.Errorf("TLS Secret volume %v, read-only mount %v", vol, mount)
			}
		}},
		{"no TLS: no certificate env or volume", nil, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			if _, ok := envMap(d)["TLS_CERT_FILE"]; ok {
				t.Error("TLS_CERT_FILE without spec.signaling.tls")
			}
			for _, v := range d.Spec.Template.Spec.Volumes {
				if *v.Name == tlsVolume {
					t.Error("TLS volume without spec.signaling.tls")
				}
			}
		}},
		{"restricted pod security and no API token", nil, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			ps := d.Spec.Template.Spec
			c := ps.Containers[0]
			sc := c.SecurityContext
			if !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("container security context %+v", sc)
			}
			if *ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || *ps.SecurityContext.RunAsUser == 0 {
				t.Errorf("pod security context %+v", ps.SecurityContext)
			}
			if *ps.AutomountServiceAccountToken || *ps.ServiceAccountName != "demo-media" {
				t.Errorf("service account token mounted or wrong account")
			}
			if *c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.StrVal != PortNameAdmin ||
				*c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probes %+v %+v", c.ReadinessProbe, c.LivenessProbe)
			}
			if *ps.TerminationGracePeriodSeconds != 40 {
				t.Errorf("grace %d", *ps.TerminationGracePeriodSeconds)
			}
		}},
		{"host network: port range, in-place rollout, anti-affinity, node address", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.ICE = mediav1alpha1.ICESpec{HostNetwork: true, PortRange: &mediav1alpha1.PortRange{Min: 50000, Max: 50100},
				PublicAddress: &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressNodeInternalIP}}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			ps := d.Spec.Template.Spec
			if !*ps.HostNetwork || *ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostNetwork %v dns %v", ps.HostNetwork, ps.DNSPolicy)
			}
			ru := d.Spec.Strategy.RollingUpdate
			if ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable.IntValue() != 1 {
				t.Errorf("hostNetwork rollout must replace in place: %+v", ru)
			}
			terms := ps.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
			if len(terms) != 1 || *terms[0].TopologyKey != corev1.LabelHostname || terms[0].LabelSelector.MatchLabels[labelInstance] != "demo" {
				t.Errorf("anti-affinity %+v", terms)
			}
			env := envMap(d)
			if env["ICE_PORT_MIN"] != "50000" || env["ICE_PORT_MAX"] != "50100" || env["PUBLIC_IPS"] != "$(HOST_IP)" || env["ICE_IPS"] != "$(HOST_IP)" {
				t.Errorf("env %v", env)
			}
		}},
		{"user affinity kept beside the host anti-affinity", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.ICE.HostNetwork = true
			ms.Spec.PodTemplate.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "media", Operator: corev1.NodeSelectorOpExists}}}}}}}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			aff := d.Spec.Template.Spec.Affinity
			if aff.NodeAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
				t.Errorf("affinity %+v", aff)
			}
		}},
		{"secrets by reference: token and TURN", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.Signaling.TokenSecretRef = &mediav1alpha1.SecretKeyRef{Name: "signal", Key: "bearer"}
			ms.Spec.ICE.TURNServers = []mediav1alpha1.TURNServer{{URLs: []string{"turn:turn.example.test:3478", "turns:turn.example.test:5349"},
				CredentialsSecretRef: &corev1.LocalObjectReference{Name: "turn-creds"}},
				{URLs: []string{"turn:rest.example.test:3478"}, SharedSecretRef: &mediav1alpha1.SecretKeyRef{Name: "turn-shared"},
					CredentialTTL: &metav1.Duration{Duration: 10 * time.Minute}}}
			ms.Spec.ICE.STUNServers = []string{"stun:a.example.test", "stun:b.example.test"}
			ms.Spec.Signaling.AllowedOrigins = []string{"https://a.example.test", "https://b.example.test"}
			ms.Spec.Rooms.Broadcast = []string{"webinar-*", "town-hall"}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			env := envMap(d)
			if _, ok := env["TURN_1_USERNAME"]; ok {
				t.Error("a shared-secret TURN server got a username")
			}
			want := map[string]string{"AUTH_TOKEN": "secret:signal/bearer", "TURN_SERVER_COUNT": "2",
				"TURN_1_URLS": "turn:rest.example.test:3478", "TURN_1_SECRET": "secret:turn-shared/secret", "TURN_1_TTL": "10m0s",
				"TURN_0_URLS": "turn:turn.example.test:3478,turns:turn.example.test:5349", "TURN_0_USERNAME": "secret:turn-creds/username",
				"TURN_0_PASSWORD": "secret:turn-creds/password", "STUN_SERVERS": "stun:a.example.test,stun:b.example.test",
				"ALLOWED_ORIGINS": "https://a.example.test,https://b.example.test", "BROADCAST_ROOMS": "webinar-*,town-hall"}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}
		}},
		{"node external IP read from the published file", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.ICE.PublicAddress = &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressNodeExternalIP}
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			if envMap(d)["PUBLIC_IP_FILE"] != nodeAddrMountAt+"/$(NODE_NAME)" {
				t.Errorf("env %v", envMap(d))
			}
			if len(d.Spec.Template.Spec.Volumes) != 2 || *d.Spec.Template.Spec.Volumes[1].ConfigMap.Name != "demo-node-addresses" {
				t.Errorf("volumes %+v", d.Spec.Template.Spec.Volumes)
			}
		}},
		{"static IPs, pod template metadata and scheduling", func(ms *mediav1alpha1.MediaService) {
			ms.Spec.ICE.PublicAddress = &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressStatic, IPs: []string{"198.18.0.10", "198.18.0.11"}}
			ms.Spec.PodTemplate = mediav1alpha1.PodTemplateSpec{Labels: map[string]string{"team": "rtc", labelInstance: "hijack"}, Annotations: map[string]string{"a": "b"},
				NodeSelector: map[string]string{"pool": "media"}, PriorityClassName: "media-critical",
				Tolerations: []corev1.Toleration{{Key: "media", Operator: corev1.TolerationOpEqual, Value: "yes", Effect: corev1.TaintEffectNoSchedule}}}
			ms.Spec.Image = "registry.example.test/ms:2"
			ms.Spec.ImagePullPolicy = corev1.PullNever
		}, func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
			tpl := d.Spec.Template
			if envMap(d)["PUBLIC_IPS"] != "198.18.0.10,198.18.0.11" {
				t.Errorf("PUBLIC_IPS %q", envMap(d)["PUBLIC_IPS"])
			}
			if tpl.Labels["team"] != "rtc" || tpl.Labels[labelInstance] != "demo" || tpl.Annotations["a"] != "b" {
				t.Errorf("labels %v annotations %v (operator labels must win)", tpl.Labels, tpl.Annotations)
			}
			if tpl.Spec.NodeSelector["pool"] != "media" || *tpl.Spec.PriorityClassName != "media-critical" || len(tpl.Spec.Tolerations) != 1 {
				t.Errorf("scheduling %+v", tpl.Spec)
			}
			c := tpl.Spec.Containers[0]
			if *c.Image != "registry.example.test/ms:2" || *c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("image %s policy %s", *c.Image, *c.ImagePullPolicy)
			}
		}},
		{"scaled to zero", func(ms *mediav1alpha1.MediaService) { ms.Spec.Replicas = ptr.To(int32(0)) },
			func(t *testing.T, d *appsv1ac.DeploymentApplyConfiguration) {
				if *d.Spec.Replicas != 0 {
					t.Errorf("replicas %d", *d.Spec.Replicas)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Deployment(defaulted(tc.mut), opts, "0123abcd", Gateway{})
			if *d.Name != "demo" || *d.Namespace != "media" || len(d.OwnerReferences) != 1 || !*d.OwnerReferences[0].Controller {
				t.Fatalf("metadata %+v", d.ObjectMetaApplyConfiguration)
			}
			if d.Spec.Selector.MatchLabels[labelInstance] != "demo" || d.Spec.Template.Labels[LabelManagedBy] != ManagedByValue {
				t.Fatalf("selector/labels")
			}
			tc.check(t, d)
		})
	}
}

func TestDesiredServices(t *testing.T) {
	for _, st := range []mediav1alpha1.ServiceType{mediav1alpha1.ServiceTypeClusterIP, mediav1alpha1.ServiceTypeNodePort, mediav1alpha1.ServiceTypeLoadBalancer} {
		ms := defaulted(func(ms *mediav1alpha1.MediaService) {
			ms.Spec.Signaling.ServiceType = st
			ms.Spec.Signaling.Port = 8443
		})
		svc := SignalingService(ms)
		if string(*svc.Spec.Type) != string(st) || len(svc.Spec.Ports) != 1 || *svc.Spec.Ports[0].Port != 8443 {
			t.Errorf("%s: signalling service %+v", st, svc.Spec)
		}
	}
	h := HeadlessService(defaulted(nil))
	if *h.Name != "demo-pods" || *h.Spec.ClusterIP != corev1.ClusterIPNone || !*h.Spec.PublishNotReadyAddresses || len(h.Spec.Ports) != 2 {
		t.Errorf("headless service %+v", h.Spec)
	}
}

func TestDesiredServiceAccountAndPDB(t *testing.T) {
	ms := defaulted(nil)
	sa := ServiceAccount(ms)
	if *sa.Name != "demo-media" || *sa.AutomountServiceAccountToken {
		t.Errorf("service account %+v", sa)
	}
	pdb := PDB(ms)
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels[labelInstance] != "demo" {
		t.Errorf("pdb %+v", pdb.Spec)
	}
}

func TestDesiredNodeAddresses(t *testing.T) {
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "198.18.0.1"}, {Type: corev1.NodeExternalIP, Address: "198.19.0.1"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "n2"}, {Type: corev1.NodeInternalIP, Address: "198.18.0.2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n3"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n3"}}}},
	}
	if cm := NodeAddresses(defaulted(nil), nodes); cm != nil {
		t.Fatalf("config map built without NodeExternalIP")
	}
	ms := defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.ICE.PublicAddress = &mediav1alpha1.PublicAddress{Source: mediav1alpha1.PublicAddressNodeExternalIP}
	})
	cm := NodeAddresses(ms, nodes)
	want := map[string]string{"n1": "198.19.0.1", "n2": "198.18.0.2"}
	if len(cm.Data) != 2 || cm.Data["n1"] != want["n1"] || cm.Data["n2"] != want["n2"] {
		t.Errorf("data %v, want %v", cm.Data, want)
	}
}

// TestPodTemplateFieldsSurviveTheBuilder (hostile review item 11): every
// field of the user's affinity and tolerations reaches the Deployment,
// matchLabelKeys and mismatchLabelKeys included (the hand-written copies
// dropped them, and would drop any field Kubernetes adds later).
func TestPodTemplateFieldsSurviveTheBuilder(t *testing.T) {
	secs := int64(30)
	term := corev1.PodAffinityTerm{
		LabelSelector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "media"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"edge"}}}},
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "rtc"}},
		Namespaces:        []string{"media"},
		TopologyKey:       "topology.kubernetes.io/zone",
		MatchLabelKeys:    []string{"pod-template-hash"},
		MismatchLabelKeys: []string{"tenant"},
	}
	aff := &corev1.Affinity{
		NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"media"}}},
				MatchFields:      []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"n1"}}},
			}}},
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 5, Preference: corev1.NodeSelectorTerm{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpDoesNotExist}}}}},
		},
		PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term},
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 7, PodAffinityTerm: term}}},
		PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 9, PodAffinityTerm: term}}},
	}
	tols := []corev1.Toleration{{Key: "media", Operator: corev1.TolerationOpEqual, Value: "yes", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs},
		{Operator: corev1.TolerationOpExists}}
	d := Deployment(defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.PodTemplate.Affinity = aff
		ms.Spec.PodTemplate.Tolerations = tols
	}), Options{}, "", Gateway{})
	asJSON := func(v any) string {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	if got, want := asJSON(d.Spec.Template.Spec.Affinity), asJSON(aff); got != want {
		t.Errorf("affinity changed on its way to the Deployment:\n got %s\nwant %s", got, want)
	}
	if got, want := asJSON(d.Spec.Template.Spec.Tolerations), asJSON(tols); got != want {
		t.Errorf("tolerations changed:\n got %s\nwant %s", got, want)
	}
	// With hostNetwork the operator's anti-affinity comes on top of the
	// user's, which stays whole.
	d = Deployment(defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.PodTemplate.Affinity = aff.DeepCopy()
		ms.Spec.ICE = mediav1alpha1.ICESpec{HostNetwork: true, UDPMuxPort: ptr.To(int32(50000))}
	}), Options{}, "", Gateway{})
	anti := d.Spec.Template.Spec.Affinity.PodAntiAffinity
	if len(anti.PreferredDuringSchedulingIgnoredDuringExecution) != 1 || len(anti.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		*anti.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != corev1.LabelHostname {
		t.Errorf("hostNetwork anti-affinity: %s", asJSON(anti))
	}
	if !strings.Contains(asJSON(d.Spec.Template.Spec.Affinity), `"matchLabelKeys":["pod-template-hash"]`) {
		t.Error("matchLabelKeys lost with hostNetwork")
	}
	if aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		t.Error("the builder changed the user's spec")
	}
}

func TestDesiredNetworkPolicy(t *testing.T) {
	ms := defaulted(nil)
	np := NetworkPolicy(ms, Options{OperatorNamespace: "mediafleet-system"})
	raw, _ := json.Marshal(np.Spec)
	for _, want := range []string{`"policyTypes":["Ingress"]`, `{"protocol":"TCP","port":8080}`, `{"protocol":"UDP","port":50000}`,
		`{"protocol":"TCP","port":9090}`, `"kubernetes.io/metadata.name":"mediafleet-system"`, `"kubernetes.io/metadata.name":"monitoring"`,
		`"app.kubernetes.io/name":"prometheus"`, `"app.kubernetes.io/instance":"demo"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("NetworkPolicy lacks %s:\n%s", want, raw)
		}
	}
	if len(np.Spec.Ingress[0].From) != 0 {
		t.Errorf("signalling and ICE must be open to all: %+v", np.Spec.Ingress[0].From)
	}
	ms = defaulted(func(ms *mediav1alpha1.MediaService) {
		ms.Spec.ICE = mediav1alpha1.ICESpec{PortRange: &mediav1alpha1.PortRange{Min: 40000, Max: 40999}}
		ms.Spec.NetworkPolicy.MetricsFrom = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.8.0.0/16", Except: []string{"10.8.1.0/24"}}}}
	})
	raw, _ = json.Marshal(NetworkPolicy(ms, Options{}).Spec)
	for _, want := range []string{`{"protocol":"UDP","port":40000,"endPort":40999}`, `"cidr":"10.8.0.0/16","except":["10.8.1.0/24"]`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("NetworkPolicy lacks %s:\n%s", want, raw)
		}
	}
	if strings.Contains(string(raw), "prometheus") {
		t.Errorf("explicit metricsFrom still carries the default peer: %s", raw)
	}
}
