// Command manager runs the mediafleet operator.
package main

import (
	"flag"
	"os"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers"
)

func main() {
	var (
		metricsAddr      string
		probeAddr        string
		leaderElect      bool
		mediaserverImage string
		observe          controllers.ObserverOptions
	)
	var concurrency int
	var operatorNamespace string
	flag.StringVar(&operatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace the operator runs in; the media pods' NetworkPolicy lets it reach their admin port (default $POD_NAMESPACE).")
	var qps float64
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "How many MediaServices reconcile at once.")
	flag.Float64Var(&qps, "kube-api-qps", 50, "Client-side limit of API requests per second (burst: twice this).")
	flag.DurationVar(&observe.Interval, "observe-interval", 10*time.Second, "How often every media pod's /status is read.")
	flag.IntVar(&observe.Concurrency, "observe-concurrency", 32, "Most /status requests in flight at once.")
	flag.DurationVar(&observe.Timeout, "observe-timeout", 2*time.Second, "Timeout of one /status request.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint (0 disables it).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one manager reconciles at a time.")
	flag.StringVar(&mediaserverImage, "mediaserver-image", "mediafleet/mediaserver:latest", "Image of media pods whose MediaService leaves spec.image empty.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(mediav1alpha1.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), int(2*qps)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "mediafleet.media.mediafleet.io",
		Cache:                  controllers.CacheOptions(controllers.MonitoringCRDsServed(cfg)),
	})
	if err != nil {
		setupLog.Error(err, "create manager")
		os.Exit(1)
	}
	r := &controllers.MediaServiceReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("mediafleet"),
		Options: controllers.Options{MediaserverImage: mediaserverImage, MaxConcurrentReconciles: concurrency,
			OperatorNamespace: operatorNamespace},
		Observer: controllers.NewObserver(mgr.GetClient(), observe),
	}
	// Only the leader observes: a new leader's passes start at zero.
	ctrlmetrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mediafleet_observer_passes_total",
		Help: "Observation passes over the media pods this instance completed (only the leader observes).",
	}, func() float64 { return float64(r.Observer.Passes()) }))
	if err := r.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "set up controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "add health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "add ready check")
		os.Exit(1)
	}
	setupLog.Info("starting manager", "mediaserverImage", mediaserverImage)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "run manager")
		os.Exit(1)
	}
}
