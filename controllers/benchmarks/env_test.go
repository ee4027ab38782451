package benchmarks

import (
	"path/filepath"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// oneProcessControllers lets each benchmark of this binary start its own
// manager with the same controller name.
func oneProcessControllers() config.Controller {
	skip := true
	return config.Controller{SkipNameValidation: &skip}
}

// startControlPlane starts kube-apiserver and etcd (KUBEBUILDER_ASSETS) with
// the MediaService CRD, stopped when the benchmark ends, and returns the
// scheme the benchmarks use.
func startControlPlane(b *testing.B) (*kruntime.Scheme, *rest.Config) {
	b.Helper()
	scheme := kruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(mediav1alpha1.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	// envtest's default Service range (a /24) holds 254 ClusterIPs; every
	// MediaService has one, so give it a cluster-sized range.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/12")
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.Stop() })
	return scheme, cfg
}
