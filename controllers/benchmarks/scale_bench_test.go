package benchmarks

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers"
)

// countingTransport counts the operator's requests to the API server.
type countingTransport struct {
	next          http.RoundTripper
	total, writes atomic.Int64
	mu            sync.Mutex
	recording     bool
	seen          []string // writes while recording
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.total.Add(1)
	if r.Method != http.MethodGet {
		c.writes.Add(1)
		c.mu.Lock()
		if c.recording {
			c.seen = append(c.seen, r.Method+" "+r.URL.Path)
		}
		c.mu.Unlock()
	}
	return c.next.RoundTrip(r)
}

// reconcileCounter counts reconciles: each starts with a Get of its
// MediaService.
type reconcileCounter struct {
	client.Client
	n atomic.Int64
}

func (r *reconcileCounter) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*mediav1alpha1.MediaService); ok {
		r.n.Add(1)
	}
	return r.Client.Get(ctx, key, obj, opts...)
}

// BenchmarkThousandMediaServices: 1,000 MediaServices created at once in
// envtest; time until every one is steady (children applied, status
// written with its generation), API requests per reconcile, and API writes
// in the steady minute that follows (should be 0).
func BenchmarkThousandMediaServices(b *testing.B) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		b.Skip("KUBEBUILDER_ASSETS unset: run through make bench-operator")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("MEDIASERVICES")); err == nil && v > 0 {
		n = v
	}
	window := 60 * time.Second
	if w := os.Getenv("STEADY_WINDOW"); w != "" {
		window, _ = time.ParseDuration(w)
	}
	scheme, cfg := startControlPlane(b)
	testCfg := rest.CopyConfig(cfg)
	testCfg.QPS, testCfg.Burst = 500, 1000 // the test's own client must not be the bottleneck
	k8s, _ := client.New(testCfg, client.Options{Scheme: scheme})

	opCfg := rest.CopyConfig(cfg)
	opCfg.QPS, opCfg.Burst = 200, 400
	ct := &countingTransport{}
	opCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { ct.next = rt; return ct }
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{Controller: oneProcessControllers(), Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: controllers.CacheOptions(false)})
	if err != nil {
		b.Fatal(err)
	}
	rc := &reconcileCounter{Client: mgr.GetClient()}
	r := &controllers.MediaServiceReconciler{Client: rc, Recorder: mgr.GetEventRecorder("bench"),
		Options: controllers.Options{MediaserverImage: "x"}}
	if err := r.SetupWithManager(mgr); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		b.Fatal("cache sync")
	}
	_ = k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale"}})

	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ms := &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: "scale", Name: fmt.Sprintf("ms-%04d", i)}}
			if err := k8s.Create(ctx, ms); err != nil {
				b.Error(err)
			}
		}(i)
	}
	wg.Wait()
	created := time.Since(start)
	for {
		list := &mediav1alpha1.MediaServiceList{}
		if err := k8s.List(ctx, list, client.InNamespace("scale")); err != nil {
			b.Fatal(err)
		}
		steady := 0
		for _, ms := range list.Items {
			if ms.Status.ObservedGeneration == ms.Generation && len(ms.Status.Conditions) >= 3 {
				steady++
			}
		}
		if steady == n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d steady after 5 minutes (%d reconciles, %d API requests)", steady, n, rc.n.Load(), ct.total.Load())
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(start)
	time.Sleep(5 * time.Second) // let the last watch events drain
	reconciles, requests := rc.n.Load(), ct.total.Load()
	b.ReportMetric(created.Seconds(), "s-to-create")
	b.ReportMetric(took.Seconds(), "s-to-steady")
	b.ReportMetric(float64(reconciles)/float64(n), "reconciles/msvc")
	b.ReportMetric(float64(requests)/float64(reconciles), "api-requests/reconcile")

	ct.mu.Lock()
	ct.recording = true
	ct.mu.Unlock()
	w0 := ct.writes.Load()
	time.Sleep(window)
	b.ReportMetric(float64(ct.writes.Load()-w0)*60/window.Seconds(), "writes/steady-min")
	ct.mu.Lock()
	for _, w := range ct.seen {
		b.Logf("write in the steady window: %s", w)
	}
	ct.mu.Unlock()
}
